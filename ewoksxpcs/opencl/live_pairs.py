"""Live linear sums on an OpenCL device: :class:`~ewoksxpcs.engine.live_pairs.LivePairs` whose
events go to the device as each chunk is compacted, and whose n2 lives there.

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

__all__ = ["LivePairsOpenCL"]


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
