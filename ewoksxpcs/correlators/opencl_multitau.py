"""Multi-tau g2 on an OpenCL device, streaming frames through page-locked buffers.

Dense frames
------------
Chunks of whole frames go host → device from two page-locked (pinned) staging buffers — or
straight from the caller's frames when these already lie in page-locked memory
(:func:`~ewoksxpcs.opencl.device.upload_chunk`: no host copy then) — on a
transfer queue while the compute queue works on the previous chunk (event dependencies order a
copy after the kernels that last read its device buffer, and a refill of a staging buffer after
its copy): the transfer of chunk k+1 overlaps the compute of chunk k. The binned pixels are
gathered on the device (no host-side gather). Per chunk and level one launch of ``mt_level``
(``kernels/multitau.cl``): one work-item per binned pixel walks the level's frames keeping the
last m−1 values in registers, accumulates Σ X_L(t)·X_L(t−k) per pixel, and writes the pair sums
of the next level, which the next launch consumes. Per-frame sub-bin sums come from
``mt_frame_sums``; the per-pixel sums are reduced to sub-bins once at the end (``mt_reduce``).

Device memory is bounded by ``max_device_memory`` (default:
:func:`ewoksxpcs.opencl.device.default_device_memory`: 70 % of a GPU's free memory):
fixed state of levels × (m−1) + n_lags values per pixel, plus the chunk buffers sized to fit.
Host memory: the two staging buffers (``chunk_frames`` frames each, by default ~128 MB) and the
per-frame sums.

EventStacks
-----------
``mt_events`` walks each pixel's events once per level (events of a level time summed), pairing
each level value with the previous ones within m−1 level frames; rows of events are uploaded in
blocks bounded by the memory budget.

Sums are exact int64 for integer frames (64-bit accumulators, 32-bit products where a bound on
the level values proves they fit) and float64 for float32 frames (the device needs cl_khr_fp64).
"""

from __future__ import annotations

import logging
import time
from typing import Optional

import numpy

from ..engine.badframes import excluded_of
from ..engine.frames import as_frame_source
from ..engine.multitau import (
    DEFAULT_LAGS_PER_LEVEL,
    MultiTauResult,
    MultiTauSums,
    _check_max_levels,
    check_int64_range,
    check_lags_per_level,
    check_normalisation,
    multitau_lags,
    n2_bound,
    normalise_multitau,
)
from ..opencl.device import (CTYPES, build_in_background, default_device_memory,
                             device_buffer, get_device, get_kernel, StagingSlots, upload_chunk)
from ..engine.qmask import DEFAULT_GROUPS, as_binning

__all__ = ["OpenCLMultiTau", "OpenCLEventsMultiTau", "DeviceDataPath", "DenseMultiTauStream",
           "LiveOpenCLMultiTau"]

logger = logging.getLogger(__name__)

#: Default size of one staging buffer (bytes of frames per chunk).
DEFAULT_CHUNK_BYTES = 128 * 1024**2
#: Levels allocated when the number of frames is not known in advance (2^24·m frames).
UNKNOWN_LENGTH_LEVELS = 24
#: Work-group size of the reductions.
WG = 128
#: Work-group size of the per-pixel kernels.
LOCAL = 64


def check_memory_option(value, name="max_device_memory"):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, numpy.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer (bytes), got {value!r}")
    return int(value)


def _abs_max(dtype) -> int:
    info = numpy.iinfo(dtype)
    return max(abs(int(info.min)), int(info.max))


#: Values of the ``data_path`` option of the OpenCL multi-tau and two-time correlators.
DATA_PATHS = (None, "dense", "events")


class DeviceDataPath:
    """How an OpenCL multi-tau or two-time correlator consumes frames (``data_path``):

    - ``"events"``: frames are compacted to events on the correlator's device first
      (:func:`~ewoksxpcs.opencl.compact.compact_opencl`: raw compressed chunks decompressed
      there) and the events stay there (``EventStack.resident``) for the correlation;
    - ``"dense"`` or None: frames stream to the device as they are.

    An EventStack is always correlated as events (from its device buffers when resident).
    Needs ``self.dev``, ``self.chunk_frames``, ``self.max_device_memory``.
    """

    def _set_data_path(self, data_path):
        if data_path not in DATA_PATHS:
            raise ValueError(f"data_path must be 'dense' or 'events', got {data_path!r}")
        self.data_path = data_path

    def compaction_options(self):
        """Keyword arguments of the on-device compaction of frames (events path), else None."""
        if self.data_path != "events":
            return None
        return {"device": self.dev, "chunk_frames": self.chunk_frames,
                "max_device_memory": self.max_device_memory, "prepare": self.prepare_programs}

    def prepare_programs(self, dtype, n_frames) -> None:
        """Start building the events path's programs in the background (subclasses)."""

    def _events_if_needed(self, data):
        """``data`` compacted on the device when the path is events and it holds frames."""
        from ..engine.events import EventStack

        options = self.compaction_options()
        if options is None or isinstance(data, EventStack):
            return data
        from ..opencl.compact import compact_opencl

        events = compact_opencl(data, **options)
        events.frame_period = getattr(data, "frame_period", None)
        return events


