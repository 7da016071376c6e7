"""Live linear sums on an OpenCL device: :class:`~ewoksxpcs.engine.live_pairs.LivePairs` whose
events go to the device as each chunk is compacted, and whose n2 lives there.

:class:`LivePairsOpenCL` compacts each chunk of decoded frames on the host and uploads its
events; :class:`LiveDevicePairs` takes the stored chunks of a growing file as they are
(:class:`~ewoksxpcs.io.live.RawChunks`: bitshuffle-LZ4 or unfiltered, one frame per chunk),
decodes them on the device (:class:`~ewoksxpcs.opencl.live_frames.DeviceFrames`) and compacts
the frames there with the offline kernels (:mod:`ewoksxpcs.opencl.compact`): the
host never touches decoded frames, and the events, their segments and n2 stay on the device.

Each chunk is compacted on the host (the numba passes of :mod:`ewoksxpcs.engine.live_pairs`),
its events (values int64, times int32, offsets) are uploaded once, and the kernel
``kernels/live_pairs.cl`` adds their pairs with themselves and with each earlier segment to n2
on the device with 64-bit atomic additions: integer sums are exact whatever the order, so the
result equals the CPU one and every offline backend bit for bit. Segments are merged on the host
(as on the CPU) and the merged segment uploaded. Integer frames only (float atomics would not
add in a fixed order).
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy

from ..engine.live_pairs import LivePairs
from ..engine.qmask import Binning
from ..engine.result import CorrelationSums
from .live_frames import DeviceFrames

__all__ = ["LivePairsOpenCL", "LiveDevicePairs"]


class LivePairsOpenCL(LivePairs):
    """:class:`LivePairs` with the events and n2 on an OpenCL device.

    Parameters
    ----------
    binning : Binning
    dtype : numpy.dtype
        Integer pixel type of the frames.
    device : str, optional
        OpenCL device spec (default: the best one).
    """

    def __init__(self, binning: Binning, dtype, device: Optional[str] = None):
        from .device import get_device

        if numpy.dtype(dtype).kind not in "iub":
            raise ValueError(f"live linear correlation on OpenCL needs integer frames, not "
                             f"{numpy.dtype(dtype)}")
        super().__init__(binning, dtype)
        self.dev = get_device(device)
        self.queue = self.dev.queue
        self._d_n2 = self._zeros(binning.n_sub * self._n2.shape[1] * 8)
        self._stride = self._n2.shape[1]
        self._n2 = numpy.zeros((binning.n_sub, 0), dtype=numpy.int64)  # host n2 unused
        self._uploaded: Dict[int, tuple] = {}  # id(values) → (values, buffers) of a segment
        self._dummy = self._upload(numpy.zeros(2, dtype=numpy.int64))

    @property
    def device_name(self) -> str:
        return f"{self.dev.kind} {self.dev.name}"

    def _zeros(self, nbytes: int):
        from .device import device_buffer

        return device_buffer(self.dev, self.queue, max(int(nbytes), 8), zero=True)

    def _upload(self, array: numpy.ndarray):
        import pyopencl

        mf = pyopencl.mem_flags
        array = numpy.ascontiguousarray(array)
        if array.nbytes == 0:
            array = numpy.zeros(1, dtype=array.dtype)
        return pyopencl.Buffer(self.dev.context, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=array)

    def _grow(self, n_frames: int) -> None:
        if self._stride >= n_frames:
            return
        import pyopencl

        stride = max(2 * self._stride, n_frames)
        old = numpy.empty((self.binning.n_sub, self._stride), dtype=numpy.int64)
        pyopencl.enqueue_copy(self.queue, old, self._d_n2)
        grown = numpy.zeros((self.binning.n_sub, stride), dtype=numpy.int64)
        grown[:, : self._stride] = old
        self._d_n2 = pyopencl.Buffer(self.dev.context, pyopencl.mem_flags.READ_WRITE
                                     | pyopencl.mem_flags.COPY_HOST_PTR, hostbuf=grown)
        self._stride = stride

    def _device_segment(self, seg):
        key = id(seg[0])
        entry = self._uploaded.get(key)
        if entry is None or entry[0] is not seg[0]:
            entry = (seg[0], self._upload(seg[0]), self._upload(seg[1]), self._upload(seg[2]))
            self._uploaded[key] = entry
        return entry[1:]

    def _pair(self, values, times, offsets, active, active_offsets, seg, within) -> None:
        from .device import get_kernel

        new = self._device_segment((values, times, offsets))
        if within:  # the active pixels of this chunk: uploaded once for all its segments
            sub = numpy.repeat(numpy.arange(active_offsets.size - 1, dtype=numpy.int32),
                               numpy.diff(active_offsets))
            self._active = (self._upload(active.astype(numpy.int64)), self._upload(sub),
                            active.size)
        d_active, d_sub, n_active = self._active
        if seg[2].size:
            a = self._device_segment(seg)
            has_a = 1
        else:
            a, has_a = (self._dummy, self._dummy, self._dummy), 0
        kernel = get_kernel(self.dev, "live_pairs.cl", "live_pairs")
        local = 64
        global_size = ((n_active + local - 1) // local) * local
        kernel(self.queue, (global_size,), (local,), new[0], new[1], new[2], d_active, d_sub,
               numpy.int64(n_active), a[0], a[1], a[2], numpy.int32(has_a),
               numpy.int32(1 if within else 0), self._d_n2, numpy.int64(self._stride))

    def feed_block(self, block: numpy.ndarray) -> None:
        super().feed_block(block)
        # Segments merged away: their device copies go.
        alive = {id(seg[0]) for seg in self._segments}
        for key in [k for k in self._uploaded if k not in alive]:
            del self._uploaded[key]

    def sums(self) -> CorrelationSums:
        import pyopencl

        n2 = numpy.empty((self.binning.n_sub, self._stride), dtype=numpy.int64)
        pyopencl.enqueue_copy(self.queue, n2, self._d_n2)
        return CorrelationSums(n2=n2[:, : self.n_frames].copy(), frame_sums=self.frame_sums(),
                               lags=numpy.arange(self.n_frames, dtype=numpy.int64))


class LiveDevicePairs(LivePairsOpenCL):
    """:class:`LivePairsOpenCL` whose chunks are decoded and compacted on the device.

    Each chunk (stored chunks to decode, or frames to upload) lands as frames in device
    memory; the compaction kernels of :mod:`ewoksxpcs.opencl.compact` count each binned pixel's
    non-zero values (the columns, in the binning's order, are the compaction's "kept" pixels),
    scan the counts into offsets and write the chunk's events pixel-major (values in the
    frames' type, times uint32), sum each frame over each sub-bin (``frame_sums``, int64) and
    each pixel over the frames (the sum image, every pixel). The chunk's pairs with itself and
    with the earlier segments go to n2 as in :class:`LivePairsOpenCL`; segments are merged on
    the device (``merge_part``), as a binary counter. The sums are the exact int64 sums of
    :class:`~ewoksxpcs.engine.live_pairs.LivePairs`: equal to every offline backend's.

    Parameters
    ----------
    binning : Binning
    frame_shape : (int, int)
    dtype : numpy.dtype
        Unsigned integer pixel type (uint8, uint16, uint32): the compaction drops zeros and
        would refuse negative values.
    device : str, optional
        OpenCL device spec (default: the best one).

    Memory on the device: the events (itemsize + 4 bytes each) and, during a merge, a copy of
    the two segments merged; per column 8 bytes of offsets per segment, 16 of counts and sums;
    the sum image (8 bytes per pixel); one chunk of decoded frames and its compressed bytes.
    """

    #: The sum image is kept on the device (:meth:`sum_image`): the caller does not sum frames.
    sums_frames = True

    def __init__(self, binning: Binning, frame_shape, dtype, device: Optional[str] = None):
        from .compact import _DeviceCompactor
        from .device import CTYPES, get_kernel

        dtype = numpy.dtype(dtype)
        if dtype.kind != "u" or dtype.itemsize not in (1, 2, 4):
            raise ValueError(f"frames decoded and compacted on the device must be uint8, uint16 "
                             f"or uint32, not {dtype}")
        super().__init__(binning, dtype, device)
        binning.check_frame_shape(frame_shape)
        self.frame_shape = tuple(int(n) for n in frame_shape)
        self.npix = self.frame_shape[0] * self.frame_shape[1]
        n_cols = int(binning.pixel_index.size)
        self.n_cols = n_cols
        # The columns are the compaction's kept pixels: events pixel-major in column order.
        self._compactor = _DeviceCompactor(self.dev, self.frame_shape, dtype,
                                           binning.pixel_index, None, 0)
        defines = {"VAL_T": CTYPES[dtype.name], "TIME_T": "uint"}
        self._k_pairs = get_kernel(self.dev, "live_pairs.cl", "live_pairs", defines)
        self._k_add = get_kernel(self.dev, "live_pairs.cl", "add_offsets", defines)
        wg = self._compactor.wg
        self._k_bin_sums = get_kernel(self.dev, "compact.cl", "bin_sums_wg",
                                      {"VAL_T": CTYPES[dtype.name], "WG": wg})
        self._wg = wg
        self._d_pixel_index = self._upload(binning.pixel_index)
        self._d_sub_offsets = self._upload(binning.sub_offsets)
        self._d_columns = self._upload(numpy.arange(n_cols, dtype=numpy.int64))
        self._d_column_sub = self._upload(binning.sub_of_pixel().astype(numpy.int32))
        self._device_segments = []  # (values, times, offsets, n_frames, n_events) on the device
        self._total_counts = 0
        self.frames = DeviceFrames(self.dev, self.frame_shape, dtype)

    @property
    def n_events(self) -> int:
        return sum(seg[4] for seg in self._device_segments)

    @property
    def paths(self) -> set:
        """How the chunks reached the device so far (:attr:`DeviceFrames.paths`)."""
        return self.frames.paths

    # ------------------------------------------------------------------ chunks in
    def feed(self, chunk: numpy.ndarray) -> None:
        """Take the next frames, (n, Ny, Nx) of the given dtype, uploaded to the device."""
        self._feed_device(*self.frames.land(chunk))

    def feed_raw(self, raw) -> None:
        """Take the next frames as their stored chunks (:class:`~ewoksxpcs.io.live.RawChunks`,
        bitshuffle-LZ4 or unfiltered), decoded on the device."""
        self._feed_device(*self.frames.land(raw))

    def _feed_device(self, d_frames, n: int) -> None:
        """Compact, sum and pair ``n`` frames in ``d_frames`` (from its first byte)."""
        import pyopencl

        from .device import device_buffer

        c, queue, n_cols = self._compactor, self.queue, self.n_cols
        if n == 0:
            return
        t0 = self.n_frames
        if t0 + n >= 2**31:
            raise ValueError("live correlation: more than 2^31 frames")
        c.count_batch(d_frames, 0, n, t0)  # counts per column, running pixel sums
        d_off = device_buffer(self.dev, queue, 8 * (n_cols + 1))
        total = c.scan(queue, c.d_counts, n_cols, d_off) if n_cols else 0
        d_values = device_buffer(self.dev, queue, total * self.dtype.itemsize)
        d_times = device_buffer(self.dev, queue, total * 4)
        if total:
            c.k_scatter(queue, (n_cols,), None, d_frames, numpy.int64(0), numpy.int32(n),
                        numpy.int64(self.npix), c.d_kept, numpy.int32(n_cols), d_off,
                        numpy.int64(0), numpy.uint32(t0), d_values, d_times)
        frame_sums = numpy.zeros((n, self.binning.n_sub), dtype=numpy.int64)
        if frame_sums.size:
            d_sums = device_buffer(self.dev, queue, frame_sums.nbytes)
            self._k_bin_sums(queue, (self.binning.n_sub * self._wg, n), (self._wg, 1), d_frames,
                             numpy.int64(0), numpy.int32(n), numpy.int64(self.npix),
                             self._d_pixel_index, self._d_sub_offsets,
                             numpy.int32(self.binning.n_sub), d_sums)
            pyopencl.enqueue_copy(queue, frame_sums, d_sums)
        self._check_range(int(frame_sums.sum()))
        self._frame_sums.append(frame_sums)
        self.n_frames += n
        self._grow(self.n_frames)
        new = (d_values, d_times, d_off, n, total)
        if total:
            # The pairs within the chunk with the first segment (or alone), then the others.
            segments = self._device_segments
            for g in range(max(1, len(segments))):
                self._pair_device(new, segments[g] if segments else None, g == 0)
        self._device_segments.append(new)
        while (len(self._device_segments) >= 2
               and self._device_segments[-1][3] >= self._device_segments[-2][3]):
            b = self._device_segments.pop()
            a = self._device_segments.pop()
            self._device_segments.append(self._merge(a, b))

    def _check_range(self, chunk_total: int) -> None:
        """Raise before the int64 sums could overflow, as :class:`LivePairs` does:
        Σ_p (Σ_t v)² ≥ 2^62. Bounded first by (Σ_p Σ_t v)², the total counts; the pixels' own
        sums are read from the device only when that bound is passed."""
        import pyopencl

        self._total_counts += chunk_total
        if float(self._total_counts) ** 2 < 2.0**62:
            return
        sums = numpy.empty(self.n_cols, dtype=numpy.int64)
        pyopencl.enqueue_copy(self.queue, sums, self._compactor.d_pixel_sums)
        totals = sums.astype(numpy.float64)
        if float(numpy.dot(totals, totals)) >= 2.0**62:
            raise ValueError("live correlation: the sums of products could exceed the int64 "
                             "range")

    def _pair_device(self, new, seg, within: bool) -> None:
        has_a = seg is not None and seg[4] > 0
        a = seg if has_a else (self._dummy, self._dummy, self._dummy)
        local = 64
        global_size = -(-self.n_cols // local) * local
        self._k_pairs(self.queue, (global_size,), (local,), new[0], new[1], new[2],
                      self._d_columns, self._d_column_sub, numpy.int64(self.n_cols), a[0], a[1],
                      a[2], numpy.int32(1 if has_a else 0), numpy.int32(1 if within else 0),
                      self._d_n2, numpy.int64(self._stride))

    def _merge(self, a, b):
        """Segments a then b (consecutive frames) merged pixel by pixel on the device."""
        from .device import device_buffer

        queue, n_cols, c = self.queue, self.n_cols, self._compactor
        d_off = device_buffer(self.dev, queue, 8 * (n_cols + 1))
        self._k_add(queue, (n_cols + 1,), None, a[2], b[2], d_off, numpy.int64(n_cols + 1))
        total = a[4] + b[4]
        d_values = device_buffer(self.dev, queue, total * self.dtype.itemsize)
        d_times = device_buffer(self.dev, queue, total * 4)
        if total and n_cols:
            d_before = device_buffer(self.dev, queue, 8 * n_cols, zero=True)
            for seg in (a, b):
                if seg[4]:
                    c.k_merge(queue, (n_cols,), None, seg[0], seg[1], numpy.int64(0), seg[2],
                              d_off, d_before, numpy.int32(0), numpy.int32(n_cols),
                              numpy.int64(0), d_values, d_times)
        return (d_values, d_times, d_off, a[3] + b[3], total)

    def feed_block(self, block: numpy.ndarray) -> None:
        raise TypeError("LiveDevicePairs takes frames (feed) or stored chunks (feed_raw)")

    def sum_image(self) -> numpy.ndarray:
        """Sum of every pixel over the frames so far, (Ny, Nx) int64."""
        return self.frames.sum_image()
