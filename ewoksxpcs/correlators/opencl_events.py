"""``opencl-events``: n2 of sparse data (an :class:`~ewoksxpcs.engine.events.EventStack`) on OpenCL.

n2[k, τ] = Σ_{pixels p of sub-bin k} Σ_{events i ≤ j of p, t_j − t_i = τ} v_i·v_j, exact in 64-bit
integers for integer events (double for float32 events); integer events whose n2 could reach 2⁶³
are refused after the run (:mod:`ewoksxpcs.engine.intrange`). Frames given instead of events are
compacted first, on the same OpenCL device (:func:`ewoksxpcs.opencl.compact.compact_opencl`).

Kernel (``kernels/events.cl``): the lag axis is cut into tiles held as local-memory histograms;
a work-group takes a *task* (a run of pixel segments of one sub-bin, of bounded pair count) and
one lag tile, walks from every event over its pixel's later events inside the tile, and adds its
histogram to n2. Pixels with many events are split into several segments, so there is no limit
on events per pixel (unlike dynamix's ``max_events_count``) and the work stays balanced.
On GPUs a work-group of ``WG`` work-items shares the histogram through local atomics; on CPUs a
work-group is one work-item and adds without atomics. The per-frame sub-bin sums are taken with
the same tasks (integer events; float32 ones are summed on the host in a fixed order).

Variants (option ``strategy``): "local" walks from every first event (above, 64-bit histograms,
tiles of 4096 lags on GPUs, tasks planned on the host); "local32" the same walk on the device
plan below with 32-bit histograms (values of at most 16 bits; a wrap carries 2³² into n2 at once,
exact), one tile of up to ~12 000 lags in 48 KB, so no binary searches; "fold" strides the event *pairs*: the pixels are taken
in the binning's order, their pair counts summed on the device by a prefix sum, and a task is a
run of pairs of one sub-bin — no host pass over pixels or events, and a pixel of many events is
shared by all the work-items of a group; "rows" (the GPU default) has the same plan and pairs, a
work-item per block of ``row_block`` consecutive events of a pixel, each over its ⌊n/2⌋ + 1
partners of the fold (every event of a pixel loops the same count; each partner read serves the
block's events); all three in ``event_corr_planned``; "global" adds every product to n2 with a
64-bit global atomic. The device plan (prefix sums, task counts) copies nothing to the device
once the events' upload has started: such a copy would wait for the whole upload.

Whole-call pipeline (:meth:`OpenCLEventCorrelator.correlate`): the events go to the device in
pixel chunks through pinned staging buffers (:func:`ewoksxpcs.opencl.device.upload_pinned`, in a thread
of their own; page-locked events as the device reads them are enqueued at once by the caller);
each chunk's tasks are planned and launched as soon as its events are there, so the upload, the
planning and the kernels overlap. The denominator's autocorrelations s2 are then
summed directly on a GPU (exact int64, about a millisecond; queued right after n2, their range
checked with the largest frame sum the device found) or, on CPU devices, by the host's exact FFTs
while the device computes n2; normalisation gets them ready-made. With s2 on the device,
:meth:`correlate` also takes g2, its jackknife error and the bins' n2 and frame sums there
(:mod:`ewoksxpcs.opencl.normalise`, the host's operations in the host's order: the same bits,
the few-pairs rule included; they and each bin's own s2 row and frame sums come back in one
read), while n2 and the frame sums are read back on a queue of their own, through the pinned
staging ring (:class:`~ewoksxpcs.opencl.device.StagedReads`); the host assembles the result.

Device memory: the events (all at once, or in runs of whole pixels through two slots when they
need more than ``max_device_memory`` leaves), n2, the frame sums and s2's rows. Events compacted
on the same device (``EventStack.resident``) are read where they are.

Kept between calls: the device's pinned staging buffers and side queues, and per binning and
device its small tables (the binned pixels of the device plan, s2's rows, g2's tables; while the
Binning lives). Each call allocates and zeroes its own output, and frees its buffers at its end
(freeing one while the device works waits for the device on NVIDIA's driver).
"""

from __future__ import annotations

import logging
import queue as queue_module
import sys
import threading
import weakref

import numpy

from ..opencl.compact import compact_opencl
from ..opencl.normalise import G2_PROGRAM, g2_on_device, g2_tables
from ..opencl.pools import host_result, pooled_buffer, trim_buffer_pool
from ..opencl.prefix_sum import DeviceScan
from ..engine.intrange import INT64_LIMIT, S2_LIMIT, check_int64_bound
from ..engine.normalise import NUMBA_JACKKNIFE_SIZE, normalise, s2_rows, warm_numba
from ..opencl.device import CTYPES, Checkpoints, build_in_background, default_device_memory, \
    download_pinned, get_device, get_kernel, is_pinned, StagedReads, \
    upload_pinned, upload_small
from ..engine.result import CorrelationSums
from .base import EventCorrelator
from .registry import register

__all__ = ["OpenCLEventCorrelator", "compact_opencl", "pin_events", "plan_tasks", "STRATEGIES"]

logger = logging.getLogger(__name__)

#: Kernel variants of the option ``strategy`` (see :class:`OpenCLEventCorrelator`).
STRATEGIES = ("fold", "rows", "local32", "local", "global")
#: Variants whose tasks are planned on the device (no host pass over the pixels).
DEVICE_PLANNED = ("fold", "rows", "local32")
#: Device bytes of that plan per binned pixel and upload chunk (pair and event counts, their
#: running sums); above 1/8 of the memory budget "local" (planned on the host) is used instead.
PLAN_BYTES = 32

#: Rows (first events) per work-item of the "rows" kernel (``RB``): each partner event read
#: serves that many pairs.
ROW_BLOCK = 4

#: Device copies of each binning's tables ("rows": the binned pixels and sub-bin starts of the
#: device plan; "s2": the s2 rows' plan and g2's tables), per device, kept while the binning
#: lives: every correlator of that binning finds them uploaded (correlate() makes a new
#: correlator per call, and so do a workflow's steps).
_BINNING_TABLES = weakref.WeakKeyDictionary()
_TABLES_LOCK = threading.Lock()


def binning_tables(binning, dev) -> dict:
    """The dict of :data:`_BINNING_TABLES` for ``binning`` on ``dev``."""
    with _TABLES_LOCK:
        return _BINNING_TABLES.setdefault(binning, {}).setdefault(dev, {})

#: Reports of the progress of the correlation kernels (after compaction) in a run.
PROGRESS_STEPS = 20
#: Scans of at most this many frames send their frame indices as uint16 (option time_bits).
TIME16_FRAMES = 1 << 16
#: Lags per work-item of the device s2 kernel (``S2R`` of ``s2_autocorr``): per frame, two local
#: reads feed this many multiply-adds. With :data:`S2_LAGS_PER_GROUP` work-items a group (``SL``):
#: 16 × 64 took 0.3 ms less than 8 × 128 (1.0 ms) of a 0.01-count 1024×1024×10 000 run on the
#: H200 (170 rows of 10 000 frames; session 17).
S2_LAGS_PER_ITEM = 16
#: Work-items per group of the device s2 kernel (at most the device's largest group).
S2_LAGS_PER_GROUP = 64
#: Work-groups per compute unit that a launch keeps at least, progress reported or not: an
#: in-order queue runs launches one after the other, and a launch of fewer work-groups than
#: the device holds at once leaves compute units idle (the linear correlation of an Eiger 4M x
#: 10 000 at 0.1 counts on the H200: 5.4 s with launches of 216 work-groups for the progress
#: bar, 3.2 s without the bar).
LAUNCH_FILL = 8


def _pairs(n):
    """Event pairs i <= j of a pixel with n events."""
    n = numpy.asarray(n, dtype=numpy.int64)
    return n * (n + 1) // 2


def _total_pairs(n) -> int:
    """Σ n(n + 1)/2 over pixels of n events, (n·n + Σ n)/2: two passes over n, no temporary."""
    n = numpy.asarray(n, dtype=numpy.int64)
    return (int(n @ n) + int(n.sum())) // 2