class OpenCLMultiTau(DeviceDataPath):
    """Multi-tau correlator on an OpenCL device (GPU or CPU); see the module docstring.

    Parameters
    ----------
    qmask : array_like (Ny, Nx) of int, or Binning
    device : str, optional
        OpenCL device spec ("gpu", "cpu", "P:D"; default: the best device).
    lags_per_level : int
        m (even >= 2).
    normalisation : {"standard", "symmetric"}
    max_levels : int, optional
    n_groups : int
    bad_pixels : array_like of bool, optional
    chunk_frames : int, optional
        Frames per device chunk (default: ~128 MB of frames, within the memory budget).
    max_device_memory : int, optional
        Device memory budget, bytes.
    data_path : {None, "dense", "events"}
        How frames are consumed (:class:`DeviceDataPath`).
    """

    name = "opencl"

    def __init__(self, qmask, device=None, lags_per_level: int = DEFAULT_LAGS_PER_LEVEL,
                 normalisation: str = "standard", max_levels: Optional[int] = None,
                 n_groups: int = DEFAULT_GROUPS, bad_pixels=None,
                 chunk_frames: Optional[int] = None, max_device_memory: Optional[int] = None,
                 data_path: Optional[str] = None):
        self._set_data_path(data_path)
        self.binning = as_binning(qmask, n_groups=n_groups, bad_pixels=bad_pixels)
        self.m = check_lags_per_level(lags_per_level)
        self.normalisation = check_normalisation(normalisation)
        self.max_levels = _check_max_levels(max_levels)
        self.chunk_frames = check_memory_option(chunk_frames, "chunk_frames")
        self.max_device_memory = check_memory_option(max_device_memory)
        self.dev = get_device(device)
        self.budget = self.max_device_memory or default_device_memory(self.dev)

    @property
    def device_name(self) -> str:
        return self.dev.name

    # ------------------------------------------------------------------ common
    def _types(self, dtype, n_levels):
        """(VAL_T, ACC_T, value itemsize, acc numpy dtype, defines per level) for frames of dtype."""
        dtype = numpy.dtype(dtype)
        if dtype.kind == "f":
            if not self.dev.has_fp64:
                raise ValueError(
                    f"float32 frames need double precision; {self.dev.name} has no cl_khr_fp64")
            return "double", "double", 8, numpy.dtype(numpy.float64), lambda L: {"FLOAT_FRAMES": 1}
        vmax = _abs_max(dtype)
        top = vmax << max(n_levels - 1, 0)
        val_t, vsize = ("int", 4) if top < 2**31 else ("long", 8)

        def level_defines(L):
            bound = vmax << L
            return {"PROD32": 1} if val_t == "int" and bound * bound < 2**31 else {}

        return val_t, "long", vsize, numpy.dtype(numpy.int64), level_defines

    def _kernel(self, name, in_t, val_t, acc_t, kmin, extra=None):
        return get_kernel(self.dev, "multitau.cl", name,
                          self._defines(in_t, val_t, acc_t, kmin, extra))

    def _defines(self, in_t, val_t, acc_t, kmin, extra=None) -> dict:
        defines = {"IN_T": in_t, "VAL_T": val_t, "ACC_T": acc_t, "M": self.m, "KMIN": kmin,
                   "WG": WG}
        defines.update(extra or {})
        return defines

    def _event_programs(self, dtype, n_levels) -> dict:
        """Arguments of :meth:`_kernel` (after the name) of the events path's kernels, by
        kernel name, for events of ``dtype`` over ``n_levels`` levels."""
        val_t, acc_t, _, _, level_defines = self._types(dtype, n_levels)
        in_t = CTYPES[numpy.dtype(dtype).name]
        return {"mt_events": (in_t, val_t, acc_t, 0, level_defines(n_levels - 1)),
                "mt_event_frame_sums": (in_t, val_t, acc_t, 0, level_defines(0)),
                "mt_reduce": ("uchar", val_t, acc_t, 0)}

    def prepare_programs(self, dtype, n_frames) -> None:
        """Start building, in the background, the programs of the events path for ``n_frames``
        frames of ``dtype`` (:func:`~ewoksxpcs.opencl.device.build_in_background`): they
        compile while the frames are compacted. Nothing on the dense path."""
        if self.data_path != "events" or dtype is None or not n_frames:
            return
        dtype = numpy.dtype(dtype)
        if dtype.name not in CTYPES or (dtype.kind == "f" and not self.dev.has_fp64):
            return
        try:
            programs = self._event_programs(dtype, self._levels_for(int(n_frames)))
        except ValueError:  # refused: the correlation says why
            return
        if dtype.kind == "f":  # its frame sums are taken on the host
            del programs["mt_event_frame_sums"]
        build_in_background(self.dev, [("multitau.cl", self._defines(*args))
                                       for args in programs.values()])

    @staticmethod
    def _slot_bases(m, n_levels):
        bases = [0]
        for L in range(1, n_levels + 1):
            bases.append(bases[-1] + (m if L == 1 else m // 2))
        return bases  # bases[L]: first slot of level L; bases[n_levels]: total

    def _reduce(self, queue, acc_buf, n_cols, P_acc, pos=None):
        """Sub-bin sums of per-pixel accumulators (n_cols, P_acc) → (n_sub, n_cols)."""
        import pyopencl

        b = self.binning
        ctx = self.dev.context
        mf = pyopencl.mem_flags
        acc_np = self._acc_dtype
        n2_buf = pyopencl.Buffer(ctx, mf.WRITE_ONLY, max(1, b.n_sub * n_cols * 8))
        sub_off = pyopencl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR,
                                  hostbuf=numpy.ascontiguousarray(b.sub_offsets, numpy.int64))
        pos_arr = numpy.zeros(1, numpy.int32) if pos is None else numpy.ascontiguousarray(pos, numpy.int32)
        pos_buf = pyopencl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=pos_arr)
        k = self._kernel("mt_reduce", "uchar", self._val_t, self._acc_t, 0)
        k.set_args(acc_buf, numpy.int32(P_acc), sub_off, numpy.int32(b.n_sub), pos_buf,
                   numpy.int32(pos is not None), n2_buf)
        out = numpy.empty((b.n_sub, n_cols), dtype=acc_np)
        if n_cols:
            pyopencl.enqueue_nd_range_kernel(queue, k, (b.n_sub * WG, n_cols), (WG, 1))
            pyopencl.enqueue_copy(queue, out, n2_buf)
        return out

    def _levels_for(self, n_frames):
        if n_frames is not None:
            level, _ = multitau_lags(self.m, n_frames, self.max_levels)
            return max(1, int(level.max()) + 1 if level.size else 1)
        return self.max_levels or UNKNOWN_LENGTH_LEVELS

    def _assemble(self, slots, n_frames, n_levels):
        level, k = multitau_lags(self.m, n_frames, min(n_levels, self.max_levels or n_levels))
        bases = self._slot_bases(self.m, n_levels)
        cols = numpy.array([bases[L] + kk - (0 if L == 0 else self.m // 2)
                            for L, kk in zip(level.tolist(), k.tolist())], dtype=numpy.int64)
        return slots[:, cols], level, k

    # ------------------------------------------------------------------ dense frames
    def stream(self, frame_shape, dtype, n_frames: Optional[int] = None,
               chunk_frames: Optional[int] = None) -> "DenseMultiTauStream":
        """A :class:`DenseMultiTauStream` of this correlator: frames fed chunk by chunk (host
        arrays, or frames already in device memory), the sums of the frames so far at any time.
        ``n_frames``: of the whole data when known (else :data:`UNKNOWN_LENGTH_LEVELS` levels
        are kept); ``chunk_frames``: most frames per call (default: ``chunk_frames`` of the
        correlator, else ~128 MB of frames)."""
        return DenseMultiTauStream(self, frame_shape, dtype, n_frames, chunk_frames)

    def _dense_sums(self, data) -> MultiTauSums:
        t_begin = time.perf_counter()
        source = as_frame_source(data)
        stream = self.stream(source.frame_shape, source.dtype, source.n_frames)
        t_setup = time.perf_counter()
        chunk = stream.chunk
        for c in source.iter_chunks(chunk):
            for i in range(0, c.shape[0], chunk):
                stream.feed(c[i: i + chunk])
        t_stream = time.perf_counter()
        stream.drain()
        t_drain = time.perf_counter()
        sums = stream.sums()
        self.plan.update(setup_s=t_setup - t_begin, stream_s=t_stream - t_setup,
                         wait_staging_s=stream.wait_s, copy_s=stream.copy_s,
                         drain_s=t_drain - t_stream, finish_s=time.perf_counter() - t_drain)
        return sums

    # ------------------------------------------------------------------ events
    def _event_sums(self, events) -> MultiTauSums:
        import pyopencl

        dev, b = self.dev, self.binning
        sub = events.pixel_sub_bins(b)  # also checks the binned pixels are held
        m = self.m
        n_frames = int(events.n_frames)
        n_levels = self._levels_for(n_frames)
        dtype = numpy.dtype(events.values_dtype)
        val_t, acc_t, vsize, acc_np, level_defines = self._types(dtype, n_levels)
        self._val_t, self._acc_t, self._acc_dtype = val_t, acc_t, acc_np
        bases = self._slot_bases(m, n_levels)
        n_slots = bases[n_levels]
        P = int(b.n_binned_pixels)
        # Accumulator column of each event row: its position in Binning order (-1: unbinned).
        position = numpy.full(b.shape[0] * b.shape[1], -1, dtype=numpy.int32)
        position[b.pixel_index] = numpy.arange(P, dtype=numpy.int32)
        pos = position[events.pixel_index]
        pos[sub < 0] = -1
        fixed = n_slots * P * 8 + (b.n_sub + 1) * 8
        ctx = dev.context
        mf = pyopencl.mem_flags
        queue = pyopencl.CommandQueue(ctx)
        programs = self._event_programs(dtype, n_levels)
        kern = self._kernel("mt_events", *programs["mt_events"])
        resident = events.resident_on(dev)
        resident_need = fixed + 12 * (events.n_pixels + 1) + n_frames * b.n_sub * 8
        if resident is not None and resident_need <= self.budget:
            # Compacted on this device: one launch over every row of the device buffers, and
            # the per-frame sums there too (integer events); nothing goes through the host.
            # The compaction wrote them on the device's own queue: drained before this queue
            # reads them (queues are not ordered with each other).
            dev.queue.finish()
            acc = device_buffer(dev, queue, n_slots * P * 8, zero=True)
            o_buf = pyopencl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=events.offsets)
            p_buf = pyopencl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR,
                                    hostbuf=numpy.ascontiguousarray(pos))
            n_rows = events.n_pixels
            self.plan = dict(resident=True, levels=n_levels, budget=self.budget)
            if n_rows:
                kern.set_args(resident.d_values, resident.d_times, o_buf, numpy.int64(0), p_buf,
                              numpy.int32(n_rows), numpy.int64(n_frames), numpy.int32(n_levels),
                              numpy.int32(P), acc)
                pyopencl.enqueue_nd_range_kernel(queue, kern, (_round_up(n_rows, LOCAL),), (LOCAL,))
            fs = (events.frame_sums_for(b) if dtype.kind == "f"  # host: fixed summation order
                  else self._device_frame_sums(queue, resident, o_buf, sub, n_rows, n_frames,
                                               programs["mt_event_frame_sums"]))
        else:
            acc = device_buffer(dev, queue, n_slots * P * 8, zero=True)
            self._event_blocks(events, pos, kern, acc, fixed, n_frames, n_levels, P, queue)
            fs = events.frame_sums_for(b)
        slots = self._reduce(queue, acc, n_slots, P)
        n2, level, k = self._assemble(slots, n_frames, n_levels)
        if acc_np.kind == "i":
            check_int64_range(n2_bound(level, _event_value_bound(events), numpy.abs(fs).sum(axis=0)))
        return MultiTauSums(n2, fs, level, k, m)

    def _device_frame_sums(self, queue, resident, o_buf, sub, n_rows, n_frames, program):
        """S_0(t, s) (n_frames, n_sub) int64 of integer events held in device buffers."""
        import pyopencl

        n_sub = self.binning.n_sub
        ctx = self.dev.context
        mf = pyopencl.mem_flags
        out = numpy.zeros((n_frames, n_sub), dtype=numpy.int64)
        if out.size == 0 or n_rows == 0:
            return out
        sums = device_buffer(self.dev, queue, out.nbytes, zero=True)
        s_buf = pyopencl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR,
                                hostbuf=numpy.ascontiguousarray(sub, numpy.int32))
        k = self._kernel("mt_event_frame_sums", *program)
        k.set_args(resident.d_values, resident.d_times, o_buf, s_buf, numpy.int32(n_rows),
                   numpy.int32(n_sub), sums)
        pyopencl.enqueue_nd_range_kernel(queue, k, (_round_up(n_rows, LOCAL),), (LOCAL,))
        pyopencl.enqueue_copy(queue, out, sums)
        return out

    def _event_blocks(self, events, pos, kern, acc, fixed, n_frames, n_levels, P, queue):
        """mt_events over host events, uploaded in row blocks bounded by the budget."""
        import pyopencl

        dev = self.dev
        ctx = dev.context
        mf = pyopencl.mem_flags
        dtype = numpy.dtype(events.values.dtype)
        per_event = dtype.itemsize + 4
        room = self.budget - fixed - 16 * (events.n_pixels + 1)
        if room < per_event * 1024:
            raise ValueError(
                f"multi-tau sums of {P} pixels and {n_levels} levels need {fixed} bytes of device "
                f"memory, more than max_device_memory={self.budget}")
        max_events = int(min(room // per_event, dev.max_mem_alloc // max(per_event, 1)))
        self.plan = dict(max_events_per_block=max_events, levels=n_levels, budget=self.budget)
        offsets = events.offsets
        # Row blocks with at most max_events events (a row larger than that gets a block alone).
        r0 = 0
        n_rows_total = events.n_pixels
        while r0 < n_rows_total:
            limit = offsets[r0] + max_events
            r1 = int(numpy.searchsorted(offsets, limit, side="right")) - 1
            r1 = min(max(r1, r0 + 1), n_rows_total)
            e0, e1 = int(offsets[r0]), int(offsets[r1])
            if e1 - e0 > max_events:
                raise ValueError(
                    f"pixel row {r0} holds {e1 - e0} events, more than fit max_device_memory="
                    f"{self.budget}")
            vals = numpy.ascontiguousarray(events.values[e0:e1]) if e1 > e0 else numpy.zeros(1, dtype)
            tims = numpy.ascontiguousarray(events.times[e0:e1]) if e1 > e0 else numpy.zeros(1, numpy.uint32)
            v_buf = pyopencl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=vals)
            t_buf = pyopencl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=tims)
            o_buf = pyopencl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR,
                                    hostbuf=numpy.ascontiguousarray(offsets[r0: r1 + 1]))
            p_buf = pyopencl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR,
                                    hostbuf=numpy.ascontiguousarray(pos[r0:r1]))
            kern.set_args(v_buf, t_buf, o_buf, numpy.int64(e0), p_buf, numpy.int32(r1 - r0),
                          numpy.int64(n_frames), numpy.int32(n_levels), numpy.int32(P), acc)
            pyopencl.enqueue_nd_range_kernel(queue, kern, (_round_up(r1 - r0, LOCAL),), (LOCAL,))
            queue.finish()  # the block's buffers are released next iteration
            r0 = r1

    # ------------------------------------------------------------------ public
    def compute_sums(self, data) -> MultiTauSums:
        from ..engine.events import EventStack

        data = self._events_if_needed(data)
        if isinstance(data, EventStack):
            return self._event_sums(data)
        return self._dense_sums(data)

    def correlate(self, data, frame_period: Optional[float] = None, **info) -> MultiTauResult:
        """Multi-tau g2 of ``data`` (frames or an EventStack) on the device."""
        t0 = time.perf_counter()
        self.plan = {}
        sums = self.compute_sums(data)
        sums.excluded = excluded_of(data)  # bad frames: the remaining pairs' counts
        t1 = time.perf_counter()
        if frame_period is None:
            frame_period = getattr(data, "frame_period", None)
        info = dict(info, plan=dict(self.plan, data_path=self.data_path or "dense"))
        result = normalise_multitau(sums, self.binning, self.normalisation, method=self.name,
                                    device=self.device_name, frame_period=frame_period, info=info)
        result.info.setdefault("timings", {}).update(
            correlate_s=t1 - t0, normalise_s=time.perf_counter() - t1)
        return result


