"""Normalisation: from per-sub-bin sums to g2(q, τ) and its error bars.

For a bin q of N_q pixels:

    n2(q, τ) = Σ_{t=0}^{Nt-1-τ} Σ_{p∈q} I(t, p)·I(t+τ, p)
    s2(q, τ) = Σ_{t=0}^{Nt-1-τ} S(t, q)·S(t+τ, q),     S(t, q) = Σ_{p∈q} I(t, p)
    g2(q, τ) = N_q·n2(q, τ) / s2(q, τ)

Error bars (identical for every backend, since every backend delivers the same sums): each bin
is split into G fixed groups of pixels, contiguous in raster order (:class:`~ewoksxpcs.engine.qmask.Binning`).
The delete-one-group jackknife recomputes g2 without group g,

    g2₋g(τ) = (N_q − N_g)·(n2 − n2_g)(τ) / s2[S − S_g](τ),

and the standard error is  σ(τ) = sqrt((G−1)/G · Σ_g (g2₋g(τ) − mean_g g2₋g(τ))²).
The jackknife handles the ratio's non-linearity, needs no model of the speckle statistics and
treats groups as independent samples of the same bin: it is sound when a speckle is much smaller
than a group (groups hold N_q/G pixels, neighbours stay together). Bins of one pixel get NaN.

Lags with few photon pairs (integer counts)
-------------------------------------------
For counts, n2(q, τ) is the number of photon pairs seen τ frames apart, and

    E(q, τ) = s2(q, τ) / N_q

the number it would hold for uncorrelated light (g2 = 1): the *expected pairs*, stored beside g2
for every lag (:attr:`CorrelationResult.expected_pairs`, ``expected_pairs`` in the result file).
At the longest lags of sparse data E falls to a few pairs or less (E ≈ N_q·μ²·(Nt − τ)), n2 is
often 0, and the jackknife over groups that hold no pair at all would report g2 = 0 ± 0. The rule:

- g2 and its error are NaN (undefined) where n2 = 0 or E < ``MIN_EXPECTED_PAIRS`` (10: below it
  counting noise alone exceeds 30 % of g2);
- elsewhere the error is at least the photon-counting error of the pair count,
  σ ≥ N_q·√max(n2, E) / s2 = √max(n2, E) / E (a count of pairs fluctuates at least as a Poisson
  variable; the jackknife over 16 groups is itself noisy when the groups hold few pairs).

Float frames (not counts) have no pair count: the rule does not apply to them.
"""

from __future__ import annotations

import sys
import threading
from typing import Optional

import numpy

from .autocorr import autocorrelate
from .intrange import S2_LIMIT, check_s2, s2_bound
from .qmask import Binning
from .result import CorrelationResult, CorrelationSums

__all__ = ["normalise", "bin_sums", "jackknife_error", "s2_rows", "expected_pairs",
           "undefined_lags", "warm_numba", "MIN_EXPECTED_PAIRS"]

#: Fewer expected photon pairs than this at a lag: g2 is undefined (NaN) for integer counts.
MIN_EXPECTED_PAIRS = 10.0


def expected_pairs(d2: numpy.ndarray, n_pixels: numpy.ndarray) -> numpy.ndarray:
    """Photon pairs of uncorrelated light, E = d2 / N_q, (n_bins, n_lags) float64.

    Parameters
    ----------
    d2 : ndarray, (n_bins, n_lags)
        Denominator of g2 = N_q·n2/d2 (s2 for linear lags), counts².
    n_pixels : ndarray, (n_bins,)
        N_q; empty bins give NaN.
    """
    npix = numpy.asarray(n_pixels, dtype=numpy.float64)[:, None]
    with numpy.errstate(invalid="ignore", divide="ignore"):
        return numpy.where(npix > 0, numpy.asarray(d2, dtype=numpy.float64) / npix, numpy.nan)


def undefined_lags(g2: numpy.ndarray, g2_err: numpy.ndarray, n2: numpy.ndarray,
                   pairs: numpy.ndarray, counts: bool) -> None:
    """Apply the few-pairs rule of the module docstring to g2 and g2_err, in place.

    Parameters
    ----------
    g2, g2_err : ndarray, (n_bins, n_lags) float64
    n2 : ndarray, (n_bins, n_lags)
        Photon pairs (counts) or sums of products (float frames).
    pairs : ndarray, (n_bins, n_lags) float64
        Expected pairs E (:func:`expected_pairs`).
    counts : bool
        Whether the frames are integer counts (otherwise nothing is changed).
    """
    if not counts:  # float frames: no pair count (and float n2 of no pair need not be 0)
        return
    n2 = numpy.asarray(n2, dtype=numpy.float64)
    with numpy.errstate(invalid="ignore", divide="ignore"):
        undefined = (n2 == 0) | ~(pairs >= MIN_EXPECTED_PAIRS)
        floor = numpy.sqrt(numpy.maximum(n2, pairs)) / pairs
    numpy.fmax(g2_err, numpy.where(numpy.isnan(g2_err), numpy.nan, floor), out=g2_err)
    g2[undefined] = numpy.nan
    g2_err[undefined] = numpy.nan


