"""``opencl-dense``: n2 of dense frame stacks on an OpenCL device, exact for integer frames.

Method
------
Raw frame chunks are uploaded as they are read; on the device their binned pixels are gathered
into *windows* of ``window_frames`` rows (columns in :attr:`Binning.pixel_index` order, so
sub-bin ``k`` is a contiguous column range), and the per-frame sub-bin sums are taken there too.
Time is cut into blocks of ``T`` = 64 frames. For blocks ``i <= j`` of one sub-bin the Gram
tile ``G = A_i · A_jᵀ`` (T×T, summed over the sub-bin's pixels) holds the lag
``(j − i)·T + c − r`` products; its diagonal sums are accumulated per block lag ``d = j − i``
into ``D[d, k, 0 … 2T−2]`` and the lags are assembled at the end (``kernels/dense.cl``). When a
window is complete it is correlated with itself and with every earlier window, so memory never
holds an Nt×Nt matrix and frames stream through. The host only reads frames and enqueues work:
it never waits for the device before the end, so reading overlaps with computing.

Windows stay on the device while they fit ``max_device_memory``; older windows beyond that are
copied to page-locked host memory and re-uploaded (through one staging buffer) for each new
window.

Exactness: integer frames are multiplied and summed in 64-bit integers (wrapping like NumPy's
int64), with 32-bit multiply-adds where the windows' largest value (measured on the device)
proves that 32-bit partial sums cannot overflow; float32 frames use double products and sums,
in an order that does not depend on scheduling (identical results from run to run). Integer
frames whose n2 could reach 2⁶³ (bound: max I · Σ I per sub-bin, or (max |I|)²·Nt·N_k for
signed frames) are refused after the run (:mod:`ewoksxpcs.engine.intrange`).
"""

from __future__ import annotations

import logging
import time

import numpy

from ..engine.intrange import check_int64_bound, peak_bound
from ..opencl.device import CTYPES, Checkpoints, get_device, get_kernel, pinned_empty, zero_buffer
from ..engine.result import CorrelationSums
from .base import DenseCorrelator
from .registry import register

__all__ = ["OpenCLDenseCorrelator"]

logger = logging.getLogger(__name__)

#: (work-group side TS, micro-tile side MT) per device kind: a work-group of TS×TS work-items
#: computes a T×T Gram tile, T = TS·MT frames per time block. Wide micro-tiles suit CPUs (few
#: work-items between barriers); GPUs need many work-items.
GEOMETRY = {"cpu": (4, 16), "gpu": (16, 4), "accelerator": (16, 4)}
#: Pixels per local-memory chunk (fewer when every sub-bin is smaller).
PC = 16
#: Work-group size of the gather kernel.
GWG = 64
#: Largest default window (frames): bounds the run time of one kernel launch, and lets the
#: device correlate a window while the next one is read.
MAX_WINDOW_FRAMES = 2048
_GiB = 1024**3


class _Window:
    """Frames of blocks first_block … first_block+n_blocks-1, on the device or in host memory."""

    def __init__(self, index, first_block, n_blocks, buffer, host=None):
        self.index = index
        self.first_block = first_block
        self.n_blocks = n_blocks
        self.buffer = buffer
        self.host = host


class _Growable:
    """A device buffer of ``item_bytes`` × capacity, zero-filled, grown by doubling."""

    def __init__(self, dev, item_bytes: int, what: str):
        self.dev, self.item_bytes, self.what = dev, item_bytes, what
        self.buffer, self.capacity = None, 0

    def ensure(self, n: int):
        import pyopencl

        if n <= self.capacity:
            return
        dev = self.dev
        cap = max(n, 2 * self.capacity)
        if cap * self.item_bytes > dev.max_mem_alloc:
            cap = n
            if cap * self.item_bytes > dev.max_mem_alloc:
                raise ValueError(
                    f"{self.what} need {cap * self.item_bytes} bytes, more than the device's "
                    f"largest buffer ({dev.max_mem_alloc} bytes)"
                )
        new = pyopencl.Buffer(dev.context, pyopencl.mem_flags.READ_WRITE, cap * self.item_bytes)
        zero_buffer(dev, dev.queue, new)
        if self.buffer is not None:
            pyopencl.enqueue_copy(dev.queue, new, self.buffer,
                                  byte_count=self.capacity * self.item_bytes)
        self.buffer, self.capacity = new, cap

    @property
    def nbytes(self) -> int:
        return self.capacity * self.item_bytes


