"""The int64 range of exact integer sums: one bound check shared by every method.

Integer frames give exact int64 sums. A sum that could leave the int64 range would wrap around
silently (NumPy and OpenCL integers do), so every method checks an upper bound of its sums
and refuses (ValueError) when the bound reaches the range; the message names the q bin, the
bound and the limit. The bounds:

- n2(k, τ) of a sub-bin k: |n2(k, τ)| ≤ n2(k, 0) = Σ_t Σ_{p∈k} I(t, p)² (Cauchy–Schwarz),
  taken exactly in float64 where the values are at hand, else as max I · Σ I (non-negative
  counts) or (max |I|)²·Nt·N_k;
- s2(q, τ) = Σ_t S(t, q)·S(t+τ, q) of the bin sums S: (max |S|)²·Nt below 2⁶² (the margin of
  the exact FFT autocorrelation of :mod:`ewoksxpcs.engine.autocorr`);
- multi-tau n2 of level L: 2^L · max |I| · Σ |I|;
- two-time: a time bin of b frames, the dtype's largest value × b; S(T, q), max |X| × N_q.

float32 frames are summed in float64 (not exact, no such limit): converting integer frames to
float32 is the way past a refusal.
"""

from __future__ import annotations

from typing import Optional

import numpy

__all__ = ["INT64_LIMIT", "S2_LIMIT", "check_int64_bound", "square_sums", "peak_bound"]

#: float64 estimates of a sum are trusted below this (their relative rounding is far below 1e-9).
INT64_LIMIT = 2.0**63 * (1 - 1e-9)
#: Bound of (max |S|)²·Nt below which the exact FFT autocorrelation (s2) is taken in int64.
S2_LIMIT = 2**62

_HINT = ("integer sums would wrap around; convert the frames to float32 for float64 sums "
         "(not exact) or correlate fewer frames")


def check_int64_bound(bound, binning=None, what: str = "n2", limit: float = INT64_LIMIT,
                      how: str = "Σ I² over its pixels and frames",
                      sub_bins: bool = True, labels=None) -> None:
    """Raise ValueError if an upper bound of an integer sum reaches the int64 range.

    Parameters
    ----------
    bound : float or array_like of float
        Upper bound(s) of |sum|, one per sub-bin (``sub_bins``) or per bin of ``binning``, or
        one number.
    binning : Binning, optional
        Names the q bin of the first bound over the limit.
    what : str
        The sum's name in the message ("n2", "s2", "multi-tau n2" …).
    limit : float
        The largest allowed bound (default just below 2⁶³).
    how : str
        How the bound was taken (for the message).
    sub_bins : bool
        Whether ``bound`` has one entry per sub-bin (else per bin) of ``binning``.
    labels : array_like of int, optional
        q labels of the entries of ``bound`` (instead of ``binning``).
    """
    bound = numpy.atleast_1d(numpy.asarray(bound, dtype=numpy.float64))
    over = numpy.flatnonzero(~(bound < limit))  # NaN counts as over
    if not over.size:
        return
    k = int(over[numpy.argmax(bound[over])])
    where = ""
    if labels is not None:
        where = f" of q bin {int(numpy.asarray(labels)[k])}"
    elif binning is not None and bound.size == (binning.n_sub if sub_bins else binning.n_bins):
        i = int(binning.sub_bin[k]) if sub_bins else k
        where = f" of q bin {int(binning.labels[i])}"
    raise ValueError(
        f"{what}{where} can reach {bound[k]:.4g} ({how}), beyond the int64 range of exact "
        f"integer sums (bound limit {limit:.4g}; int64 ends at 2^63 = 9.223e18): {_HINT}"
    )


def square_sums(block: numpy.ndarray, offsets) -> numpy.ndarray:
    """Σ x² over the rows and each column segment of ``block``, in float64.

    Parameters
    ----------
    block : ndarray, (n, n_columns)
        Gathered pixel values (columns of sub-bin k are ``offsets[k]:offsets[k+1]``).
    offsets : array_like of int, (n_sub + 1,)

    Returns
    -------
    ndarray, (n_sub,) float64
        Relative rounding error below 1e-12 (pairwise float64 sums).
    """
    offsets = numpy.asarray(offsets, dtype=numpy.int64)
    n_sub = offsets.size - 1
    if block.size == 0 or n_sub == 0:
        return numpy.zeros(n_sub)
    a = block.astype(numpy.float64)
    col = numpy.einsum("tp,tp->p", a, a)
    csum = numpy.concatenate([[0.0], numpy.cumsum(col)])
    return csum[offsets[1:]] - csum[offsets[:-1]]


def peak_bound(peak: float, totals, n_frames: int, n_pixels,
               non_negative: bool) -> numpy.ndarray:
    """Upper bound of Σ I² per sub-bin from the largest |value| (float64, (n_sub,)).

    Parameters
    ----------
    peak : float
        Largest |I| of the binned pixels.
    totals : array_like of float, (n_sub,)
        Σ_t Σ_p I per sub-bin (used when ``non_negative``: Σ I² ≤ max I · Σ I).
    n_frames : int
    n_pixels : array_like of int, (n_sub,)
        Pixels per sub-bin (Σ I² ≤ max|I|²·Nt·N_k).
    non_negative : bool
    """
    peak = float(peak)
    bound = peak * peak * float(n_frames) * numpy.asarray(n_pixels, dtype=numpy.float64)
    if non_negative and totals is not None:
        bound = numpy.minimum(bound, peak * numpy.asarray(totals, dtype=numpy.float64))
    return bound


def s2_bound(series: numpy.ndarray) -> float:
    """(max |S|)²·Nt of integer series (..., Nt): the bound :data:`S2_LIMIT` applies to."""
    if series.dtype.kind not in "iu" or not series.size:
        return 0.0
    peak = float(numpy.abs(series).max())
    return peak * peak * series.shape[-1]


def check_s2(series: numpy.ndarray, labels: Optional[numpy.ndarray] = None,
             label=None) -> None:
    """Raise ValueError if the exact autocorrelation (s2) of integer series could leave int64."""
    check_int64_bound(s2_bound(series), what="s2", limit=S2_LIMIT,
                      how="(max S)²·Nt of the bin's frame sums S",
                      labels=None if label is None else [label])
