"""Compaction of frames into an :class:`~ewoksxpcs.engine.events.EventStack` on OpenCL.

Same result as :func:`ewoksxpcs.engine.events.compact` (array for array), computed on a device, batch by
batch of frames (``kernels/compact.cl``):

1. the batch's frames reach the device: uploaded from the host, or -- for bitshuffle-LZ4 HDF5
   datasets of one frame per chunk (Eiger, Lima) -- read raw from the files by many threads and
   decompressed on the device (:mod:`ewoksxpcs.io.hdf5chunks`, :mod:`ewoksxpcs.opencl.bslz4_decoder`), so
   the host never touches decompressed data;
2. one kernel counts the non-zero values of every kept pixel (and flags negative values), a
   device scan turns the counts into offsets, a second kernel writes the batch's (value, frame)
   events pixel-major into an arena of device memory, a third sums each frame over each bin;
3. after the last batch, the batches' events are merged pixel by pixel on the device into their
   final order, and stay there (:class:`~ewoksxpcs.engine.events.DeviceEvents`): an OpenCL correlator
   on the same device reads them in place, the host arrays are downloaded on first access.

Device memory: one batch of frames, the arena (the events themselves) and a staging copy for the
merge, bounded by ``max_device_memory``. When the events outgrow it, a source that can be read
again (a file, an array) is compacted again in ranges of pixels: one pass counts every pixel's
events, then one pass per range of pixels whose events fit writes them on the device and
downloads them into the final host arrays (more passes over the data, all on the device); a
one-shot iterable spills its events to the host, where they are merged (same result, slower).
"""

from __future__ import annotations

import queue as queue_module
import threading

import numpy

from ..engine.badframes import excluded_of
from ..engine.events import DeviceEvents, EventStack, _kept_pixels, check_non_negative
from ..engine.frames import as_frame_source
from .device import (CTYPES, OpenCLDevice, default_device_memory, device_buffer, get_device,
                     get_kernel, pinned_empty, power_of_two_work_group, build_in_background)
from ..engine.qmask import Binning
from .prefix_sum import DeviceScan

__all__ = ["compact_opencl", "DEFAULT_BATCH_BYTES"]


#: Frames per batch on the device: about this many bytes of decompressed frames.
DEFAULT_BATCH_BYTES = 2 * 1024**3
#: The same on a CPU device (PoCL): its buffers are host memory, and the progress bar moves
#: once per batch.
CPU_BATCH_BYTES = 64 * 1024**2


