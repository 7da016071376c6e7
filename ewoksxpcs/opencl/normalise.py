"""g2 and its jackknife error on the device, from the exact sums a correlator left there.

:func:`~ewoksxpcs.engine.normalise.normalise` spends most of its time on the jackknife (for
10 bins × 16 groups × 10 000 lags: ~9 ms of NumPy on one host core, 19-23 ms on the H200's
host without numba), while the device that computed n2 and s2 holds both: ``kernels/
normalise.cl`` computes g2 and σ per (bin, lag) in microseconds with the host's operations in
the host's order (no contraction into fused multiply-adds), so the bits are the same, and only
g2, σ and the bins' n2 (the sum of their groups', exact) come back. The host then applies the
few-pairs rule and assembles the result as usual (``normalise(..., g2_rows=..., bin_totals=
...)``).
"""

from __future__ import annotations

import numpy

from .device import download_pinned, get_kernel

__all__ = ["g2_on_device"]


def g2_on_device(dev, queue, d_n2, d_c, binning, spans, n_lags: int):
    """Enqueue the g2 and jackknife kernel; return a ``fetch()`` giving (g2, g2_err).

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

    Returns
    -------
    callable
        ``fetch()`` → (g2, g2_err, n2_bins): (n_bins, n_lags) float64 g2 and σ, NaN for empty
        bins and for σ of one-group bins, before the few-pairs rule; (n_bins, n_lags) int64 n2
        of each bin (zero for empty bins), as :func:`~ewoksxpcs.engine.normalise.bin_sums`
        gives it.
    """
    import pyopencl

    nb = binning.n_bins
    sub0 = numpy.asarray(binning.bin_sub_offsets, dtype=numpy.int32)
    row0 = numpy.asarray([-1 if s is None else s[0] for s in spans], dtype=numpy.int32)
    npix = numpy.asarray(binning.n_pixels, dtype=numpy.float64)
    # N_q − N_g as the host computes it: float64(N_q) − float64(N_g).
    factor = npix[binning.sub_bin] - binning.sub_n_pixels.astype(numpy.float64)
    mf = pyopencl.mem_flags
    small = [pyopencl.Buffer(dev.context, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=a)
             for a in (sub0, row0, npix, numpy.ascontiguousarray(factor))]
    g2 = numpy.empty((nb, n_lags))
    err = numpy.empty((nb, n_lags))
    n2_bins = numpy.empty((nb, n_lags), dtype=numpy.int64)
    d_g2, d_err, d_bins = (pyopencl.Buffer(dev.context, mf.WRITE_ONLY, max(a.nbytes, 8))
                           for a in (g2, err, n2_bins))
    wg = 128
    get_kernel(dev, "normalise.cl", "g2_jackknife")(
        queue, (-(-n_lags // wg) * wg, nb), (wg, 1), d_n2, d_c, *small, numpy.int32(n_lags),
        d_g2, d_err, d_bins)
    queue.flush()

    def fetch():
        for host, buf in ((g2, d_g2), (err, d_err), (n2_bins, d_bins)):
            download_pinned(dev, queue, host, buf)
        return g2, err, n2_bins

    return fetch
