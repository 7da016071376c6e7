"""numba kernel of :func:`ewoksxpcs.engine.normalise.normalise`: the jackknife of one bin, fused.

Imported on first use by large normalisations (numba compiles it once; the machine code is
cached on disk beside this module). Same floating-point operations, in the same order, as the
NumPy path of :func:`~ewoksxpcs.engine.normalise.normalise`, so both give the same bits: one
pass over the group rows of n2 and s2 instead of nine (1.2 ms instead of ~5 for 16 groups ×
10 000 lags × 10 bins on one core of this project's 2-core machine; the whole normalisation
from 9.3 to 5.6 ms).
"""

from __future__ import annotations

import math

import numba
import numpy

__all__ = ["jackknife_into"]


# Serial: a parallel region of a millisecond waits for its slowest thread, 70 ms when
# another process holds a core (measured on 2 shared cores). x / 0: inf or NaN, no raise.
@numba.njit(cache=True, nogil=True, error_model="numpy")
def jackknife_into(err, n2_bin, n2_sub, c, factor, block):
    """g2_err (before the few-pairs rule) of one bin of G ≥ 2 groups, into ``err``.

    Parameters
    ----------
    err : ndarray, (n_lags,) float64
        Output.
    n2_bin : ndarray, (n_lags,) float64
        n2 of the bin.
    n2_sub : ndarray, (G, n_lags) int64 or float64
        n2 of its groups.
    c : ndarray, (1 + G, n_lags) int64 or float64
        s2 rows of the bin (:func:`~ewoksxpcs.engine.normalise.s2_rows`), any strides.
    factor : ndarray, (G,) float64
        N_q − N_g: pixels of the bin without each group.
    block : int
        Lags per block (its G × block float64 scratch stays in L2).
    """
    n_groups, n_lags = n2_sub.shape
    scale = (n_groups - 1) / n_groups
    for k in range((n_lags + block - 1) // block):
        a = k * block
        n = min(n_lags, a + block) - a
        # Row slices of the block, loops over lags innermost: SIMD (indexing the 2-D arrays
        # at a + t inside the loops ran 4x slower).
        nb = n2_bin[a: a + n]
        loo = numpy.empty((n_groups, n))
        for g in range(n_groups):  # g2 without group g
            f = factor[g]
            row, n2g, cg = loo[g], n2_sub[g, a: a + n], c[1 + g, a: a + n]
            for t in range(n):
                row[t] = f * (nb[t] - numpy.float64(n2g[t])) / numpy.float64(cg[t])
        m = loo[0].copy()  # numpy's mean over axis 0: rows added in order, then / G
        for g in range(1, n_groups):
            row = loo[g]
            for t in range(n):
                m[t] += row[t]
        for t in range(n):
            m[t] = m[t] / n_groups
        s = numpy.empty(n)
        row = loo[0]
        for t in range(n):
            d = row[t] - m[t]
            s[t] = d * d
        for g in range(1, n_groups):
            row = loo[g]
            for t in range(n):
                d = row[t] - m[t]
                s[t] += d * d
        out = err[a: a + n]
        for t in range(n):
            out[t] = math.sqrt(scale * s[t])


def _warm() -> None:
    """Load the kernel's cached machine code for the usual argument types (int64 or float64
    sums, s2 rows contiguous as the device gives them or strided as the host's FFTs do): the
    first call of a process costs ~0.4 s (numba's code generator starting), paid here, in the
    thread that imports this module (:func:`ewoksxpcs.engine.normalise.warm_numba`)."""
    err, nb, factor = numpy.empty(3), numpy.ones(3), numpy.ones(2)
    for dtype in (numpy.int64, numpy.float64):
        sub = numpy.ones((2, 3), dtype)
        c = numpy.ones((3, 3), dtype)
        strided = numpy.ones((3, 6), dtype)[:, ::2]  # numba layouts C, F and A
        for rows in (c, numpy.asfortranarray(c), strided):
            jackknife_into(err, nb, sub, rows, factor, 2)


_warm()
#: Set once the kernels are loaded: :func:`ewoksxpcs.engine.normalise.normalise` uses them only
#: then (never waiting for numba on the caller's thread).
READY = True
