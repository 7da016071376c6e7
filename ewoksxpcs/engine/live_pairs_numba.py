"""numba kernels of :mod:`ewoksxpcs.engine.live_pairs`: a chunk's events, and their pairs with
themselves and with the earlier segments into lag histograms, one sub-bin per parallel task (each
task writes its own row of n2).

Imported on first use (compiled once, cached on disk beside this module).
"""

from __future__ import annotations

import numba
import numpy

__all__ = ["scan_block", "fill_block", "pairs_new", "merge_segments", "diagonal_moments"]


@numba.njit(cache=True, parallel=True)
def scan_block(block, sub_offsets, counts, totals, frame_sums):
    """Pass 1 over a gathered block (n, P): non-zero values per pixel, Σ|v| per pixel, and the
    per-frame sub-bin sums.

    Parameters
    ----------
    block : ndarray (n, P)
        Binned pixels of the new frames, in sub-bin order (native type).
    sub_offsets : ndarray (n_sub + 1,) int64
    counts : ndarray (P,) int64
        Out: non-zero values of each pixel in the block.
    totals : ndarray (P,) float64
        Σ |v| of each pixel so far (for the int64 range check); updated.
    frame_sums : ndarray (n, n_sub) int64 or float64
        Out: Σ of each sub-bin in each frame.
    """
    n = block.shape[0]
    for s in numba.prange(sub_offsets.size - 1):
        p0, p1 = sub_offsets[s], sub_offsets[s + 1]
        for q in range(p0, p1):
            counts[q] = 0
        for t in range(n):
            total = frame_sums.dtype.type(0)
            for q in range(p0, p1):
                v = block[t, q]
                total += v
                if v != 0:
                    counts[q] += 1
                    totals[q] += abs(numpy.float64(v))
            frame_sums[t, s] = total


@numba.njit(cache=True, parallel=True)
def fill_block(block, sub_offsets, t0, offsets, values, times):
    """Pass 2: the non-zero values of pixel q to values/times[offsets[q] …] (times from t0)."""
    n = block.shape[0]
    for s in numba.prange(sub_offsets.size - 1):
        p0, p1 = sub_offsets[s], sub_offsets[s + 1]
        pos = offsets[p0:p1].copy()
        for t in range(n):
            for q in range(p0, p1):
                v = block[t, q]
                if v != 0:
                    k = pos[q - p0]
                    values[k] = v
                    times[k] = t0 + t
                    pos[q - p0] = k + 1


@numba.njit(cache=True, parallel=True)
def pairs_new(values, times, offsets, active, active_offsets, a_values, a_times, a_offsets,
              within, two_time, dst, col0=0):
    """Add v_i·v_j for the pairs of a pixel's events where j is new: those with the events i of
    an earlier segment ``a`` (all of whose frames come before the chunk's), and with ``within``
    the pairs i ≤ j of the new events themselves; to dst[s, 0, t_j − t_i] (linear n2), or with
    ``two_time`` to dst[s, t_i, t_j − col0] (Gram matrices: t_i ≤ t_j, the upper triangle; the
    columns from ``col0``, the first new time bin).

    Parameters
    ----------
    values : ndarray (E,) int64 or float64 (dst's type)
    times : ndarray (E,) int32
        Frame (or time bin) of each event, ascending within a pixel.
    offsets : ndarray (P + 1,) int64
        Pixel q's new events are offsets[q] … offsets[q+1] − 1.
    active : ndarray (A,) int64
        The pixels with new events, ascending.
    active_offsets : ndarray (n_groups + 1,) int64
        Group s's active pixels are active[active_offsets[s] …] (one group per task: each task
        writes only its own dst[s]).
    a_values, a_times, a_offsets
        The earlier segment, as values/times/offsets (empty: only the pairs ``within``).
    within, two_time : bool
    dst : ndarray (n_groups, 1, ≥ Nt) or (n_groups, ≥ nT, ≥ nT − col0), int64 or float64
        Updated in place.
    col0 : int
        Two-time: time bin of dst's first column.
    """
    for s in numba.prange(active_offsets.size - 1):
        g = dst[s]
        for a in range(active_offsets[s], active_offsets[s + 1]):
            q = active[a]
            e0, e1 = offsets[q], offsets[q + 1]
            i0 = e0 if within else e1
            for i in range(i0, e1):  # the new events' pairs among themselves
                ti = times[i]
                row, shift = (g[ti], col0) if two_time else (g[0], ti)
                vi = values[i]
                for j in range(i, e1):
                    row[times[j] - shift] += vi * values[j]
            a1 = a_offsets[q + 1] if a_offsets.size else 0
            for i in range(a_offsets[q] if a_offsets.size else 0, a1):  # with earlier events
                ti = a_times[i]
                row, shift = (g[ti], col0) if two_time else (g[0], ti)
                vi = a_values[i]
                for j in range(e0, e1):
                    row[times[j] - shift] += vi * values[j]


@numba.njit(cache=True, parallel=True)
def merge_segments(a_values, a_times, a_offsets, b_values, b_times, b_offsets, offsets, values,
                   times):
    """One segment of two consecutive ones: pixel q's events of a, then those of b, at
    ``offsets`` (a_offsets + b_offsets)."""
    for q in numba.prange(offsets.size - 1):
        k = offsets[q]
        for i in range(a_offsets[q], a_offsets[q + 1]):
            values[k] = a_values[i]
            times[k] = a_times[i]
            k += 1
        for i in range(b_offsets[q], b_offsets[q + 1]):
            values[k] = b_values[i]
            times[k] = b_times[i]
            k += 1



@numba.njit(cache=True, parallel=True)
def diagonal_moments(C, c0, c1, block, tot1, tot2, cnt, part1, part2, current):
    """Add the entries C[s, i, c] of columns c0 … c1 − 1 (rows i ≤ c) to the moments of their
    upper diagonals τ = c − i: Σ v, Σ v² and the count of the finite values v (float64 of the
    float32 maps), in the order of :func:`ewoksxpcs.engine.twotime._diagonal_sums` (each
    diagonal's entries in row order, summed per block of ``block`` rows, the block sums added
    in turn), so that columns fed in any runs give the same float64 sums as that function.

    Parameters
    ----------
    C : ndarray (n_sel, ≥ c1, ≥ c1) float32
        Maps (a view may be given: sub-maps of age segments).
    c0, c1 : int
        Columns to add (the earlier ones were added before).
    block : int
        Rows per block of the order reproduced.
    tot1, tot2 : ndarray (n_sel, ≥ c1) float64
        Σ v and Σ v² of the closed blocks of each diagonal; updated.
    cnt : ndarray (n_sel, ≥ c1) int64
        Finite entries of each diagonal; updated.
    part1, part2 : ndarray (n_sel, ≥ c1) float64
        The same sums in the block being filled (the sums are tot + part); updated.
    current : ndarray (n_sel, ≥ c1) int64
        Block being filled of each diagonal (−1 at the start); updated.
    """
    for s in numba.prange(C.shape[0]):
        for i in range(c1):  # row-major: each diagonal's entries still come in row order
            k = i // block
            for c in range(max(c0, i), c1):
                tau = c - i
                if current[s, tau] != k:  # the diagonal enters a new block of rows
                    tot1[s, tau] += part1[s, tau]
                    tot2[s, tau] += part2[s, tau]
                    part1[s, tau] = 0.0
                    part2[s, tau] = 0.0
                    current[s, tau] = k
                v = numpy.float64(C[s, i, c])
                if numpy.isfinite(v):
                    part1[s, tau] += v
                    part2[s, tau] += v * v
                    cnt[s, tau] += 1
