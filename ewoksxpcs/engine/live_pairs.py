"""Linear g2 sums updated as frames arrive: each chunk's events paired with the earlier ones.

n2[k, τ] = Σ_{p ∈ sub-bin k} Σ_{events i ≤ j of p, t_j − t_i = τ} v_i·v_j (the sum of
:class:`~ewoksxpcs.engine.result.CorrelationSums`) is additive over the pairs, so it can be built
while the scan runs: a chunk of frames is compacted to its non-zero values (events, pixel-major),
its pairs with itself and with every earlier event of the same pixel are added to n2, and a
result of the frames so far is n2 as it stands. The work is that of ``cpu-events``, Σ_p n_p²/2
pairs, spread over the scan; the end of the scan only normalises.

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

__all__ = ["LivePairs"]

#: (values, times, offsets, n_frames) of a segment.
Segment = Tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray, int]


class LivePairs:
    """The linear sums n2 and frame sums of the frames fed so far.

    Parameters
    ----------
    binning : Binning
    dtype : numpy.dtype
        Pixel type of the frames.

    Memory: the events (values int64 or float64, times int32, 12 bytes) and n2 (n_sub, Nt) of 8 bytes.
    """

    def __init__(self, binning: Binning, dtype):
        self.binning = binning
        self.dtype = numpy.dtype(dtype)
        self.integer = self.dtype.kind in "iub"
        self.acc_dtype = numpy.dtype(numpy.int64 if self.integer else numpy.float64)
        self.sub_offsets = numpy.ascontiguousarray(binning.sub_offsets, dtype=numpy.int64)
        self.n_frames = 0
        self._n2 = numpy.zeros((binning.n_sub, 64), dtype=self.acc_dtype)
        self._frame_sums: List[numpy.ndarray] = []
        self._segments: List[Segment] = []
        # Σ_p (Σ_t |v|)² bounds every n2 value: below 2^62 the int64 sums cannot overflow.
        self._pixel_totals = numpy.zeros(binning.pixel_index.size, dtype=numpy.float64)

    @property
    def n_events(self) -> int:
        return sum(seg[0].size for seg in self._segments)

    def feed(self, chunk: numpy.ndarray) -> None:
        """Take the next frames, (n, Ny, Nx) of the given dtype."""
        from .live_pairs_numba import fill_block, merge_segments, pairs_new, scan_block

        n = chunk.shape[0]
        if n == 0:
            return
        t0 = self.n_frames
        if t0 + n >= 2**31:
            raise ValueError("live linear correlation: more than 2^31 frames")
        block = numpy.take(chunk.reshape(n, -1), self.binning.pixel_index, axis=1)
        n_pixels = block.shape[1]
        counts = numpy.empty(n_pixels, dtype=numpy.int64)
        frame_sums = numpy.empty((n, self.binning.n_sub), dtype=self.acc_dtype)
        scan_block(block, self.sub_offsets, counts, self._pixel_totals, frame_sums)
        if self.integer and float(numpy.dot(self._pixel_totals, self._pixel_totals)) >= 2.0**62:
            raise ValueError("live linear correlation: n2 could exceed the int64 range")
        offsets = numpy.zeros(n_pixels + 1, dtype=numpy.int64)
        numpy.cumsum(counts, out=offsets[1:])
        # In the accumulator's type: the kernels' products are then int64 (or float64).
        values = numpy.empty(int(offsets[-1]), dtype=self.acc_dtype)
        times = numpy.empty(int(offsets[-1]), dtype=numpy.int32)
        fill_block(block, self.sub_offsets, t0, offsets, values, times)
        self._frame_sums.append(frame_sums)
        self.n_frames += n
        if self._n2.shape[1] < self.n_frames:  # room for the lags, doubled as the scan grows
            grown = numpy.zeros((self._n2.shape[0], max(2 * self._n2.shape[1], self.n_frames)),
                                dtype=self.acc_dtype)
            grown[:, : self._n2.shape[1]] = self._n2
            self._n2 = grown
        active = numpy.flatnonzero(counts)
        if active.size:
            active_offsets = numpy.searchsorted(active, self.sub_offsets).astype(numpy.int64)
            none = numpy.zeros(0, dtype=numpy.int64)
            # The pairs within the chunk with the first segment (or alone), then the others.
            for g in range(max(1, len(self._segments))):
                seg = (self._segments[g] if self._segments
                       else (values[:0], times[:0], none, 0))
                pairs_new(values, times, offsets, active, active_offsets, seg[0], seg[1],
                          seg[2], g == 0, self._n2)
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

    def sums(self) -> CorrelationSums:
        """The sums of the frames fed so far (feeding may go on)."""
        fs = (numpy.concatenate(self._frame_sums) if self._frame_sums
              else numpy.zeros((0, self.binning.n_sub), dtype=self.acc_dtype))
        if len(self._frame_sums) > 1:
            self._frame_sums = [fs]  # concatenated once
        return CorrelationSums(n2=self._n2[:, : self.n_frames].copy(), frame_sums=fs,
                               lags=numpy.arange(self.n_frames, dtype=numpy.int64))
