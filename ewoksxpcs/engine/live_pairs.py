"""Sums of event pairs updated as frames arrive: each chunk's events paired with the earlier ones.

Linear g2: n2[k, τ] = Σ_{p ∈ sub-bin k} Σ_{events i ≤ j of p, t_j − t_i = τ} v_i·v_j (the sum of
:class:`~ewoksxpcs.engine.result.CorrelationSums`) is additive over the pairs, so it can be built
while the scan runs (:class:`LivePairs`): a chunk of frames is compacted to its non-zero values
(events, pixel-major), its pairs with itself and with every earlier event of the same pixel are
added to n2, and a result of the frames so far is n2 as it stands. The work is that of
``cpu-events``, Σ_p n_p²/2 pairs, spread over the scan; the end of the scan only normalises.
Two-time: the Gram matrices G[T1, T2] = Σ_{p ∈ bin} X(T1, p)·X(T2, p) of the binned frames are
built the same way, a block of new rows at a time, and turned at once into the maps' new columns
and the g2's diagonal sums (:class:`LiveGram`).

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
    """Two-time maps of binned frames fed a block of rows (time bins) at a time.

    A block of new time bins [t0, t1) changes only the Gram entries G[T1, T2] with T2 in the
    block (G[T1, T2] = Σ_p X(T1, p)·X(T2, p) needs nothing but time bins T1 and T2): those
    columns are computed from the block's event pairs (a (n_sel, t1, t1 − t0) int64 block, freed
    after), turned into the maps' columns C = N·G/(S·Sᵀ) (and their mirrored rows) with the
    float64 operations of :func:`~ewoksxpcs.engine.twotime.maps_from_gram`, and added to the
    moments of the maps' upper diagonals (the g2) in the order of
    :func:`~ewoksxpcs.engine.twotime.diagonal_means`: maps and g2 are always up to date, and
    equal bit for bit to the offline ones of the time bins so far. Only the g2 of the age
    segments, whose edges move with nT, is computed at a snapshot (:meth:`diagonal_sums`).

    Parameters
    ----------
    col_offsets : ndarray (n_sel + 1,) int64
        Columns of each selected bin (:func:`~ewoksxpcs.engine.twotime.select_bins`).
    dtype : numpy.dtype
        Type of the binned frames.

    Memory: the events, and the maps, n_sel × nT² float32 (capacity doubled as nT grows: only
    the nT² part of each map is touched).
    """

    def __init__(self, col_offsets, dtype):
        super().__init__(col_offsets, dtype)
        n_sel = self.col_offsets.size - 1
        self.n_pixels = numpy.diff(self.col_offsets)
        self._C = numpy.empty((n_sel, 0, 0), dtype=numpy.float32)
        # Moments of each upper diagonal: closed blocks of rows (tot), block being filled (part).
        self._moments = {name: numpy.zeros((n_sel, 0), dtype=numpy.float64)
                         for name in ("tot1", "tot2", "part1", "part2")}
        self._cnt = numpy.zeros((n_sel, 0), dtype=numpy.int64)
        self._current = numpy.zeros((n_sel, 0), dtype=numpy.int64)
        self._block = None
        self._col0 = 0

    def feed_block(self, block: numpy.ndarray) -> None:
        """Take the next rows, binned frames (n, n_columns) of the given dtype: the maps gain
        their columns (and rows)."""
        if block.shape[0] == 0:
            return
        self._col0 = t0 = self.n_frames
        super().feed_block(block)  # the block's pairs to self._block (made by _grow)
        try:
            self._add_columns(t0, self.n_frames)
        finally:
            self._block = None

    def _grow(self, n_frames: int) -> None:
        n_sel, cap = self._C.shape[0], self._C.shape[1]
        self._block = numpy.zeros((n_sel, n_frames, n_frames - self._col0),
                                  dtype=self.acc_dtype)
        if cap < n_frames:
            new = max(2 * cap, n_frames, 64)
            grown = numpy.empty((n_sel, new, new), dtype=numpy.float32)  # pages touched: nT²
            grown[:, :cap, :cap] = self._C
            self._C = grown
            for name, a in self._moments.items():
                self._moments[name] = numpy.zeros((n_sel, new), dtype=numpy.float64)
                self._moments[name][:, :cap] = a
            for name in ("_cnt", "_current"):
                old = getattr(self, name)
                grown_m = numpy.full((n_sel, new), 0 if name == "_cnt" else -1, dtype=numpy.int64)
                grown_m[:, :cap] = old
                setattr(self, name, grown_m)

    def _pair(self, values, times, offsets, active, active_offsets, seg, within) -> None:
        from .live_pairs_numba import pairs_new

        pairs_new(values, times, offsets, active, active_offsets, seg[0], seg[1], seg[2],
                  within, True, self._block, self._col0)

    def _add_columns(self, t0: int, t1: int) -> None:
        """Maps' columns t0 … t1 − 1 (rows 0 … t1 − 1) and their mirrored rows from the block
        of Gram columns; their entries added to the diagonals' moments."""
        from .live_pairs_numba import diagonal_moments
        from .twotime import DIAGONAL_BLOCK

        s = self.frame_sums()[:t1].astype(numpy.float64)  # (t1, n_sel)
        n = t1 - t0
        k = numpy.arange(n)
        for j in range(self._C.shape[0]):
            g = self._block[j]  # (t1, n): G[T1, t0 + c], upper triangle (T1 ≤ t0 + c)
            num = g.astype(numpy.float64)
            # The block's square: G of its rows below the diagonal is that of its columns.
            square = g[t0:t1]
            num[t0:t1] += square.T
            num[t0 + k, k] -= square[k, k]  # the diagonal was added twice
            num *= int(self.n_pixels[j])
            cols = self._C[j, :t1, t0:t1]
            # As maps_from_gram: float64 N·G/(S_T1·S_T2), rounded once into the float32 maps.
            with numpy.errstate(invalid="ignore", divide="ignore"):
                numpy.divide(num, numpy.outer(s[:, j], s[t0:t1, j]), out=cols,
                             casting="same_kind")
            self._C[j, t0:t1, :t0] = cols[:t0].T
        m = self._moments
        diagonal_moments(self._C, t0, t1, DIAGONAL_BLOCK, m["tot1"], m["tot2"], self._cnt,
                         m["part1"], m["part2"], self._current)

    def binned_rows(self, dtype, block_bytes: int = 64 * 1024**2):
        """The rows fed so far, X (nT, n_columns) of ``dtype``, rebuilt from the events (a
        :class:`~ewoksxpcs.engine.spill.SpillArray`'s view: in a temporary file beyond its RAM
        cap), filled ``block_bytes`` of rows at a time."""
        from .spill import SpillArray

        n_cols = int(self.col_offsets[-1])
        out = SpillArray((n_cols,), dtype, capacity=self.n_frames)
        step = max(1, block_bytes // max(1, n_cols * numpy.dtype(dtype).itemsize))
        # Each segment's events in time order, once: a block of rows takes a slice of them
        # (not a pass over every event per block).
        by_time = []
        for values, times, offsets, _ in self._segments:
            order = numpy.argsort(times, kind="stable")
            col = numpy.repeat(numpy.arange(n_cols), numpy.diff(offsets))
            by_time.append((times[order], col[order], values[order]))
        for r in range(0, self.n_frames, step):
            rows = numpy.zeros((min(step, self.n_frames - r), n_cols), dtype=dtype)
            for times, col, values in by_time:
                lo, hi = numpy.searchsorted(times, (r, r + rows.shape[0]))
                rows[times[lo:hi] - r, col[lo:hi]] = values[lo:hi]
            out.append(rows)
        return out.array()

    def maps(self) -> numpy.ndarray:
        """C (n_sel, nT, nT) float32 of the time bins so far (a view: later blocks write only
        outside it)."""
        return self._C[:, : self.n_frames, : self.n_frames]

    def diagonal_sums(self, n_segments: int):
        """(s1, s2, cnt), each (n_sel, 1 + n_segments', nT): the moments of the upper diagonals
        of each whole map (index 0, kept up to date) and of its age segments (indices 1 …,
        :func:`~ewoksxpcs.engine.twotime.segment_edges`, computed now), as
        :func:`~ewoksxpcs.engine.twotime.make_result` takes them."""
        from .twotime import _diagonal_sums, segment_edges

        n_t, n_sel = self.n_frames, self._C.shape[0]
        edges = segment_edges(n_t, n_segments)
        s1 = numpy.zeros((n_sel, edges.size, n_t))
        s2 = numpy.zeros_like(s1)
        cnt = numpy.zeros((n_sel, edges.size, n_t), dtype=numpy.int64)
        m = self._moments
        s1[:, 0] = m["tot1"][:, :n_t] + m["part1"][:, :n_t]
        s2[:, 0] = m["tot2"][:, :n_t] + m["part2"][:, :n_t]
        cnt[:, 0] = self._cnt[:, :n_t]
        for k in range(edges.size - 1):  # as offline: each segment's map from scratch
            a, b = int(edges[k]), int(edges[k + 1])
            w = b - a
            for j in range(n_sel):
                s1[j, 1 + k, :w], s2[j, 1 + k, :w], cnt[j, 1 + k, :w] = _diagonal_sums(
                    self._C[j, a:b, a:b])
        return s1, s2, cnt
