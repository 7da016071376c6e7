"""Two-time correlation on an OpenCL device: tiled C = N_q·X·Xᵀ / (S·Sᵀ) per selected bin.

Frames stream host → device through two page-locked staging buffers (transfer of chunk k+1 on
its own queue, overlapped with the compute of chunk k, as in
:mod:`ewoksxpcs.correlators.opencl_multitau`); ``tt_bin`` gathers the selected pixels on the
device and sums them into time bins of ``time_bin`` frames, X (nT, n_sel_pixels), kept on the
device (native dtype when ``time_bin`` = 1: one byte per pixel-frame for uint8; otherwise the
smallest integer type that holds any sum of ``time_bin`` values, and, when that would take more
passes or not fit, uint8 first: the kernel flags a sum above 255 and the frames are read again
with the safe type). EventStacks are scattered into X by ``tt_events`` instead. Then
``tt_rowsums`` gives S(T) of each bin and the upper triangle of C is computed in 128×128 tiles
(64×64 on CPUs), normalised in the epilogue, by one of two kernels:

- ``tt_gram_mma`` (``kernels/gram_mma.cl``, NVIDIA GPUs of compute capability ≥ 8.0, X in
  uint8): the products on the tensor cores (PTX ``mma.sync`` u8·u8 → s32), exact integer
  sums, when ``tt_xmax`` shows that (max X)² × (pixels of the bin) < 2³¹. About 600 Tops/s
  (full-map equivalent) on an H200, 25× the float kernel. X then holds each bin's columns
  padded with zeros to a multiple of 64 (aligned 16-byte loads). Frames of wider integer types
  are first binned into uint8 X (a flag tells when a sum does not fit, and the frames are read
  again with the safe type and the float kernel).
- ``tt_gram`` (``kernels/twotime.cl``, every device): float sums over the bin's pixels.

Whole maps: device memory for one map (nT² float32) is kept when it fits half the budget; the
kernel then also writes the lower triangle, ``tt_diag`` sums the diagonals of the map and of its
age segments (fp64 devices: g2 and partial g2 without a host pass over the maps) and the map is
read straight into the result, one or more bins per launch. A pass of one bin over page-locked
frames (``stream_maps``, default on GPUs) computes that map in strips while the frames still
stream (:mod:`~ewoksxpcs.correlators.opencl_twotime_strips`). Otherwise C is computed in bands
of rows that the host mirrors, and the g2 is computed on the host.

Memory: X, the map (or a band), and the two chunk buffers must fit ``max_device_memory``
(default: :func:`ewoksxpcs.opencl.device.default_device_memory`: 70 % of a GPU's free memory);
when X of all selected bins does not fit, bins
are processed in groups, one pass over the frames per group (the source must be re-readable).
The result itself, n_sel·nT² float32, is on the host: bound it with ``time_bin`` or
``max_frames``.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from typing import Optional

import numpy

from ..engine.frames import as_frame_source
from ..opencl.device import (CTYPES, STAGING_BYTES, StagingSlots, build_in_background,
                             default_device_memory, device_buffer, download_pinned, get_device,
                             get_kernel, is_pinned, upload_chunk)
from ..opencl.frame_boxes import (RECT_COPY_COSTS, FrameBoxes, GatheredBoxes, PixelRuns,
                                   frame_boxes, frame_layout)
from ..engine.qmask import DEFAULT_GROUPS, as_binning
from ..engine.twotime import (
    DEFAULT_MAX_FRAMES,
    DEFAULT_SEGMENTS,
    binned_dtype,
    TwoTimeResult,
    choose_time_bin,
    make_result,
    segment_edges,
    select_bins,
)
from .opencl_twotime_strips import MapStrips, StagingBusy, strip_rows
from .opencl_multitau import (LOCAL, DEFAULT_CHUNK_BYTES, DeviceDataPath, _round_up,
                              check_memory_option)

__all__ = ["OpenCLTwoTime", "OpenCLEventsTwoTime"]

logger = logging.getLogger(__name__)

WG = 128
#: tt_gram: TS x TS work-items; each owns WPT x WPT outputs (GPUs: 8, a 128-wide tile); TK
#: pixels per local-memory step. Bands of the map are multiples of the largest tile.
TS, TK = 16, 16
WPT_GPU, WPT_CPU = 8, 4
TILE = TS * WPT_GPU
#: tt_gram_mma: columns of each bin padded to a multiple of MMA_PAD; 256 work-items per tile.
MMA_PAD, MMA_WG = 64, 256
#: Frames are uploaded whole unless rectangles bounding the selected pixels hold less than
#: this fraction of them (:func:`~ewoksxpcs.opencl.frame_boxes.frame_boxes`).
BOXES_FRACTION = 0.8
#: Default ``gather_share`` (``EWOKSXPCS_GATHER_SHARE`` overrides it).
GATHER_SHARE = 0.0
INT32_LIMIT = 2**31


def tensor_core_capable(dev) -> bool:
    """Whether ``dev`` runs ``kernels/gram_mma.cl``: an NVIDIA GPU of compute capability 8.0 or
    more (PTX ``mma.sync.m16n8k32`` with u8 operands)."""
    if dev.kind != "gpu" or "NVIDIA" not in dev.name:
        return False
    try:
        return int(dev.device.compute_capability_major_nv) >= 8
    except Exception:  # no cl_nv_device_attribute_query
        return False


class _Overflow(Exception):
    """A time-binned sum did not fit the narrow X type tried first."""


def _int32_exact(x_max: int, widths) -> bool:
    """Whether every pixel sum of X·Xᵀ fits int32: (max X)² × (the widest bin's columns)."""
    return x_max * x_max * int(numpy.max(widths)) < INT32_LIMIT


def _moved(layout) -> str:
    """How the frames of ``layout`` cross the bus, in words (the result's frames_moved)."""
    if layout.whole:
        return "whole frames"
    if isinstance(layout, PixelRuns):
        return f"{layout.n_runs} runs of {layout.packed_pixels} pixels, gathered"
    return (f"{len(layout.boxes)} rectangles of {layout.moved_pixels} pixels"
            + (", gathered" if isinstance(layout, GatheredBoxes) else ""))


def _raise_if_overflow(queue, ovf, X) -> None:
    """Raise :class:`_Overflow` (X released) when the kernels set the flag ``ovf``."""
    import pyopencl

    flag = numpy.zeros(1, numpy.int32)
    pyopencl.enqueue_copy(queue, flag, ovf)
    if flag[0]:
        X.release()
        raise _Overflow()


class OpenCLTwoTime(DeviceDataPath):
    """Two-time correlator on an OpenCL device; see the module docstring.

    Parameters
    ----------
    qmask : array_like (Ny, Nx) of int, or Binning
    device : str, optional
    bins : sequence of int, optional
        qmask labels of the maps (default: all).
    time_bin : int, optional
    max_frames : int
        Largest nT when ``time_bin`` is automatic.
    n_segments : int
        Age segments of the partial g2.
    n_groups, bad_pixels, chunk_frames
    max_device_memory : int, optional
        Device memory budget, bytes.
    data_path : {None, "dense", "events"}
        How frames are consumed (:class:`~ewoksxpcs.correlators.opencl_multitau.DeviceDataPath`).
    gram : {"auto", "mma", "float"}
        Kernel of the products: "auto" (default) the tensor-core kernel where the device has it
        and the sums fit 32 bits exactly, else the float one; "mma" requires the device to have
        it (the float kernel still runs for a bin whose sums could exceed 32 bits); "float"
        always the float kernel.
    gather_share : float in [0, 1], optional
        Page-locked frames whose rectangles are read in place (:func:`~ewoksxpcs.opencl.
        frame_boxes.frame_layout`): this share of each chunk is gathered by host threads
        instead (the host's cheapest layout), while the copy engine moves the rectangles of
        the rest (default: ``EWOKSXPCS_GATHER_SHARE``, else :data:`GATHER_SHARE`).
    stream_maps : bool, optional
        For a pass over page-locked frames with one bin whose whole map fits the device:
        compute the map in strips while the frames stream and read each strip back at once
        (default: on GPUs). The result is the same either way.
    """

    name = "opencl"

    def __init__(self, qmask, device=None, bins=None, time_bin: Optional[int] = None,
                 max_frames: int = DEFAULT_MAX_FRAMES, n_segments: int = DEFAULT_SEGMENTS,
                 n_groups: int = DEFAULT_GROUPS, bad_pixels=None,
                 chunk_frames: Optional[int] = None, max_device_memory: Optional[int] = None,
                 data_path: Optional[str] = None, gram: Optional[str] = None,
                 gather_share: Optional[float] = None, stream_maps: Optional[bool] = None):
        self._set_data_path(data_path)
        if stream_maps is not None and not isinstance(stream_maps, bool):
            raise ValueError(f"stream_maps must be True, False or None, got {stream_maps!r}")
        if gather_share is None:
            env = os.environ.get("EWOKSXPCS_GATHER_SHARE")
            try:
                gather_share = float(env) if env else GATHER_SHARE
            except ValueError:
                raise ValueError(f"EWOKSXPCS_GATHER_SHARE={env!r}: not a number in [0, 1]") from None
        if isinstance(gather_share, bool) or not isinstance(
                gather_share, (int, float, numpy.integer, numpy.floating)) \
                or not 0 <= gather_share <= 1:
            raise ValueError(f"gather_share must be a number in [0, 1], got {gather_share!r}")
        self.gather_share = float(gather_share)
        self.binning = as_binning(qmask, n_groups=n_groups, bad_pixels=bad_pixels)
        self.rows, self.col_offsets, self.pixel_index = select_bins(self.binning, bins)
        choose_time_bin(None, time_bin, max_frames)
        self.time_bin = time_bin
        self.max_frames = max_frames
        if isinstance(n_segments, bool) or not isinstance(n_segments, (int, numpy.integer)) or n_segments < 1:
            raise ValueError(f"n_segments must be an integer >= 1, got {n_segments!r}")
        self.n_segments = int(n_segments)
        self.chunk_frames = check_memory_option(chunk_frames, "chunk_frames")
        self.max_device_memory = check_memory_option(max_device_memory)
        self.dev = get_device(device)
        self.budget = self.max_device_memory or default_device_memory(self.dev)
        self.wpt = WPT_GPU if self.dev.kind == "gpu" else WPT_CPU
        #: One-bin passes: the map computed in strips while the frames stream (on a CPU device
        #: the strips would take the cores the binning needs).
        self.stream_maps = self.dev.kind == "gpu" if stream_maps is None else stream_maps
        if gram not in (None, "auto", "mma", "float"):
            raise ValueError(f"gram must be 'auto', 'mma' or 'float', got {gram!r}")
        capable = tensor_core_capable(self.dev)
        if gram == "mma" and not capable:
            raise ValueError(f"gram='mma' needs an NVIDIA GPU of compute capability >= 8.0, "
                             f"not {self.dev.name}")
        #: Tensor-core products possible (X in uint8, padded layout).
        self._mma = capable and gram != "float"
        #: Layout of X: each bin's columns padded to a multiple of this (zero columns).
        self._pad = MMA_PAD if self._mma else 1
        #: Try X in uint8 first for wider unsigned data (the tensor cores need it).
        self._narrow_first = self._mma

    @property
    def device_name(self) -> str:
        return self.dev.name

    # ------------------------------------------------------------------ helpers
    def _x_type(self, dtype, b):
        """(C type, numpy dtype) of X for frames of ``dtype`` summed ``b`` at a time: the
        smallest integer type that holds any sum of ``b`` values (X is the largest buffer)."""
        dtype = numpy.dtype(dtype)
        if b == 1:
            return CTYPES[str(dtype)], dtype
        if dtype.kind == "f":
            return "float", numpy.dtype(numpy.float32)
        binned_dtype(dtype, b)  # refuses time bins whose sums could leave int64
        info = numpy.iinfo(dtype)
        lo, hi = int(info.min) * b, int(info.max) * b
        kinds = (("uchar", numpy.uint8), ("ushort", numpy.uint16), ("uint", numpy.uint32)) \
            if lo == 0 else (("char", numpy.int8), ("short", numpy.int16), ("int", numpy.int32))
        for c_type, np_type in kinds:
            t = numpy.iinfo(np_type)
            if t.min <= lo and hi <= t.max:
                return c_type, numpy.dtype(np_type)
        return "long", numpy.dtype(numpy.int64)

    def _plan(self, dtype, n_frames, fixed, reiterable):
        """(time bin, its default, time bins n_t, X's C type, X's dtype, groups of bins or None,
        (C type, dtype) that holds any sum) for ``n_frames`` frames of ``dtype``; ``fixed``:
        device bytes taken besides X and the maps; ``reiterable``: whether the data can be
        read again (several passes, a retry with the safe type)."""
        b = choose_time_bin(n_frames, self.time_bin, self.max_frames)
        b_default = b
        while True:
            n_t = int(n_frames) // b
            x_t, x_np = self._x_type(dtype, b)
            groups = self._groups_or_none(n_t, x_np.itemsize, fixed)
            safe = (x_t, x_np)
            if (x_np.kind == "u" and x_np.itemsize > 1 and reiterable
                    and (self._narrow_first or (b > 1 and (groups is None or len(groups) > 1)))):
                # Binned counts are usually small: try X in uint8 (a flag tells when a sum does
                # not fit and the frames are read again with the safe type), for fewer passes
                # or for the tensor-core products.
                narrow = self._groups_or_none(n_t, 1, fixed)
                if narrow is not None and (self._narrow_first or groups is None
                                           or len(narrow) < len(groups)):
                    groups, x_t, x_np = narrow, "uchar", numpy.dtype(numpy.uint8)
            fits = groups is not None and (len(groups) == 1 or reiterable)
            if fits or self.time_bin is not None or n_t <= 1:
                return b, b_default, n_t, x_t, x_np, groups, safe
            # Default time binning: the next coarser one whose maps fit the budget.
            b += max(1, b // 8)

    def prepare_programs(self, dtype, n_frames) -> None:
        """Start building, in the background, the programs that the events path will use for
        ``n_frames`` frames of ``dtype`` (:func:`~ewoksxpcs.opencl.device.
        build_in_background`): they compile while the frames are compacted. The tensor-core
        kernel is prepared in its variant for binned counts whose products fit 32 bits."""
        if self.data_path != "events" or dtype is None or not n_frames:
            return
        dtype = numpy.dtype(dtype)
        if dtype.name not in CTYPES:
            return
        try:
            b, _, n_t, x_t, x_np, _, _ = self._plan(dtype, int(n_frames), 0, True)
        except ValueError:  # refused: correlate() says why
            return
        float_data = dtype.kind == "f"
        narrow = x_np.kind == "u" and self._x_type(dtype, b)[1].itemsize > x_np.itemsize
        variants = [self._defines(CTYPES[dtype.name], x_t, float_data,
                                  int(numpy.iinfo(x_np).max) if narrow else None),  # tt_events
                    self._defines("uchar", x_t, float_data)]  # tt_rowsums, tt_gram
        if self.dev.has_fp64:
            variants.append(self._defines("uchar", "uchar", False))  # tt_diag
        programs = [("twotime.cl", defines) for defines in variants]
        if self._mma and x_t == "uchar" and not float_data:
            programs.append(("gram_mma.cl", None))
        build_in_background(self.dev, programs)

    def _map_reserve(self, n_t):
        """Device bytes kept for the maps: one whole map (written in both halves by the kernel,
        read straight into the result) when it fits half the budget, else one band of rows."""
        whole = n_t * n_t * 4 + 3 * n_t * 8 * (1 + self.n_segments)  # map, diagonal moments
        return whole if whole <= self.budget // 2 else 0

    def _acc_dtype(self, float_data) -> numpy.dtype:
        """dtype of tt_rowsums' exact sums (its ACC_T)."""
        if not float_data:
            return numpy.dtype(numpy.int64)
        return numpy.dtype(numpy.float64 if self.dev.has_fp64 else numpy.float32)

    def _kernel(self, name, in_t, x_t, float_data, x_max=None):
        return get_kernel(self.dev, "twotime.cl", name,
                          self._defines(in_t, x_t, float_data, x_max))

    def _defines(self, in_t, x_t, float_data, x_max=None) -> dict:
        """Compile-time constants of ``twotime.cl``."""
        acc_t = "double" if (float_data and self.dev.has_fp64) else ("float" if float_data else "long")
        defines = {"IN_T": in_t, "X_T": x_t, "ACC_T": acc_t, "WG": WG, "TS": TS, "WPT": self.wpt,
                   "TK": TK}
        if x_max is not None:
            defines["X_MAX"] = f"{int(x_max)}UL"
        return defines

    def _groups(self, n_t, x_size, fixed):
        """Split the selected bins into groups that fit the budget: per bin its columns of X, a
        band of TILE map rows and its sums; ``fixed`` for the chunk buffers."""
        reserve = self._map_reserve(n_t)
        room = self.budget - fixed - n_t * 8 - reserve
        groups, current, used = [], [], 0
        for j in range(self.rows.size):
            w = int(self.col_offsets[j + 1] - self.col_offsets[j])
            w = -(-w // self._pad) * self._pad
            cost = n_t * w * x_size + (0 if reserve else TILE * n_t * 4) + n_t * 4
            if cost > room:
                raise ValueError(
                    f"two-time of bin {int(self.binning.labels[self.rows[j]])} needs "
                    f"{cost + self.budget - room} bytes of device memory ({n_t} time bins x {w} "
                    f"pixels x {x_size} bytes, a band of {TILE} map rows and the chunk buffers), "
                    f"more than max_device_memory={self.budget}: raise it or use a larger time_bin"
                )
            if current and used + cost > room:
                groups.append(current)
                current, used = [], 0
            current.append(j)
            used += cost
        if current:
            groups.append(current)
        return groups

    def _layout(self, group):
        """Columns of X for the bins ``group``: (pixel of each column, -1 for padding; column
        offsets of the bins (n_b + 1,) int32; pixels of each bin (n_b,) float32)."""
        pix, widths = [], []
        for j in group:
            a, b = int(self.col_offsets[j]), int(self.col_offsets[j + 1])
            w = -(-(b - a) // self._pad) * self._pad
            pix.append(self.pixel_index[a:b].astype(numpy.int64))
            if w > b - a:
                pix.append(numpy.full(w - (b - a), -1, numpy.int64))
            widths.append(w)
        pix = numpy.concatenate(pix) if pix else numpy.zeros(0, numpy.int64)
        col_off = numpy.concatenate([[0], numpy.cumsum(widths)]).astype(numpy.int32)
        nq = numpy.array([self.col_offsets[j + 1] - self.col_offsets[j] for j in group],
                         dtype=numpy.float32)
        return pix, col_off, nq

    def _groups_or_none(self, n_t, x_size, fixed):
        try:
            return self._groups(n_t, x_size, fixed)
        except ValueError:
            return None

    # ------------------------------------------------------------------ X on the device
    def _x_from_frames(self, source, group, b, n_t, x_t, x_np, queue, C=None,
                       float_data=False):
        """Stream the frames once; return (X buffer, pixels of the group, frames read). With
        the maps ``C`` and page-locked frames, the pass's map may be computed in strips
        meanwhile (``self._strips``, :meth:`_start_strips`)."""
        import pyopencl

        dev = self.dev
        ctx = dev.context
        mf = pyopencl.mem_flags
        pix_np = self._layout(group)[0]
        P = pix_np.size
        dtype = numpy.dtype(source.dtype)
        frame_pixels = int(self.binning.shape[0] * self.binning.shape[1])
        # Only part of each frame crosses the bus (a few bins of a large detector: a fraction of
        # the frame; a ring of one bin: an eighth): rectangles bounding the group's pixels read
        # from page-locked frames, else the host's cheapest gather of them
        # (opencl.frame_boxes.frame_layout; decided on the first chunk).
        real = pix_np >= 0
        shape = self.binning.shape
        boxes = frame_boxes(pix_np[real], shape, max_fraction=BOXES_FRACTION,
                            costs=RECT_COPY_COSTS, itemsize=dtype.itemsize)
        share = self.gather_share
        x_bytes = max(8, n_t * P * x_np.itemsize)
        X = device_buffer(self.dev, queue, x_bytes, zero=True)
        room = self.budget - x_bytes - (self._map_reserve(n_t) or TILE * n_t * 4)

        def fit_chunk(frame_bytes):  # frames per chunk for two buffers of packed frames
            chunk = self.chunk_frames or max(1, DEFAULT_CHUNK_BYTES // max(1, frame_bytes))
            return int(max(1, min(chunk, room // (2 * frame_bytes),
                                  dev.max_mem_alloc // frame_bytes,
                                  source.n_frames or chunk)))  # no larger than the stack

        # chunks read at the size of the padded rectangles (with the gathered share's); the
        # pieces then at that of the layouts chosen on the first chunk
        chunk = fit_chunk((boxes.packed_pixels + (boxes.moved_pixels if share else 0))
                          * dtype.itemsize)
        chunks = iter(source.iter_chunks(chunk))
        first = next(chunks, None)
        layouts = [boxes]
        pinned = False
        if first is not None:
            pinned = is_pinned(first) and first.flags.c_contiguous
            layouts = [frame_layout(pix_np[real], shape, pinned, dtype.itemsize, BOXES_FRACTION,
                                    cpu_device=dev.kind == "cpu", boxes=boxes,
                                    chunk_frames=chunk)]
            if share and isinstance(layouts[0], FrameBoxes) and not layouts[0].whole:
                # a share of each chunk gathered by the host while the copy engine moves the
                # rectangles of the rest
                gathered = frame_layout(pix_np[real], shape, False, dtype.itemsize,
                                        BOXES_FRACTION, chunk_frames=chunk)
                if not gathered.whole:  # (whole frames: no gain)
                    layouts.append(gathered)
            chunks = itertools.chain([first], chunks)
            chunk = min(chunk, fit_chunk(sum(lay.packed_pixels for lay in layouts)
                                         * dtype.itemsize))
        # The map in strips meanwhile when the copy engine paces the fill (page-locked frames);
        # pageable frames keep the host busy gathering them.
        if C is not None and pinned:
            self._strips = self._start_strips(group, n_t, X, P, x_t, float_data, C, queue)
        strips = self._strips
        self._moved.append(" and ".join(_moved(layout) for layout in layouts)
                           + (f" (gathered share {share:g})" if len(layouts) > 1 else "")
                           + f", {chunk} frames a copy")
        copy_q = pyopencl.CommandQueue(ctx)
        lanes = []  # per layout: (layout, its packed place of each column, frame buffers, staging)
        for layout in layouts:
            packed = numpy.full(pix_np.shape, -1, numpy.int64)
            packed[real] = layout.positions(pix_np[real])
            lane_bytes = max(8, chunk * layout.packed_pixels * dtype.itemsize)
            lanes.append((layout, pyopencl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR,
                                                  hostbuf=packed.astype(numpy.int32)),
                          [pyopencl.Buffer(ctx, mf.READ_ONLY, lane_bytes) for _ in range(2)],
                          StagingSlots(dev, (chunk, layout.packed_pixels), dtype)))
        copy_evt, done_evt = [None, None], [None, None]
        narrow = x_np.kind == "u" and self._x_type(dtype, b)[1].itemsize > x_np.itemsize
        kern = self._kernel("tt_bin", CTYPES[str(dtype)], x_t, dtype.kind == "f",
                            int(numpy.iinfo(x_np).max) if narrow else None)
        ovf = pyopencl.Buffer(ctx, mf.READ_WRITE | mf.COPY_HOST_PTR,
                              hostbuf=numpy.zeros(1, numpy.int32))
        t = 0
        slot = 0
        queue.finish()
        for c in chunks:
            for i in range(0, c.shape[0], chunk):
                piece = c[i: i + chunk]
                n = piece.shape[0]
                s = slot % 2
                slot += 1
                if copy_evt[s] is not None:
                    copy_evt[s].wait()
                flat = piece.reshape(n, frame_pixels)
                # frames [0, cut) through the first lane, [cut, n) the gathered share (the
                # rectangles' copies are enqueued first: the engine works while the host gathers)
                cut = n - (int(round(share * n)) if len(lanes) > 1 else 0)
                direct, before = False, done_evt[s]  # before: the last reader of slot s
                for (layout, pix, frames_dev, staging), a, m in zip(
                        lanes, (0, cut), (cut, n - cut)):
                    if not m:
                        continue
                    copy_evt[s], read_in_place = upload_chunk(
                        copy_q, frames_dev[s], flat[a: a + m], staging, s,
                        wait_for=[before] if before is not None else None, boxes=layout)
                    direct |= read_in_place
                    copy_q.flush()
                    kern.set_args(frames_dev[s], numpy.int64(layout.packed_pixels), pix,
                                  numpy.int32(P), numpy.int32(m), numpy.int64(t + a),
                                  numpy.int64(b), numpy.int64(n_t), X, ovf)
                    done_evt[s] = pyopencl.enqueue_nd_range_kernel(
                        queue, kern, (_round_up(P, LOCAL),), (LOCAL,), wait_for=[copy_evt[s]])
                    queue.flush()
                if strips is not None:  # the strips these frames complete
                    strips.rows_ready(min(n_t, (t + n) // b), done_evt[s])
                if direct:  # read in place: the source may reuse the piece once we go on
                    copy_evt[s].wait()
                t += n
        queue.finish()
        copy_q.finish()
        if narrow:
            _raise_if_overflow(queue, ovf, X)
        return X, P, t

    def _x_from_events(self, events, group, b, n_t, x_t, x_np, queue):
        """Scatter the events of the group's pixels into X (device): from the device buffers
        when the events were compacted on this device, else from a host gather of them."""
        import pyopencl

        ctx = self.dev.context
        mf = pyopencl.mem_flags
        pix_all = self._layout(group)[0]
        P = pix_all.size
        real = pix_all >= 0
        pix = pix_all[real]
        rows = numpy.searchsorted(events.pixel_index, pix)
        rows_c = numpy.minimum(rows, max(events.n_pixels - 1, 0))
        if pix.size and (events.n_pixels == 0 or (events.pixel_index[rows_c] != pix).any()):
            raise ValueError("twotime bins use pixels that this EventStack does not hold (masked as bad)")
        starts = numpy.zeros(P, numpy.int64)  # padding columns: no events
        ends = numpy.zeros(P, numpy.int64)
        if pix.size:
            starts[real], ends[real] = events.offsets[rows_c], events.offsets[rows_c + 1]
        x_bytes = max(8, n_t * P * x_np.itemsize)
        resident = events.resident_on(self.dev)
        if resident is not None and x_bytes + 16 * P <= self.budget:
            self.dev.queue.finish()  # the compaction's writes (its queue) are done
            bufs = [resident.d_values, resident.d_times]
        else:
            counts = ends - starts
            offsets = numpy.concatenate([[0], numpy.cumsum(counts)]).astype(numpy.int64)
            idx = numpy.repeat(starts - offsets[:-1], counts) + numpy.arange(int(offsets[-1]))
            values = (numpy.ascontiguousarray(events.values[idx]) if idx.size
                      else numpy.zeros(1, events.values.dtype))
            times = (numpy.ascontiguousarray(events.times[idx]) if idx.size
                     else numpy.zeros(1, numpy.uint32))
            need = values.nbytes + times.nbytes + offsets.nbytes + n_t * P * x_np.itemsize
            if need > self.budget:
                raise ValueError(
                    f"two-time from events: {need} bytes of device memory needed, more than "
                    f"max_device_memory={self.budget}")
            bufs = [pyopencl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=a)
                    for a in (values, times)]
            starts, ends = offsets[:-1], offsets[1:]
        bufs += [pyopencl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR,
                                 hostbuf=numpy.ascontiguousarray(a, numpy.int64))
                 for a in (starts, ends)] if P else [pyopencl.Buffer(ctx, mf.READ_ONLY, 8)] * 2
        X = device_buffer(self.dev, queue, x_bytes, zero=True)
        dtype = numpy.dtype(events.values_dtype)
        narrow = x_np.kind == "u" and self._x_type(dtype, b)[1].itemsize > x_np.itemsize
        kern = self._kernel("tt_events", CTYPES[str(dtype)], x_t, dtype.kind == "f",
                            int(numpy.iinfo(x_np).max) if narrow else None)
        ovf = pyopencl.Buffer(ctx, mf.READ_WRITE | mf.COPY_HOST_PTR,
                              hostbuf=numpy.zeros(1, numpy.int32))
        kern.set_args(*bufs, numpy.int32(P), numpy.int64(b), numpy.int64(n_t), X, ovf)
        pyopencl.enqueue_nd_range_kernel(queue, kern, (_round_up(P, LOCAL),), (LOCAL,))
        queue.finish()
        if narrow:
            _raise_if_overflow(queue, ovf, X)
        return X, P, events.n_frames

    # ------------------------------------------------------------------ maps
    def _maps(self, X, P, group, n_t, x_t, float_data, C, S_out, queue):
        """Fill C[j] and S_out[:, j] for the bins ``group`` whose columns X holds."""
        import pyopencl

        ctx = self.dev.context
        mf = pyopencl.mem_flags
        acc_np = self._acc_dtype(float_data)
        k_rows = self._kernel("tt_rowsums", "uchar", x_t, float_data)
        n_b = len(group)
        _, col_off, nq = self._layout(group)
        strips, self._strips = self._strips, None
        if strips is not None and self._finish_strips(strips, X, col_off, group[0], S_out, acc_np):
            return
        gram = self._gram(X, P, col_off, nq, x_t, float_data, queue)
        self._gram_kernels.add(gram.label)
        S_dev = pyopencl.Buffer(ctx, mf.READ_WRITE, max(8, n_t * 8))
        Sf_dev = pyopencl.Buffer(ctx, mf.READ_WRITE, max(4, n_t * 4))
        S_host = numpy.empty((n_b, n_t), dtype=numpy.float32)
        for z, j in enumerate(group):
            k_rows.set_args(X, numpy.int32(P), numpy.int32(col_off[z]), numpy.int32(col_off[z + 1]),
                            S_dev, Sf_dev)
            pyopencl.enqueue_nd_range_kernel(queue, k_rows, (WG, n_t), (WG, 1))
            S = numpy.empty(n_t, dtype=acc_np)
            pyopencl.enqueue_copy(queue, S, S_dev)
            S_out[:, j] = S
            S_host[z] = S
        room = self.budget - X.size - n_b * n_t * 4 - n_t * 8
        map_bytes = n_t * n_t * 4
        if self._map_reserve(n_t) and room - 3 * n_t * 8 * (1 + self.n_segments) >= map_bytes:
            room -= 3 * n_t * 8 * (1 + self.n_segments)  # the moments of the diagonals
            self._whole_maps(gram, group, n_t, S_host, C, room // map_bytes, queue)
            return
        self._diag = None  # bands: the g2 moments come from the host
        S_f = pyopencl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=S_host)
        R = int(max(TILE, min(_round_up(n_t, TILE), (room // max(1, n_b * n_t * 4)) // TILE * TILE)))
        band_dev = pyopencl.Buffer(ctx, mf.WRITE_ONLY, max(4, n_b * R * n_t * 4))
        t_kernel = t_host = 0.0
        whole = R >= n_t  # one band: the kernel writes both halves, straight into C
        j0 = group[0]
        for r0 in range(0, n_t, R):
            t0 = time.perf_counter()
            rows = min(R, n_t - r0)
            width = n_t - r0
            gram(0, n_b, n_t, r0, rows, width, S_f, whole, band_dev)
            if whole:  # groups are consecutive bins: C[j0 : j0 + n_b] is one contiguous block
                pyopencl.enqueue_copy(queue, C[j0: j0 + n_b], band_dev)
                t_kernel += time.perf_counter() - t0
                continue
            band = numpy.empty((n_b, rows, width), dtype=numpy.float32)
            pyopencl.enqueue_copy(queue, band, band_dev)
            t1 = time.perf_counter()
            r1 = r0 + rows
            for z, j in enumerate(group):
                sq = band[z, :, :rows]
                C[j, r0:r1, r0:r1] = numpy.triu(sq) + numpy.triu(sq, 1).T
                C[j, r0:r1, r1:] = band[z, :, rows:]
                C[j, r1:, r0:r1] = band[z, :, rows:].T
            t_kernel += t1 - t0
            t_host += time.perf_counter() - t1
        self._timing["gram_s"] += t_kernel
        self._timing["mirror_s"] += t_host

    def _mma_gram(self, x_t, float_data, widths) -> bool:
        """Whether the products of X run on the tensor cores."""
        return (self._mma and x_t == "uchar" and not float_data and widths.size > 0
                and int(widths.max()) > 0)

    def _x_max(self, X, queue) -> int:
        """Largest value of the uint8 X (tt_xmax)."""
        import pyopencl

        ctx = self.dev.context
        k_max = get_kernel(self.dev, "gram_mma.cl", "tt_xmax")
        out = pyopencl.Buffer(ctx, pyopencl.mem_flags.READ_WRITE
                              | pyopencl.mem_flags.COPY_HOST_PTR,
                              hostbuf=numpy.zeros(1, numpy.uint32))
        k_max.set_args(X, numpy.int64(X.size // 4), out)
        pyopencl.enqueue_nd_range_kernel(queue, k_max, (MMA_WG * 4 * self.dev.compute_units,),
                                         (MMA_WG,))
        x_max = numpy.zeros(1, numpy.uint32)
        pyopencl.enqueue_copy(queue, x_max, out)
        return int(x_max[0])

    def _gram(self, X, P, col_off, nq, x_t, float_data, queue, x_max=None):
        """The products' kernel for X: a function ``gram(z0, z1, n_t, r0, R, W, S, mirror,
        out, gx0=0, nx=None)`` that enqueues (and returns the event of) the band (rows r0 …
        r0+R-1, columns r0 … r0+W-1) of the maps of bins z0 … z1-1 of the group (S their sums,
        float32 device buffer), from column tile ``gx0`` on, ``nx`` tiles (default: to the
        band's end). The tensor-core
        kernel when the device has it and X is uint8 (exact int32 sums, or exact int32 sums of
        blocks of pixels added in float when a bin's sums could exceed 32 bits: measured by
        tt_xmax unless ``x_max`` is given), else the float one. The function's ``label`` says
        which, ``mma`` whether the tensor cores, ``tile`` is its tile."""
        import pyopencl

        ctx = self.dev.context
        mf = pyopencl.mem_flags
        widths = numpy.diff(col_off)
        mma = self._mma_gram(x_t, float_data, widths)
        if mma:
            if x_max is None:
                x_max = self._x_max(X, queue)
            defines = {}
            if _int32_exact(x_max, widths):
                label = "tensor cores (u8, exact int32 sums)"
            else:  # exact int32 sums of every KCHUNK pixels, added in float
                # a power of two (few program variants), >= MMA_PAD as x_max <= 255
                kchunk = 1 << (((INT32_LIMIT - 1) // (x_max * x_max)).bit_length() - 1)
                defines["KCHUNK"] = kchunk
                label = f"tensor cores (u8, exact int32 sums of {kchunk} pixels, float total)"
                logger.info("two-time: binned counts up to %d: int32 sums of %d pixels at a "
                            "time, added in float", x_max, kchunk)
            kern = get_kernel(self.dev, "gram_mma.cl", "tt_gram_mma", defines)
        else:
            label = "float"
            kern = self._kernel("tt_gram", "uchar", x_t, float_data)
        tile = MMA_WG // 2 if mma else TS * self.wpt  # both 128 on GPUs
        pitch = numpy.int64(P) if mma else numpy.int32(P)
        bufs = {}  # (z0, z1) -> the bins' column offsets and pixels on the device

        def gram(z0, z1, n_t, r0, R, W, S, mirror, band, gx0=0, nx=None):
            if (z0, z1) not in bufs:
                bufs[z0, z1] = [pyopencl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR,
                                                hostbuf=numpy.ascontiguousarray(a))
                                for a in (col_off[z0: z1 + 1], nq[z0:z1])]
            kern.set_args(X, pitch, *bufs[z0, z1], numpy.int64(n_t), numpy.int64(r0),
                          numpy.int32(R), numpy.int32(W), S, numpy.int32(mirror), band,
                          numpy.int32(gx0))
            if nx is None:
                nx = -(-W // tile) - gx0
            ny = -(-R // tile)
            if mma:
                return pyopencl.enqueue_nd_range_kernel(queue, kern, (nx * MMA_WG, ny, z1 - z0),
                                                        (MMA_WG, 1, 1))
            return pyopencl.enqueue_nd_range_kernel(queue, kern, (nx * TS, ny * TS, z1 - z0),
                                                    (TS, TS, 1))

        gram.label, gram.tile, gram.mma = label, tile, mma
        return gram

    def _whole_maps(self, gram, group, n_t, S_host, C, n_fit, queue):
        """Whole maps of ``n_fit`` bins of ``group`` per launch: the kernel computes the upper
        triangle and writes both halves, the maps are read straight into C (no host mirror)."""
        import pyopencl

        ctx = self.dev.context
        mf = pyopencl.mem_flags
        n_b = len(group)
        k = int(max(1, min(n_b, n_fit)))
        maps_dev = pyopencl.Buffer(ctx, mf.READ_WRITE, max(4, k * n_t * n_t * 4))
        t0 = time.perf_counter()
        for z0 in range(0, n_b, k):
            z1 = min(n_b, z0 + k)
            S_f = pyopencl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR,
                                  hostbuf=numpy.ascontiguousarray(S_host[z0:z1]))
            gram(z0, z1, n_t, 0, n_t, n_t, S_f, 1, maps_dev)
            # groups are consecutive bins: C[group[z0] : group[z1 - 1] + 1] is one block
            j0, j1 = group[z0], group[z0] + (z1 - z0)
            self._diag_moments(maps_dev, n_t, j0, j1, k, queue)
            # Through the page-locked staging ring: a direct copy into fresh pageable memory
            # runs at a few GB/s (page faults).
            download_pinned(self.dev, queue, C[j0:j1], maps_dev)
        queue.finish()
        self._timing["gram_s"] += time.perf_counter() - t0

    def _diag_moments(self, maps_dev, n_t, j0, j1, k, queue) -> None:
        """The g2 moments (tt_diag) of the maps of bins j0 … j1-1 while they are on the device
        (``maps_dev``, room for ``k`` maps); nothing without fp64."""
        import pyopencl

        if self._diag is None:
            return
        n_r = self._bounds_np.size // 2
        if self._diag_dev is None or self._diag_dev[0].size < k * n_r * n_t * 8:
            self._diag_dev = [pyopencl.Buffer(self.dev.context, pyopencl.mem_flags.READ_WRITE,
                                              max(8, k * n_r * n_t * 8)) for _ in range(3)]
        self._k_diag.set_args(maps_dev, numpy.int64(n_t), self._bounds, *self._diag_dev)
        pyopencl.enqueue_nd_range_kernel(queue, self._k_diag,
                                         (_round_up(n_t, LOCAL), n_r, j1 - j0), (LOCAL, 1, 1))
        for host, dev_buf in zip(self._diag, self._diag_dev):
            pyopencl.enqueue_copy(queue, host[j0:j1], dev_buf)

    # ------------------------------------------------------------------ strips
    def _start_strips(self, group, n_t, X, P, x_t, float_data, C, queue):
        """:class:`MapStrips` for this pass when it streams its map (``stream_maps``, one bin,
        its whole map within the reserve, a strip's rectangles within a staging buffer), else
        None."""
        import pyopencl

        if not (self.stream_maps and len(group) == 1 and n_t > 1 and self._map_reserve(n_t)):
            return None
        _, col_off, nq = self._layout(group)
        widths = numpy.diff(col_off)
        # The tensor-core kernel is chosen before the largest binned count is known: exact
        # int32 sums, checked once the frames are binned (_finish_strips). The strips go on
        # the binning queue: on a queue of their own they were no faster (H200, session 13).
        gram = self._gram(X, P, col_off, nq, x_t, float_data, queue,
                          x_max=0 if self._mma_gram(x_t, float_data, widths) else None)
        rows = strip_rows(n_t, gram.tile, STAGING_BYTES)
        if rows <= 0 or rows >= n_t:
            return None
        ctx = self.dev.context
        mf = pyopencl.mem_flags
        S_dev = pyopencl.Buffer(ctx, mf.READ_WRITE, n_t * self._acc_dtype(float_data).itemsize)
        Sf_dev = pyopencl.Buffer(ctx, mf.READ_WRITE, n_t * 4)
        maps_dev = pyopencl.Buffer(ctx, mf.READ_WRITE, n_t * n_t * 4)
        k_rows = self._kernel("tt_rowsums", "uchar", x_t, float_data)

        def rowsums(r0, r1, wait_for):
            k_rows.set_args(X, numpy.int32(P), numpy.int32(col_off[0]), numpy.int32(col_off[1]),
                            S_dev, Sf_dev)
            pyopencl.enqueue_nd_range_kernel(queue, k_rows, (WG, r1 - r0), (WG, 1),
                                             global_work_offset=(0, r0), wait_for=wait_for)

        try:
            return MapStrips(self.dev, queue, gram, rowsums, n_t, rows, maps_dev, S_dev, Sf_dev,
                             C[group[0]])
        except StagingBusy:
            return None

    def _close_strips(self) -> None:
        """End the strips in flight (before X or C go, or the pass is redone)."""
        strips, self._strips = self._strips, None
        if strips is not None:
            strips.close()

    def _finish_strips(self, strips, X, col_off, j, S_out, acc_np) -> bool:
        """After the fill: complete bin j's streamed map (the diagonals' moments, its row sums
        into ``S_out``, the last read-backs). False, and nothing kept, when the binned counts
        turned out too large for the speculative exact int32 products."""
        import pyopencl

        try:
            queue = strips.queue
            if strips.gram.mma:
                x_max = self._x_max(X, queue)
                if not _int32_exact(x_max, numpy.diff(col_off)):
                    logger.info("two-time: binned counts up to %d: the map's strips are redone "
                                "with float totals", x_max)
                    return False
            self._diag_moments(strips.maps_dev, strips.n_t, j, j + 1, 1, queue)
            S = numpy.empty(strips.n_t, dtype=acc_np)
            pyopencl.enqueue_copy(queue, S, strips.S_dev)
            S_out[:, j] = S
            strips.wait()
        finally:
            strips.close()
        self._gram_kernels.add(strips.gram.label)
        self._n_strips += strips.count
        self._timing["strips_enqueue_s"] = (self._timing.get("strips_enqueue_s", 0.0)
                                            + strips.enqueue_s)
        return True

    # ------------------------------------------------------------------ public
    def correlate(self, data, frame_period: Optional[float] = None, **info) -> TwoTimeResult:
        import pyopencl

        from ..engine.events import EventStack

        t_start = time.perf_counter()
        data = self._events_if_needed(data)
        is_events = isinstance(data, EventStack)
        if is_events:
            self.binning.check_frame_shape(data.frame_shape)
            dtype, n_frames = numpy.dtype(data.values_dtype), data.n_frames
            source = None
        else:
            source = as_frame_source(data)
            self.binning.check_frame_shape(source.frame_shape)
            dtype, n_frames = numpy.dtype(source.dtype), source.n_frames
            if n_frames is None:
                raise ValueError(
                    "the OpenCL two-time needs the number of frames in advance (give n_frames "
                    "to the frame source, or use method='numpy')")
        float_data = dtype.kind == "f"
        if self.binning.shape[0] * self.binning.shape[1] >= 2**31:
            raise ValueError("frames of 2^31 pixels or more: the OpenCL kernels index pixels in int32")
        frame_bytes = int(self.binning.shape[0] * self.binning.shape[1]) * dtype.itemsize
        fixed = 0 if is_events else 2 * frame_bytes
        reiterable = is_events or source.reiterable
        b, b_default, n_t, x_t, x_np, groups, safe = self._plan(dtype, n_frames, fixed,
                                                                 reiterable)
        if b != b_default:
            logger.info("two-time: time_bin %d (default %d) to fit max_device_memory=%d",
                        b, b_default, self.budget)
            info = dict(info, time_bin_reason=(
                f"time_bin {b} instead of {b_default}: the maps of {n_frames // b_default} time "
                f"bins do not fit max_device_memory={self.budget} bytes"))
        if groups is None:
            groups = self._groups(n_t, safe[1].itemsize, fixed)  # raises the budget error
        if len(groups) > 1 and source is not None and not source.reiterable:
            raise ValueError(
                f"the selected bins need {len(groups)} passes over the frames to fit "
                f"max_device_memory={self.budget}, but the frame source can be read only once: "
                "select fewer bins, use a larger time_bin or raise max_device_memory")
        n_sel = self.rows.size
        C = numpy.empty((n_sel, n_t, n_t), dtype=numpy.float32)
        S_all = numpy.zeros((n_t, n_sel), dtype=numpy.float64 if float_data else numpy.int64)
        queue = pyopencl.CommandQueue(self.dev.context)
        frames_read = n_frames
        self._diag = None
        if self.dev.has_fp64 and n_t:
            # Moments of the diagonals (whole map, then each age segment) computed on the
            # device from each whole map: the host g2 pass over n_sel·nT² values is the cost.
            e = segment_edges(n_t, self.n_segments)
            self._bounds_np = numpy.concatenate(
                [[0, n_t], numpy.stack([e[:-1], e[1:]], axis=1).ravel()]).astype(numpy.int64)
            self._bounds = pyopencl.Buffer(self.dev.context, pyopencl.mem_flags.READ_ONLY
                                           | pyopencl.mem_flags.COPY_HOST_PTR,
                                           hostbuf=self._bounds_np)
            n_r = self._bounds_np.size // 2
            self._diag = [numpy.empty((n_sel, n_r, n_t), numpy.float64),
                          numpy.empty((n_sel, n_r, n_t), numpy.float64),
                          numpy.empty((n_sel, n_r, n_t), numpy.int64)]
            self._k_diag = self._kernel("tt_diag", "uchar", "uchar", False)
        timing = {"fill_s": 0.0, "maps_s": 0.0}
        self._timing = timing = dict(timing, gram_s=0.0, mirror_s=0.0)
        self._gram_kernels = set()
        self._moved = []  # how each pass's frames crossed the bus (_x_from_frames)
        self._diag_dev = self._strips = None
        self._n_strips = 0
        gi = 0
        while gi < len(groups):
            group = groups[gi]
            gi += 1
            tg = time.perf_counter()
            try:
                if is_events:
                    X, P, frames_read = self._x_from_events(data, group, b, n_t, x_t, x_np,
                                                            queue)
                else:
                    X, P, frames_read = self._x_from_frames(source, group, b, n_t, x_t, x_np,
                                                            queue, C, float_data)
            except _Overflow:  # start again with the type that holds any sum
                self._close_strips()
                logger.info("two-time: time-binned sums exceed uint8, redoing with %s", safe[1])
                x_t, x_np = safe
                groups, gi = self._groups(n_t, x_np.itemsize, fixed), 0
                timing["fill_s"] += time.perf_counter() - tg
                continue
            except BaseException:
                self._close_strips()
                raise
            try:
                if frames_read != n_frames:
                    raise ValueError(f"frames: expected {n_frames} frames, read {frames_read}")
                tm = time.perf_counter()
                timing["fill_s"] += tm - tg
                if n_t:
                    self._maps(X, P, group, n_t, x_t, float_data, C, S_all, queue)
                timing["maps_s"] += time.perf_counter() - tm
            finally:
                self._close_strips()
            X.release()
        t1 = time.perf_counter()
        if frame_period is None:
            frame_period = getattr(data, "frame_period", None)
        result = make_result(C, S_all, self.rows, self.binning, b, n_frames, self.n_segments,
                             frame_period, self.name, self.device_name, info, diag=self._diag)
        self._diag = self._diag_dev = None
        result.info.setdefault("timings", {}).update(
            correlate_s=t1 - t_start, g2_s=time.perf_counter() - t1)
        result.info["passes"] = len(groups)
        result.info["data_path"] = "events" if is_events else "dense"
        result.info["x_dtype"] = str(x_np)
        if self._moved:
            result.info["frames_moved"] = "; ".join(dict.fromkeys(self._moved))
        result.info["gram_kernel"] = ", ".join(sorted(self._gram_kernels))
        if self._n_strips:
            result.info["map_strips"] = self._n_strips
        result.info["timings"].update(timing)
        return result


class OpenCLEventsTwoTime(OpenCLTwoTime):
    """:class:`OpenCLTwoTime` on the events path (``data_path="events"``): frames compacted on
    the device, the device-resident events scattered into X there (registry name
    ``opencl-events``)."""

    name = "opencl-events"

    def __init__(self, qmask, device=None, **options):
        options.setdefault("data_path", "events")
        super().__init__(qmask, device=device, **options)