@register
class OpenCLDenseCorrelator(DenseCorrelator):
    """Dense frames on an OpenCL device (GPU or CPU); see the module docstring.

    Options
    -------
    chunk_frames : int
        Frames read and uploaded per chunk.
    max_device_memory : int
        Device memory budget, bytes (default: min(25 % of the device memory, 4 GiB)).
    window_frames : int
        Frames per window (rounded up to a multiple of 64; default from the budget, at most
        2048).
    """

    name = "opencl-dense"
    description = "OpenCL tiled Gram products of time blocks (exact integer sums)"
    uses_opencl = True

    @classmethod
    def option_names(cls):
        return ("chunk_frames", "max_device_memory", "window_frames")

    def __init__(self, qmask, device: str | None = None, **kwargs):
        super().__init__(qmask, device=device, **kwargs)
        self.dev = get_device(device)
        #: When True, wait for the device after each step and record times in last_profile.
        self.profile = False
        self.last_profile = {}
        self.check_positive_int_options(("max_device_memory", "window_frames", "chunk_frames"))
        if self.dev.kind == "cpu":
            # Most queued kernels run after the last frame is read (the host and the device
            # share the cores): that phase moves the progress through checkpoints.
            self.compute_share = 0.9

    @property
    def device_name(self) -> str:
        return self.dev.name

    # ------------------------------------------------------------------ driver
    def compute_sums(self, frames) -> CorrelationSums:
        """n2 and frame sums of ``frames``; gathering and sums run on the device."""
        source = self._open_source(frames)
        self._start(source)
        try:
            t0 = 0
            for chunk in source.iter_chunks(self.options.get("chunk_frames")):
                if chunk.shape[0]:
                    self._push(chunk.reshape(chunk.shape[0], -1), self._d_pixel_index)
                    t0 += chunk.shape[0]
            n2 = self._finish(t0)
            frame_sums = self._collect_sums(t0)
            self._check_range(t0, frame_sums)
        finally:
            self._release()
        return CorrelationSums(n2=n2, frame_sums=frame_sums,
                               lags=numpy.arange(t0, dtype=numpy.int64))

    # DenseCorrelator hooks (also usable with gathered blocks, as the base driver feeds them).
    def _start(self, source):
        import pyopencl

        dev = self.dev
        self._ts, self._mt = GEOMETRY[dev.kind]
        T = self._T = self._ts * self._mt
        self._ndiag = 2 * T - 1
        dtype = numpy.dtype(source.dtype)
        self._dtype = dtype
        self._float = dtype.kind == "f"
        if self._float and not dev.has_fp64:
            raise ValueError(f"float32 frames need double precision; {dev.name} has no cl_khr_fp64")
        b = self.binning
        self._npix = int(b.n_binned_pixels)
        self._n_sub = int(b.n_sub)
        self._row_bytes = self._npix * dtype.itemsize
        largest = int(b.sub_n_pixels.max())
        self._pc = 1 if largest == 1 else 4 if largest <= 4 else PC  # few program variants
        self._budget = int(self.options.get("max_device_memory")
                           or min(dev.global_mem // 4, 4 * _GiB))
        n_hint = source.n_frames
        w = self.options.get("window_frames")
        if w is None:
            w = min(self._budget // (4 * self._row_bytes), MAX_WINDOW_FRAMES,
                    dev.max_mem_alloc // self._row_bytes)
            w = max(T, (int(w) // T) * T)
        else:
            w = -(-int(w) // T) * T
        if n_hint:
            w = min(w, -(-int(n_hint) // T) * T)
        if w * self._row_bytes > dev.max_mem_alloc:
            raise ValueError(
                f"window of {w} frames ({w * self._row_bytes} bytes) exceeds the device's "
                f"largest buffer ({dev.max_mem_alloc} bytes): lower window_frames"
            )
        self._W = w
        self._checkpoints = Checkpoints(dev.queue, self._report if self.report_progress else None)
        self.last_profile = {"window_frames": w, "upload_s": 0.0, "kernels_s": 0.0, "n_launches": 0}
        mf = pyopencl.mem_flags

        def upload(a):
            return pyopencl.Buffer(dev.context, mf.READ_ONLY | mf.COPY_HOST_PTR,
                                   hostbuf=numpy.ascontiguousarray(a, dtype=numpy.int64))

        self._d_sub_off = upload(b.sub_offsets)
        self._d_pixel_index = upload(b.pixel_index)
        self._d_identity = None
        self._windows = []
        self._cur = None  # device buffer of the window being filled
        self._n_cur = 0  # its rows filled
        self._free = []  # device window buffers ready for reuse
        self._staging = None
        self._resident_bytes = 0
        self._raw = [None, None]  # device buffers for raw chunks, used in turn
        self._raw_i = 0
        self._pinned = [None, None]  # host staging for raw chunks, with their copy events
        self._sums = []  # (host array, copy event) of the frame sums, per piece of chunk
        self._D = _Growable(dev, self._n_sub * self._ndiag * 8, "diagonal sums")
        self._vmax = _Growable(dev, 4, "window bounds")
        if n_hint:
            self._D.ensure(-(-int(n_hint) // T))
            self._vmax.ensure(-(-int(n_hint) // w))

    def _feed(self, t0, block):
        """Gathered block (n, n_pixels) from the base driver: identity gather, no sums."""
        import pyopencl

        if self._d_identity is None:
            self._d_identity = pyopencl.Buffer(
                self.dev.context, pyopencl.mem_flags.READ_ONLY | pyopencl.mem_flags.COPY_HOST_PTR,
                hostbuf=numpy.arange(self._npix, dtype=numpy.int64))
        self._push(numpy.ascontiguousarray(block), self._d_identity, sums=False)

    def _finish(self, n_frames):
        if self._n_cur:
            self._process_window()
        self._checkpoints.wait(0.0, 0.95)  # the Gram kernels still queued
        return self._assemble(n_frames)

    # ------------------------------------------------------------------ internals
    def _kernel(self, name: str, int32: bool = True):
        defines = {"VAL_T": CTYPES[self._dtype.name], "TS": self._ts, "MT": self._mt, "PC": self._pc}
        if self._float:
            defines["MODE_FLOAT"] = 1
        elif int32:
            defines["MODE_INT32"] = 1
        return get_kernel(self.dev, "dense.cl", name, defines)

    def _tic(self):
        if self.profile:
            self.dev.queue.finish()
        return time.perf_counter()

    def _toc(self, what, t):
        if self.profile:
            self.dev.queue.finish()
            self.last_profile[what] += time.perf_counter() - t

    def _push(self, rows: numpy.ndarray, d_index, sums: bool = True):
        """Upload frames ``rows`` (n, pixels) and gather columns ``d_index`` into windows."""
        import pyopencl

        dev, queue = self.dev, self.dev.queue
        n = rows.shape[0]
        # Page-locked staging, two in turn: the host fills one while the other is in flight.
        i = self._raw_i
        self._raw_i = 1 - i
        pinned, event = self._pinned[i] or (None, None)
        if event is not None:
            event.wait()
        if pinned is None or pinned.size < rows.size:
            pinned = pinned_empty(dev, (rows.size,), self._dtype)
        pinned[: rows.size] = rows.reshape(-1)
        if self._raw[i] is None or self._raw[i].size < rows.nbytes:
            self._raw[i] = pyopencl.Buffer(dev.context, pyopencl.mem_flags.READ_ONLY,
                                           max(rows.nbytes, 1))
        t = self._tic()
        event = pyopencl.enqueue_copy(queue, self._raw[i], pinned[: rows.size], is_blocking=False)
        self._pinned[i] = (pinned, event)
        self._toc("upload_s", t)
        gather = self._kernel("gather")
        sub_sums = self._kernel("sub_sums")
        done = 0
        while done < n:
            if self._cur is None:
                self._open_window()
            buf, row0 = self._cur, self._n_cur
            take = min(n - done, self._W - row0)
            t = self._tic()
            grid = (-(-self._npix // GWG) * GWG, take)
            gather(queue, grid, (GWG, 1), self._raw[i], numpy.int64(done),
                   numpy.int64(rows.shape[1]), d_index, numpy.int32(self._npix), buf,
                   numpy.int64(row0),
                   self._vmax.buffer, numpy.int32(len(self._windows)))
            if sums:
                out = numpy.empty((take, self._n_sub), dtype=self.acc_dtype)
                d_out = pyopencl.Buffer(dev.context, pyopencl.mem_flags.WRITE_ONLY,
                                        max(out.nbytes, 1))
                sub_sums(queue, (take, self._n_sub), None, buf, numpy.int64(row0),
                         numpy.int32(self._npix), numpy.int32(take), self._d_sub_off,
                         numpy.int32(self._n_sub), d_out)
                self._sums.append((out, pyopencl.enqueue_copy(queue, out, d_out,
                                                              is_blocking=False)))
            self._toc("kernels_s", t)
            self._n_cur += take
            done += take
            if self._n_cur == self._W:
                self._process_window()

    def _open_window(self):
        import pyopencl

        wbytes = self._W * self._row_bytes
        self._cur = self._free.pop() if self._free else pyopencl.Buffer(
            self.dev.context, pyopencl.mem_flags.READ_WRITE, wbytes)
        self._n_cur = 0
        self._vmax.ensure(len(self._windows) + 1)

    def _process_window(self):
        import pyopencl

        dev, queue = self.dev, self.dev.queue
        T = self._T
        n, buf = self._n_cur, self._cur
        self._cur, self._n_cur = None, 0
        rows = -(-n // T) * T
        if rows > n:  # zero the last block's missing frames
            zero_buffer(dev, queue, buf, n * self._row_bytes, (rows - n) * self._row_bytes)
        first = self._windows[-1].first_block + self._windows[-1].n_blocks if self._windows else 0
        m = rows // T
        self._D.ensure(first + m)
        win = _Window(len(self._windows), first, m, buf)
        self._launch(win, win)
        for old in self._windows:
            if old.buffer is None:  # in host memory: through the staging buffer
                if self._staging is None:
                    self._staging = pyopencl.Buffer(dev.context, pyopencl.mem_flags.READ_ONLY,
                                                    self._W * self._row_bytes)
                t = self._tic()
                pyopencl.enqueue_copy(queue, self._staging, old.host, is_blocking=False)
                self._toc("upload_s", t)
            self._launch(old, win)
        self._windows.append(win)
        wbytes = self._W * self._row_bytes
        # Also on the device: the window being filled, the staging window, D, raw chunks.
        fixed = 3 * wbytes + self._D.nbytes + self._vmax.nbytes + sum(
            r.size for r in self._raw if r is not None)
        if self._resident_bytes + wbytes + fixed <= self._budget:
            self._resident_bytes += wbytes
        else:
            # Keep it in page-locked host memory; its device buffer takes the next frames.
            win.host = pinned_empty(dev, (rows * self._npix,), self._dtype)
            pyopencl.enqueue_copy(queue, win.host, buf, is_blocking=False)
            win.buffer = None
            self._free.append(buf)

    def _launch(self, winA, winB):
        bufA = winA.buffer if winA.buffer is not None else self._staging
        bufB = winB.buffer
        sA, sB = winA.first_block, winB.first_block
        mA, mB = winA.n_blocks, winB.n_blocks
        if winA is winB:
            dmin, n_d = 0, mA
        else:
            dmin, n_d = sB - sA - (mA - 1), mA + mB - 1
        ts = self._ts
        # Integer frames: a 32-bit and a 64-bit variant; the windows' bound selects one on the
        # device. 8-bit values always fit the 32-bit one.
        variants = [True] if self._float or self._dtype.itemsize == 1 else [True, False]
        t = self._tic()
        for int32 in variants:
            self._kernel("gram_diag", int32)(
                self.dev.queue, (n_d * ts, self._n_sub * ts), (ts, ts),
                bufA, bufB, numpy.int32(mA), numpy.int32(mB), numpy.int64(sA), numpy.int64(sB),
                numpy.int64(dmin), self._d_sub_off, numpy.int32(self._npix),
                numpy.int32(self._n_sub), self._vmax.buffer, numpy.int32(winA.index),
                numpy.int32(winB.index), self._D.buffer,
            )
        self._toc("kernels_s", t)
        self._checkpoints.mark()
        self.last_profile["n_launches"] += 1

    def _assemble(self, n_frames: int) -> numpy.ndarray:
        import pyopencl

        out = numpy.zeros((self._n_sub, n_frames), dtype=self.acc_dtype)
        if n_frames == 0 or not self._windows:
            return out
        dev = self.dev
        n_blocks = self._windows[-1].first_block + self._windows[-1].n_blocks
        n2 = pyopencl.Buffer(dev.context, pyopencl.mem_flags.WRITE_ONLY, out.nbytes)
        self._kernel("diag_to_n2")(
            dev.queue, (n_frames, self._n_sub), None, self._D.buffer, numpy.int32(self._n_sub),
            numpy.int64(n_blocks), numpy.int64(n_frames), n2)
        pyopencl.enqueue_copy(dev.queue, out, n2)
        return out

    def _check_range(self, n_frames: int, frame_sums: numpy.ndarray) -> None:
        """Raise ValueError if an int64 n2 sum may have wrapped: |n2| ≤ Σ I² ≤ max I · Σ I
        (unsigned frames; the windows' largest |value| measured on the device), else
        ≤ (max |I|)²·Nt·N_k."""
        import pyopencl

        if self._float or not self._windows:
            return
        vmax = numpy.zeros(len(self._windows), dtype=numpy.uint32)
        pyopencl.enqueue_copy(self.dev.queue, vmax, self._vmax.buffer)
        b = self.binning
        totals = frame_sums.sum(axis=0, dtype=numpy.float64)
        check_int64_bound(peak_bound(vmax.max(), totals, n_frames, b.sub_n_pixels,
                                     non_negative=self._dtype.kind == "u"), b)

    def _collect_sums(self, n_frames: int) -> numpy.ndarray:
        self.dev.queue.finish()
        if not self._sums:
            return numpy.zeros((n_frames, self._n_sub), dtype=self.acc_dtype)
        return numpy.concatenate([s for s, _ in self._sums], axis=0)

    def _release(self):
        """Drop every buffer of this run (a next call starts from scratch)."""
        self.dev.queue.finish()
        self._windows, self._free, self._sums = [], [], []
        self._cur = self._staging = None
        self._raw = [None, None]
        self._pinned = [None, None]
        self._D = self._vmax = None
        self._resident_bytes = 0