def pin_events(events, device=None):
    """The EventStack ``events`` with its values and times copied into page-locked host memory.

    :meth:`OpenCLEventCorrelator.correlate` uploads page-locked events straight from where they
    lie, at the bus's full speed (55 GB/s on an H200 host instead of ~9 GB/s through the staging
    copies of pageable ones): worth it for an EventStack this package makes and correlates
    (a compaction's output, a benchmark's data), as for the frames kept in
    :func:`~ewoksxpcs.opencl.device.pinned_empty` memory by the dense backends. The copy itself
    costs one pass over the events' bytes, like the staging copies it replaces (once, not at
    every correlate).

    Parameters
    ----------
    events : EventStack
        Host events (a device-resident stack is returned as it is).
    device : str or OpenCLDevice, optional
        Whose OpenCL context pins the memory (see :func:`~ewoksxpcs.opencl.device.get_device`).

    Returns
    -------
    EventStack
        Same pixel_index, frame sums and labels (shared), values, times and offsets in
        page-locked memory (plain memory where the driver refuses to pin); for at most
        :data:`TIME16_FRAMES` frames, the times the device reads in page-locked memory as
        uint16 (attribute ``bus_times``), the stack's own times shared with ``events``.
    """
    from ..engine.events import EventStack
    from ..opencl.device import copy_into, pinned_empty

    if events.resident is not None:
        return events
    dev = get_device(device)
    # Scans of at most 65 536 frames: the times are pinned as uint16 (bus_times, what crosses
    # the bus and the kernels read), and the stack keeps the given uint32 times for the host.
    short = events.n_frames <= TIME16_FRAMES
    arrays = []
    # The offsets too (int64, as the device plan reads them): 8 bytes a pixel that would
    # otherwise cross as a pageable copy while the events' upload holds the bus.
    for a, as_type in ((events.values, None), (events.times, numpy.uint16 if short else None),
                       (numpy.asarray(events.offsets, dtype=numpy.int64), None)):
        pinned = pinned_empty(dev, a.shape, as_type or a.dtype)
        copy_into(pinned, a)
        arrays.append(pinned)
    stack = EventStack(arrays[0], events.times if short else arrays[1], arrays[2],
                       events.pixel_index, events.frame_shape, events.n_frames, events.dtype,
                       frame_sums=events.frame_sums, labels=events.labels, trusted=True)
    if short:
        stack.bus_times = arrays[1]
    return stack


