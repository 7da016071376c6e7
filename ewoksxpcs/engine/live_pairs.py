"""Sums of event pairs updated as frames arrive: each chunk's events paired with the earlier ones.

Linear g2: n2[k, τ] = Σ_{p ∈ sub-bin k} Σ_{events i ≤ j of p, t_j − t_i = τ} v_i·v_j (the sum of
:class:`~ewoksxpcs.engine.result.CorrelationSums`) is additive over the pairs, so it can be built
while the scan runs (:class:`LivePairs`): a chunk of frames is compacted to its non-zero values
(events, pixel-major), its pairs with itself and with every earlier event of the same pixel are
added to n2, and a result of the frames so far is n2 as it stands. The work is that of
``cpu-events``, Σ_p n_p²/2 pairs, spread over the scan; the end of the scan only normalises.
Two-time: the Gram matrices G[T1, T2] = Σ_{p ∈ bin} X(T1, p)·X(T2, p) of the binned frames are
built the same way, a block of new rows at a time (:class:`LiveGram`).

The earlier events are kept in a few *segments* (pixel-major arrays of consecutive frames):
a new chunk is paired with each segment, then becomes a segment itself, and two neighbouring
segments of equal length in frames are merged (as a binary counter), so that there are
O(log(chunks)) segments and each event is copied O(log(chunks)) times.

Integer frames give exact int64 sums, whatever the chunking: equal to those of every offline
backend on the finished data. Float frames give float64 sums, equal up to rounding.
"""

from __future__ import annotations

from typing import List, Tuple

import numpy

from .qmask import Binning
from .result import CorrelationSums

__all__ = ["LivePairs", "LiveGram"]

#: (values, times, offsets, n_frames) of a segment.
Segment = Tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray, int]


class _LiveEvents:
    """Events of the rows fed so far in segments; each new block's pairs handed to
    :meth:`_pair` (subclasses: where the products go).

    Parameters
    ----------
    col_offsets : ndarray (n_groups + 1,) int64
        Columns of each group (sub-bin, or selected bin) in the blocks fed.
    dtype : numpy.dtype
        Type of the values fed.
    """

    def __init__(self, col_offsets, dtype):
        self.dtype = numpy.dtype(dtype)
        self.integer = self.dtype.kind in "iub"
        self.acc_dtype = numpy.dtype(numpy.int64 if self.integer else numpy.float64)
        self.col_offsets = numpy.ascontiguousarray(col_offsets, dtype=numpy.int64)
        self.n_frames = 0
        self._frame_sums: List[numpy.ndarray] = []
        self._segments: List[Segment] = []
        # Σ_p (Σ_t |v|)² bounds every sum of products: below 2^62 int64 cannot overflow.
        self._pixel_totals = numpy.zeros(int(self.col_offsets[-1]), dtype=numpy.float64)

    @property
    def n_events(self) -> int:
        return sum(seg[0].size for seg in self._segments)

    def feed_block(self, block: numpy.ndarray) -> None:
        """Take the next rows, a gathered block (n, n_columns) of the given dtype."""
        from .live_pairs_numba import fill_block, merge_segments, scan_block

        n = block.shape[0]
        if n == 0:
            return
        t0 = self.n_frames
        if t0 + n >= 2**31:
            raise ValueError("live correlation: more than 2^31 frames")
        block = numpy.ascontiguousarray(block)
        n_cols = block.shape[1]
        counts = numpy.empty(n_cols, dtype=numpy.int64)
        frame_sums = numpy.empty((n, self.col_offsets.size - 1), dtype=self.acc_dtype)
        scan_block(block, self.col_offsets, counts, self._pixel_totals, frame_sums)
        if self.integer and float(numpy.dot(self._pixel_totals, self._pixel_totals)) >= 2.0**62:
            raise ValueError("live correlation: the sums of products could exceed the int64 "
                             "range")
        offsets = numpy.zeros(n_cols + 1, dtype=numpy.int64)
        numpy.cumsum(counts, out=offsets[1:])
        # In the accumulator's type: the kernels' products are then int64 (or float64).
        values = numpy.empty(int(offsets[-1]), dtype=self.acc_dtype)
        times = numpy.empty(int(offsets[-1]), dtype=numpy.int32)
        fill_block(block, self.col_offsets, t0, offsets, values, times)
        self._frame_sums.append(frame_sums)
        self.n_frames += n
        self._grow(self.n_frames)
        active = numpy.flatnonzero(counts)
        if active.size:
            active_offsets = numpy.searchsorted(active, self.col_offsets).astype(numpy.int64)
            none = numpy.zeros(0, dtype=numpy.int64)
            # The pairs within the block with the first segment (or alone), then the others.
            for g in range(max(1, len(self._segments))):
                seg = (self._segments[g] if self._segments
                       else (values[:0], times[:0], none, 0))
                self._pair(values, times, offsets, active, active_offsets, seg, g == 0)
        self._segments.append((values, times, offsets, n))
        while len(self._segments) >= 2 and self._segments[-1][3] >= self._segments[-2][3]:
            b = self._segments.pop()
            a = self._segments.pop()
            merged_offsets = a[2] + b[2]
            size = int(merged_offsets[-1])
            merged_values = numpy.empty(size, dtype=self.acc_dtype)
            merged_times = numpy.empty(size, dtype=numpy.int32)
            merge_segments(a[0], a[1], a[2], b[0], b[1], b[2], merged_offsets, merged_values,
                           merged_times)
            self._segments.append((merged_values, merged_times, merged_offsets, a[3] + b[3]))

    def frame_sums(self) -> numpy.ndarray:
        """Sums of each group in each row so far, (n_frames, n_groups)."""
        fs = (numpy.concatenate(self._frame_sums) if self._frame_sums
              else numpy.zeros((0, self.col_offsets.size - 1), dtype=self.acc_dtype))
        if len(self._frame_sums) > 1:
            self._frame_sums = [fs]  # concatenated once
        return fs

    def _grow(self, n_frames: int) -> None:
        raise NotImplementedError

    def _pair(self, values, times, offsets, active, active_offsets, seg, within) -> None:
        raise NotImplementedError


