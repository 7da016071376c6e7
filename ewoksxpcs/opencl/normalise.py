"""g2 and its jackknife error on the device, from the exact sums a correlator left there.

:func:`~ewoksxpcs.engine.normalise.normalise` spends most of its time on the jackknife (for
10 bins × 16 groups × 10 000 lags: ~9 ms of NumPy on one host core, 19-23 ms on the H200's
host without numba), while the device that computed n2 and s2 holds both: ``kernels/
normalise.cl`` computes g2 and σ per (bin, lag) in microseconds with the host's operations in
the host's order (no contraction into fused multiply-adds), so the bits are the same, and the
few-pairs rule after them (~1 ms of NumPy on the host): only g2, σ, the expected pairs and the
bins' n2 (the sum of their groups', exact) come back, with each bin's own s2 row and frame sums,
in one read. The host assembles the result (``normalise(..., g2_rows=..., bin_totals=...,
pairs=...)``).
"""

from __future__ import annotations

import numpy

from ..engine.normalise import MIN_EXPECTED_PAIRS
from .device import download_pinned, get_kernel, upload_small
from .pools import host_result, pooled_buffer

__all__ = ["g2_on_device", "g2_tables", "G2_PROGRAM"]

#: (file, defines) of g2's program: the few-pairs rule's threshold as a constant (for
#: :func:`~.device.build_in_background` ahead of a run).
G2_PROGRAM = ("normalise.cl", {"MIN_PAIRS": repr(float(MIN_EXPECTED_PAIRS))})


def g2_tables(dev, queue, binning, spans) -> tuple:
    """The binning's small tables of ``g2_jackknife`` on the device, for :func:`g2_on_device`
    (``tables``): a caller keeps them for every run with the same binning and s2 rows. The
    copies are enqueued on ``queue`` (:func:`~.device.upload_small`)."""
    sub0 = numpy.asarray(binning.bin_sub_offsets, dtype=numpy.int32)
    row0 = numpy.asarray([-1 if s is None else s[0] for s in spans], dtype=numpy.int32)
    npix = numpy.asarray(binning.n_pixels, dtype=numpy.float64)
    # N_q − N_g as the host computes it: float64(N_q) − float64(N_g).
    factor = npix[binning.sub_bin] - binning.sub_n_pixels.astype(numpy.float64)
    return tuple(upload_small(dev, queue, a)
                 for a in (sub0, row0, npix, numpy.ascontiguousarray(factor)))


def g2_on_device(dev, queue, d_n2, d_c, binning, spans, n_lags: int, d_x=None, tables=None,
                 read=None):
    """Enqueue the g2 and jackknife kernel; return a ``fetch()`` of its results.

    Parameters
    ----------
    dev : OpenCLDevice
        With double precision (``dev.has_fp64``).
    queue : pyopencl.CommandQueue
    d_n2 : pyopencl.Buffer
        (n_sub, n_lags) int64 n2 per sub-bin (group).
    d_c : pyopencl.Buffer
        (n_rows, n_lags) int64 s2 rows: for each bin with groups, its own row then one per
        group left out (:func:`~ewoksxpcs.engine.normalise.s2_rows`' layout, one after another).
    binning : Binning
    spans : list
        Per bin, (first row in ``d_c``, rows) or None for an empty bin.
    n_lags : int
    d_x : pyopencl.Buffer, optional
        (n_rows, n_lags) int64 series whose autocorrelations ``d_c`` holds (row i of a bin:
        its frame sums).
    tables : tuple, optional
        :func:`g2_tables` of this binning and ``spans`` (default: made and uploaded now).
    read : callable, optional
        ``read(dst, src, wait_for)`` enqueues the read of the results at once and returns it
        (:meth:`~.device.StagedReads.read`: ``fetch()`` waits for it); default: read by
        ``fetch()``.

    Returns
    -------
    callable
        ``fetch()`` → (g2, g2_err, n2_bins, s2_own, x_own, pairs), each (n_bins, n_lags):
        float64 g2 and σ with the few-pairs rule applied (:func:`~ewoksxpcs.engine.normalise.
        undefined_lags`; NaN for empty bins and for σ of one-group bins); int64 n2 of each bin
        (zero for empty bins), as :func:`~ewoksxpcs.engine.normalise.bin_sums` gives it;
        int64 each bin's own row of ``d_c`` and of ``d_x`` (zeros for empty bins; ``x_own``
        None without ``d_x``); float64 expected pairs (:func:`~ewoksxpcs.engine.normalise.
        expected_pairs` of the own s2 rows). One read brings them all, into page-locked memory
        reused from run to run on a GPU (:func:`~.pools.host_result`).
    """
    nb = binning.n_bins
    if tables is None:
        tables = g2_tables(dev, queue, binning, spans)
    res = host_result(dev, (6, nb, n_lags), numpy.float64)
    d_res = pooled_buffer(dev, queue, res.nbytes)
    wg = 128
    done = get_kernel(dev, G2_PROGRAM[0], "g2_jackknife", G2_PROGRAM[1])(
        queue, (-(-n_lags // wg) * wg, nb), (wg, 1), d_n2, d_c, d_c if d_x is None else d_x,
        *(buf for buf, _ in tables), numpy.int32(n_lags), numpy.int32(nb), d_res)
    queue.flush()
    pending = None if read is None else read(res, d_res, wait_for=[done])

    def fetch():
        if pending is None:
            download_pinned(dev, queue, res, d_res)
        else:
            pending.wait()
        ints = res[2:5].view(numpy.int64)
        return res[0], res[1], ints[0], ints[1], None if d_x is None else ints[2], res[5]

    return fetch