#: Bytes of spectra (complex128, 2·Nt per series) of one batched autocorrelation of s2_rows.
AUTOCORR_BYTES = 16 * 1024**2


def _s2_safe(series: numpy.ndarray) -> bool:
    """Whether the exact int64 autocorrelation of integer ``series`` cannot overflow."""
    return s2_bound(series) < S2_LIMIT


def s2_rows(frame_sums: numpy.ndarray, binning: Binning, lags, s2_method: str = "auto") -> list:
    """The autocorrelations :func:`normalise` needs, from the per-sub-bin frame sums.

    Parameters
    ----------
    frame_sums : ndarray, (Nt, n_sub)
        Per-frame sub-bin sums (int64 exact, or float64).
    binning : Binning
    lags : array_like of int
        Lags wanted (frames).
    s2_method : str
        See :func:`ewoksxpcs.engine.autocorr.autocorrelate`.

    Returns
    -------
    list of (ndarray or None), one per bin
        None for an empty bin; else (1 + G, n_lags) when the bin has G > 1 groups, (1, n_lags)
        otherwise: row 0 is s2 of the bin sum S, row 1 + g of S − S_g (jackknife). int64 for
        integer sums, float64 otherwise.

    Raises
    ------
    ValueError
        Integer frame sums S with (max |S|)²·Nt ≥ 2⁶² (the exact int64 range of s2, see
        :mod:`ewoksxpcs.engine.intrange`).
    """
    lags = numpy.asarray(lags, dtype=numpy.int64)
    frame_sums = numpy.asarray(frame_sums)
    nb = binning.n_bins
    n_frames = frame_sums.shape[0]

    def series_of(i):  # (1 + G, Nt) or (1, Nt): S of the bin, then S − S_g
        s0, s1 = int(binning.bin_sub_offsets[i]), int(binning.bin_sub_offsets[i + 1])
        S_groups = frame_sums[:, s0:s1].T  # (G, Nt)
        S_bin = S_groups.sum(axis=0)
        if s1 - s0 == 1:
            return S_bin[None, :]
        return numpy.concatenate([S_bin[None, :], S_bin[None, :] - S_groups], axis=0)

    # Batched FFTs (the FFT's threads need work) of at most AUTOCORR_BYTES of transform each:
    # no stacked copy of every series, temporaries bounded whatever the bins and frames.
    out = [None] * nb
    rows_per_batch = max(1, AUTOCORR_BYTES // (16 * max(2 * n_frames, 1)))
    batch, batch_bins = [], []

    def flush():
        if not batch:
            return
        stacked = numpy.concatenate(batch, axis=0) if len(batch) > 1 else batch[0]
        if n_frames:  # rows_per_batch series at a time, also within a bin of many groups
            parts = [autocorrelate(stacked[r: r + rows_per_batch], method=s2_method)[..., lags]
                     for r in range(0, stacked.shape[0], rows_per_batch)]
            c = numpy.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
        else:
            c = stacked[..., lags]
        edges = numpy.cumsum([0] + [x.shape[0] for x in batch])
        for a, i in enumerate(batch_bins):
            out[i] = c[edges[a]: edges[a + 1]]
        batch.clear()
        batch_bins.clear()

    for i in range(nb):
        if binning.bin_sub_offsets[i + 1] == binning.bin_sub_offsets[i]:
            continue  # empty bin: None
        x = series_of(i)
        # Integer sums beyond the exact int64 range are refused, not wrapped or rounded.
        check_s2(x, label=int(binning.labels[i]))
        batch.append(x)
        batch_bins.append(i)
        if sum(b.shape[0] for b in batch) >= rows_per_batch:
            flush()
    flush()
    return out


def same_binning(a, b) -> bool:
    """Whether two binnings group the same sub-bins into the same labelled bins (the s2 rows
    of one serve the other)."""
    if a is b:
        return True
    if a is None or b is None:
        return False
    return (numpy.array_equal(a.labels, b.labels)
            and numpy.array_equal(a.bin_sub_offsets, b.bin_sub_offsets))


def jackknife_error(g2_loo: numpy.ndarray) -> numpy.ndarray:
    """Delete-one-group jackknife standard error.

    Parameters
    ----------
    g2_loo : ndarray, (G, ...) float64
        The estimate recomputed without each of the G >= 2 groups.

    Returns
    -------
    ndarray, (...) float64
        σ = sqrt((G−1)/G · Σ_g (g2₋g − mean_g g2₋g)²).
    """
    n_groups = g2_loo.shape[0]
    dev = g2_loo - g2_loo.mean(axis=0)
    return numpy.sqrt((n_groups - 1) / n_groups * (dev * dev).sum(axis=0))


def bin_sums(sums: CorrelationSums, binning: Binning):
    """Add sub-bin sums into bin sums.

    Returns
    -------
    n2 : ndarray, (n_bins, n_lags)
    frame_sums : ndarray, (n_frames, n_bins)
    """
    # Sub-bins of a bin are contiguous: one reduceat per array (empty bins stay zero). Integer
    # n2, exact in any order: one add.reduce over each bin's rows instead (3x faster than
    # reduceat along axis 0; float n2 keeps reduceat's order of additions).
    nb = binning.n_bins
    n2 = numpy.zeros((nb,) + sums.n2.shape[1:], dtype=sums.n2.dtype)
    fs = numpy.zeros((sums.frame_sums.shape[0], nb), dtype=sums.frame_sums.dtype)
    full = binning.n_groups_per_bin > 0
    if full.any():
        starts = binning.bin_sub_offsets[:-1][full]
        if sums.n2.dtype.kind in "iu":
            for i in numpy.flatnonzero(full):
                s0, s1 = int(binning.bin_sub_offsets[i]), int(binning.bin_sub_offsets[i + 1])
                numpy.add.reduce(sums.n2[s0:s1], axis=0, out=n2[i])
        else:
            n2[full] = numpy.add.reduceat(sums.n2, starts, axis=0)
        fs[:, full] = numpy.add.reduceat(sums.frame_sums, starts, axis=1)
    return n2, fs


def _warm_types(a: numpy.ndarray, contiguous: bool = False) -> bool:
    """Whether ``a`` has the array type the numba kernels were loaded for (:func:`warm_numba`;
    another one would be compiled on the caller's thread, for seconds)."""
    return bool(a.flags.aligned and a.flags.writeable
                and (a.flags.c_contiguous or not contiguous))


#: Group rows × lags from which :func:`normalise` takes the jackknife with the fused numba kernel
#: (:mod:`ewoksxpcs.engine.normalise_numba`, same bits) rather than NumPy, once
#: :func:`warm_numba` has loaded it.
NUMBA_JACKKNIFE_SIZE = 1 << 18
#: Lags per block of that kernel (its G × 512 float64 scratch stays in L2).
NUMBA_LAGS = 512

_WARM_LOCK = threading.Lock()
_warm_started = False


def warm_numba() -> None:
    """Import :mod:`ewoksxpcs.engine.normalise_numba` in a background thread (once per process).

    Its kernels replace NumPy in :func:`normalise` for large results once they are loaded
    (numba's import and first call: ~0.7 s, on the thread that imports it): a backend calls
    this when a correlation of a large result (:data:`NUMBA_JACKKNIFE_SIZE`) starts, and the
    host works meanwhile (a GPU backend waits for its device). Until then, and without numba,
    normalisation takes the NumPy path, same bits. The thread is not a daemon (one stopped
    inside numba's initialisation at exit would abort the process): a process that ends
    sooner waits for it.
    """
    global _warm_started
    with _WARM_LOCK:
        if _warm_started:
            return
        _warm_started = True

    def load():
        try:
            import importlib

            importlib.import_module(".normalise_numba", __package__)
        except Exception:  # pragma: no cover - numba missing or broken: NumPy path
            pass

    threading.Thread(target=load, name="ewoksxpcs-numba-normalise", daemon=False).start()


def _numba_kernels():
    """:mod:`~ewoksxpcs.engine.normalise_numba` once loaded and warm, else None (never waits)."""
    module = sys.modules.get(__package__ + ".normalise_numba")
    return module if getattr(module, "READY", False) else None


def normalise(
    sums: CorrelationSums,
    binning: Binning,
    method: str = "",
    device: str = "cpu",
    s2_method: str = "auto",
    info: Optional[dict] = None,
    s2: Optional[list] = None,
    g2_rows: Optional[tuple] = None,
    bin_totals: Optional[tuple] = None,
    pairs: Optional[numpy.ndarray] = None,
) -> CorrelationResult:
    """Compute g2, its jackknife error, n2 and s2 per bin from per-sub-bin sums.

    Parameters
    ----------
    sums : CorrelationSums
        n2 (n_sub, n_lags) and frame sums (Nt, n_sub) from a correlator.
    binning : Binning
        The binning the sums were computed with.
    method, device : str
        Recorded in the result.
    s2_method : {"auto", "direct", "fft"}
        How the autocorrelations of the frame sums are computed (see
        :func:`ewoksxpcs.engine.autocorr.autocorrelate`); all are exact for integer data.
    s2 : list, optional
        ``s2_rows(sums.frame_sums, binning, sums.lags, s2_method)``, when already computed
        (a backend may compute it while its device works on n2).
    g2_rows : (g2, g2_err), optional
        (n_bins, n_lags) float64 each: g2 and its jackknife error computed by a device from the
        same sums and s2 with this function's operations in its order (the same bits:
        :mod:`ewoksxpcs.opencl.normalise`), before the few-pairs rule, which is applied here
        (unless ``pairs`` is given).
    bin_totals : (n2, frame_sums), optional
        ``bin_sums(sums, binning)``, when already computed (by a device that holds the sums;
        integer sums, exact in any order).
    pairs : ndarray, (n_bins, n_lags) float64, optional
        ``expected_pairs(s2, binning.n_pixels)``, given with ``g2_rows`` to which the device
        applied the few-pairs rule (:func:`undefined_lags`) already, with the same bits.
    """
    lags = numpy.asarray(sums.lags, dtype=numpy.int64)
    nb, nl = binning.n_bins, lags.size
    n2, frame_sums = bin_sums(sums, binning) if bin_totals is None else bin_totals
    if s2 is None and sums.s2 is not None and same_binning(sums.s2_binning, binning):
        s2 = sums.s2  # computed by the backend with the sums
    rows = s2_rows(sums.frame_sums, binning, lags, s2_method) if s2 is None else s2
    if len(rows) != nb:
        raise ValueError(f"s2 has {len(rows)} entries, the binning has {nb} bins")
    s2_list = []
    final = g2_rows is not None and pairs is not None  # the device's rows, rule applied
    if final:
        g2, g2_err = g2_rows[0], g2_rows[1]
    else:
        g2 = numpy.full((nb, nl), numpy.nan)
        g2_err = numpy.full((nb, nl), numpy.nan)
    fused = None
    if (sums.n2.size >= NUMBA_JACKKNIFE_SIZE and sums.n2.dtype in (numpy.int64, numpy.float64)
            and _warm_types(sums.n2, contiguous=True)):
        kernels = _numba_kernels()  # loaded by warm_numba(), or None: NumPy, same bits
        fused = None if kernels is None else kernels.jackknife_into
    for i in range(nb):
        s0, s1 = int(binning.bin_sub_offsets[i]), int(binning.bin_sub_offsets[i + 1])
        n_groups = s1 - s0
        if n_groups == 0:  # empty bin
            s2_list.append(numpy.zeros(nl, dtype=sums.frame_sums.dtype))
            continue
        c = rows[i]
        s2_list.append(c[0])
        if final:
            continue
        if g2_rows is not None:
            g2[i] = g2_rows[0][i]
            if n_groups > 1:
                g2_err[i] = g2_rows[1][i]
            continue
        npix = int(binning.n_pixels[i])
        with numpy.errstate(invalid="ignore", divide="ignore"):
            n2_bin = n2[i].astype(numpy.float64)
            g2[i] = npix * n2_bin / c[0].astype(numpy.float64)
            if n_groups > 1:
                n_g = binning.sub_n_pixels[s0:s1].astype(numpy.float64)
                if fused is not None and c.dtype == sums.n2.dtype and _warm_types(c):
                    # One pass, the same operations in the same order as below.
                    fused(g2_err[i], n2_bin, sums.n2[s0:s1], c, npix - n_g, NUMBA_LAGS)
                else:
                    n2_loo = n2_bin[None, :] - sums.n2[s0:s1].astype(numpy.float64)
                    g2_loo = (npix - n_g)[:, None] * n2_loo / c[1:].astype(numpy.float64)
                    g2_err[i] = jackknife_error(g2_loo)
    # Empty bins keep zero sums (exact dtypes stay), their g2 rows are NaN.
    if all(numpy.asarray(c).dtype.kind in "iu" for c in s2_list):
        s2 = numpy.stack(s2_list).astype(numpy.int64)
    else:
        s2 = numpy.stack([numpy.asarray(c, dtype=numpy.float64) for c in s2_list])
    if not final:
        pairs = expected_pairs(s2, binning.n_pixels)
        undefined_lags(g2, g2_err, n2, pairs, counts=sums.n2.dtype.kind in "iu")
    return CorrelationResult(
        g2=g2,
        g2_err=g2_err,
        n2=n2,
        s2=s2,
        lags=lags,
        labels=binning.labels.copy(),
        n_pixels=binning.n_pixels.copy(),
        frame_sums=frame_sums,
        n_frames=sums.n_frames,
        method=method,
        device=device,
        sums=sums,
        info=dict(info or {}),
        expected_pairs=pairs,
    )