class LivePairs(_LiveEvents):
    """The linear sums n2 and frame sums of the frames fed so far.

    Parameters
    ----------
    binning : Binning
    dtype : numpy.dtype
        Pixel type of the frames.

    Memory: the events (values int64 or float64, times int32: 12 bytes) and n2 (n_sub, Nt).
    """

    def __init__(self, binning: Binning, dtype):
        super().__init__(binning.sub_offsets, dtype)
        self.binning = binning
        self._n2 = numpy.zeros((binning.n_sub, 64), dtype=self.acc_dtype)

    def feed(self, chunk: numpy.ndarray) -> None:
        """Take the next frames, (n, Ny, Nx) of the given dtype."""
        n = chunk.shape[0]
        self.feed_block(numpy.take(chunk.reshape(n, -1), self.binning.pixel_index, axis=1))

    def _grow(self, n_frames: int) -> None:
        if self._n2.shape[1] < n_frames:  # room for the lags, doubled as the scan grows
            grown = numpy.zeros((self._n2.shape[0], max(2 * self._n2.shape[1], n_frames)),
                                dtype=self.acc_dtype)
            grown[:, : self._n2.shape[1]] = self._n2
            self._n2 = grown

    def _pair(self, values, times, offsets, active, active_offsets, seg, within) -> None:
        from .live_pairs_numba import pairs_new

        pairs_new(values, times, offsets, active, active_offsets, seg[0], seg[1], seg[2],
                  within, False, self._n2[:, None, :])

    def sums(self) -> CorrelationSums:
        """The sums of the frames fed so far (feeding may go on)."""
        return CorrelationSums(n2=self._n2[:, : self.n_frames].copy(),
                               frame_sums=self.frame_sums(),
                               lags=numpy.arange(self.n_frames, dtype=numpy.int64))


class LiveGram(_LiveEvents):
    """Two-time Gram matrices of binned frames fed a block of rows at a time.

    Parameters
    ----------
    col_offsets : ndarray (n_sel + 1,) int64
        Columns of each selected bin (:func:`~ewoksxpcs.engine.twotime.select_bins`).
    dtype : numpy.dtype
        Type of the binned frames.

    Memory: the events, and G, n_sel × nT² × 8 bytes (capacity doubled as nT grows).
    """

    def __init__(self, col_offsets, dtype):
        super().__init__(col_offsets, dtype)
        self._G = numpy.zeros((self.col_offsets.size - 1, 0, 0), dtype=self.acc_dtype)

    def _grow(self, n_frames: int) -> None:
        cap = self._G.shape[1]
        if cap < n_frames:
            new = max(2 * cap, n_frames, 64)
            grown = numpy.zeros((self._G.shape[0], new, new), dtype=self.acc_dtype)
            grown[:, :cap, :cap] = self._G
            self._G = grown

    def _pair(self, values, times, offsets, active, active_offsets, seg, within) -> None:
        from .live_pairs_numba import pairs_new

        pairs_new(values, times, offsets, active, active_offsets, seg[0], seg[1], seg[2],
                  within, True, self._G)

    def gram(self, j: int) -> numpy.ndarray:
        """G of selected bin j (nT, nT): its upper triangle, diagonal included (a view)."""
        return self._G[j, : self.n_frames, : self.n_frames]
