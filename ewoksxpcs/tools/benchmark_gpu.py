"""``ewoksxpcs benchmark --suite gpu``: our OpenCL correlators against GPU peers on the same data.

Every case generates its data once (not timed; the generation time is printed), runs our OpenCL
implementation and a peer in the same process on that data, and reports the ratio of the two
throughputs (> 1: ours is faster), the agreement of the results and the device memory of both.
Sizes at ``scale`` 1 are those of issue 4 item 4; ``scale`` s multiplies the frame counts and the
pixel counts by s (each detector side by √s), so a tiny run works on a CPU OpenCL device.

Cases (scale 1; the dense cases read a cycled pool of frames: see Feeds)
--------------------------------------------------------------------------------------------
multitau
    Dense uint8 512×1024×100 000 frames, 0.05 counts/px/frame, 10 annular bins, in host memory.
    Ours: ``correlate(mode="multitau", method="opencl", normalisation="symmetric")``. Peer:
    boost_corr 0.1.7 ``MultitauCorrelator`` (PyTorch, CUDA) fed 256-frame batches uploaded from
    the same host frames (each feed of Feeds) and cropped to the binned pixels on the GPU; its per-bin g2 is its
    symmetric normalisation ΣG2·N/(ΣIP·ΣIF). Throughput: frames/s. Target: ≥ 2×.
events-0.01, events-0.1
    Sparse events of 1024×1024 pixels × 10 000 frames at 0.01 and 0.1 counts/px/frame (i.i.d.
    Poisson counts, generated directly as an EventStack). Ours: ``method="opencl-events"``.
    Peer: dynamix 0.1.0 ``EventCorrelator`` (OpenCL, same device). Throughput: photon pairs/s.
    Agreement: our int64 n2 must equal dynamix's integer accumulator exactly (its first call:
    dynamix never clears that accumulator). Target: ≥ 10×.
twotime-10bins
    10 000 frames of the multitau size (524 288 pixels), two-time maps of the 10 bins.
    Peer: a PyTorch float32 implementation of boost_corr's approach (:func:`torch_twotime`: the
    binned pixels of all frames cached on the GPU, per bin A (nT × N_q) float32 and
    C = N_q·A·Aᵀ / (S·Sᵀ)). Ours runs with ``max_device_memory`` = 25 % of the peak GPU memory
    torch allocated. Target: ratio ≥ 1 at ≤ 25 % of the memory.
twotime-1bin-100k
    100 000 frames of the multitau size, one bin, time binning (b = 10, nT = 10 000).

Feeds
-----
Every dense case runs twice per side, once per *feed*, each side fed the way its authors would:

``pinned``
    The frames lie in page-locked host memory. Ours: a pool allocated with
    :func:`ewoksxpcs.opencl.device.pinned_empty`. PyTorch peers: ``tensor.pin_memory()``, batches copied
    with ``.to(device, non_blocking=True)`` on a second CUDA stream, double-buffered so that the
    copy of batch k+1 overlaps the compute of batch k (PyTorch's documented best practice).
``pageable``
    The frames lie in plain NumPy memory: ours as given, the peers ``torch.from_numpy(x).to(device)``.

The frames of a dense case come from a pool of ``8 × batch`` frames (a few GB at most) cycled
up to the case's frame count, as in the measurement of issue 12: two page-locked copies of a
52 GB stack would not fit in host memory. Both sides read the same pool contents.
The event cases have three rows, named by the feeds of ours and of dynamix: ``pageable`` (our
EventStack in plain NumPy memory; dynamix's NumPy arrays, its documented input), ``pinned`` (both
in page-locked memory: :func:`~ewoksxpcs.correlators.opencl_events.pin_events` for ours, copies in
:func:`~ewoksxpcs.opencl.device.pinned_empty` memory for dynamix) and
``device-resident/kernels`` (our events already on the device; dynamix's correlation and
normalisation kernels alone, by OpenCL profiling: it has no input on the device). dynamix is
warmed up first (its first call in a process also builds PyOpenCL's ``fill`` kernel, ~0.15 s
on an H200) and each timed call is the first call of a new instance (its accumulator is never
cleared): :func:`dynamix_events`.

Floor
-----
The physical floor of a case is the time its data need to reach the place where they are
correlated: host→device bytes ÷ the pinned host→device bandwidth measured at the start of the
run (``host`` and dense feeds), or the device bytes read once ÷ the measured device-to-device
copy bandwidth (``device-resident``). ``x_floor`` is ours_s ÷ floor_s.

Figures
-------
ours_s, peer_s
    Wall time of one call from host data to the result on the host (best of ``repeat``), after a
    warm-up on a small slice of the data (OpenCL programs compiled, CUDA initialised).
ratio
    ours throughput / peer throughput (= peer_s / ours_s).
ours_mem_mib
    Peak of the OpenCL device buffers alive during our call (sizes as allocated; page-locked
    host staging buffers excluded).
peer_mem_mib
    PyTorch: ``torch.cuda.max_memory_allocated`` over construction and call. dynamix: peak of
    its OpenCL device buffers, as for ours.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import math
import os
import sys
import threading
import time
import types
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Sequence

import numpy

__all__ = [
    "GPUCase",
    "gpu_cases",
    "dense_poisson",
    "poisson_events",
    "opencl_memory",
    "boost_multitau",
    "torch_twotime",
    "run_gpu_suite",
]

#: Frames per upload of the PyTorch peers (a power of two: boost_corr's queue needs it).
TORCH_BATCH = 256
#: Batches per frame pool of the dense cases (the pool is cycled up to the case's frame count).
POOL_BATCHES = 8
#: Feeds of the dense cases (see the module docstring); the first one gives the ratio.
DENSE_FEEDS = ("pinned", "pageable")
#: Our two-time runs with this fraction of the peer's peak GPU memory as its budget.
TWOTIME_MEMORY_FRACTION = 0.25
_MiB = 1024**2


@dataclasses.dataclass(frozen=True)
class GPUCase:
    """One case of the GPU suite (sizes already scaled).

    Attributes
    ----------
    name : str
    kind : {"multitau", "events", "twotime"}
    shape : (int, int)
        Detector (Ny, Nx), pixels.
    n_frames : int
        Frames used by the case.
    mean_counts : float
        Counts per pixel per frame.
    n_bins : int
        Annular q bins of the label image.
    peer : str
        What the case is measured against.
    target : float
        Issue's goal for ``ratio``.
    bins : tuple of int, optional
        Two-time: labels mapped (default all).
    max_frames : int, optional
        Two-time: largest nT (time binning above it).
    dtype : str
        Dense cases: pixel type of the frames.
    pool_batches : int, optional
        Dense cases: frames of the pool, in batches of the peer (default ``POOL_BATCHES``).
    """

    name: str
    kind: str
    shape: tuple
    n_frames: int
    mean_counts: float
    n_bins: int
    peer: str
    target: float
    bins: Optional[tuple] = None
    max_frames: Optional[int] = None
    dtype: str = "uint8"
    pool_batches: Optional[int] = None

    def describe(self) -> str:
        ny, nx = self.shape
        what = "events" if self.kind == "events" else f"dense {self.dtype}"
        return f"{ny}x{nx}x{self.n_frames} {what} {self.mean_counts:g} cts/px/frame"


def _scaled(n: int, scale: float, minimum: int) -> int:
    return max(minimum, int(round(n * scale)))


def _scaled_shape(shape, scale: float):
    f = math.sqrt(scale)
    return tuple(max(16, int(round(s * f))) for s in shape)


def gpu_cases(scale: float = 1.0) -> List[GPUCase]:
    """The cases of the GPU suite at ``scale`` (1.0: the issue's sizes); see the module docstring."""
    if not (isinstance(scale, (int, float)) and 0 < scale <= 1.0):
        raise ValueError(f"scale must be in (0, 1], got {scale!r}")
    dense = _scaled_shape((512, 1024), scale)
    eiger4m = _scaled_shape((2162, 2068), scale)
    sparse = _scaled_shape((1024, 1024), scale)
    long_t = _scaled(100_000, scale, 64)
    short_t = _scaled(10_000, scale, 32)
    return [
        GPUCase("multitau", "multitau", dense, long_t, 0.05, 10, "boost_corr 0.1.7 multitau", 2.0),
        GPUCase("multitau-eiger4m", "multitau", eiger4m, short_t, 0.05, 10,
                "boost_corr 0.1.7 multitau", 2.0, dtype="uint16", pool_batches=2),
        GPUCase("twotime-10bins", "twotime", dense, short_t, 0.05, 10,
                "torch float32 matmul", 2.0),
        GPUCase("twotime-1bin-100k", "twotime", dense, long_t, 0.05, 10, "torch float32 matmul",
                3.0, bins=(5,), max_frames=short_t),
        GPUCase("events-0.01", "events", sparse, short_t, 0.01, 10, "dynamix EventCorrelator", 10.0),
        GPUCase("events-0.1", "events", sparse, short_t, 0.1, 10, "dynamix EventCorrelator", 10.0),
    ]


# ---------------------------------------------------------------------- data
def _threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def dense_poisson(shape, n_frames: int, mean: float, seed: int = 0,
                  chunk_frames: int = 32) -> numpy.ndarray:
    """I.i.d. Poisson(``mean``) counts, (n_frames, Ny, Nx) uint8, generated fast.

    Each chunk of frames receives Poisson(mean·size) photons at uniform random positions
    (multiplicities add up: exactly Poisson counts per pixel-frame, values clipped at 255),
    chunks in parallel threads with independent generators.
    """
    ny, nx = (int(s) for s in shape)
    frames = numpy.zeros((int(n_frames), ny, nx), dtype=numpy.uint8)
    flat = frames.reshape(int(n_frames), ny * nx)
    seeds = numpy.random.SeedSequence(seed)
    starts = list(range(0, int(n_frames), chunk_frames))
    children = seeds.spawn(len(starts))

    def fill(i):
        rng = numpy.random.default_rng(children[i])
        block = flat[starts[i]: starts[i] + chunk_frames].reshape(-1)
        size = block.size
        k = rng.poisson(mean * size)
        pos = rng.integers(0, size, k, dtype=numpy.uint32 if size < 2**32 else numpy.int64)
        pos.sort()
        while pos.size:  # one increment per distinct position and round: duplicates add up
            first = numpy.ones(pos.size, dtype=bool)
            first[1:] = pos[1:] != pos[:-1]
            hit = pos[first]
            block[hit] = numpy.minimum(block[hit].astype(numpy.uint16) + 1, 255).astype(numpy.uint8)
            pos = pos[~first]

    with ThreadPoolExecutor(_threads()) as pool:
        list(pool.map(fill, range(len(starts))))
    return frames


def poisson_events(shape, n_frames: int, mean: float, seed: int = 0,
                   chunk_pixels: int = 1 << 12, dtype=numpy.uint8):
    """An EventStack of i.i.d. Poisson(``mean``) counts per pixel and frame, without frames.

    Per pixel, Poisson(mean·Nt) photons at uniform random frames (the per-frame counts are then
    i.i.d. Poisson): their sorted frames come from normalised cumulative sums of exponential gaps,
    photons of the same frame merge into one event (its value the multiplicity).
    """
    from ..engine.events import EventStack

    ny, nx = (int(s) for s in shape)
    npix, nt = ny * nx, int(n_frames)
    seeds = numpy.random.SeedSequence(seed)
    starts = list(range(0, npix, chunk_pixels))
    children = seeds.spawn(len(starts))
    vmax = numpy.iinfo(dtype).max

    def make(i):
        rng = numpy.random.default_rng(children[i])
        n = min(chunk_pixels, npix - starts[i])
        k = rng.poisson(mean * nt, n)
        seg = k + 1  # k photons and a closing gap per pixel
        gaps = rng.standard_exponential(int(seg.sum()))
        c = numpy.cumsum(gaps)
        ends = numpy.cumsum(seg) - 1
        base = numpy.concatenate([[0.0], c[ends[:-1]]])
        total = c[ends] - base
        owner = numpy.repeat(numpy.arange(n, dtype=numpy.int64), seg)
        keep = numpy.ones(c.size, dtype=bool)
        keep[ends] = False
        owner = owner[keep]
        u = (c[keep] - base[owner]) / total[owner]
        t = numpy.minimum((u * nt).astype(numpy.int64), nt - 1)
        new = numpy.ones(t.size, dtype=bool)
        new[1:] = (t[1:] != t[:-1]) | (owner[1:] != owner[:-1])
        idx = numpy.flatnonzero(new)
        values = numpy.minimum(numpy.diff(numpy.append(idx, t.size)), vmax).astype(dtype)
        counts = numpy.bincount(owner[idx], minlength=n)
        return values, t[idx].astype(numpy.uint32), counts

    with ThreadPoolExecutor(_threads()) as pool:
        parts = list(pool.map(make, range(len(starts))))
    values = numpy.concatenate([p[0] for p in parts])
    times = numpy.concatenate([p[1] for p in parts])
    counts = numpy.concatenate([p[2] for p in parts])
    offsets = numpy.zeros(npix + 1, dtype=numpy.int64)
    numpy.cumsum(counts, out=offsets[1:])
    # Trusted: times strictly increase per pixel by construction (billions of events: no check).
    return EventStack(values, times, offsets, numpy.arange(npix, dtype=numpy.int64), (ny, nx), nt,
                      numpy.dtype(dtype), trusted=True)


def _pool_source_class():
    from ..engine.frames import FrameSource

    class PoolFrameSource(FrameSource):
        """``n_frames`` frames read from a pool (P, Ny, Nx) cycled from its start: frame t is
        ``pool[t % P]``. Chunks are views of the pool (no copy: a page-locked pool stays
        page-locked); re-iterable."""

        def __init__(self, pool: numpy.ndarray, n_frames: int):
            self.pool = pool
            self.frame_shape = tuple(pool.shape[1:])
            self.dtype = pool.dtype
            self.n_frames = int(n_frames)

        def iter_chunks(self, chunk_frames=None):
            P = self.pool.shape[0]
            step = max(1, int(chunk_frames or self.default_chunk_frames()))
            t = 0
            while t < self.n_frames:
                p = t % P
                n = min(step, self.n_frames - t, P - p)
                yield self.pool[p: p + n]
                t += n

    return PoolFrameSource


def pool_frames(pool: numpy.ndarray, n_frames: int):
    """A frame source of ``n_frames`` frames cycling through ``pool`` (see ``PoolFrameSource``)."""
    return _pool_source_class()(pool, n_frames)


def pool_slice(pool, t: int, n: int):
    """Frames t … t+n−1 of the cycled pool as one piece (t and n must not cross the pool's end)."""
    P = pool.shape[0]
    p = t % P
    if p + n > P:
        raise ValueError("a batch crosses the end of the frame pool: choose a pool size that is "
                         "a multiple of the batch")
    return pool[p: p + n]


# ---------------------------------------------------------------------- bandwidth
def measure_bandwidth(dev, nbytes: int = 1 << 30, repeat: int = 3) -> dict:
    """Host→device (pinned and pageable) and device-to-device copy bandwidths, bytes/s.

    Best of ``repeat`` copies of ``nbytes`` (capped at an eighth of the device memory) with
    OpenCL on ``dev``. The device figure counts the bytes read and written (2 × nbytes).
    """
    import pyopencl

    from ..opencl.device import pinned_empty

    nbytes = int(min(nbytes, dev.device.global_mem_size // 8))
    queue = dev.queue
    mf = pyopencl.mem_flags
    d_a = pyopencl.Buffer(dev.context, mf.READ_WRITE, nbytes)
    d_b = pyopencl.Buffer(dev.context, mf.READ_WRITE, nbytes)
    pinned = pinned_empty(dev, (nbytes,), numpy.uint8)
    pinned[:] = 1
    pageable = numpy.ones(nbytes, numpy.uint8)

    def best(copy):
        copy()
        queue.finish()
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            copy()
            queue.finish()
            times.append(time.perf_counter() - t0)
        return min(times)

    out = {
        "h2d_pinned": nbytes / best(lambda: pyopencl.enqueue_copy(queue, d_a, pinned,
                                                                  is_blocking=False)),
        "h2d_pageable": nbytes / best(lambda: pyopencl.enqueue_copy(queue, d_a, pageable,
                                                                    is_blocking=False)),
        "device": 2 * nbytes / best(lambda: pyopencl.enqueue_copy(queue, d_b, d_a)),
        "bytes": nbytes,
    }
    d_a.release()
    d_b.release()
    return out


def resident_events(events, dev):
    """A copy of a host EventStack whose values, times and offsets live in OpenCL buffers on
    ``dev`` (as after a compaction on the device), for the device-resident rows."""
    import pyopencl

    from ..engine.events import DeviceEvents, EventStack

    mf = pyopencl.mem_flags
    n = max(1, events.n_events)
    d_values = pyopencl.Buffer(dev.context, mf.READ_WRITE, n * events.values.itemsize)
    d_times = pyopencl.Buffer(dev.context, mf.READ_WRITE, n * 4)
    offsets = numpy.asarray(events.offsets, dtype=numpy.int64)
    d_offsets = pyopencl.Buffer(dev.context, mf.READ_WRITE, offsets.nbytes)
    if events.n_events:
        pyopencl.enqueue_copy(dev.queue, d_values, events.values)
        pyopencl.enqueue_copy(dev.queue, d_times, events.times)
    pyopencl.enqueue_copy(dev.queue, d_offsets, offsets)
    dev.queue.finish()
    resident = DeviceEvents(dev, d_values, d_times, events.n_events, events.dtype,
                            d_offsets=d_offsets)
    return EventStack(None, None, events.offsets, events.pixel_index, events.frame_shape,
                      events.n_frames, events.dtype, frame_sums=events.frame_sums,
                      labels=events.labels, resident=resident)


# ---------------------------------------------------------------------- memory
class _MemoryTracker:
    live = 0
    peak = 0


@contextlib.contextmanager
def opencl_memory():
    """Track the OpenCL device buffers created inside the block: yields an object whose ``peak``
    is the largest total size (bytes) of those alive at once.

    ``pyopencl.Buffer`` is replaced by a counting subclass for the duration (every caller looks
    it up at call time); buffers count until released or garbage collected. Page-locked host
    buffers (``ALLOC_HOST_PTR``) and registrations of host memory (``USE_HOST_PTR``) are not
    device memory and are not counted. Buffers of the devices' pools
    (:func:`~ewoksxpcs.opencl.pools.pooled_buffer`) count as what each pool hands out beyond
    what it handed out when the block began (sampled at every allocation: whether a buffer
    was reused or made, it is device memory in use), with a pool's rounding of sizes.
    """
    import pyopencl

    from ..opencl import device as opencl_device
    from ..opencl import pools

    original = pyopencl.Buffer
    tracker = _MemoryTracker()
    lock = threading.Lock()
    # Each pool's bytes handed out at the start (a pool made inside the block: none).
    base = {id(p): int(p.active_bytes) for p in (
        d.__dict__.get("buffer_pool") for d in list(opencl_device._DEVICES.values()))
        if p is not None}
    pooled = {}

    def add(n):
        with lock:
            tracker.live += n
            tracker.peak = max(tracker.peak, tracker.live + sum(pooled.values()))

    def on_pooled(dev, buf):
        pool = dev.buffer_pool
        with lock:
            pooled[id(pool)] = max(0, int(pool.active_bytes) - base.get(id(pool), 0))
        add(0)

    host_memory = pyopencl.mem_flags.ALLOC_HOST_PTR | pyopencl.mem_flags.USE_HOST_PTR

    class CountedBuffer(original):
        def __init__(self, context, flags, size=0, hostbuf=None):
            super().__init__(context, flags, size, hostbuf)
            self._counted = 0
            if not flags & host_memory:
                self._counted = int(self.size)
                add(self._counted)
                self._finalizer = weakref.finalize(self, add, -self._counted)

        def release(self):
            fin = getattr(self, "_finalizer", None)
            if fin is not None:
                fin()
            super().release()

    pyopencl.Buffer = CountedBuffer
    pools.ALLOCATION_HOOKS.append(on_pooled)
    try:
        yield tracker
    finally:
        pyopencl.Buffer = original
        pools.ALLOCATION_HOOKS.remove(on_pooled)


# ---------------------------------------------------------------------- peers
def _import_torch(device: str = "cuda"):
    """torch, checking that ``device`` exists (ImportError/RuntimeError saying why not)."""
    import torch

    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("no CUDA device for PyTorch")
    return torch


def _sync(torch, device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _reset_peak(torch, device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak(torch, device):
    """Peak bytes allocated by PyTorch on a CUDA ``device`` since the reset (None elsewhere)."""
    return int(torch.cuda.max_memory_allocated()) if torch.device(device).type == "cuda" else None


def _release(torch, device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def _torch_device_name(device) -> str:
    import torch

    if torch.device(device).type == "cuda":
        return f"CUDA {torch.cuda.get_device_name(torch.device(device))}"
    return f"torch {device}"


def _import_boost_corr():
    """boost_corr's MultitauCorrelator. Its modules import tqdm for progress bars only: a
    stand-in is registered when tqdm is absent (the benchmark never shows progress bars)."""
    if importlib.util.find_spec("tqdm") is None and "tqdm" not in sys.modules:
        stub = types.ModuleType("tqdm")
        stub.tqdm = lambda iterable=None, *a, **k: iterable
        stub.trange = lambda *a, **k: range(*a)
        sys.modules["tqdm"] = stub
    from boost_corr import MultitauCorrelator

    return MultitauCorrelator


def torch_batches(torch, pool, n_frames: int, batch: int, device, feed: str = "pinned"):
    """Yield the cycled pool's frames as device tensors of ``batch`` frames, fed as PyTorch's
    documentation advises.

    ``pool`` is a NumPy array (``feed="pageable"``: ``torch.from_numpy(x).to(device)``) or a
    page-locked tensor (``feed="pinned"``: ``.to(device, non_blocking=True)`` on a copy stream,
    double-buffered: the copy of batch k+1 runs while the caller computes on batch k).
    """
    starts = range(0, int(n_frames), int(batch))
    size = lambda t: min(int(batch), int(n_frames) - t)  # noqa: E731
    if feed == "pageable" or torch.device(device).type != "cuda":
        for t in starts:
            x = pool_slice(pool, t, size(t))
            yield (torch.from_numpy(x) if isinstance(x, numpy.ndarray) else x).to(device)
        return
    if feed != "pinned":
        raise ValueError(f"unknown feed {feed!r}")
    copy_stream = torch.cuda.Stream()
    compute = torch.cuda.current_stream()

    def issue(t):
        with torch.cuda.stream(copy_stream):
            x = pool_slice(pool, t, size(t)).to(device, non_blocking=True)
            done = torch.cuda.Event()
            done.record(copy_stream)
        return x, done

    pending = issue(0) if len(starts) else None
    for k in range(len(starts)):
        x, done = pending
        compute.wait_event(done)
        x.record_stream(compute)  # its memory is not reused before the compute has read it
        if k + 1 < len(starts):
            pending = issue(starts[k + 1])
        yield x


def torch_pool(torch, pool: numpy.ndarray, feed: str):
    """The pool as the peer's feed wants it: a page-locked tensor (pinned) or the NumPy array."""
    if feed == "pinned" and torch.cuda.is_available():
        return torch.from_numpy(pool).pin_memory()
    return pool


def boost_multitau(pool: numpy.ndarray, n_frames: int, pixel_index: numpy.ndarray,
                   device: str = "cuda", batch: int = TORCH_BATCH, feed: str = "pinned"):
    """boost_corr 0.1.7 multi-tau of the pixels ``pixel_index`` of ``n_frames`` host frames
    cycled from ``pool`` (P, Ny, Nx), P a multiple of ``batch``.

    Batches of ``batch`` frames reach the GPU through :func:`torch_batches` (``feed``), are
    cropped to ``pixel_index`` there and fed to ``MultitauCorrelator.process``.

    Returns
    -------
    seconds : float
        Wall time of the feeding, ``post_process`` and the copy of G2 to the host.
    G2 : ndarray, (n_lags, 3, n_pixels) float32
        boost_corr's per-pixel G2, IP, IF.
    tau : ndarray, (2, n_lags) int64
        Lag in frames and level of each row.
    peak_bytes : int
        ``torch.cuda.max_memory_allocated`` over construction and call.
    """
    torch = _import_torch(device)
    Multitau = _import_boost_corr()
    nt = int(n_frames)
    if pool.dtype == numpy.uint16:  # torch has few uint16 kernels: the same counts as int16
        pool = pool.view(numpy.int16) if int(pool.max()) < 2**15 else pool.astype(numpy.int32)
    host = torch_pool(torch, pool.reshape(pool.shape[0], -1), feed)
    _reset_peak(torch, device)
    crop = torch.from_numpy(numpy.ascontiguousarray(pixel_index, numpy.int64)).to(device)
    corr = Multitau(tuple(pool.shape[1:]), nt, device=device, queue_size=batch,
                    auto_queue=True, mask_crop=crop)
    _sync(torch, device)
    t0 = time.perf_counter()
    for x in torch_batches(torch, host, nt, batch, device, feed):
        corr.process(x[:, crop])
    corr.post_process()
    G2 = corr.g2.float().cpu().numpy()
    _sync(torch, device)
    seconds = time.perf_counter() - t0
    peak = _peak(torch, device)
    tau = numpy.asarray(corr.tau_bin)
    del corr, crop, host
    _release(torch, device)
    return seconds, G2, tau, peak


def boost_bin_g2(G2: numpy.ndarray, bin_offsets: numpy.ndarray) -> numpy.ndarray:
    """boost_corr's g2 per bin (its partitions = our bins): N·ΣG2 / (ΣIP·ΣIF), (n_bins, n_lags).

    ``G2`` columns are the pixels in bin order; bin b is columns bin_offsets[b]:bin_offsets[b+1].
    """
    G2 = G2.astype(numpy.float64)
    starts = numpy.asarray(bin_offsets[:-1], dtype=numpy.int64)
    n = numpy.diff(bin_offsets).astype(numpy.float64)
    sums = numpy.add.reduceat(G2, starts, axis=2)  # (n_lags, 3, n_bins)
    with numpy.errstate(invalid="ignore", divide="ignore"):
        g2 = n * sums[:, 0] / (sums[:, 1] * sums[:, 2])
    return g2.T


def twotime_step(time_bin: int, batch: int = TORCH_BATCH) -> int:
    """Frames per upload of :func:`torch_twotime`: a multiple of ``time_bin`` near ``batch``."""
    b = int(time_bin)
    return max(b, batch // b * b)


def torch_twotime(pool: numpy.ndarray, n_frames: int, pixel_index: numpy.ndarray, col_offsets,
                  time_bin: int, device: str = "cuda", batch: int = TORCH_BATCH,
                  feed: str = "pinned"):
    """Two-time maps with PyTorch float32 matmuls (boost_corr's approach) of ``n_frames``
    frames cycled from ``pool`` (a multiple of :func:`twotime_step` frames).

    Uploads go through :func:`torch_batches` (``feed``). The selected pixels of every
    (time-binned) frame are cached on the GPU (uint8, or int32 sums when ``time_bin`` > 1); per
    bin, A = cache[:, bin] as float32 (nT × N_q) and C = (A·Aᵀ/N_q) / (m·mᵀ) with m the
    per-time-bin mean of A; each C goes to the host. TF32 is disabled (true float32 products).

    Returns
    -------
    seconds : float
    C : ndarray, (n_sel, nT, nT) float32
    peak_bytes : int
        ``torch.cuda.max_memory_allocated`` of the call.
    """
    torch = _import_torch(device)
    b = int(time_bin)
    n_t = int(n_frames) // b
    host = torch_pool(torch, pool.reshape(pool.shape[0], -1), feed)
    offsets = numpy.asarray(col_offsets, dtype=numpy.int64)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        _reset_peak(torch, device)
        t0 = time.perf_counter()
        pix = torch.from_numpy(numpy.ascontiguousarray(pixel_index, numpy.int64)).to(device)
        P = int(pixel_index.size)
        cache = torch.empty((n_t, P), dtype=torch.uint8 if b == 1 else torch.int32, device=device)
        step = twotime_step(b, batch)
        s = 0
        for x in torch_batches(torch, host, n_t * b, step, device, feed):
            n = x.shape[0]
            x = x[:, pix]
            if b > 1:
                x = x.view(n // b, b, P).sum(dim=1, dtype=torch.int32)
            cache[s // b: (s + n) // b] = x
            s += n
        C = numpy.empty((offsets.size - 1, n_t, n_t), dtype=numpy.float32)
        for j in range(offsets.size - 1):
            c0, c1 = int(offsets[j]), int(offsets[j + 1])
            A = cache[:, c0:c1].float()
            m = A.mean(dim=1)
            Cj = torch.matmul(A, A.T)
            del A
            Cj /= float(c1 - c0)
            Cj /= torch.outer(m, m)
            C[j] = Cj.cpu().numpy()
            del Cj
        _sync(torch, device)
        seconds = time.perf_counter() - t0
        peak = _peak(torch, device)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    del cache, pix, host
    _release(torch, device)
    return seconds, C, peak


# ---------------------------------------------------------------------- agreement
def _max_rel_diff(a, b) -> float:
    """max |a − b| / |b| over entries finite in both with b ≠ 0 (nan if none)."""
    a = numpy.asarray(a, dtype=numpy.float64)
    b = numpy.asarray(b, dtype=numpy.float64)
    ok = numpy.isfinite(a) & numpy.isfinite(b) & (b != 0)
    if not ok.any():
        return float("nan")
    return float((numpy.abs(a[ok] - b[ok]) / numpy.abs(b[ok])).max())


def _maps_rel_diff(C, ref, rows: int = 1024) -> float:
    """:func:`_max_rel_diff` of two-time maps (n, nT, nT) float32, by blocks of rows (bounded
    temporaries: the maps of the full-size cases hold 10⁹ values)."""
    if C.shape != ref.shape:
        return float("inf")
    worst = -1.0
    with numpy.errstate(invalid="ignore", divide="ignore"):
        for j in range(C.shape[0]):
            for r in range(0, C.shape[1], rows):
                a, b = C[j, r: r + rows], ref[j, r: r + rows]
                d = numpy.abs(a - b) / numpy.abs(b)  # inf/nan where b is 0 or not finite
                d[~numpy.isfinite(d)] = -1.0
                if d.size:
                    worst = max(worst, float(d.max()))
    return float("nan") if worst < 0 else worst


def _multitau_common(result, tau) -> tuple:
    """Column indices (ours, boost's) of the lags both compute at the same level."""
    ours = {(int(l), int(t)): i for i, (l, t) in enumerate(zip(result.level, result.lags))}
    mine, theirs = [], []
    for j, (t, level) in enumerate(zip(tau[0], tau[1])):
        i = ours.get((int(level), int(t)))
        if i is not None:
            mine.append(i)
            theirs.append(j)
    return numpy.asarray(mine, dtype=int), numpy.asarray(theirs, dtype=int)


# ---------------------------------------------------------------------- runners
def _best(fn, repeat: int):
    """(first result, best seconds, peak OpenCL bytes of the first call) of ``fn()``."""
    with opencl_memory() as mem:
        t0 = time.perf_counter()
        result = fn()
        best = time.perf_counter() - t0
    for _ in range(repeat - 1):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return result, best, mem.peak


def _new_row(case: GPUCase, gen_s: float, unit: str, feed: str = "",
             peer_feed: str = "") -> dict:
    return dict(case=case.name, data=case.describe(), n_frames=case.n_frames,
                n_bins=case.n_bins, gen_s=gen_s, feed=feed, peer_feed=peer_feed,
                ours_method="", ours_device="", ours_s=None,
                ours_throughput=None, unit=unit, peer=case.peer, peer_device="", peer_s=None,
                peer_throughput=None, ratio=None, target=case.target, meets_target=None,
                agreement="", g2_rel_diff=None, exact=None, ours_mem_mib=None,
                peer_mem_mib=None, mem_ratio=None, floor_bytes=None, floor_rate=None,
                floor_s=None, x_floor=None, note="")


def _set_floor(row, nbytes: float, rate: Optional[float]) -> None:
    """The case's physical floor: ``nbytes`` that must move at ``rate`` bytes/s."""
    row["floor_bytes"] = float(nbytes)
    if rate:
        row["floor_rate"] = float(rate)
        row["floor_s"] = float(nbytes) / float(rate)


def _note(row, text):
    row["note"] = f"{row['note']}; {text}" if row["note"] else text


def _peer_missing(row, exc) -> None:
    if isinstance(exc, ImportError):
        _note(row, f"peer not installed ({exc.name or exc})")
    else:
        _note(row, f"peer not run: {type(exc).__name__}: {exc}")


def _finish(row, work):
    if row["ours_s"]:
        row["ours_throughput"] = work / row["ours_s"]
        if row["floor_s"]:
            row["x_floor"] = row["ours_s"] / row["floor_s"]
    if row["peer_s"]:
        row["peer_throughput"] = work / row["peer_s"]
    if row["ours_s"] and row["peer_s"]:
        row["ratio"] = row["peer_s"] / row["ours_s"]
        row["meets_target"] = bool(row["ratio"] >= row["target"])
    if row["ours_mem_mib"] is not None and row["peer_mem_mib"]:
        row["mem_ratio"] = row["ours_mem_mib"] / row["peer_mem_mib"]


def _our_pool(pool: numpy.ndarray, dev, feed: str) -> numpy.ndarray:
    """Our copy of the frame pool for ``feed``: page-locked (pinned_empty) or plain memory."""
    if feed != "pinned":
        return pool
    from ..opencl.device import pinned_empty

    ours = pinned_empty(dev, pool.shape, pool.dtype)
    ours[...] = pool
    return ours


def _run_multitau(case, pool, labels, binning, device, repeat, peers, gen_s, torch_device,
                  bandwidth):
    from .. import correlate

    rows, res_first = [], None
    frame_bytes = float(pool[0].nbytes)
    for feed in DENSE_FEEDS:
        row = _new_row(case, gen_s, "frames/s", feed, feed)
        row["data"] += f", {binning.n_binned_pixels} binned pixels, pool of {pool.shape[0]} frames"
        _set_floor(row, case.n_frames * frame_bytes, (bandwidth or {}).get("h2d_pinned"))
        if pool.dtype == numpy.uint16 and peers:
            _note(row, "boost_corr fed the same counts as int16 (torch has few uint16 kernels)")
        mine = _our_pool(pool, device, feed)

        def ours(n=case.n_frames, mine=mine):
            return correlate(pool_frames(mine, n), binning, mode="multitau", method="opencl",
                             device=device, normalisation="symmetric")

        try:
            ours(min(case.n_frames, 256))  # warm-up: compiles the programs
            res, row["ours_s"], mem = _best(ours, repeat)
            row.update(ours_method="opencl multitau (symmetric)", ours_device=res.device,
                       ours_mem_mib=mem / _MiB)
        except Exception as e:
            _note(row, f"ours error: {type(e).__name__}: {e}")
            res = None
        res_first = res_first or res
        if peers:
            try:
                boost_multitau(pool, min(case.n_frames, 4 * TORCH_BATCH), binning.pixel_index,
                               torch_device, feed=feed)
                best = None
                for _ in range(repeat):
                    s, G2, tau, peak = boost_multitau(pool, case.n_frames, binning.pixel_index,
                                                      torch_device, feed=feed)
                    best = s if best is None else min(best, s)
                row.update(peer_s=best, peer_mem_mib=None if peak is None else peak / _MiB,
                           peer_device=_torch_device_name(torch_device))
                if res is not None:
                    g2b = boost_bin_g2(G2, binning.bin_offsets)
                    mine_c, theirs = _multitau_common(res, tau)
                    row["g2_rel_diff"] = _max_rel_diff(res.g2[:, mine_c], g2b[:, theirs])
                    row["agreement"] = (f"g2 max rel diff {row['g2_rel_diff']:.1e} over "
                                        f"{mine_c.size} common (lag, level)")
            except Exception as e:
                _peer_missing(row, e)
        _finish(row, float(case.n_frames))
        rows.append(row)
        del mine
    return rows


def _events_work(events, binning) -> float:
    rank = numpy.searchsorted(events.pixel_index, binning.pixel_index)
    k = (events.offsets[rank + 1] - events.offsets[rank]).astype(numpy.float64)
    return float((k * (k + 1) / 2).sum())


def _event_bytes(events) -> tuple:
    """(host→device bytes of an EventStack, device bytes of its values and times): the times
    counted at the width they need on the bus (2 bytes up to 65 536 frames, as ours sends
    them; 4 on the device, where a compaction leaves uint32)."""
    from ..correlators.opencl_events import TIME16_FRAMES

    n = events.n_events
    value = numpy.dtype(events.dtype).itemsize
    on_device = n * (value + 4)
    on_bus = n * (value + (2 if events.n_frames <= TIME16_FRAMES else 4))
    return on_bus + events.offsets.nbytes + events.pixel_index.nbytes, on_device


#: Feeds of the event cases: (our EventStack, dynamix's arrays); see the module docstring.
EVENT_FEEDS = (("pageable", "pageable"), ("pinned", "pinned"), ("device-resident", "kernels"))


def dynamix_events(events, labels, device, repeat: int = 1, feed: str = "pageable"):
    """dynamix 0.1.0's ``EventCorrelator`` on ``events``, fed and timed as its authors would run it.

    Its first ``correlate`` in a process also builds PyOpenCL's own kernels (the ``fill`` of its
    output arrays: ~0.15 s on an H200), and its integer accumulator is never cleared, so only an
    instance's first call is right: a warm-up instance runs once, then each timed call is the
    first call of a new instance (constructed, its programs built, outside the time).

    Parameters
    ----------
    feed : {"pageable", "pinned", "kernels"}
        Its event arrays as NumPy arrays (its documented input), as copies in page-locked
        memory (:func:`~ewoksxpcs.opencl.device.pinned_empty`, as ours), or its kernels' own time
        (OpenCL profiling of its correlation and normalisation kernels, data already uploaded:
        the counterpart of our device-resident events).

    Returns
    -------
    seconds : float
        Best of ``repeat``.
    n2 : ndarray (n_bins, n_frames) int64
        Its integer accumulator after the first timed call.
    g2 : ndarray
        Its result.
    peak : int
        Peak bytes of its OpenCL buffers.
    device_name : str
    """
    from dynamix.correlator.event import EventCorrelator

    from ..opencl.device import copy_into, get_device, pinned_empty
    from .benchmark import dynamix_event_inputs

    kwargs, args, dev_name = dynamix_event_inputs(events, labels, device)
    if feed == "pinned":
        pinned = []
        for a in args:
            p = pinned_empty(get_device(device), a.shape, a.dtype)
            copy_into(p, a)
            pinned.append(p)
        args = tuple(pinned)
    EventCorrelator(**kwargs).correlate(*args)  # warm-up: PyOpenCL's kernels, the driver
    best, n2, g2, peak = None, None, None, 0
    for _ in range(max(1, repeat)):
        with opencl_memory() as mem:
            corr = EventCorrelator(**kwargs, profile=feed == "kernels")
            t0 = time.perf_counter()
            result = corr.correlate(*args)
            s = time.perf_counter() - t0
        if feed == "kernels":
            if not corr.events:
                raise RuntimeError("dynamix's kernels could not be profiled on this device")
            s = sum(e.stop - e.start for e in corr.events) * 1e-9
        if n2 is None:
            n2, g2, peak = corr.d_res_int.get().astype(numpy.int64), result, mem.peak
        best = s if best is None else min(best, s)
        del corr
    return best, n2, g2, peak, dev_name


def _run_events(case, events, labels, binning, device, repeat, peers, gen_s, torch_device,
                bandwidth):
    from .. import correlate
    from ..correlators.opencl_events import pin_events
    from .benchmark import _beamstop_labels

    bandwidth = bandwidth or {}
    host_bytes, device_bytes = _event_bytes(events)
    rows = []
    try:
        small = poisson_events((32, 32), 64, case.mean_counts, seed=1)  # warm-up: compiles
        correlate(small, _beamstop_labels((32, 32), 4), method="opencl-events", device=device)
    except Exception:
        pass  # the error shows again in the timed call
    for feed, peer_feed in EVENT_FEEDS:
        row = _new_row(case, gen_s, "pairs/s", feed, peer_feed)
        row["data"] += f", {events.n_events} events"
        if feed == "device-resident":
            _set_floor(row, device_bytes, bandwidth.get("device"))
        else:
            _set_floor(row, host_bytes, bandwidth.get("h2d_pinned"))
        data = None
        try:
            if feed == "pageable":
                data = events
            elif feed == "pinned":
                data = pin_events(events, device)
            else:
                data = resident_events(events, device)
            res, row["ours_s"], mem = _best(
                lambda: correlate(data, binning, method="opencl-events", device=device), repeat)
            row.update(ours_method="opencl-events", ours_device=res.device,
                       ours_mem_mib=mem / _MiB)
            if feed == "device-resident":
                _note(row, "events already on the device (not counted in ours_MiB); dynamix: "
                           "its kernels alone (OpenCL profiling), its upload not counted")
        except Exception as e:
            _note(row, f"ours error: {type(e).__name__}: {e}")
            res = None
        del data
        if peers:
            try:
                peer_s, n2_dx, g2_dx, peak, dev_name = dynamix_events(
                    events, labels, device, repeat, peer_feed)
                row.update(peer_s=peer_s, peer_device=f"OpenCL {dev_name}",
                           peer_mem_mib=peak / _MiB)
                if res is not None:
                    same = n2_dx.shape == res.n2.shape and numpy.array_equal(n2_dx, res.n2)
                    row["exact"] = bool(same)
                    row["g2_rel_diff"] = _max_rel_diff(g2_dx, res.g2)
                    row["agreement"] = ("n2 == dynamix int32 sums" if same else
                                        "n2 DIFFERS from dynamix int32 sums") + (
                                            f", g2 max rel diff {row['g2_rel_diff']:.1e}")
            except Exception as e:
                _peer_missing(row, e)
        rows.append(row)
    work = _events_work(events, binning)
    for row in rows:
        _finish(row, work)
    return rows


def _run_twotime(case, pool, labels, binning, device, repeat, peers, gen_s, torch_device,
                 bandwidth):
    from .. import correlate
    from ..engine.twotime import choose_time_bin, select_bins

    max_frames = case.max_frames or 10_000
    b = choose_time_bin(case.n_frames, None, max_frames)
    rows_sel, col_offsets, pixel_index = select_bins(binning, case.bins)
    n_t = case.n_frames // b
    options = dict(mode="twotime", method="opencl", device=device, max_frames=max_frames)
    if case.bins is not None:
        options["twotime_bins"] = list(case.bins)
    rows = []
    for feed in DENSE_FEEDS:
        row = _new_row(case, gen_s, "frames/s", feed, feed)
        row["data"] += (f", {rows_sel.size} bin(s) of {pixel_index.size} pixels, time_bin {b}, "
                        f"nT {n_t}, pool of {pool.shape[0]} frames")
        # The floor: the selected pixels themselves must cross (whole frames for every bin);
        # ours moves rectangles that bound them or the pixels (opencl.frame_boxes.frame_layout).
        _set_floor(row, case.n_frames * float(pixel_index.size * pool.itemsize),
                   (bandwidth or {}).get("h2d_pinned"))
        _note(row, f"floor: the bins' {pixel_index.size} pixels of each frame")
        C_peer = None
        if peers:
            try:
                torch_twotime(pool, min(case.n_frames, 2 * twotime_step(b)), pixel_index,
                              col_offsets, b, torch_device, feed=feed)
                best = None
                for _ in range(repeat):
                    s_, C_peer, peak = torch_twotime(pool, case.n_frames, pixel_index,
                                                     col_offsets, b, torch_device, feed=feed)
                    best = s_ if best is None else min(best, s_)
                row.update(peer_s=best, peer_mem_mib=None if peak is None else peak / _MiB,
                           peer_device=_torch_device_name(torch_device))
            except Exception as e:
                _peer_missing(row, e)
        budget = None
        if row["peer_mem_mib"]:
            budget = int(TWOTIME_MEMORY_FRACTION * row["peer_mem_mib"] * _MiB)
        mine = _our_pool(pool, device, feed)

        def ours(budget=budget, n=case.n_frames, mine=mine):
            extra = {} if budget is None else {"max_device_memory": budget}
            return correlate(pool_frames(mine, n), binning, **options, **extra)

        try:
            # warm-up with the case's time binning (the binned type is a compile-time constant)
            correlate(pool_frames(mine, min(case.n_frames, 4 * b)), binning,
                      **dict(options, time_bin=b))
            try:
                res, row["ours_s"], mem = _best(ours, repeat)
            except ValueError as e:
                if budget is None or "max_device_memory" not in str(e):
                    raise
                _note(row, f"{TWOTIME_MEMORY_FRACTION:.0%} of the peer's memory is too small: "
                           "ran with the default budget")
                budget = None
                res, row["ours_s"], mem = _best(lambda: ours(None), repeat)
            row.update(ours_method="opencl twotime", ours_device=res.device,
                       ours_mem_mib=mem / _MiB)
            row["ours_budget_mib"] = None if budget is None else budget / _MiB
            row["ours_passes"] = res.info.get("passes")
            _note(row, f"ours moved {res.info.get('frames_moved')}")
            if budget is not None:
                _note(row, f"ours: max_device_memory {budget / _MiB:.1f} MiB "
                           f"({TWOTIME_MEMORY_FRACTION:.0%} of the peer's peak), "
                           f"{res.info.get('passes')} pass(es) over the frames")
            if C_peer is not None:
                row["g2_rel_diff"] = _maps_rel_diff(res.C, C_peer)
                row["agreement"] = f"C max rel diff {row['g2_rel_diff']:.1e}"
        except Exception as e:
            _note(row, f"ours error: {type(e).__name__}: {e}")
        _finish(row, float(case.n_frames))
        rows.append(row)
        del mine, C_peer
    return rows


# ---------------------------------------------------------------------- suite
def run_gpu_suite(scale: float = 1.0, device: Optional[str] = "gpu", repeat: int = 1,
                  peers: bool = True, cases: Optional[Sequence[str]] = None,
                  torch_device: str = "cuda", file=None, on_row=None) -> List[dict]:
    """Run the GPU suite (see the module docstring) and print its table.

    Parameters
    ----------
    scale : float
        Size factor in (0, 1]: frames × scale, pixels × scale.
    device : str, optional
        OpenCL device of our correlators and dynamix ("gpu", "cpu", "P:D").
    repeat : int
        Timed calls of each side (best kept), after a warm-up on a small slice.
    peers : bool
        Also run the peers.
    cases : sequence of str, optional
        Names of the cases to run (default: all).
    torch_device : str
        PyTorch device of the boost_corr and PyTorch peers (``"cpu"`` only to check them where
        there is no CUDA: no memory figure then).
    file : file object, optional
        Where the table goes (default: standard output; ``False``: nowhere). Progress lines go
        to standard error while a table is printed.
    on_row : callable, optional
        Called with the rows so far after each case (e.g. to save them as it goes).

    Returns
    -------
    list of dict
        One row per case: see :func:`_new_row` for the fields.
    """
    from .benchmark import _beamstop_labels, _print_machine, machine_description
    from ..opencl.device import get_device
    from ..engine.qmask import Binning

    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ValueError(f"repeat must be an integer >= 1, got {repeat!r}")
    all_cases = gpu_cases(scale)
    names = [c.name for c in all_cases]
    if cases:
        unknown = [c for c in cases if c not in names]
        if unknown:
            raise ValueError(f"unknown GPU benchmark case(s) {unknown}; known: {', '.join(names)}")
        all_cases = [c for c in all_cases if c.name in cases]
    out = sys.stdout if file is None else file
    dev = get_device(device)  # OpenCLUnavailableError if there is none: nothing to compare
    if out:
        machine = machine_description(device)
        _print_machine(machine, out)
        print(f"GPU suite, scale {scale:g}, OpenCL device {dev.name}, peers "
              f"{'on' if peers else 'off'}, {repeat} timed call(s) after a warm-up", file=out)
    rows = []
    runners = {"multitau": _run_multitau, "events": _run_events, "twotime": _run_twotime}
    t_suite = time.perf_counter()

    def progress(text):
        if out:
            print(f"[{time.perf_counter() - t_suite:7.1f} s] {text}", file=sys.stderr, flush=True)

    progress("measuring the host→device and device bandwidths")
    try:
        bandwidth = measure_bandwidth(dev)
    except Exception as e:  # no floor column then, said in the header
        bandwidth = None
        progress(f"bandwidth not measured: {type(e).__name__}: {e}")
    if out:
        _print_bandwidth(bandwidth, out)
        _print_header(out)
    for case in all_cases:
        t0 = time.perf_counter()
        if case.kind == "events":
            progress(f"{case.name}: generating {case.describe()}")
            data = poisson_events(case.shape, case.n_frames, case.mean_counts, seed=3)
        else:
            # A pool of frames cycled up to the case's frame count (module docstring, Feeds).
            step = TORCH_BATCH
            if case.kind == "twotime":
                from ..engine.twotime import choose_time_bin

                step = twotime_step(choose_time_bin(case.n_frames, None,
                                                    case.max_frames or 10_000))
            n_pool = min((case.pool_batches or POOL_BATCHES) * step,
                         -(-case.n_frames // step) * step)
            progress(f"{case.name}: generating a pool of {n_pool} frames "
                     f"{case.shape[0]}x{case.shape[1]} {case.dtype} {case.mean_counts:g} "
                     "cts/px/frame")
            data = dense_poisson(case.shape, n_pool, case.mean_counts, seed=2)
            if case.dtype != "uint8":
                data = data.astype(case.dtype)
        gen_s = time.perf_counter() - t0
        progress(f"{case.name}: data ready ({gen_s:.1f} s); running ours and {case.peer}")
        labels = _beamstop_labels(case.shape, case.n_bins)
        binning = Binning(labels)
        case_rows = runners[case.kind](case, data, labels, binning, dev, repeat, peers, gen_s,
                                       torch_device, bandwidth)
        rows.extend(case_rows)
        if out:
            for row in case_rows:
                _print_row(row, out)
        if on_row is not None:
            on_row(rows)
        del data
    if out:
        _print_summary(rows, out)
    return rows


# ---------------------------------------------------------------------- printing
def _f(v, fmt, width):
    return f"{'-':>{width}}" if v is None else f"{format(v, fmt):>{width}}"


def _print_bandwidth(bw, out):
    if bw is None:
        print("bandwidth: not measured (no floor column)", file=out)
        return
    print(f"bandwidth ({bw['bytes'] / 2**30:.2f} GiB copies, best of 3): host->device pinned "
          f"{bw['h2d_pinned'] / 1e9:.1f} GB/s, pageable {bw['h2d_pageable'] / 1e9:.1f} GB/s; "
          f"device copy {bw['device'] / 1e9:.0f} GB/s (read + write)", file=out)


def _print_header(out):
    print(f"\n{'case':<18} {'feed':<21} {'ours_s':>8} {'ours_thr':>10} {'peer_s':>8} "
          f"{'peer_thr':>10} {'ratio':>7} {'target':>6} {'floor_s':>8} {'x_floor':>7} "
          f"{'ours_MiB':>9} {'peer_MiB':>9} {'mem':>6}  agreement / note", file=out)
    out.flush()


def _print_row(r, out):
    mem = "-" if r["mem_ratio"] is None else f"{r['mem_ratio']:.0%}"
    ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
    xf = "-" if r["x_floor"] is None else f"{r['x_floor']:.1f}x"
    feed = r["feed"] if r["feed"] == r["peer_feed"] else f"{r['feed']}/{r['peer_feed']}"
    text = "; ".join(t for t in (r["agreement"], r["note"]) if t)
    print(f"{r['case']:<18} {feed:<21} {_f(r['ours_s'], '.3f', 8)} "
          f"{_f(r['ours_throughput'], '.3g', 10)} {_f(r['peer_s'], '.3f', 8)} "
          f"{_f(r['peer_throughput'], '.3g', 10)} {ratio:>7} {r['target']:>5g}x "
          f"{_f(r['floor_s'], '.3f', 8)} {xf:>7} "
          f"{_f(r['ours_mem_mib'], '.1f', 9)} {_f(r['peer_mem_mib'], '.1f', 9)} {mem:>6}  {text}",
          file=out)
    out.flush()


def _print_summary(rows, out):
    print("\nper case: data; ours = method @ device; peer = method @ device (throughput unit)",
          file=out)
    print("feed: pinned = page-locked host memory on both sides (ours: pinned_empty; torch: "
          "pin_memory + non_blocking copies on a copy stream, overlapped); pageable = plain "
          "NumPy memory on both sides; events ours/dynamix: pageable = NumPy arrays, pinned = "
          "page-locked copies, device-resident = our events already on the device / kernels = "
          "dynamix's kernels alone (profiled); dynamix warmed up, each timed call an instance's "
          "first. floor_s = bytes to move / measured bandwidth (module docstring).", file=out)
    seen = set()
    for r in rows:
        if r["case"] in seen:
            continue
        seen.add(r["case"])
        print(f"  {r['case']}: {r['data']}; ours = {r['ours_method'] or '-'} @ "
              f"{r['ours_device'] or '-'}; peer = {r['peer']} @ {r['peer_device'] or '-'} "
              f"({r['unit']})", file=out)
    out.flush()
