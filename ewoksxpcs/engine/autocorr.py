"""Exact autocorrelation of time series, all lags: c[τ] = Σ_{t=0}^{Nt-1-τ} a[t]·a[t+τ].

Used for the denominator s2(q, τ) = Σ_t S(t, q)·S(t+τ, q) from the per-frame bin sums S, and
for the jackknife error bars. Integer series give exact int64 results: the FFT is applied to
pieces of at most ``B`` bits each (a = Σ_i 2^(B·i)·a_i), chosen so that every piece's correlation
is below 2^PRECISION_BITS and rounds exactly to the integer it approximates; the pieces'
correlations are combined in int64. Short series use direct dot products.
"""

from __future__ import annotations

import math

import numpy

from .lazy_imports import import_module

# scipy.fft: multi-threaded and any 5-smooth length (a dependency; imported on first use, it
# costs ~0.2 s of start-up).


def _rfft(a, n):
    return import_module("scipy.fft").rfft(a, n, axis=-1, workers=-1)


def _irfft(f, n):
    return import_module("scipy.fft").irfft(f, n, axis=-1, workers=-1)


def _nfft(n):
    return import_module("scipy.fft").next_fast_len(2 * n - 1, real=True)


__all__ = ["autocorrelate"]

#: FFT results below 2**PRECISION_BITS are rounded to exact integers. float64 has 53 bits; the
#: margin covers the FFT's rounding growth (~ eps·log2(n) relative to the largest term).
PRECISION_BITS = 40

#: Series up to this many samples use direct dot products (O(Nt²), exact in any case).
DIRECT_MAX_FRAMES = 64


def _direct(a: numpy.ndarray) -> numpy.ndarray:
    n = a.shape[-1]
    out = numpy.empty(a.shape, dtype=a.dtype)
    for tau in range(n):
        out[..., tau] = numpy.einsum("...t,...t->...", a[..., : n - tau], a[..., tau:])
    return out


def _fft_real(a: numpy.ndarray) -> numpy.ndarray:
    n = a.shape[-1]
    nfft = _nfft(n)
    f = _rfft(a, nfft)
    c = _irfft((f * f.conj()).real, nfft)[..., :n]
    # Values below the FFT's rounding error are zero (e.g. lags with no non-zero product):
    # keep them exactly 0, as direct sums give, so that 0/0 stays NaN downstream.
    tol = 16 * numpy.finfo(numpy.float64).eps * numpy.log2(nfft) * c[..., :1]
    c[numpy.abs(c) <= tol] = 0.0
    return c


def _fft_exact_int(a: numpy.ndarray) -> numpy.ndarray:
    """Exact int64 autocorrelation of int64 series by FFT on bit pieces."""
    n = a.shape[-1]
    amax = int(numpy.abs(a).max()) if a.size else 0
    if amax == 0:
        return numpy.zeros(a.shape, dtype=numpy.int64)
    # Largest B with n·(2^B)² < 2^PRECISION_BITS.
    bits = max(1, (PRECISION_BITS - math.ceil(math.log2(n + 1))) // 2)
    n_pieces = max(1, math.ceil(amax.bit_length() / bits))
    sign = numpy.sign(a)
    mag = numpy.abs(a)
    mask = (1 << bits) - 1
    pieces = numpy.stack(
        [sign * ((mag >> (bits * i)) & mask) for i in range(n_pieces)], axis=0
    ).astype(numpy.float64)
    nfft = _nfft(n)
    f = _rfft(pieces, nfft)
    out = numpy.zeros(a.shape, dtype=numpy.int64)
    for i in range(n_pieces):
        for j in range(i, n_pieces):
            prod = f[i].conj() * f[j]
            if i != j:
                # corr(a_i, a_j) + corr(a_j, a_i): both shifted by B·(i+j).
                prod = prod + prod.conj()
            c = _irfft(prod, nfft)[..., :n]
            out += numpy.rint(c).astype(numpy.int64) << (bits * (i + j))
    return out


def autocorrelate(a, method: str = "auto") -> numpy.ndarray:
    """Autocorrelation of each series over all lags.

    Parameters
    ----------
    a : array_like, shape (..., Nt)
        Series along the last axis. Integer input is computed exactly in int64 (the caller
        guarantees Nt·max|a|² < 2**63); float input in float64.
    method : {"auto", "direct", "fft"}
        "direct": dot products per lag, O(Nt²); "fft": zero-padded FFT (exact bit pieces for
        integers); "auto": direct for Nt <= DIRECT_MAX_FRAMES.

    Returns
    -------
    ndarray, shape (..., Nt)
        c[..., τ] = Σ_t a[..., t]·a[..., t+τ]; int64 for integer input, float64 otherwise.
    """
    a = numpy.asarray(a)
    is_int = a.dtype.kind in "iub"
    a = a.astype(numpy.int64 if is_int else numpy.float64, copy=False)
    n = a.shape[-1]
    if n == 0:
        return a.copy()
    if method == "auto":
        method = "direct" if n <= DIRECT_MAX_FRAMES else "fft"
    if method == "direct":
        return _direct(a)
    if method != "fft":
        raise ValueError(f"unknown autocorrelation method {method!r}")
    return _fft_exact_int(a) if is_int else _fft_real(a)