def plan_tasks(offsets, pix_sub, task_pairs: int | None, split: bool = True):
    """Cut the events of the binned pixels into segments and tasks (see ``kernels/events.cl``).

    Parameters
    ----------
    offsets : ndarray (n_pix + 1,) int64
        Event offsets of the EventStack's pixels.
    pix_sub : ndarray (n_pix,) int64
        Sub-bin of each pixel, -1 outside the bins.
    task_pairs : int or None
        Target number of event pairs per task (None: one task per sub-bin).
    split : bool
        Whether a pixel with more than ``task_pairs`` pairs may be split into segments.

    Returns
    -------
    seg_i0, seg_end, seg_cum : ndarray int64
        First event of each segment, end of its pixel, running count of first events (n_seg+1).
    task_seg : ndarray int32 (n_tasks + 1,)
    task_sub : ndarray int32 (n_tasks,)
    """
    offsets = numpy.asarray(offsets, dtype=numpy.int64)
    pix_sub = numpy.asarray(pix_sub)
    counts = numpy.diff(offsets)
    pixels = numpy.flatnonzero((pix_sub >= 0) & (counts > 0))
    key = pix_sub[pixels]
    if key.size and int(key.max()) < 2**15:
        key = key.astype(numpy.int16)  # NumPy's stable sort of 16-bit keys is a radix sort
    pixels = pixels[numpy.argsort(key, kind="stable")]
    i0 = offsets[pixels]
    end = offsets[pixels + 1]
    n = counts[pixels]
    sub = pix_sub[pixels]
    cost = _pairs(n)
    if task_pairs is not None and split and n.size and cost.max() > task_pairs:
        # Split heavy pixels: first event u of a pixel of n events has n - u partners, so the
        # cut points u solve u*n - u*(u-1)/2 = m*task_pairs.
        parts_i0, parts_end, parts_sub, parts_n, parts_cost = [], [], [], [], []
        heavy = numpy.flatnonzero(cost > task_pairs)
        keep = numpy.ones(n.size, dtype=bool)
        keep[heavy] = False
        for h in heavy:
            nh = int(n[h])
            u = numpy.arange(nh + 1, dtype=numpy.int64)
            cum = u * nh - u * (u - 1) // 2
            cuts = numpy.searchsorted(cum, numpy.arange(1, int(cum[-1] // task_pairs) + 1)
                                      * task_pairs)
            cuts = numpy.unique(numpy.concatenate([[0], cuts[(cuts > 0) & (cuts < nh)], [nh]]))
            parts_i0.append(i0[h] + cuts[:-1])
            parts_n.append(numpy.diff(cuts))
            parts_end.append(numpy.full(cuts.size - 1, end[h]))
            parts_sub.append(numpy.full(cuts.size - 1, sub[h]))
            parts_cost.append(numpy.diff(cum[cuts]))
        i0 = numpy.concatenate([i0[keep]] + parts_i0)
        end = numpy.concatenate([end[keep]] + parts_end)
        n = numpy.concatenate([n[keep]] + parts_n)
        sub = numpy.concatenate([sub[keep]] + parts_sub)
        cost = numpy.concatenate([cost[keep]] + parts_cost)
        order = numpy.argsort(sub, kind="stable")
        i0, end, n, sub, cost = i0[order], end[order], n[order], sub[order], cost[order]
    seg_cum = numpy.concatenate([[0], numpy.cumsum(n)]).astype(numpy.int64)
    if n.size == 0:
        return (numpy.zeros(0, numpy.int64), numpy.zeros(0, numpy.int64), seg_cum,
                numpy.zeros(1, numpy.int32), numpy.zeros(0, numpy.int32))
    # Tasks: runs of segments of one sub-bin, cut every task_pairs pairs.
    new_sub = numpy.concatenate([[True], sub[1:] != sub[:-1]])
    if task_pairs is None:
        starts = numpy.flatnonzero(new_sub)
    else:
        cum = numpy.cumsum(cost) - cost  # pairs before each segment
        sub_start = numpy.maximum.accumulate(numpy.where(new_sub, cum, 0))
        idx = (cum - sub_start) // max(1, int(task_pairs))
        starts = numpy.flatnonzero(new_sub | numpy.concatenate([[True], idx[1:] != idx[:-1]]))
    task_seg = numpy.concatenate([starts, [n.size]]).astype(numpy.int32)
    task_sub = sub[starts].astype(numpy.int32)
    return i0, end, seg_cum, task_seg, task_sub


@register
class OpenCLEventCorrelator(EventCorrelator):
    """Sparse events on an OpenCL device (GPU or CPU); see the module docstring.

    Options
    -------
    strategy : {"fold", "rows", "local32", "local", "global"}
        "fold": work-items stride the event *pairs* of a sub-bin's pixels
        (``event_corr_planned``), so a pixel of many events is shared by the whole group; tasks
        are planned on the device (prefix sums of each pixel's pairs and events, in the
        binning's order), no host pass over the pixels. "rows" (default on GPUs, pending its
        measurement against the others on the H200): the same pairs and device plan, a
        work-item per event looping over its ⌊n/2⌋ + 1 partners of the fold (the same count
        for every event of a pixel; the per-pair loop of the first-event walk). "local32": the
        first-event walk on that device plan. These three keep 32-bit local histograms (one
        tile of up to ~12 000 lags in 48 KB) for values of at most 16 bits (exact: a wrap
        carries 2³² into n2 at once) and 64-bit ones otherwise. "local" (default on CPUs):
        first-event walk planned on the host, 64-bit local histograms of ``lag_tile`` lags;
        "global": every product added to n2 with a global 64-bit atomic, one lag tile (2×
        slower on an H200). float32 events always use "local" with one work-item per group.
    row_block : int
        "rows": consecutive events of a pixel per work-item, 1 to 16 (default
        :data:`ROW_BLOCK`): each partner's time and value, read once, serve that many pairs.
    lag_tile : int
        Lags per local-memory histogram (default: "local" 4096 on GPUs, 16384 on CPUs; the
        others as many as the local memory holds, at most the frame count rounded up to 1024;
        bounded by the device's local memory).
    work_group : int
        Work-items per work-group (default 256 on GPUs, 1 on CPUs; float32 events use 1).
    task_pairs : int
        Event pairs per task (default: from the total, for about 8 tasks per compute unit on
        CPUs, 64 on GPUs).
    chunk_frames : int
        Frames per batch when frames are compacted first.
    max_device_memory : int
        Device memory budget in bytes (default:
        :func:`ewoksxpcs.opencl.device.default_device_memory`: 70 % of a GPU's free memory), of
        that compaction and of the correlation: events that need more than the budget leaves after
        n2 and the sums go to the device in runs of whole pixels through two slots, one
        uploaded while the other is correlated (a pixel's events must fit half of it).
    upload_chunks : int
        Pixel chunks of the events, each uploaded through pinned buffers and correlated as soon
        as it is on the device (default: one per 256 MiB of events, at most 8; float32 events
        use one).
    s2_device : bool
        Whether :meth:`correlate` computes the denominator s2 of integer events on the device
        (direct exact int64 sums, after n2; ``s2_autocorr``) instead of on the host (exact
        FFTs, while the device computes n2). Default: on GPUs.
    time_bits : {16, 32}
        Width of the frame indices on the bus and in the kernels: 16 (2 bytes an event less to
        upload and to read) needs at most 65 536 frames. Default on GPUs: 16 where the frames
        allow it and the events come from host memory, unless their times already lie in
        page-locked memory as uint32 (read in place: converting would cost more than it
        saves); events compacted on the device keep their 32 bits; CPU devices: 32.
    """

    name = "opencl-events"
    description = "OpenCL sparse event correlator (lag-tiled local histograms, exact int64)"
    uses_opencl = True

    @classmethod
    def option_names(cls):
        return ("strategy", "lag_tile", "work_group", "task_pairs", "chunk_frames", "local_atomics",
                "s2_device", "upload_chunks", "max_device_memory", "time_bits", "row_block")

    def __init__(self, qmask, device: str | None = None, **kwargs):
        super().__init__(qmask, device=device, **kwargs)
        self.dev = get_device(device)
        #: When True, wait for the device after each step and record times in last_profile.
        self.profile = False
        self.last_profile = {}
        strategy = self.options.get("strategy")
        if strategy not in (None,) + STRATEGIES:
            raise ValueError(f"option strategy must be one of {', '.join(STRATEGIES)}, "
                             f"got {strategy!r}")
        self.check_positive_int_options(
            ("lag_tile", "work_group", "task_pairs", "chunk_frames", "upload_chunks",
             "max_device_memory", "row_block"))
        if self.options.get("row_block") is not None:
            self._row_block()  # 1 to 16
        if self.options.get("time_bits") not in (None, 16, 32) \
                or isinstance(self.options.get("time_bits"), bool):
            raise ValueError(f"option time_bits must be 16 or 32, got "
                             f"{self.options['time_bits']!r}")

    @property
    def device_name(self) -> str:
        return self.dev.name

    def compute_sums(self, data) -> CorrelationSums:
        from ..engine.events import EventStack

        if not isinstance(data, EventStack):
            data = compact_opencl(data, **self.compaction_options())
        self._check_events(data)
        self.binning.check_frame_shape(data.frame_shape)
        # The range check runs as soon as the frame sums are on the host, while the device
        # computes s2 (or n2): off the critical path (_finish).
        self._range_events = data
        # s2 on the device with n2 (a GPU): normalise() then takes it from the sums (the
        # pipeline's Normalise step computed it again on the host, 0.17-0.2 s for an Eiger 4M
        # x 10 000 on the H200's host). correlate() asks for it itself.
        own_s2 = not self._s2_wanted and self._s2_on_device()
        if own_s2:
            self._s2_wanted, self._s2 = True, None
        try:
            n2, frame_sums = self._run(data)
        except BaseException:
            # Nothing of the run may still be in flight on its pooled buffers once they go
            # back to the pool.
            for q in (self.dev.queue, self._copy_queue(), self._read_queue()):
                q.finish()
            raise
        finally:
            pending, self._range_events = self._range_events, None
            if own_s2:
                self._s2_wanted = False
        if n2.dtype.kind == "i" and pending is not None:
            self._check_range(data, frame_sums)
        sums = CorrelationSums(n2=n2, frame_sums=frame_sums,
                               lags=numpy.arange(data.n_frames, dtype=numpy.int64))
        if own_s2:
            # Integer sums only: their s2 is exact by every method (float rows would depend on
            # the s2_method the caller normalises with)
            if n2.dtype.kind == "i":
                sums.s2, sums.s2_binning = self._s2, self.binning
            self._s2 = None
        return sums

    def compaction_options(self) -> dict:
        """Keyword arguments of the compaction of frames given to this correlator (device, the
        options chunk_frames, max_device_memory, and :meth:`prepare_programs`), for
        :func:`compact_opencl` and :func:`ewoksxpcs.workflow.pipeline.compact_frames`."""
        return {"device": self.dev, "chunk_frames": self.options.get("chunk_frames"),
                "max_device_memory": self.options.get("max_device_memory"),
                "prepare": self.prepare_programs}

    @staticmethod
    def _check_events(events):
        dtype = events.values_dtype
        if dtype.name not in CTYPES:
            raise TypeError(f"unsupported event dtype {dtype}: supported are "
                            f"{', '.join(CTYPES)}")
        if getattr(events, "resident", None) is not None and dtype.kind != "f":
            return  # compacted on the device, which rejected negative values
        values = events.values
        if values.dtype.kind in "if" and values.size and values.min() < 0:
            e = int(numpy.argmax(values < 0))
            raise ValueError(f"event methods need non-negative counts; event {e} has value "
                             f"{values[e]} (frame {int(events.times[e])})")
        if values.dtype.kind == "f" and values.size and not numpy.isfinite(values).all():
            raise ValueError("events contain NaN or infinite values")

    def _check_range(self, events, frame_sums) -> None:
        """Raise ValueError if an int64 n2 sum may have wrapped: |n2| ≤ Σ v² per sub-bin.

        Events are non-negative, so Σ v² ≤ max v · Σ v, where max v is at most the dtype's
        largest value and the largest frame sum S(t, k) (no download); then Σ_p (Σ v of pixel
        p)² from the per-pixel sums the device compaction measured (resident events), or Σ v²
        itself."""
        b = self.binning
        if not frame_sums.size:
            return
        peaks = frame_sums.max(axis=0).astype(numpy.float64)
        if float(peaks.max()) * frame_sums.shape[0] < 2.0**62:  # the int64 totals cannot wrap
            totals = frame_sums.sum(axis=0).astype(numpy.float64)  # 3x faster than in float64
        else:
            totals = frame_sums.sum(axis=0, dtype=numpy.float64)
        bound = numpy.minimum(float(numpy.iinfo(events.values_dtype).max), peaks) * totals
        if (bound < INT64_LIMIT).all():
            return
        sub = events.pixel_sub_bins(b)
        keep = sub >= 0
        if getattr(events, "resident", None) is not None and events.pixel_sums is not None:
            p = events.pixel_sums.astype(numpy.float64)
            bound = numpy.bincount(sub[keep], weights=(p * p)[keep], minlength=b.n_sub)
        else:
            ev_sub = numpy.repeat(sub, events.events_per_pixel)
            v = events.values.astype(numpy.float64)
            bound = numpy.bincount(ev_sub[ev_sub >= 0], weights=(v * v)[ev_sub >= 0],
                                   minlength=b.n_sub)
        check_int64_bound(bound, b)

    def _resident(self, events):
        """The events' device buffers when they live in this correlator's context (see
        :class:`ewoksxpcs.engine.events.DeviceEvents`), else None."""
        return events.resident_on(self.dev)

    # ------------------------------------------------------------------ kernel
    def _geometry(self, is_float: bool, values_dtype=None, n_frames: int = 0, strategy=None):
        """(strategy, work-group size, lags per tile, 32-bit histograms) for this device, value
        type and frame count (``strategy``: instead of the option's)."""
        dev = self.dev
        strategy = strategy or self.options.get("strategy") or (
            "local" if dev.kind == "cpu" else "rows")
        if is_float:
            return "local", 1, self._lag_tile(), False  # one writer per n2 element: reproducible
        if strategy == "global" and not dev.has_int64_atomics:
            strategy = "local"  # 64-bit global atomics would be emulated
        wg = self.options.get("work_group") or (1 if dev.kind == "cpu" else 256)
        wg = int(min(wg, dev.max_work_group_size))
        if strategy in ("fold", "rows", "local32"):
            # Every product of values of at most 16 bits fits 32 bits.
            hist32 = values_dtype is not None and numpy.dtype(values_dtype).itemsize <= 2
            return strategy, wg, self._lag_tile(4 if hist32 else 8, n_frames), hist32
        return strategy, wg, self._lag_tile(), False

    def _defines(self, geometry, values_dtype, time_dtype=None) -> dict:
        """Compile-time constants of ``events.cl`` for a :meth:`_geometry`, value type and
        time type (default uint32)."""
        strategy, wg, lag_tile, hist32 = geometry
        values_dtype = numpy.dtype(values_dtype)
        defines = {"VAL_T": CTYPES[values_dtype.name], "L": lag_tile, "WG": wg,
                   "SL": self._s2_lags(),
                   "S2R": S2_LAGS_PER_ITEM}
        if time_dtype is not None and numpy.dtype(time_dtype) == numpy.uint16:
            defines["TIME_T"] = "ushort"
        if values_dtype.kind in "iu" and (int(numpy.iinfo(values_dtype).max)
                                          * self.binning.n_binned_pixels < 2**31):
            # every frame sum of a bin (events are >= 0) fits 31 bits: s2's products widen
            # from 32 bits (e.g. uint8 counts on up to 8.4 million pixels)
            defines["S2_NARROW"] = 1
        if values_dtype.kind == "f":
            defines["ACC_FLOAT"] = 1
        if strategy == "global":
            defines["DIRECT"] = 1
        if hist32:
            defines["HIST32"] = 1
        if self._local_atomics() == 32:
            defines["LOCAL_ATOMICS_32"] = 1
        if strategy in ("local32", "fold"):
            defines["WALK" if strategy == "local32" else "FOLD"] = 1
        if strategy == "rows":
            defines["RB"] = self._row_block()
        return defines

    def _row_block(self) -> int:
        """Rows (first events) per work-item of "rows" (option row_block; default
        :data:`ROW_BLOCK`)."""
        rb = self.options.get("row_block") or ROW_BLOCK
        if not 1 <= int(rb) <= 16:
            raise ValueError(f"option row_block must be 1 to 16, got {rb!r}")
        return int(rb)

    def prepare_programs(self, dtype, n_frames) -> None:
        """Start building, in the background, the programs that correlating the events of
        ``n_frames`` frames of ``dtype`` will use (:func:`~ewoksxpcs.opencl.device.
        build_in_background`): they compile while the frames are compacted."""
        if dtype is None or not n_frames or numpy.dtype(dtype).name not in CTYPES:
            return
        dtype = numpy.dtype(dtype)
        try:
            geometry = self._geometry(dtype.kind == "f", dtype, int(n_frames))
        except ValueError:  # refused: the correlation says why
            return
        programs = [("events.cl", self._defines(geometry, dtype))]
        if self._g2_on_device(dtype):
            programs.append(G2_PROGRAM)  # g2 and its error where n2 and s2 are
        if geometry[0] in DEVICE_PLANNED:
            programs += DeviceScan.programs(self.dev, "long")  # the task plan's prefix sums
        build_in_background(self.dev, programs)

    def _local_atomics(self) -> int:
        """Width of the local atomic adds: 32 (with a carry word) on GPUs, else 64."""
        bits = self.options.get("local_atomics") or (32 if self.dev.kind == "gpu" else 64)
        if bits not in (32, 64):
            raise ValueError(f"local_atomics must be 32 or 64, got {bits!r}")
        return int(bits)

    def _lag_tile(self, bin_bytes: int = 8, n_frames: int = 0) -> int:
        """Lags per local histogram of ``bin_bytes`` bytes a bin; with ``n_frames``: as many as
        the local memory holds, at most ``n_frames`` rounded up to 1024 (few programs to
        compile, a single tile whenever it fits)."""
        dev = self.dev
        lag_tile = self.options.get("lag_tile")
        if lag_tile is None:
            if n_frames:
                lag_tile = min(-(-n_frames // 1024) * 1024, (dev.local_mem - 1024) // bin_bytes)
            else:
                lag_tile = 16384 if dev.kind == "cpu" else 4096
        lag_tile = int(min(lag_tile, (dev.local_mem - 1024) // bin_bytes))
        if lag_tile < 1:
            raise ValueError(f"{dev.name} has too little local memory ({dev.local_mem} bytes)")
        return lag_tile

    #: correlate() calls of this correlator.
    _runs = 0

    #: Set by correlate(): compute s2 on the host while the device computes n2 (_run sets _s2).
    _s2_wanted = False
    _s2 = None
    #: Set by correlate(): g2 and its error computed on the device where n2 and s2 are (integer
    #: sums, s2 on the device, double precision): _finish sets _g2_rows, (g2, σ, expected
    #: pairs) with the few-pairs rule applied.
    _g2_wanted = False
    _g2_rows = None
    #: Set by _finish with _g2_rows: the bins' n2 and frame sums, from the device (normalise's
    #: bin_totals).
    _bin_totals = None

    def correlate(self, data, **info):
        """As :meth:`Correlator.correlate`; s2 is computed while the device works on n2."""
        import time

        t0 = time.perf_counter()
        # normalisation's numba kernel loads while the device works (once per process), for
        # large results, from this correlator's second run on or where numba is already
        # imported: a single run in a fresh process does not pay numba's import and start
        # (~0.7 s of a thread that holds the GIL at times, waited for at exit) for the few
        # milliseconds it saves.
        self._runs += 1
        n_frames = getattr(data, "n_frames", None) or getattr(data, "shape", (0,))[0]
        dtype = getattr(data, "dtype", None)
        g2_here = dtype is not None and self._g2_on_device(dtype)  # then no numba needed
        if (not g2_here and self.binning.n_sub * int(n_frames) >= NUMBA_JACKKNIFE_SIZE
                and (self._runs > 1 or "numba" in sys.modules)):
            warm_numba()
        self._s2_wanted, self._s2 = True, None
        self._g2_wanted, self._g2_rows, self._bin_totals = True, None, None
        try:
            sums = self.compute_sums(data)
        finally:
            self._s2_wanted = self._g2_wanted = False
        s2, self._s2 = self._s2, None
        g2_rows, self._g2_rows = self._g2_rows, None
        bin_totals, self._bin_totals = self._bin_totals, None
        t1 = time.perf_counter()
        pairs = None
        if g2_rows is not None:  # g2, σ and the expected pairs, the few-pairs rule applied
            g2_rows, pairs = g2_rows[:2], g2_rows[2]
        result = normalise(sums, self.binning, method=self.name, device=self.device_name,
                           s2_method=self.s2_method, info=info, s2=s2, g2_rows=g2_rows,
                           bin_totals=bin_totals, pairs=pairs)
        result.info.setdefault("timings", {}).update(
            correlate_s=t1 - t0, normalise_s=time.perf_counter() - t1)
        if s2 is not None:
            result.info["timings"]["s2_s"] = self.last_profile.get("s2_s")
        return result

    def _n_chunks(self, events, is_float: bool, resident: bool = False) -> int:
        """Pixel chunks whose kernels start as soon as their events are uploaded (option
        upload_chunks; default one per ~256 MiB of events, ~64 MiB for the device-planned
        strategies, at most 8; events already on the device: one, the fewest and largest
        launches). float32 events: one (a single writer per n2 element)."""
        if is_float:
            return 1
        n = self.options.get("upload_chunks")
        if n is None and resident:
            n = 1
        if n is None:
            nbytes = events.n_events * (events.values_dtype.itemsize + 4)
            fold = self._geometry(False, events.values_dtype)[0] in DEVICE_PLANNED
            n = min(8, -(-nbytes // ((64 if fold else 256) * 1024**2)))
        return int(max(1, min(n, events.n_pixels)))

    def _chunk_edges(self, events, is_float: bool, resident: bool = False) -> numpy.ndarray:
        """(n_chunks + 1,) int64 first pixel of each upload chunk (:meth:`_n_chunks` chunks of
        about equal event counts)."""
        n_chunks = self._n_chunks(events, is_float, resident)
        pix_edges = numpy.searchsorted(
            events.offsets, numpy.linspace(0, events.n_events, n_chunks + 1).astype(numpy.int64))
        pix_edges[0], pix_edges[-1] = 0, events.n_pixels
        return pix_edges

    def _s2_lags(self) -> int:
        """Work-items per group of the device s2 kernel (``SL``; each sums
        :data:`S2_LAGS_PER_ITEM` lags)."""
        return int(min(S2_LAGS_PER_GROUP, self.dev.max_work_group_size))

    def _s2_on_device(self) -> bool:
        """Whether correlate() takes s2 on the device (option s2_device; default: on GPUs)."""
        choice = self.options.get("s2_device")
        return self.dev.kind == "gpu" if choice is None else bool(choice)

    def _g2_on_device(self, dtype) -> bool:
        """Whether correlate() sums g2 and its error on the device for events of ``dtype``:
        integer events (exact sums) with s2 on the device, in double precision."""
        return (self._s2_on_device() and self.dev.has_fp64
                and numpy.dtype(dtype).kind in "iu")

    def _s2_device(self, d_sums, n_frames, defines):
        """Queue the s2 rows that :func:`ewoksxpcs.engine.normalise.s2_rows` gives, by direct
        exact int64 sums on the device (O(rows·Nt²): ~1.7e10 multiply-adds take about a
        millisecond on an H200, less than the host's FFTs), after n2 on the in-order queue;
        returns a :class:`_DeviceS2` or None for a binning without groups."""
        b, dev, queue = self.binning, self.dev, self.dev.queue
        tables = binning_tables(b, dev)
        plan = tables.get("s2")
        if plan is None:
            k0, k1, ex, spans = [], [], [], []
            for i in range(b.n_bins):
                s0, s1 = int(b.bin_sub_offsets[i]), int(b.bin_sub_offsets[i + 1])
                if s1 == s0:
                    spans.append(None)
                    continue
                groups = [-1] + (list(range(s0, s1)) if s1 - s0 > 1 else [])
                spans.append((len(k0), len(groups)))
                k0 += [s0] * len(groups)
                k1 += [s1] * len(groups)
                ex += groups
            # Enqueued copies (a COPY_HOST_PTR buffer waits on NVIDIA's driver for the device's
            # work in flight); the rows and g2's tables serve every run with this binning and
            # device.
            rows = [upload_small(dev, queue, numpy.asarray(a, dtype=numpy.int32))
                    for a in (k0, k1, ex)] if k0 else None
            tables["s2"] = plan = (len(k0), rows, spans, g2_tables(dev, queue, b, spans)
                                   if dev.has_fp64 else None)
        n_rows, rows, spans, g2_tabs = plan
        if not n_rows:
            return None
        d_x = pooled_buffer(dev, queue, n_rows * n_frames * 8)
        d_c = pooled_buffer(dev, queue, n_rows * n_frames * 8)
        d_xmax = pooled_buffer(dev, queue, 8, zero=True)
        sl = defines["SL"]
        series = get_kernel(dev, "events.cl", "s2_series", defines)
        auto = get_kernel(dev, "events.cl", "s2_autocorr", defines)
        series(queue, (n_frames, n_rows), None, d_sums, numpy.int32(n_frames),
               numpy.int32(b.n_sub), *(buf for buf, _ in rows), d_x, d_xmax)
        per_group = sl * S2_LAGS_PER_ITEM
        auto(queue, (-(-n_frames // per_group) * sl, n_rows), (sl, 1), d_x,
             numpy.int32(n_frames), d_xmax, d_c)
        queue.flush()
        return _DeviceS2(dev, queue, d_x, d_c, spans, n_frames, d_xmax, g2_tabs)

    def _n2(self, events) -> numpy.ndarray:
        return self._run(events)[0]

    def _step(self, name, t0):
        """Profiling: wait for the device, add the time since t0 to last_profile[name]."""
        import time

        if self.profile:
            self.dev.queue.finish()
            now = time.perf_counter()
            self.last_profile[name] = self.last_profile.get(name, 0.0) + now - t0
            return now
        return t0

    def _task_pairs(self, total: int, strategy: str, lag_tile: int, n_tiles: int) -> int:
        """Pairs (or fold slots) per task for ``total`` of them: option task_pairs, or about 8
        tasks per compute unit (64 on GPUs: each upload chunk's launch then fills the H200
        about twice over, 20 % less kernel time at 0.01 counts than 32), each at least 16
        histograms long."""
        task_pairs = self.options.get("task_pairs")
        if task_pairs is None:
            dev = self.dev
            target = 8 * dev.compute_units * (1 if dev.kind == "cpu" else 8)
            task_pairs = max(int(total) // max(1, target), 1)
            if strategy != "global":  # amortise zeroing and flushing the histograms
                task_pairs = max(task_pairs, 16 * lag_tile * n_tiles)
        return int(task_pairs)

    def _plan(self, events, pix_sub, is_float, n_frames, geometry):
        """Task size of the first-event walk: (n_tiles, task_pairs)."""
        strategy, _, lag_tile, _ = geometry
        n_tiles = 1 if strategy == "global" else -(-n_frames // lag_tile)
        if is_float:
            return n_tiles, None  # one task per sub-bin
        total = 0
        if self.options.get("task_pairs") is None:
            total = _total_pairs(numpy.diff(events.offsets)[pix_sub >= 0])
        return n_tiles, self._task_pairs(total, strategy, lag_tile, n_tiles)

    def _run(self, events):
        """n2 (n_sub, n_frames) and frame sums (n_frames, n_sub) of ``events``."""
        import time

        import pyopencl

        dev = self.dev
        self.last_profile = {}
        self._run_budget = None  # the free memory is read anew at each run
        trim_buffer_pool(dev)
        t = time.perf_counter()
        n_sub = self.binning.n_sub
        n_frames = events.n_frames
        is_float = events.values_dtype.kind == "f"
        acc = numpy.float64 if is_float else numpy.int64
        if is_float and not dev.has_fp64:
            raise ValueError(f"float32 events need double precision; {dev.name} has no cl_khr_fp64")
        if n_frames == 0 or events.n_events == 0:
            events.pixel_sub_bins(self.binning)  # validates the binning against the stack
            return numpy.zeros((n_sub, n_frames), dtype=acc), (
                events.frame_sums_for(self.binning) if is_float
                else numpy.zeros((n_frames, n_sub), dtype=numpy.int64))
        if n_frames >= 2**31 or events.n_pixels >= 2**31:
            raise ValueError(f"too many frames or pixels for the OpenCL event kernel: "
                             f"{n_frames} frames, {events.n_pixels} pixels")
        queue = dev.queue
        # The shape of n2; _finish reads it into page-locked memory where it can (host_result).
        out = numpy.empty((n_sub, n_frames), dtype=acc)

        copies = []  # PyOpenCL waits for a copy from host memory when its event is dropped

        def upload(a):
            # Small arrays: non-blocking pageable copies on the kernels' queue.
            buf, copied = upload_small(dev, queue, a, pooled_buffer(dev, queue, a.nbytes))
            copies.append(copied)
            return buf

        # values and times (5 B per event for uint8: GBs) go through pinned staging buffers in a
        # thread of their own, in chunks of whole pixels: while this thread plans the tasks, and
        # then launches each chunk's tasks as soon as its events are on the device.
        offsets = events.offsets
        ready = queue_module.Queue()  # (item, event) as the uploads are enqueued
        resident = self._resident(events)
        times, time_np = self._bus_times(events, resident is not None)
        t_size = time_np.itemsize
        ev_bytes = events.values_dtype.itemsize + t_size
        room = self._event_room(out.nbytes)
        bounded = resident is None and events.n_events * ev_bytes > room
        if bounded:
            # More events than the memory budget: two slots, each a run of whole pixels whose
            # events fit half the room, uploaded and correlated in turn.
            slot = room // (2 * ev_bytes)
            most = int(numpy.diff(offsets).max())
            if most > slot:
                raise ValueError(
                    f"a pixel has {most} events ({most * ev_bytes} bytes): more than half the "
                    f"device memory left for events by max_device_memory={self._budget()} "
                    f"bytes; raise max_device_memory")
            edges = [0]
            while edges[-1] < events.n_pixels:
                q = int(numpy.searchsorted(offsets, offsets[edges[-1]] + slot, side="right")) - 1
                edges.append(min(events.n_pixels, max(q, edges[-1] + 1)))
            pix_edges = numpy.asarray(edges, dtype=numpy.int64)
        else:
            pix_edges = self._chunk_edges(events, is_float, resident is not None)
        n_chunks = int(pix_edges.size - 1)
        ev_edges = offsets[pix_edges]
        d_offsets = None
        if self._run_geometry(events, is_float, n_frames, n_chunks)[0] in DEVICE_PLANNED:
            # The device plan reads the offsets: they cross first (queued behind the events,
            # they held the plan, and so every kernel, until the upload's end: 4-5 ms of a
            # 0.01-count 1024x1024x10 000 stack on the H200); compacted events have them there.
            d_offsets = getattr(resident, "d_offsets", None)
            if d_offsets is None:
                d_offsets = upload(numpy.asarray(offsets, dtype=numpy.int64))
                queue.flush()
        if resident is not None:  # compacted on this device: the events are already there
            for i in range(2 * n_chunks):
                ready.put((i, None))
            return self._plan_and_launch(events, is_float, n_frames, n_chunks, pix_edges, ready,
                                         [(resident.d_values, resident.d_times)],
                                         numpy.zeros(n_chunks, numpy.int64), out, upload, t,
                                         time_np=time_np, d_offsets=d_offsets)
        v_size = ev_bytes - t_size
        if bounded:
            slots = [(pooled_buffer(dev, queue, slot * v_size),
                      pooled_buffer(dev, queue, slot * t_size)) for _ in range(2)]
            ev_base = ev_edges[:-1].copy()
        else:
            slots = [(pooled_buffer(dev, queue, events.values.nbytes),
                      pooled_buffer(dev, queue, events.n_events * t_size))]
            ev_base = numpy.zeros(n_chunks, numpy.int64)
        self.last_profile["time_bits"] = 8 * t_size
        launched = [threading.Event() for _ in range(n_chunks)]
        markers = [None] * n_chunks
        failed = threading.Event()

        def on_launched(c, marker):
            markers[c] = marker
            launched[c].set()

        def upload_big():
            try:
                t_up = time.perf_counter()
                uq = self._copy_queue()  # upload_pinned's staging lock: one upload at a time
                for c in range(n_chunks):
                    if bounded and c >= len(slots):  # the slot's last chunk must be done
                        while not launched[c - len(slots)].wait(0.1):
                            if failed.is_set():
                                return
                        markers[c - len(slots)].wait()
                    e0, e1 = int(ev_edges[c]), int(ev_edges[c + 1])
                    base = e0 - int(ev_base[c])
                    dv, dt = slots[c % len(slots)]
                    upload_pinned(dev, uq, [(dv, events.values[e0:e1], base * v_size),
                                            (dt, times[e0:e1], base * t_size, time_np)],
                                  on_item=lambda i, e, c=c: ready.put((2 * c + i, e)))
                # Host-side time of the whole upload (it returns when the copies are complete).
                self.last_profile["upload_s"] = time.perf_counter() - t_up
            except BaseException as e:  # re-raised in the caller's thread
                ready.put((None, e))

        if not bounded and is_pinned(events.values) and is_pinned(times) \
                and times.dtype == time_np:
            # Page-locked events as the device reads them: every chunk's two copies are enqueued
            # at once by this thread (no staging; an uploading thread would wait for the GIL
            # while this one plans: 1.5-2 ms a copy at the start, seen on the H200).
            def upload_direct():
                uq = self._copy_queue()
                for c in range(n_chunks):
                    e0, e1 = int(ev_edges[c]), int(ev_edges[c + 1])
                    for i, src in enumerate((events.values[e0:e1], times[e0:e1])):
                        e = None
                        if e1 > e0:
                            e = pyopencl.enqueue_copy(uq, slots[0][i], src, is_blocking=False,
                                                     dst_offset=e0 * src.itemsize)
                            copies.append(e)
                        ready.put((2 * c + i, e))
                uq.flush()

            self.last_profile["upload"] = "direct"
            return self._plan_and_launch(events, is_float, n_frames, n_chunks, pix_edges, ready,
                                         slots, ev_base, out, upload, t, time_np=time_np,
                                         d_offsets=d_offsets, start_upload=upload_direct)
        self.last_profile["upload"] = "staged"
        uploader = threading.Thread(target=upload_big, name="ewoksxpcs-events-upload")
        try:
            return self._plan_and_launch(events, is_float, n_frames, n_chunks, pix_edges, ready,
                                         slots, ev_base, out, upload, t,
                                         on_launched=on_launched if bounded else None,
                                         time_np=time_np, d_offsets=d_offsets,
                                         start_upload=uploader.start)
        finally:
            failed.set()
            if uploader.ident is not None:  # started
                uploader.join()

    def _bus_times(self, events, resident: bool):
        """(host times to upload, their dtype on the device) for ``events`` (option time_bits):
        uint16 for at most :data:`TIME16_FRAMES` frames (``bus_times`` of :func:`pin_events`,
        or the times converted in the staging copies), unless they lie on the device or in
        page-locked memory as uint32."""
        bits = self.options.get("time_bits")
        short = events.n_frames <= TIME16_FRAMES
        if bits == 16 and not short:
            raise ValueError(f"time_bits=16 needs at most {TIME16_FRAMES} frames, not "
                             f"{events.n_frames}")
        if resident:
            if bits == 16:
                raise ValueError("time_bits=16: these events lie on the device with uint32 "
                                 "times")
            return None, numpy.dtype(numpy.uint32)
        # A CPU device has no bus to spare: the default there keeps 32 bits (one program).
        short_wanted = bits == 16 or (bits is None and short and self.dev.kind != "cpu")
        bus = getattr(events, "bus_times", None)
        if short_wanted and bus is not None:
            return bus, bus.dtype
        if short_wanted and (bits == 16 or not is_pinned(events.times)):
            return events.times, numpy.dtype(numpy.uint16)
        return events.times, numpy.dtype(numpy.uint32)

    #: The default budget, queried once per run (:meth:`_run`).
    _run_budget = None

    def _budget(self) -> int:
        """Device memory budget (option max_device_memory; default: default_device_memory,
        queried once per run: on NVIDIA GPUs through NVML, whose init and shutdown per query
        may cost milliseconds)."""
        chosen = self.options.get("max_device_memory")
        if chosen:
            return int(chosen)
        if self._run_budget is None:
            self._run_budget = int(default_device_memory(self.dev))
        return self._run_budget

    def _event_room(self, n2_bytes: int) -> int:
        """Bytes of the budget left for events: n2, the frame sums and s2's two series of
        rows (each at most the size of n2) and 1 MiB of small buffers taken out."""
        return max(0, self._budget() - 4 * n2_bytes - 2**20)

    def _run_geometry(self, events, is_float, n_frames, n_chunks):
        """:meth:`_geometry` of a run of ``n_chunks`` pixel chunks: the device plan holds
        :data:`PLAN_BYTES` per binned pixel and chunk, so many runs of pixels through a small
        memory budget are planned on the host instead ("local")."""
        geometry = self._geometry(is_float, events.values_dtype, n_frames)
        if geometry[0] in DEVICE_PLANNED and (
                PLAN_BYTES * n_chunks * self.binning.pixel_index.size > self._budget() // 8):
            geometry = self._geometry(is_float, events.values_dtype, n_frames, "local")
        return geometry

    def _plan_and_launch(self, events, is_float, n_frames, n_chunks, pix_edges, ready,
                         slots, ev_base, out, upload, t, on_launched=None, time_np=None,
                         d_offsets=None, start_upload=None):
        """The rest of :meth:`_run`, while the events are uploaded: chunk ``c``'s events are in
        ``slots[c % len(slots)]`` (values, times buffers; times of ``time_np``) from event
        ``ev_base[c]`` on; ``on_launched(c, marker)`` once its kernels are enqueued (marker:
        their end); ``d_offsets``: the stack's offsets on the device (device-planned runs);
        ``start_upload()`` starts the events' upload (host events), once the small copies of
        the plan that must not queue behind it are enqueued."""
        import pyopencl

        self._checkpoints = Checkpoints(self.dev.queue, self._report if self.report_progress
                                        else None, PROGRESS_STEPS)

        dev, queue = self.dev, self.dev.queue
        n_sub = self.binning.n_sub
        geometry = self._run_geometry(events, is_float, n_frames, n_chunks)
        strategy, wg, lag_tile, hist32 = geometry
        defines = self._defines(geometry, events.values_dtype, time_np)
        self.last_profile.update(strategy=strategy, work_group=wg, lag_tile=lag_tile,
                                 hist_bits=32 if hist32 else 64, n_chunks=n_chunks, n_tasks=0)
        if strategy in DEVICE_PLANNED:
            return self._fold_and_launch(strategy, events, n_frames, n_chunks, pix_edges, ready,
                                         slots, ev_base, out, t, on_launched, defines, lag_tile,
                                         upload, d_offsets, start_upload)
        if start_upload is not None:  # planned on the host, chunk by chunk, during the upload
            start_upload()
        pix_sub = events.pixel_sub_bins(self.binning)
        frame_sums = (events.frame_sums_for(self.binning) if is_float  # host: fixed order
                      else numpy.zeros((n_frames, n_sub), dtype=numpy.int64))
        n_tiles, task_pairs = self._plan(events, pix_sub, is_float, n_frames, geometry)
        self.last_profile["n_tiles"] = n_tiles
        t = self._step("plan_s", t)
        d_n2 = pooled_buffer(dev, queue, out.nbytes, zero=True)
        if not is_float:
            d_sums = pooled_buffer(dev, queue, frame_sums.nbytes, zero=True)
        corr = get_kernel(dev, "events.cl", "event_corr", defines)
        sums = None if is_float else get_kernel(dev, "events.cl", "frame_sums", defines)
        sums_copied = None
        for c in range(n_chunks):
            # Tasks of this chunk's pixels (event indices stay global), planned while the
            # device works on the previous chunks and the next ones are uploaded.
            p0, p1 = int(pix_edges[c]), int(pix_edges[c + 1])
            seg_i0, seg_end, seg_cum, task_seg, task_sub = plan_tasks(
                events.offsets[p0: p1 + 1], pix_sub[p0:p1], task_pairs, split=not is_float)
            d_values, d_times = slots[c % len(slots)]
            if ev_base[c]:  # events indexed from the start of the chunk's slot
                seg_i0, seg_end = seg_i0 - ev_base[c], seg_end - ev_base[c]
            n_c = int(task_sub.size)
            self.last_profile["n_tasks"] += n_c
            # This chunk's events are on the device once its two copies are done.
            waits = []
            for _ in range(2):
                i, e = ready.get()
                if i is None:
                    raise e
                if e is not None:
                    waits.append(e)
            if n_c:
                d_seg_i0, d_seg_end, d_seg_cum, d_task_seg, d_task_sub = (
                    upload(a) for a in (seg_i0, seg_end, seg_cum, task_seg, task_sub))
                # Launches of bounded size (GPU watchdogs, responsiveness). The frame sums come
                # first (in-order queue), so that s2 can be computed from them while n2 is.
                tiles_per_launch = max(1, min(n_tiles, (1 << 16) // n_c))
                launches = [(t0, min(tiles_per_launch, n_tiles - t0))
                            for t0 in range(0, n_tiles, tiles_per_launch)]
                if sums is not None:
                    for t0, nt in launches:
                        sums(queue, (n_c * wg, nt), (wg, 1), d_values, d_times, d_seg_i0,
                             d_seg_cum, d_task_seg, d_task_sub, numpy.int32(0), numpy.int32(t0),
                             numpy.int32(n_frames), numpy.int32(n_sub), d_sums,
                             wait_for=waits or None)
                        waits = None  # in-order queue: later launches follow this one
            if sums is not None and c == n_chunks - 1:
                sums_copied = pyopencl.enqueue_copy(queue, frame_sums, d_sums, is_blocking=False)
            if n_c:
                for t0, nt in launches:
                    for k0, nk in self._task_ranges(n_c, n_c, n_chunks * len(launches), nt):
                        corr(queue, (nk * wg, nt), (wg, 1), d_values, d_times, d_seg_i0,
                             d_seg_end, d_seg_cum, d_task_seg, d_task_sub, numpy.int32(k0),
                             numpy.int32(t0), numpy.int32(n_frames), d_n2,
                             wait_for=waits or None)
                        waits = None
                        self._checkpoints.mark()
            if on_launched is not None:
                on_launched(c, pyopencl.enqueue_marker(queue, wait_for=waits or None))
            queue.flush()
        t = self._step("plan_kernels_s", t)
        return self._finish(frame_sums, d_sums if sums is not None else None, sums_copied,
                            d_n2, out, n_frames, defines, t)

    def _binned_rows(self, events) -> numpy.ndarray:
        """(n_binned,) int64 stack pixel (row of offsets) of each binned pixel, in binning order
        (sub-bin after sub-bin). A stack of every pixel of the frame (pixel_index strictly
        ascending inside it: 0 … n − 1) needs nothing computed: the binning's pixel indices."""
        b = self.binning
        b.check_frame_shape(events.frame_shape)
        if events.n_pixels == events.frame_shape[0] * events.frame_shape[1]:
            return b.pixel_index
        rank = numpy.searchsorted(events.pixel_index, b.pixel_index)
        found = rank < events.n_pixels
        found[found] = events.pixel_index[rank[found]] == b.pixel_index[found]
        if not found.all():
            events.pixel_sub_bins(b)  # raises, naming a pixel the stack lacks
        return rank

    def _fold_and_launch(self, strategy, events, n_frames, n_chunks, pix_edges, ready, slots,
                         ev_base, out, t, on_launched, defines, lag_tile, upload, d_offsets,
                         start_upload=None):
        """The device-planned strategies' part of :meth:`_plan_and_launch` (integer events):
        tasks planned on the device (``fold_slots``, prefix sums, ``fold_sub_slots``; one small
        read), then ``event_corr_planned`` per chunk as its events arrive. The events' upload
        starts once the plan's small copies to the device are enqueued, before the plan's
        kernels: a copy queued behind the upload waits for all of it (host copies into device
        buffers leave in the order they were enqueued), and so would every kernel (seen on the
        H200: 7 ms a call). So the plan's prefix sums and task counts stay on the device; its one
        read (the slots of each sub-bin) does not wait for the upload."""
        import pyopencl

        dev, queue = self.dev, self.dev.queue
        b = self.binning
        n_sub = b.n_sub
        rows = self._binned_rows(events)
        n_binned = int(rows.size)

        # Small arrays (the rows: 8 bytes a pixel; the offsets came first, from _run), int64 as
        # the kernels read them: the last copies to the device of the run.
        d_pix_edges = upload(numpy.asarray(pix_edges, dtype=numpy.int64))
        tables = binning_tables(b, dev)
        if rows is b.pixel_index and "rows" in tables:
            d_rows, d_sub_first = tables["rows"]  # the binning's rows: uploaded by an earlier run
        else:
            d_rows, d_sub_first = (upload(numpy.asarray(a, dtype=numpy.int64))
                                   for a in (rows, b.sub_offsets))
            if rows is b.pixel_index:  # every pixel held: the same rows at every run
                tables["rows"] = (d_rows, d_sub_first)
        if start_upload is not None:  # the plan below copies nothing to the device
            queue.flush()
            start_upload()
        n_all = n_chunks * n_binned
        d_slots, d_counts = (pooled_buffer(dev, queue, 8 * n_all) for _ in range(2))
        d_cum = pooled_buffer(dev, queue, 8 * (n_all + 1))
        if n_all:
            # Groups of 256 along the pixels (the driver's own choice for this 2-D range took
            # 0.64 ms for 8 chunks x 1M pixels on the H200).
            fw = min(256, dev.max_work_group_size)
            get_kernel(dev, "events.cl", "fold_slots", defines)(
                queue, (-(-n_binned // fw) * fw, n_chunks), (fw, 1), d_offsets, d_rows,
                numpy.int64(n_binned), d_pix_edges, d_slots, d_counts)
        if getattr(self, "_scan", None) is None or self._scan.dev is not dev:
            self._scan = DeviceScan(dev, "long")  # its scratch buffers: this correlator's
        scan = self._scan
        scan.on_device(queue, d_slots, n_all, d_cum)
        d_rcum = d_cum  # "fold": not read
        if strategy != "fold":  # rows of the tasks: running event counts as well
            d_rcum = pooled_buffer(dev, queue, 8 * (n_all + 1))
            scan.on_device(queue, d_counts, n_all, d_rcum)
        # d_slots and d_counts live to the end of the call, with its other buffers: a pooled
        # buffer given back now could go to a later buffer of the call that another queue
        # writes while the scans still read it (plain buffers, freed now, waited for the
        # device, the events' upload included: 5 ms on the H200).
        d_sub_slots = pooled_buffer(dev, queue, 8 * n_chunks * (n_sub + 1))
        get_kernel(dev, "events.cl", "fold_sub_slots", defines)(
            queue, (n_sub + 1, n_chunks), None, d_cum, numpy.int64(n_binned), d_sub_first,
            numpy.int32(n_sub), d_sub_slots)
        sub_slots = numpy.empty((n_chunks, n_sub + 1), dtype=numpy.int64)
        pyopencl.enqueue_copy(queue, sub_slots, d_sub_slots)  # blocking: µs after the scan
        per_sub = numpy.diff(sub_slots, axis=1)  # (n_chunks, n_sub) slots of each sub-bin
        n_tiles = -(-n_frames // lag_tile)
        task_slots = self._task_pairs(int(per_sub.sum()), "fold", lag_tile, n_tiles)
        task_cum = numpy.zeros((n_chunks, n_sub + 1), dtype=numpy.int64)
        numpy.cumsum(-(-per_sub // task_slots), axis=1, out=task_cum[:, 1:])
        self.last_profile.update(n_tiles=n_tiles, task_pairs=task_slots,
                                 n_tasks=int(task_cum[:, -1].sum()))
        d_task_cum = pooled_buffer(dev, queue, task_cum.nbytes)  # the same, on the device
        get_kernel(dev, "events.cl", "fold_task_cum", defines)(
            queue, (n_chunks,), None, d_sub_slots, numpy.int32(n_sub), numpy.int64(task_slots),
            d_task_cum)
        t = self._step("plan_s", t)

        d_n2 = pooled_buffer(dev, queue, out.nbytes, zero=True)
        frame_sums = numpy.empty((n_frames, n_sub), dtype=numpy.int64)  # read back whole
        d_sums = pooled_buffer(dev, queue, frame_sums.nbytes, zero=True)
        corr = get_kernel(dev, "events.cl", "event_corr_planned", defines)
        wg = int(defines["WG"])
        for c in range(n_chunks):
            d_values, d_times = slots[c % len(slots)]
            waits = []
            for _ in range(2):  # this chunk's values and times are on the device
                i, e = ready.get()
                if i is None:
                    raise e
                if e is not None:
                    waits.append(e)
            n_c = int(task_cum[c, -1])
            if n_c:
                per_launch = max(1, (1 << 16) // n_tiles)
                for task0, n_l in self._task_ranges(n_c, per_launch, n_chunks):
                    for t0 in range(n_tiles):
                        corr(queue, (n_l * wg, 1), (wg, 1), d_values, d_times, d_offsets,
                             numpy.int64(ev_base[c]), d_rows, d_cum, d_rcum,
                             numpy.int64(c * n_binned),
                             d_sub_first, d_task_cum, numpy.int64(c * (n_sub + 1)),
                             numpy.int64(task_slots),
                             numpy.int32(task0), numpy.int32(t0), numpy.int32(n_frames),
                             numpy.int32(n_sub), d_n2, d_sums, wait_for=waits or None)
                        waits = None  # in-order queue: later launches follow this one
                    self._checkpoints.mark()
            if on_launched is not None:
                on_launched(c, pyopencl.enqueue_marker(queue, wait_for=waits or None))
            queue.flush()
        t = self._step("plan_kernels_s", t)
        # The frame sums are read in _finish, beside n2, while s2 is summed.
        return self._finish(frame_sums, d_sums, None, d_n2, out, n_frames, defines, t)

    def _finish(self, frame_sums, d_sums, sums_copied, d_n2, out, n_frames, defines, t):
        """The range check, s2 (when correlate() wants it) and the download of n2 once the
        kernels are queued; returns (n2, frame sums)."""
        import time

        import pyopencl

        queue = self.dev.queue
        n2_done = pyopencl.enqueue_marker(queue)  # the correlation kernels' end
        # n2, the frame sums (device-planned runs) and g2's results leave on a queue of their
        # own once the kernels are done, while s2 and g2 are summed, at bus speed: into
        # page-locked host memory kept from run to run (host_result; read straight), or through
        # the pinned staging ring, copied out by a few threads, where that pool is full (reads
        # into pageable memory, which the driver stages: ~12 GB/s on the H200, 8 into a
        # result's fresh pages, one after the other whatever the queues).
        out = host_result(self.dev, out.shape, out.dtype)
        with StagedReads(self.dev, self._read_queue()) as staged:
            n2_read = staged.read(out, d_n2, wait_for=[n2_done])
            if sums_copied is None and d_sums is not None:
                frame_sums = host_result(self.dev, frame_sums.shape, frame_sums.dtype)
                sums_copied = staged.read(frame_sums, d_sums, wait_for=[n2_done])
            s2_dev = fetch_g2 = None
            if self._s2_wanted:
                ts = time.perf_counter()
                if d_sums is not None and self._s2_on_device():
                    s2_dev = self._s2_device(d_sums, n_frames, defines)  # queued after n2
                    if s2_dev is not None and self._g2_wanted and self.dev.has_fp64:
                        # g2, σ and the bins' n2 from n2 and s2 where they are
                        fetch_g2 = g2_on_device(self.dev, queue, d_n2, s2_dev.d_c, self.binning,
                                                s2_dev.spans, n_frames, d_x=s2_dev.d_x,
                                                tables=s2_dev.g2_tables, read=staged.read)
                        self.last_profile["g2_on_device"] = True
                    if s2_dev is not None:
                        s2_dev.read_peak()
                self.last_profile["s2_s"] = time.perf_counter() - ts
            if s2_dev is None:  # on the host while the device works (else implied by s2's check)
                self._range_check_early(out, frame_sums, sums_copied)
            t = self._step("s2_wait_s", t)
            staged.prefault()  # while the device works
            self._checkpoints.wait(0.0, 0.95)  # the correlation kernels, as they complete
            n2_read.wait()
            if sums_copied is not None:
                sums_copied.wait()
            g2_fetched = None if fetch_g2 is None else fetch_g2()
        if self._s2_wanted:
            ts = time.perf_counter()
            s2 = None
            if s2_dev is not None and s2_dev.safe():
                # Events are >= 0: n2 of a sub-bin, and of a bin, is at most max v·Σ v <= (max
                # X)²·Nt < S2_LIMIT < 2^63 (X: the bins' frame sums), so n2 is in range too.
                self._range_events = None
                if g2_fetched is not None:
                    # With g2 on the device the host needs each bin's own s2 row and frame
                    # sums only: they come back with g2 in one read.
                    g2, err, n2_bins, s2_own, x_own, pairs = g2_fetched
                    s2 = [None if sp is None else s2_own[i: i + 1]
                          for i, sp in enumerate(s2_dev.spans)]
                    self._g2_rows = (g2, err, pairs)  # the few-pairs rule applied
                    self._bin_totals = (n2_bins, numpy.ascontiguousarray(x_own.T))
                else:
                    s2 = s2_dev.rows()
            else:
                if s2_dev is not None:  # n2's range first, as with s2 on the host
                    self._range_check_early(out, frame_sums, sums_copied)
                # On the host (raises where a sum could leave int64).
                s2 = s2_rows(frame_sums, self.binning, numpy.arange(n_frames), self.s2_method)
            self._s2 = s2
            self.last_profile["s2_s"] += time.perf_counter() - ts
        self._step("download_s", t)
        self._report(1.0)
        return out, frame_sums

    def _copy_queue(self):
        """The device's queue for the copies of the events to the device."""
        return self.dev.side_queue("events-copies")

    def _read_queue(self):
        """The device's queue for reads that overlap the kernels' queue."""
        return self.dev.side_queue("events-reads")

    #: Events whose int64 range compute_sums checks; _finish checks them early (or finds it
    #: implied by the device s2's range) and clears this.
    _range_events = None

    def _range_check_early(self, out, frame_sums, sums_copied) -> None:
        """:meth:`_check_range` of integer events as soon as their frame sums are on the host
        (compute_sums checks them after the run otherwise)."""
        events, self._range_events = self._range_events, None
        if events is None or out.dtype.kind != "i":
            return
        if sums_copied is not None:
            sums_copied.wait()
        self._check_range(events, frame_sums)

    def _task_ranges(self, n_c: int, most: int, n_groups: int, tiles: int = 1) -> list:
        """(first task, tasks) of the launches over a chunk's ``n_c`` tasks, ``most`` at most
        each, of equal sizes; with progress reported, small enough for about PROGRESS_STEPS
        launches over the ``n_groups`` (chunks × tiles) of the run, each followed by a
        checkpoint, but never below :data:`LAUNCH_FILL` work-groups per compute unit
        (``tiles``: work-groups per task in one launch)."""
        if not n_c:
            return []
        n = -(-n_c // max(1, most))  # launches: the fewest of at most `most` tasks
        if self.report_progress is not None:
            fill = -(-LAUNCH_FILL * self.dev.compute_units // tiles)
            n = max(n, n_c // max(fill, -(-n_c * n_groups // PROGRESS_STEPS)))
        size = -(-n_c // max(1, n))  # equal launches
        return [(k, min(size, n_c - k)) for k in range(0, n_c, size)]



class _DeviceS2:
    """The s2 rows that :meth:`OpenCLEventCorrelator._s2_device` queued: the series X (bin frame
    sums less one group each) and their autocorrelations C in device buffers, ``spans`` (per bin,
    its first row and row count, or None for an empty bin), the largest X (device word) and g2's
    tables for these rows."""

    def __init__(self, dev, queue, d_x, d_c, spans, n_frames: int, d_xmax, g2_tables=None):
        self.dev, self.queue = dev, queue
        self.d_x, self.d_c, self.spans, self.n_frames = d_x, d_c, spans, n_frames
        #: :func:`~ewoksxpcs.opencl.normalise.g2_tables` of these rows (None without fp64).
        self.g2_tables = g2_tables
        self._d_xmax = d_xmax
        self._xmax = numpy.zeros(1, dtype=numpy.uint32)
        self._xmax_read = None

    def read_peak(self) -> None:
        """Enqueue the read of the largest X. Once the kernels that follow s2 on the queue are
        enqueued: this read waits behind the reads of n2 and the frame sums (copies to the
        host leave in turn), and so would any kernel enqueued after it."""
        import pyopencl

        if self._xmax_read is None:
            self._xmax_read = pyopencl.enqueue_copy(self.queue, self._xmax, self._d_xmax,
                                                    is_blocking=False)

    def safe(self) -> bool:
        """Whether no sum can have left int64: (max X)²·Nt < S2_LIMIT, the host's rule
        (:func:`ewoksxpcs.engine.intrange.s2_bound` of the bin sums, which bound every row)."""
        self.read_peak()
        self._xmax_read.wait()
        peak = float(self._xmax[0])  # saturated at 2^32 - 1: then unsafe
        return peak * peak * self.n_frames < S2_LIMIT

    def rows(self) -> list:
        """s2 rows per bin as :func:`~ewoksxpcs.engine.normalise.s2_rows` gives them (int64)."""
        n_rows = sum(sp[1] for sp in self.spans if sp is not None)
        c = numpy.empty((n_rows, self.n_frames), dtype=numpy.int64)
        download_pinned(self.dev, self.queue, c, self.d_c)
        return [None if sp is None else c[sp[0]: sp[0] + sp[1]] for sp in self.spans]
