"""numba kernel of the streaming multi-tau sums of integer frames: every level of a sub-bin in
one pass, while its pixels are in the cache.

Imported on first use (compiled once, cached on disk beside this module). Used by
:class:`ewoksxpcs.engine.multitau.IntMultiTauAccumulator`; its int64 sums are exact whatever the
order of the additions, so they equal those of the NumPy lag-by-lag loop
(:class:`ewoksxpcs.engine.multitau.MultiTauAccumulator`).
"""

from __future__ import annotations

import numba
import numpy

__all__ = ["feed_levels"]


@numba.njit(cache=True, parallel=True)
def feed_levels(block, sub_offsets, m, counts, carry_in, n_levels, max_levels, tails,
                carry, acc, frame_sums, vmax):
    """Feed ``n`` frames into the multi-tau levels, one sub-bin per parallel task.

    Parameters
    ----------
    block : ndarray (n, P) of integers
        The binned pixels of the new frames (native dtype), gathered in sub-bin order
        (:attr:`~ewoksxpcs.engine.qmask.Binning.pixel_index`: ``numpy.take`` reads each frame
        once, where a gather per sub-bin would read the frames' cache lines once per pixel
        group).
    sub_offsets : ndarray (n_sub + 1,) int64
        Sub-bin boundaries in the gathered order.
    m : int
        Lags per level (even).
    counts, carry_in : ndarray (n_levels,) int64
        Per level: its frames before this feed, and whether its carry row
        (an odd frame waiting for its partner) is set (0/1); the same for every sub-bin.
    n_levels : int
        Levels that get new frames (at most the first dimension of ``tails``).
    max_levels : int
        No level at or past it (no carry is kept for the last one).
    tails : typed list of ndarray (m − 1, P) int64, one per level (at least ``n_levels``)
        Ring of the last m − 1 frames of each level (level frame g in row g % (m − 1));
        updated.
    carry : typed list of ndarray (P,) int64, one per level
        Carry rows; updated.
    acc : ndarray (L, n_sub, m) int64
        n2 per level, sub-bin and lag (in level frames); updated.
    frame_sums : ndarray (n, n_sub) int64
        Out: per-frame sums of each sub-bin.
    vmax : ndarray (n_sub,) int64
        Largest |value| of each sub-bin so far (for the int64 range check); updated.
    """
    n = block.shape[0]
    ring = m - 1  # slots: level frame g is in slot g % ring
    for s in numba.prange(sub_offsets.size - 1):
        p0, p1 = sub_offsets[s], sub_offsets[s + 1]
        w = p1 - p0
        cur = numpy.empty((n, w), dtype=numpy.int64)
        tot = numpy.zeros(m, dtype=numpy.int64)
        top = vmax[s]
        nonzero = 0
        for t in range(n):
            total = numpy.int64(0)
            for q in range(w):
                v = numpy.int64(block[t, p0 + q])
                cur[t, q] = v
                total += v
                top = max(top, abs(v))
                nonzero += v != 0
            frame_sums[t, s] = total
        vmax[s] = top
        n_cur = n
        for L in range(n_levels):
            c0 = counts[L]  # level frames before this feed
            tail = tails[L]
            carry_row = carry[L]
            k0 = 0 if L == 0 else m // 2
            sparse = 4 * nonzero < n_cur * w
            for i in range(n_cur):
                g = c0 + i
                b = cur[i]
                for k in range(k0, min(m, g + 1)):
                    # the earlier frame: new (in cur) or from the ring of the last ones
                    if i - k >= 0:
                        a = cur[i - k]
                    else:
                        a = tail[(g - k) % ring, p0:p1]
                    total = numpy.int64(0)
                    if sparse:  # photon counting: mostly zeros
                        for q in range(w):
                            if b[q] != 0:
                                total += a[q] * b[q]
                    else:
                        for q in range(w):
                            total += a[q] * b[q]
                    tot[k] += total
            for k in range(k0, m):
                acc[L, s, k] += tot[k]
                tot[k] = 0
            for i in range(max(0, n_cur - ring), n_cur):
                g = c0 + i
                for q in range(w):
                    tail[g % ring, p0 + q] = cur[i, q]
            if L + 1 >= max_levels:
                break
            # Level L + 1: sums of consecutive pairs of (carry, new frames); an odd one waits.
            c = carry_in[L]
            z_len = c + n_cur
            n_pairs = z_len // 2
            nxt = numpy.empty((n_pairs, w), dtype=numpy.int64)
            nonzero = 0
            for i in range(n_pairs):
                a_i, b_i = 2 * i - c, 2 * i + 1 - c  # rows of cur (−1: the carry)
                for q in range(w):
                    va = carry_row[p0 + q] if a_i < 0 else cur[a_i, q]
                    v = va + cur[b_i, q]
                    nxt[i, q] = v
                    nonzero += v != 0
            if z_len % 2 and n_cur > 0:
                for q in range(w):
                    carry_row[p0 + q] = cur[n_cur - 1, q]
            cur = nxt
            n_cur = n_pairs
            if n_cur == 0:
                break