class DenseMultiTauStream:
    """The state of :class:`OpenCLMultiTau`'s dense path between chunks of frames, on the device.

    Chunks of whole frames go host → device from two page-locked staging buffers (or straight
    from page-locked frames) on a transfer queue while the compute queue works on the previous
    chunk (:meth:`feed`), or are read where they already lie in device memory (:meth:`feed_device`:
    frames decoded there). Per chunk and level one launch of ``mt_level``, per-frame sub-bin sums
    by ``mt_frame_sums``; :meth:`sums` reduces the per-pixel accumulators of the frames so far
    (feeding may go on), which are those of the offline run on these frames.

    Parameters
    ----------
    corr : OpenCLMultiTau
    frame_shape : (int, int)
    dtype : numpy.dtype
    n_frames : int, optional
        Frames of the whole data, when known (sets the number of levels kept).
    chunk_frames : int, optional
        Most frames per call.
    """

    def __init__(self, corr: "OpenCLMultiTau", frame_shape, dtype, n_frames=None,
                 chunk_frames=None):
        import pyopencl

        self.corr = corr
        dev, b = corr.dev, corr.binning
        self.dev, self.binning = dev, b
        b.check_frame_shape(frame_shape)
        dtype = numpy.dtype(dtype)
        self.dtype = dtype
        in_t = CTYPES[str(dtype)]
        P = int(b.n_binned_pixels)
        frame_pixels = int(b.shape[0] * b.shape[1])
        if frame_pixels >= 2**31:
            raise ValueError(f"frames of {frame_pixels} pixels: the OpenCL kernels index pixels in int32")
        n_levels = corr._levels_for(n_frames)
        m = corr.m
        val_t, acc_t, vsize, acc_np, level_defines = corr._types(dtype, n_levels)
        corr._val_t, corr._acc_t, corr._acc_dtype = val_t, acc_t, acc_np
        self.acc_np, self.vsize = acc_np, vsize
        bases = corr._slot_bases(m, n_levels)
        n_slots = bases[n_levels]
        # Memory: fixed state, then chunk buffers sized to the rest of the budget.
        fixed = (n_levels * (m - 1) * P * vsize + n_slots * P * 8 + P * 8
                 + (b.n_sub + 1) * 8)
        per_frame = 2 * frame_pixels * dtype.itemsize + P * vsize + b.n_sub * 8
        room = corr.budget - fixed
        if room < per_frame * 2:
            raise ValueError(
                f"multi-tau state for {P} pixels and {n_levels} levels needs "
                f"{fixed + 2 * per_frame} bytes of device memory, more than max_device_memory="
                f"{corr.budget}: raise max_device_memory, lower lags_per_level or max_levels, "
                "or bin fewer pixels"
            )
        chunk = chunk_frames or corr.chunk_frames or max(
            1, DEFAULT_CHUNK_BYTES // max(1, frame_pixels * dtype.itemsize))
        chunk = int(max(2, min(chunk, room // per_frame,
                               dev.max_mem_alloc // max(1, frame_pixels * dtype.itemsize))))
        if n_frames:
            chunk = min(chunk, max(2, int(n_frames)))
        self.chunk = chunk
        corr.plan = dict(chunk_frames=chunk, levels=n_levels,
                         device_bytes=int(fixed + chunk * per_frame), budget=corr.budget)
        ctx = dev.context
        mf = pyopencl.mem_flags
        self.copy_q = pyopencl.CommandQueue(ctx)
        self.comp_q = comp_q = pyopencl.CommandQueue(ctx)

        def zeros(nbytes):
            return device_buffer(dev, comp_q, nbytes, zero=True)

        self.pix = pyopencl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR,
                                   hostbuf=numpy.ascontiguousarray(b.pixel_index, numpy.int32))
        self.sub_off = pyopencl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR,
                                       hostbuf=numpy.ascontiguousarray(b.sub_offsets, numpy.int64))
        self.rings = [zeros((m - 1) * P * vsize) for _ in range(n_levels)]
        self.acc = zeros(n_slots * P * 8)
        self.vmax_buf = zeros(P * 4)
        half = chunk // 2 + 1
        self.pingpong = [pyopencl.Buffer(ctx, mf.READ_WRITE, max(8, half * P * vsize))
                         for _ in range(2)]
        self.fs_buf = pyopencl.Buffer(ctx, mf.READ_WRITE, max(8, chunk * b.n_sub * 8))
        self.frames_dev = [None, None]  # allocated at the first host chunk
        self.staging = None
        self.copy_evt = [None, None]
        self.done_evt = [None, None]
        self.k_fs = corr._kernel("mt_frame_sums", in_t, val_t, acc_t, 0, level_defines(0))
        self.k_level = [corr._kernel("mt_level", in_t if L == 0 else val_t, val_t, acc_t,
                                     0 if L == 0 else m // 2,
                                     dict(level_defines(L), **({"GATHER": 1} if L == 0 else {})))
                        for L in range(n_levels)]
        self.P, self.frame_pixels, self.n_levels = P, frame_pixels, n_levels
        self.bases, self.n_slots = bases, n_slots
        self.counts = [0] * n_levels  # level frames processed so far
        self.fs_parts = []
        # Known length: the per-frame sums are downloaded straight into one array.
        self.fs_all = (numpy.empty((int(n_frames), b.n_sub), dtype=acc_np)
                       if n_frames is not None else None)
        self.slot = 0
        self.wait_s = self.copy_s = 0.0
        comp_q.finish()

    @property
    def n_frames(self) -> int:
        return self.counts[0]

    def feed(self, piece: numpy.ndarray) -> None:
        """Take the next frames, (n, Ny, Nx) of the dtype, n at most :attr:`chunk`."""
        import pyopencl

        n = piece.shape[0]
        if n == 0:
            return
        if n > self.chunk:
            raise ValueError(f"{n} frames in one chunk, more than the stream's {self.chunk}")
        ctx, mf = self.dev.context, pyopencl.mem_flags
        if self.frames_dev[0] is None:
            nbytes = max(8, self.chunk * self.frame_pixels * self.dtype.itemsize)
            self.frames_dev = [pyopencl.Buffer(ctx, mf.READ_ONLY, nbytes) for _ in range(2)]
            self.staging = StagingSlots(self.dev, (self.chunk, self.frame_pixels), self.dtype)
        s = self.slot % 2
        self.slot += 1
        if self.copy_evt[s] is not None:
            tw = time.perf_counter()
            self.copy_evt[s].wait()  # the staging buffer's previous copy is done
            self.wait_s += time.perf_counter() - tw
        tc = time.perf_counter()
        self.copy_evt[s], direct = upload_chunk(
            self.copy_q, self.frames_dev[s], piece.reshape(n, self.frame_pixels), self.staging,
            s, wait_for=[self.done_evt[s]] if self.done_evt[s] is not None else None)
        self.copy_s += time.perf_counter() - tc
        self.copy_q.flush()
        self.done_evt[s] = self._compute(self.frames_dev[s], n, [self.copy_evt[s]])
        if direct:  # read in place: the source may reuse the piece's memory once we go on
            tw = time.perf_counter()
            self.copy_evt[s].wait()
            self.wait_s += time.perf_counter() - tw

    def feed_device(self, d_frames, n: int, wait_for=None) -> None:
        """Take ``n`` frames lying in device memory (``d_frames`` from its first byte, C
        order); returns once the kernels reading them are done (the buffer may be reused)."""
        if n == 0:
            return
        if n > self.chunk:
            raise ValueError(f"{n} frames in one chunk, more than the stream's {self.chunk}")
        self._compute(d_frames, n, wait_for, wait=True)

    def _compute(self, d_frames, n: int, wait_for, wait: bool = False):
        """Frame sums and every level's launch for the chunk; the event of the last kernel
        reading ``d_frames`` (waited for with ``wait``)."""
        import pyopencl

        comp_q, b = self.comp_q, self.binning
        t_first = self.counts[0]
        fs_all = self.fs_all
        fits = fs_all is not None and t_first + n <= fs_all.shape[0]
        fs_host = fs_all[t_first: t_first + n] if fits else numpy.empty((n, b.n_sub), self.acc_np)
        self.k_fs.set_args(d_frames, numpy.int64(self.frame_pixels), self.pix, self.sub_off,
                           numpy.int32(b.n_sub), self.fs_buf)
        fs_evt = pyopencl.enqueue_nd_range_kernel(comp_q, self.k_fs, (b.n_sub * WG, n), (WG, 1),
                                                  wait_for=wait_for)
        self.fs_parts.append((fs_host, pyopencl.enqueue_copy(comp_q, fs_host, self.fs_buf,
                                                             is_blocking=False)))
        # Level 0 reads the frames; each further level reads the pair sums of the previous.
        n_l, src = n, d_frames
        last_reader = None
        for L in range(self.n_levels):
            if n_l <= 0:
                break
            t0 = self.counts[L]
            write_out = L + 1 < self.n_levels
            out = self.pingpong[L % 2]
            kern = self.k_level[L]
            kern.set_args(src, numpy.int64(self.frame_pixels), self.pix, numpy.int32(self.P),
                          numpy.int32(n_l), numpy.int64(t0), self.rings[L], self.acc,
                          numpy.int64(self.bases[L]), out, numpy.int32(write_out),
                          self.vmax_buf)
            evt = pyopencl.enqueue_nd_range_kernel(comp_q, kern, (_round_up(self.P, LOCAL),),
                                                   (LOCAL,))
            if L == 0:
                last_reader = evt
            self.counts[L] += n_l
            n_next = ((t0 + n_l) >> 1) - (t0 >> 1)
            n_l, src = n_next, out
        comp_q.flush()
        if wait:
            pyopencl.wait_for_events([fs_evt, last_reader])
        return last_reader

    def drain(self) -> None:
        """Wait for the work queued so far."""
        self.comp_q.finish()
        self.copy_q.finish()

    def sums(self) -> MultiTauSums:
        """The sums of the frames fed so far (feeding may go on)."""
        import pyopencl

        self.drain()
        b, comp_q = self.binning, self.comp_q
        n_frames = self.counts[0]
        slots = self.corr._reduce(comp_q, self.acc, self.n_slots, self.P)
        fs_all, fs_parts = self.fs_all, self.fs_parts
        fs = (fs_all if fs_all is not None and n_frames == fs_all.shape[0]
              and all(numpy.shares_memory(f, fs_all) for f, _ in fs_parts)
              else numpy.concatenate([f for f, _ in fs_parts]) if fs_parts
              else numpy.zeros((0, b.n_sub), dtype=self.acc_np))
        if len(fs_parts) > 1 and fs is not fs_all:
            self.fs_parts = [(fs, None)]  # concatenated once
        n2, level, k = self.corr._assemble(slots, n_frames, self.n_levels)
        if self.acc_np.kind == "i":
            vm = numpy.empty(self.P, numpy.uint32)
            pyopencl.enqueue_copy(comp_q, vm, self.vmax_buf)
            totals = fs.sum(axis=0) if self.dtype.kind == "u" else numpy.abs(fs).sum(axis=0)
            check_int64_range(n2_bound(level, int(vm.max()) if self.P else 0, totals))
        return MultiTauSums(n2, fs, level, k, self.corr.m)


class LiveOpenCLMultiTau:
    """Live multi-tau on an OpenCL device: the frames (uploaded, or stored chunks decoded on the
    device, :class:`~ewoksxpcs.opencl.live_frames.DeviceFrames`) fed to a
    :class:`DenseMultiTauStream` of unknown length; the sums of the frames so far at any time,
    those of the offline run on these frames (exact int64 for integer frames).

    Parameters
    ----------
    binning : Binning
    frame_shape : (int, int)
    dtype : numpy.dtype
        Integer pixel type (1, 2 or 4 bytes).
    lags_per_level : int
    device : str, optional
    chunk_frames : int, optional
        Most frames per launch (larger chunks are split).
    """

    #: The sum image is kept on the device (:meth:`sum_image`).
    sums_frames = True
    name = OpenCLMultiTau.name

    def __init__(self, binning, frame_shape, dtype, lags_per_level: int = DEFAULT_LAGS_PER_LEVEL,
                 device=None, chunk_frames: Optional[int] = None):
        from ..opencl.live_frames import DeviceFrames

        dtype = numpy.dtype(dtype)
        if dtype.kind not in "iu":
            raise ValueError(f"live multi-tau on OpenCL needs integer frames, not {dtype}")
        self.corr = OpenCLMultiTau(binning, device=device, lags_per_level=lags_per_level)
        self.corr.plan = {}
        self.stream = self.corr.stream(frame_shape, dtype, None, chunk_frames)
        self.frames = DeviceFrames(self.corr.dev, frame_shape, dtype)

    @property
    def device_name(self) -> str:
        return f"{self.corr.dev.kind} {self.corr.dev.name}"

    @property
    def n_frames(self) -> int:
        return self.stream.n_frames

    @property
    def paths(self) -> set:
        return self.frames.paths

    def feed(self, chunk: numpy.ndarray) -> None:
        """Take the next frames, (n, Ny, Nx) of the given dtype."""
        step = self.stream.chunk
        for i in range(0, chunk.shape[0], step):
            self.stream.feed_device(*self.frames.land(chunk[i:i + step]))

    def feed_raw(self, raw) -> None:
        """Take the next frames as their stored chunks (:class:`~ewoksxpcs.io.live.RawChunks`),
        decoded on the device."""
        for piece in raw.split(self.stream.chunk):
            self.stream.feed_device(*self.frames.land(piece))

    def sums(self) -> MultiTauSums:
        return self.stream.sums()

    def sum_image(self) -> numpy.ndarray:
        return self.frames.sum_image()


class OpenCLEventsMultiTau(OpenCLMultiTau):
    """:class:`OpenCLMultiTau` on the events path (``data_path="events"``): frames compacted on
    the device, the device-resident events correlated there (registry name ``opencl-events``)."""

    name = "opencl-events"

    def __init__(self, qmask, device=None, **options):
        options.setdefault("data_path", "events")
        super().__init__(qmask, device=device, **options)


def _event_value_bound(events) -> int:
    """An upper bound of |event value| without downloading resident events: the largest
    per-pixel sum taken at compaction (>= any of its values), else the values' maximum."""
    sums = getattr(events, "pixel_sums", None)
    if sums is not None and getattr(events, "_values", None) is None:
        top = int(numpy.abs(sums).max()) if sums.size else 0
        dtype = numpy.dtype(events.values_dtype)
        return min(top, _abs_max(dtype)) if dtype.kind in "iu" else top
    return int(numpy.abs(events.values).max()) if events.n_events else 0


def _round_up(n: int, m: int) -> int:
    return max(m, -(-int(n) // m) * m)