def compact_opencl(frames, bad_pixels=None, qmask=None, chunk_frames: int | None = None,
                   device=None, progress=None, max_device_memory: int | None = None,
                   decode: str = "auto", read_threads: int = 0,
                   profile: dict | None = None, prepare=None) -> EventStack:
    """Compact frames into an :class:`EventStack` on an OpenCL device, streaming over batches.

    Parameters
    ----------
    frames : array (Nt, Ny, Nx), iterable of chunks, or FrameSource
        Non-negative counts (int8 … uint32, float32).
    bad_pixels : array_like of bool (Ny, Nx), optional
        Pixels to drop (True = bad). All other pixels are kept.
    qmask : array_like of int (Ny, Nx) or Binning, optional
        When given, the per-frame bin sums are stored with the events.
    chunk_frames : int, optional
        Frames per batch (default: about :data:`DEFAULT_BATCH_BYTES` of frames, within the
        memory budget).
    device : str or OpenCLDevice, optional
        OpenCL device spec (see :func:`ewoksxpcs.opencl.device.get_device`).
    progress : callable, optional
        Called as ``progress(frames_done, n_frames_or_None)`` after each batch.
    max_device_memory : int, optional
        Device memory budget in bytes (default: :func:`.device.default_device_memory`: 70 % of
        a GPU's free memory).
    decode : {"auto", "device", "host"}
        Where compressed HDF5 chunks are decompressed: "auto" and "device" decompress
        bitshuffle-LZ4 chunks of whole frames on the device when the source allows it (the
        source's ``chunk_layout()``); "device" raises if it does not; "host" always reads
        decompressed frames from the source.
    read_threads : int
        Threads reading raw chunks from the files (0: one per CPU, at most 32).
    prepare : callable, optional
        ``prepare(dtype, n_frames)`` of the frames, called before the compaction starts: the
        consumer of the events starts building its programs then (``prepare_programs`` of the
        OpenCL event correlators), and they compile while the frames are compacted.
    profile : dict, optional
        Filled with wall times (s) of the steps: ``read_s`` (reader thread), ``wait_read_s``
        (device side waiting for data), ``decode_s``, ``compact_s`` (counting, scanning,
        writing events, bin sums), ``finish_s`` (the end, of which ``merge_s`` merging the
        batches), and ``path``. The device
        is waited for after each step, which costs a little overlap.

    Returns
    -------
    EventStack
        Equal to ``ewoksxpcs.engine.events.compact(frames, bad_pixels, qmask)``.

    Raises
    ------
    ValueError
        Negative values (with the first frame and pixel), mismatched mask shapes, corrupted
        compressed chunks (with the frame), ``decode="device"`` on a source that cannot.
    """
    if decode not in ("auto", "device", "host"):
        raise ValueError(f"decode must be 'auto', 'device' or 'host', got {decode!r}")
    dev = device if isinstance(device, OpenCLDevice) else get_device(device)
    source = as_frame_source(frames)
    shape = tuple(source.frame_shape)
    dtype = numpy.dtype(source.dtype)
    if dtype.kind == "f" and qmask is not None and not dev.has_fp64:
        raise ValueError(f"float32 bin sums need double precision; {dev.name} has no cl_khr_fp64")
    kept = _kept_pixels(shape, bad_pixels)
    binning = None
    if qmask is not None:
        binning = qmask if isinstance(qmask, Binning) else Binning(qmask, bad_pixels=bad_pixels,
                                                                    n_groups=1)
        binning.check_frame_shape(shape)
    budget = int(max_device_memory or default_device_memory(dev))
    layout = None
    if decode != "host":
        get_layout = getattr(source, "chunk_layout", None)
        layout, reason = get_layout() if get_layout is not None else (None, "not an HDF5 dataset")
        if layout is not None and layout.codec != "bslz4":
            layout, reason = None, f"codec {layout.codec!r} is read by the host"
        if layout is not None and dtype.itemsize not in (1, 2, 4):
            layout, reason = None, f"dtype {dtype} is not decoded on the device"
        if layout is None and decode == "device":
            raise ValueError(f"cannot decompress {source!r} on the device: {reason}")
    if layout is not None:
        # The decoder's programs compile while this thread compiles the compactor's.
        from .bslz4_decoder import BSLZ4Decoder

        ny, nx = layout.frame_shape
        decoder = BSLZ4Decoder(dev, layout.dtype, layout.frames_per_chunk * ny * nx,
                               block_elems=layout.block_size)
        build_in_background(dev, decoder.programs())
    if prepare is not None:
        prepare(dtype, source.n_frames)
    compactor = _DeviceCompactor(dev, shape, dtype, kept, binning, budget)
    frame_bytes = shape[0] * shape[1] * dtype.itemsize
    if chunk_frames is None:
        batch_bytes = DEFAULT_BATCH_BYTES if dev.kind != "cpu" else CPU_BATCH_BYTES
        chunk_frames = max(1, min(batch_bytes, budget // 4) // max(1, frame_bytes))
    chunk_frames = int(chunk_frames)
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    prof = _Profile(profile, dev.queue)

    excluded = excluded_of(source) if layout is not None else None

    def make_batches():
        if layout is not None:
            batches = _decoded_batches(dev, source, layout, decoder, chunk_frames, read_threads,
                                       prof)
            # Bad frames (read as zeros by the source's own reader): zeroed on the device.
            return batches if excluded is None else _zero_excluded(dev, batches, excluded,
                                                                  frame_bytes)
        return _uploaded_batches(dev, source, chunk_frames)

    path = "raw chunks decompressed on the device" if layout is not None else "frames uploaded"
    prof.set("path", path)
    # Events beyond the budget: sources that can be read again are compacted again in pixel
    # ranges (device work); others spill to the host.
    compactor.restartable = layout is not None or bool(getattr(source, "reiterable", False))
    batches = make_batches()
    overflow = False
    t0 = 0
    try:
        for d_frames, base, n, host_chunk in batches:
            if t0 + n > 2**32:
                raise ValueError(f"too many frames for uint32 times: {t0 + n}")
            tick = prof.start()
            compactor.add_batch(d_frames, base, n, t0, host_chunk)
            prof.stop("compact_s", tick)
            t0 += n
            if layout is not None and hasattr(source, "advance"):
                source.advance(n)  # progress and cancellation of monitored sources
            if progress is not None:
                progress(t0, source.n_frames)
    except _Overflow:
        overflow = True
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()
    tick = prof.start()
    if overflow:
        del compactor  # its arena
        compactor = _DeviceCompactor(dev, shape, dtype, kept, binning, budget)
        values, times, offsets, frame_sums, t0 = _compact_in_ranges(compactor, make_batches, prof)
        resident = None
    else:
        values, times, offsets, frame_sums, resident = compactor.finish(prof)
    prof.stop("finish_s", tick)
    labels = binning.labels if binning is not None else None
    # Trusted: the kernels write each pixel's events in frame order and reject negative values.
    events = EventStack(values, times, offsets, kept, shape, t0, dtype, frame_sums=frame_sums,
                        labels=labels, resident=resident, trusted=True)
    events.pixel_sums = compactor.pixel_sums()
    events.compaction = f"OpenCL on {dev.name}: {path}"
    return events


# ------------------------------------------------------------------------------ batches
def _zero_excluded(dev, batches, excluded, frame_bytes):
    """The decoded batches with the excluded frames (mask over the selection) zeroed in place
    on the device (:mod:`ewoksxpcs.badframes`)."""
    import pyopencl

    t0 = 0
    try:
        for d_frames, base, n, host_chunk in batches:
            for j in numpy.flatnonzero(excluded[t0: t0 + n]).tolist():
                pyopencl.enqueue_fill_buffer(dev.queue, d_frames, numpy.uint8(0),
                                             (base + j) * frame_bytes, frame_bytes)
            t0 += n
            yield d_frames, base, n, host_chunk
    finally:
        batches.close()


def _uploaded_batches(dev, source, chunk_frames):
    """(device frames, 0, n, host chunk) per chunk of the source; the next chunk is read by a
    thread of its own while the device works on the current one."""
    import pyopencl

    ctx, queue = dev.context, dev.queue
    chunks = queue_module.Queue(maxsize=1)
    stop = threading.Event()

    def read():
        try:
            for chunk in source.iter_chunks(chunk_frames):
                if stop.is_set():
                    return
                chunks.put(numpy.ascontiguousarray(chunk))
            chunks.put(None)
        except BaseException as e:  # re-raised by the consumer
            chunks.put(e)

    reader = threading.Thread(target=read, name="ewoksxpcs-compact-read", daemon=True)
    reader.start()
    d_chunk, cap = None, 0
    try:
        while True:
            chunk = chunks.get()
            if chunk is None:
                return
            if isinstance(chunk, BaseException):
                raise chunk
            n = int(chunk.shape[0])
            if n == 0:
                continue
            if chunk.nbytes > cap:
                cap = chunk.nbytes
                d_chunk = pyopencl.Buffer(ctx, pyopencl.mem_flags.READ_ONLY, cap)
            pyopencl.enqueue_copy(queue, d_chunk, chunk)
            yield d_chunk, 0, n, chunk
    finally:
        stop.set()
        _drain_and_join(reader, chunks)


def _drain_and_join(reader: threading.Thread, items: queue_module.Queue) -> None:
    """Join a reader thread that may be blocked on its full output queue (consumer gone)."""
    while reader.is_alive():
        try:
            items.get(timeout=0.05)
        except queue_module.Empty:
            pass
    reader.join()


class _Profile:
    """Wall times of steps, waiting for the device at each stop (no-op without a dict)."""

    def __init__(self, record, queue):
        self.record, self.queue = record, queue
        self.lock = threading.Lock()

    def set(self, key, value):
        if self.record is not None:
            self.record[key] = value

    def start(self):
        import time

        return time.perf_counter() if self.record is not None else 0.0

    def stop(self, key, tick, wait=True):
        import time

        if self.record is None:
            return
        if wait:
            self.queue.finish()
        with self.lock:
            self.record[key] = self.record.get(key, 0.0) + time.perf_counter() - tick


def _decoded_batches(dev, source, layout, decoder, chunk_frames, read_threads, prof):
    """(device frames, first frame in the buffer, n, None) per batch of whole chunks, read raw
    by threads into page-locked buffers (the next batch while the device decodes this one),
    uploaded and decompressed on the device."""
    import pyopencl

    from .bslz4_decoder import chunk_errors
    from ..io.hdf5chunks import read_chunks

    ctx, queue = dev.context, dev.queue
    # Unsigned frames: a bad chunk's error is raised once the batch has been compacted, so that
    # the host does not wait for the device between decoding and compacting (the compaction
    # of garbage cannot fail first); signed ones are checked for negative values, whose error
    # must not hide a corrupted chunk.
    deferred_errors = numpy.dtype(layout.dtype).kind == "u"
    k = int(layout.frames_per_chunk)
    n_chunks = int(layout.sizes.size)
    per_batch = max(1, chunk_frames // k)
    edges = list(range(0, n_chunks, per_batch)) + [n_chunks]
    batch_bytes = max(int(layout.sizes[a:b].sum()) for a, b in zip(edges[:-1], edges[1:]))
    npix = layout.frame_shape[0] * layout.frame_shape[1]
    itemsize = numpy.dtype(layout.dtype).itemsize
    staging = [pinned_empty(dev, (max(1, batch_bytes),), numpy.uint8) for _ in range(2)]
    d_comp = [pyopencl.Buffer(ctx, pyopencl.mem_flags.READ_ONLY, max(8, batch_bytes))
              for _ in range(2)]
    d_frames = device_buffer(dev, queue, per_batch * k * npix * itemsize)
    copied = [None, None]  # upload event of each staging buffer
    ready = queue_module.Queue(maxsize=1)
    free = [threading.Event(), threading.Event()]
    for f in free:
        f.set()
    stop = threading.Event()

    def read():
        try:
            for i in range(len(edges) - 1):
                slot = i % 2
                free[slot].wait()
                if stop.is_set():
                    return
                free[slot].clear()
                a, b = edges[i], edges[i + 1]
                tick = prof.start()
                buf, offsets = read_chunks(layout, a, b - a, out=staging[slot],
                                           threads=read_threads)
                prof.stop("read_s", tick, wait=False)
                ready.put((i, slot, buf, offsets))
            ready.put(None)
        except BaseException as e:
            ready.put(e)

    reader = threading.Thread(target=read, name="ewoksxpcs-chunk-read", daemon=True)
    reader.start()
    upload_queue = pyopencl.CommandQueue(ctx)
    try:
        while True:
            tick = prof.start()
            item = ready.get()
            prof.stop("wait_read_s", tick, wait=False)
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            i, slot, buf, offsets = item
            tick = prof.start()
            a, b = edges[i], edges[i + 1]
            nbytes = int(offsets[-1])
            copied[slot] = pyopencl.enqueue_copy(upload_queue, d_comp[slot], buf[:nbytes],
                                                 is_blocking=False)
            upload_queue.flush()
            pyopencl.enqueue_barrier(queue, wait_for=[copied[slot]])
            with chunk_errors(layout, getattr(source, "url", "")):
                pending = decoder.decode(d_comp[slot], offsets, d_frames, queue=queue,
                                         first_chunk=a, wait=not deferred_errors)
            copied[slot].wait()
            free[slot].set()  # the staging buffer may take the batch after next
            prof.stop("decode_s", tick)
            # Frames of the selection in this batch of whole chunks.
            f0 = int(layout.first_frame[a])
            lo, hi = max(0, f0), min(layout.n_frames, f0 + (b - a) * k)
            if hi > lo:
                yield d_frames, lo - f0, hi - lo, None
            if pending is not None:  # done by now: the consumer has read results back
                with chunk_errors(layout, getattr(source, "url", "")):
                    pending.wait()
    finally:
        stop.set()
        for f in free:
            f.set()
        _drain_and_join(reader, ready)


# ------------------------------------------------------------------------------ compactor
class _Overflow(Exception):
    """The events outgrow the device budget (internal)."""


class _DeviceCompactor:
    """Per-call state: kernels, per-pixel totals, the arena of the batches' events."""

    def __init__(self, dev, shape, dtype, kept, binning, budget):
        import pyopencl

        self.dev, self.dtype, self.binning, self.budget = dev, dtype, binning, budget
        self.shape = tuple(shape)
        self.npix = shape[0] * shape[1]
        self.n_kept = n_kept = int(kept.size)
        self.wg = power_of_two_work_group(dev, gpu=256, cpu=16)
        defines = {"VAL_T": CTYPES[dtype.name], "WG": self.wg}
        if dtype.kind == "f":
            defines["IS_FLOAT"] = 1
        self.k_count = get_kernel(dev, "compact.cl", "count_events", defines)
        self.k_scatter = get_kernel(dev, "compact.cl", "scatter_events", defines)
        self.k_merge = get_kernel(dev, "compact.cl", "merge_part", defines)
        self.k_range = get_kernel(dev, "compact.cl", "scatter_range", defines)
        self.k_sums = None
        if binning is not None:
            name = "bin_sums" if dtype.kind == "f" else "bin_sums_wg"
            self.k_sums = get_kernel(dev, "compact.cl", name, defines)
        self.scan = DeviceScan(dev)
        queue = dev.queue
        ctx = dev.context
        mf = pyopencl.mem_flags

        def upload(a):
            a = numpy.ascontiguousarray(a)
            if a.size == 0:
                a = numpy.zeros(1, a.dtype)
            return pyopencl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=a)

        self.d_kept = upload(kept)
        self.d_counts = device_buffer(dev, queue, 4 * n_kept)
        self.d_total = device_buffer(dev, queue, 4 * n_kept, zero=True)
        self.d_pixel_sums = device_buffer(dev, queue, 8 * n_kept, zero=True)
        self.d_neg = device_buffer(dev, queue, 4)
        if binning is not None:
            self.d_pixel_index = upload(binning.pixel_index)
            self.d_bin_offsets = upload(binning.bin_offsets)
        self.event_bytes = dtype.itemsize + 4
        self.batch_bytes = 0  # largest batch of frames on the device so far
        # Arena: the batches' events, back to back; allocated at the first batch.
        self.d_values = self.d_times = None
        self.capacity = 0
        self.fill = 0
        self.parts = []  # per batch: dict(base, n, d_off) on the device, or host arrays
        self.spilled = False
        #: When the events outgrow the budget: raise _Overflow (the caller starts again in
        #: pixel ranges) rather than spill to the host.
        self.restartable = False
        self.sum_parts = []

    # -------------------------------------------------------------- per batch
    def _arena(self, need: int):
        """Allocate the arena (once): what the budget leaves after the batch buffers."""
        import pyopencl

        if self.d_values is not None:
            return
        # The merge needs a staging copy as large as the events: half of the rest each.
        cap = self.free_bytes() // (2 * self.event_bytes)
        if cap < need:
            return
        try:
            mf = pyopencl.mem_flags
            self.d_values = pyopencl.Buffer(self.dev.context, mf.READ_WRITE,
                                            max(8, cap * self.dtype.itemsize))
            self.d_times = pyopencl.Buffer(self.dev.context, mf.READ_WRITE, max(8, cap * 4))
            self.capacity = cap
        except pyopencl.Error:  # pragma: no cover - allocation refused: host merge
            self.d_values = self.d_times = None
            self.capacity = 0

    def free_bytes(self) -> int:
        """Bytes of the budget left for events: after the per-pixel buffers (counted as 16 B
        of kept indices and counts, 16 B of offsets) and the largest batch of frames."""
        fixed = 16 * self.n_kept + 16 * (self.n_kept + 1)
        return max(0, self.budget - fixed - self.batch_bytes)

    def count_batch(self, d_frames, base: int, n: int, t0: int, host_chunk=None):
        """Count the batch's events per pixel (running totals and sums), check signs, sum
        the bins; returns the element offset of its first frame."""
        import pyopencl

        queue = self.dev.queue
        npix, n_kept = self.npix, self.n_kept
        self.batch_bytes = max(self.batch_bytes, n * npix * self.dtype.itemsize)
        base_el = numpy.int64(int(base) * npix)
        neg = numpy.zeros(1, dtype=numpy.int32)
        signed = self.dtype.kind != "u"  # unsigned frames: no value to check, no wait
        if signed:
            pyopencl.enqueue_copy(queue, self.d_neg, neg, is_blocking=False)
        if n_kept:
            self.k_count(queue, (n_kept,), None, d_frames, base_el, numpy.int32(n),
                         numpy.int64(npix), self.d_kept, numpy.int32(n_kept), self.d_counts,
                         self.d_total, self.d_pixel_sums, self.d_neg)
        if signed:
            pyopencl.enqueue_copy(queue, neg, self.d_neg)
        if neg[0]:
            if host_chunk is None:
                host_chunk = numpy.empty((n,) + self.shape, dtype=self.dtype)
                pyopencl.enqueue_copy(queue, host_chunk, d_frames,
                                      src_offset=int(base_el) * self.dtype.itemsize)
            check_non_negative(host_chunk, t0)  # raises with the frame and pixel
        if self.binning is not None:
            self.sum_parts.append(self._bin_sums(d_frames, base_el, n))
        return base_el

    def add_batch(self, d_frames, base: int, n: int, t0: int, host_chunk=None):
        """Count the batch's events and write them to the arena (or to the host after a
        spill). Raises :class:`_Overflow` instead of spilling when ``restartable``."""
        import pyopencl

        dev, queue = self.dev, self.dev.queue
        npix, n_kept = self.npix, self.n_kept
        base_el = self.count_batch(d_frames, base, n, t0, host_chunk)
        d_off = device_buffer(dev, queue, 8 * (n_kept + 1))
        total = self.scan(queue, self.d_counts, n_kept, d_off)
        if total and not self.spilled:
            self._arena(total)
            if self.d_values is None or self.fill + total > self.capacity:
                if self.restartable:
                    raise _Overflow()
                self._spill()
        if self.spilled:
            values = numpy.empty(total, dtype=self.dtype)
            times = numpy.empty(total, dtype=numpy.uint32)
            if total:
                d_v = device_buffer(dev, queue, values.nbytes)
                d_t = device_buffer(dev, queue, times.nbytes)
                self.k_scatter(queue, (n_kept,), None, d_frames, base_el, numpy.int32(n),
                               numpy.int64(npix), self.d_kept, numpy.int32(n_kept), d_off,
                               numpy.int64(0), numpy.uint32(t0), d_v, d_t)
                pyopencl.enqueue_copy(queue, values, d_v)
                pyopencl.enqueue_copy(queue, times, d_t)
            counts = numpy.empty(n_kept, dtype=numpy.int32)
            if n_kept:
                pyopencl.enqueue_copy(queue, counts, self.d_counts)
            self.parts.append({"counts": counts, "values": values, "times": times})
        else:
            if total:
                self.k_scatter(queue, (n_kept,), None, d_frames, base_el, numpy.int32(n),
                               numpy.int64(npix), self.d_kept, numpy.int32(n_kept), d_off,
                               numpy.int64(self.fill), numpy.uint32(t0), self.d_values,
                               self.d_times)
            self.parts.append({"base": self.fill, "n": total, "d_off": d_off})
            self.fill += total

    def pixel_sums(self):
        """(n_kept,) int64 sums of the pixels' values (integer frames), else None."""
        import pyopencl

        if self.dtype.kind == "f":
            return None
        sums = numpy.empty(self.n_kept, dtype=numpy.int64)
        if self.n_kept:
            pyopencl.enqueue_copy(self.dev.queue, sums, self.d_pixel_sums)
        return sums

    def _bin_sums(self, d_frames, base_el, n):
        import pyopencl

        dev, queue, b = self.dev, self.dev.queue, self.binning
        is_float = self.dtype.kind == "f"
        sums = numpy.empty((n, b.n_bins), dtype=numpy.float64 if is_float else numpy.int64)
        if sums.size == 0:
            return sums
        d_sums = device_buffer(dev, queue, sums.nbytes)
        args = (d_frames, base_el, numpy.int32(n), numpy.int64(self.npix), self.d_pixel_index,
                self.d_bin_offsets, numpy.int32(b.n_bins), d_sums)
        if is_float:
            self.k_sums(queue, (n, b.n_bins), None, *args)
        else:
            self.k_sums(queue, (b.n_bins * self.wg, n), (self.wg, 1), *args)
        # Not waited for: read by finish() (or the range passes) after the queue is finished
        pyopencl.enqueue_copy(queue, sums, d_sums, is_blocking=False)
        return sums

    def _spill(self):
        """Move the arena's batches to the host: the rest is merged there."""
        import pyopencl

        queue = self.dev.queue
        for part in self.parts:
            off = numpy.empty(self.n_kept + 1, dtype=numpy.int64)
            pyopencl.enqueue_copy(queue, off, part["d_off"])
            values = numpy.empty(part["n"], dtype=self.dtype)
            times = numpy.empty(part["n"], dtype=numpy.uint32)
            if part["n"]:
                pyopencl.enqueue_copy(queue, values, self.d_values,
                                      src_offset=part["base"] * self.dtype.itemsize)
                pyopencl.enqueue_copy(queue, times, self.d_times, src_offset=part["base"] * 4)
            part.clear()
            part.update(counts=numpy.diff(off).astype(numpy.int32), values=values, times=times)
        self.spilled = True
        self.d_values = self.d_times = None

    # -------------------------------------------------------------- the end
    def finish(self, prof):
        """(values, times, offsets, frame_sums, resident): host arrays after a spill, else
        None, None and the merged events left on the device (:class:`DeviceEvents`)."""
        import pyopencl

        dev, queue, n_kept = self.dev, self.dev.queue, self.n_kept
        values = times = resident = None
        if self.spilled:
            values, times, offsets = _merge_host(self.parts, n_kept, self.dtype)
        else:
            d_final = device_buffer(dev, queue, 8 * (n_kept + 1))
            n_events = self.scan(queue, self.d_total, n_kept, d_final)
            offsets = numpy.empty(n_kept + 1, dtype=numpy.int64)
            pyopencl.enqueue_copy(queue, offsets, d_final)
            d_values, d_times = self._merge_device(d_final, n_events, prof)
            resident = DeviceEvents(dev, d_values, d_times, n_events, self.dtype,
                                    d_offsets=d_final)
        frame_sums = None
        queue.finish()  # the frame sums' reads
        if self.binning is not None:
            frame_sums = (numpy.concatenate(self.sum_parts, axis=0) if self.sum_parts else
                          numpy.zeros((0, self.binning.n_bins),
                                      dtype=numpy.float64 if self.dtype.kind == "f"
                                      else numpy.int64))
        return values, times, offsets, frame_sums, resident

    def _merge_device(self, d_final, n_events, prof):
        """The batches' events merged into their final order on the device: (values, times)
        buffers (the arena itself when there is one batch)."""
        dev, queue, n_kept = self.dev, self.dev.queue, self.n_kept
        if len(self.parts) <= 1 or n_events == 0:  # already in final order
            if self.d_values is None or n_events == 0:
                return device_buffer(dev, queue, 0), device_buffer(dev, queue, 0)
            if self.capacity <= 2 * n_events:
                return self.d_values, self.d_times
            # Do not keep a mostly empty arena alive with the events: a copy of their size.
            import pyopencl

            d_v = device_buffer(dev, queue, n_events * self.dtype.itemsize)
            d_t = device_buffer(dev, queue, n_events * 4)
            pyopencl.enqueue_copy(queue, d_v, self.d_values, byte_count=n_events *
                                  self.dtype.itemsize)
            pyopencl.enqueue_copy(queue, d_t, self.d_times, byte_count=n_events * 4)
            return d_v, d_t
        tick = prof.start()
        d_sv = device_buffer(dev, queue, n_events * self.dtype.itemsize)
        d_st = device_buffer(dev, queue, n_events * 4)
        d_before = device_buffer(dev, queue, 8 * n_kept, zero=True)
        for part in self.parts:
            if part["n"]:
                self.k_merge(queue, (n_kept,), None, self.d_values, self.d_times,
                             numpy.int64(part["base"]), part["d_off"], d_final, d_before,
                             numpy.int32(0), numpy.int32(n_kept), numpy.int64(0), d_sv, d_st)
        prof.stop("merge_s", tick)
        self.d_values = self.d_times = None  # the arena is freed when the call returns
        self.parts = []
        return d_sv, d_st


def _compact_in_ranges(compactor: "_DeviceCompactor", make_batches, prof):
    """Events that outgrow the device budget, from a source that can be read again: one pass
    counts every pixel's events, then each further pass writes the events of a range of
    pixels that fits the budget into a device buffer and downloads it into the final host
    arrays. Returns (values, times, offsets, frame_sums, n_frames)."""
    import pyopencl

    c = compactor
    dev, queue, n_kept, npix = c.dev, c.dev.queue, c.n_kept, c.npix
    t0 = 0
    for d_frames, base, n, host_chunk in make_batches():
        c.count_batch(d_frames, base, n, t0, host_chunk)
        t0 += n
    d_final = device_buffer(dev, queue, 8 * (n_kept + 1))
    n_events = c.scan(queue, c.d_total, n_kept, d_final)
    offsets = numpy.empty(n_kept + 1, dtype=numpy.int64)
    pyopencl.enqueue_copy(queue, offsets, d_final)
    values = numpy.empty(n_events, dtype=c.dtype)
    times = numpy.empty(n_events, dtype=numpy.uint32)
    most = int(numpy.diff(offsets).max()) if n_kept else 0
    cap = max(1, most, c.free_bytes() // c.event_bytes)  # at least one pixel per range
    d_rv = device_buffer(dev, queue, cap * c.dtype.itemsize)
    d_rt = device_buffer(dev, queue, cap * 4)
    d_before = device_buffer(dev, queue, 8 * max(1, n_kept))
    q0, passes = 0, 0
    while q0 < n_kept:
        q1 = int(numpy.searchsorted(offsets, offsets[q0] + cap, side="right")) - 1
        q1 = min(n_kept, max(q1, q0 + 1))
        e0, e1 = int(offsets[q0]), int(offsets[q1])
        if e1 > e0:
            from .device import zero_buffer

            zero_buffer(dev, queue, d_before)
            t = 0
            for d_frames, base, n, _ in make_batches():
                c.k_range(queue, (q1 - q0,), None, d_frames, numpy.int64(int(base) * npix),
                          numpy.int32(n), numpy.int64(npix), c.d_kept, numpy.int32(q0),
                          numpy.int32(q1), d_final, numpy.int64(e0), d_before, numpy.uint32(t),
                          d_rv, d_rt)
                t += n
            pyopencl.enqueue_copy(queue, values[e0:e1], d_rv)
            pyopencl.enqueue_copy(queue, times[e0:e1], d_rt)
            passes += 1
        q0 = q1
    prof.set("range_passes", passes)
    queue.finish()  # the frame sums' reads
    frame_sums = None
    if c.binning is not None:
        frame_sums = numpy.concatenate(c.sum_parts, axis=0) if c.sum_parts else numpy.zeros(
            (0, c.binning.n_bins), dtype=numpy.float64 if c.dtype.kind == "f" else numpy.int64)
    return values, times, offsets, frame_sums, t0


def _merge_host(parts, n_kept, dtype):
    """Pixel-major final arrays from per-batch (counts, values, times) on the host."""
    counts = (numpy.stack([p["counts"] for p in parts]) if parts
              else numpy.zeros((0, n_kept), numpy.int32))
    total = counts.sum(axis=0, dtype=numpy.int64)
    offsets = numpy.zeros(n_kept + 1, dtype=numpy.int64)
    numpy.cumsum(total, out=offsets[1:])
    n_events = int(offsets[-1])
    if len(parts) == 1:
        return parts[0]["values"], parts[0]["times"], offsets
    values = numpy.empty(n_events, dtype=dtype)
    times = numpy.empty(n_events, dtype=numpy.uint32)
    before = numpy.zeros(n_kept, dtype=numpy.int64)  # events of pixel q in earlier batches
    for p in parts:
        c_counts, c_values, c_times = p["counts"], p["values"], p["times"]
        if c_values.size:
            c_off = numpy.zeros(n_kept, dtype=numpy.int64)
            numpy.cumsum(c_counts[:-1], out=c_off[1:])
            shift = offsets[:-1] + before - c_off
            dest = numpy.repeat(shift, c_counts) + numpy.arange(c_values.size, dtype=numpy.int64)
            values[dest] = c_values
            times[dest] = c_times
        before += c_counts
    return values, times, offsets
