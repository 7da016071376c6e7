"""The ``auto`` method: pick the fastest method for the data that will actually be read.

Rule
----
1. Describe the data (:func:`describe_data`): frames Nt, pixels of a frame F, binned pixels P
   and the occupancy λ (fraction of non-zero binned pixel-frames), *sampled from the source*:
   an EventStack or events file knows it; an HDF5/Bliss/VDS file has ``n_sample`` of its stored
   chunks read and decoded on the CPU (a few frames spread over the scan, milliseconds); other
   files and arrays have ``n_sample`` frames read; an iterable has its first chunk (already
   read when the source was made) looked at. Unknown occupancy counts as dense (λ = 1).
2. Machine kind: ``gpu`` when the OpenCL device (``device``, default the best one) is a GPU,
   else ``cpu``. The device's default memory budget (a fraction of its free memory) bounds the
   events kept on the device: events that need more cost one more read of the compressed data
   per pixel range (the ``frame_pixels`` term of the events methods times the passes). On a
   CPU device (PoCL) the device's buffers are host memory that cannot spill to disk:
   ``opencl-events`` is a candidate there only while its events fit the host-memory cap of the
   CPU paths (:func:`ewoksxpcs.engine.spill.check_max_memory`, 64 MiB by default), so that the
   defaults keep the process's memory bounded for any frame count.
3. Every method of the machine's cost table for the mode that can run here
   (:mod:`ewoksxpcs.correlators.costs`) gets an estimated time; the smallest wins. The
   tables decide, e.g., sparse scans → ``opencl-events`` on a GPU (compaction on the device,
   then the same device-resident events for every mode), and FFT / NumPy on a CPU-only machine,
   where PoCL's compaction costs more than it saves. Two-time never goes to an OpenCL CPU device.

The choice and its reason (features, the estimates) are logged and recorded in the result
(``info["auto_reason"]``, written to the result file).
"""

from __future__ import annotations

import logging
import threading
import warnings
import weakref
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy

from . import costs
from .registry import METHODS

__all__ = ["DataFeatures", "Choice", "describe_data", "choose", "choose_method",
           "estimate_occupancy", "read_samples"]

logger = logging.getLogger(__name__)

#: Frames (or stored chunks) sampled to estimate the occupancy.
N_SAMPLE = 8
#: Data below this occupancy are called "sparse" in the reason (a label: the costs decide).
SPARSE_OCCUPANCY = 0.05

#: Methods per mode that take an EventStack without rebuilding dense frames.
EVENT_METHODS = {
    "linear": ("opencl-events", "fft", "cpu-events"),
    "multitau": ("numpy", "opencl-events", "cpu-events"),
    "twotime": ("numpy", "opencl-events", "cpu-events"),
}


@dataclass
class DataFeatures:
    """What ``auto`` knows of the data before reading it all.

    Attributes
    ----------
    source : str
        "events", "hdf5", "file", "array", "iterable".
    n_frames : int or None
    frame_shape : (int, int)
    occupancy : float or None
        Fraction of non-zero binned pixel-frames (None: unknown).
    occupancy_from : str
        How it was obtained, e.g. "8 stored chunks decoded".
    """

    source: str
    n_frames: Optional[int]
    frame_shape: Tuple[int, int]
    occupancy: Optional[float]
    occupancy_from: str

    @property
    def is_events(self) -> bool:
        return self.source == "events"


@dataclass
class Choice:
    """The method ``auto`` chose: registry name (linear) or multi-tau/two-time name, the OpenCL
    device (None: CPU), the reason, and the estimates (seconds) of every candidate."""

    method: str
    device: Optional[str]
    reason: str
    estimates: Dict[str, float]


def _binned_occupancy(frames: numpy.ndarray, pixel_index) -> float:
    flat = frames.reshape(frames.shape[0], -1)
    if pixel_index is not None:
        flat = flat[:, pixel_index]
    return float(numpy.count_nonzero(flat)) / max(1, flat.size)


_sampling = threading.Lock()  # one sampling at a time: a second caller takes the first's
_samples: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # source -> samples


def _sample_hdf5(source, n_sample: int):
    """(frames, how) from up to ``n_sample`` stored chunks of an HDF5 source, decoded on the
    CPU; None when the chunks cannot be read around h5py (then frames are read instead).

    Kept with the source for its chunk layout (a layout rebuilt because a file changed reads
    new samples): :func:`read_samples` may have read them ahead.
    """
    from ..io.hdf5chunks import decode_chunks_cpu, read_chunks

    with _sampling:
        layout, _ = source.chunk_layout()
        if layout is None or layout.n_chunks == 0:
            return None
        kept = _samples.get(source)
        if kept is not None and kept[0] is layout and kept[1] == n_sample:
            return kept[2]
        idx = numpy.unique(numpy.linspace(0, layout.n_chunks - 1, n_sample).astype(int))
        parts = []
        for c in idx.tolist():
            raw, offsets = read_chunks(layout, c, 1, threads=1)
            parts.append(decode_chunks_cpu(layout, raw, offsets, threads=1, first=c))
        stored = float(layout.sizes.sum()) / max(1, layout.n_chunks * layout.chunk_nbytes)
        sampled = numpy.concatenate(parts), (f"{idx.size} stored chunks decoded ({layout.codec},"
                                             f" stored/raw bytes {stored:.3g})")
        _samples[source] = (layout, n_sample, sampled)
        return sampled


def read_samples(source, n_sample: int = N_SAMPLE) -> None:
    """Read now the stored chunks that :func:`describe_data` samples from an HDF5 source
    (kept with it); other sources are left alone. ``ewoksxpcs run`` calls it in the thread
    that opens the scan ahead (:mod:`ewoksxpcs.workflow.ahead`)."""
    from ..io.load import HDF5FrameSource

    if isinstance(source, HDF5FrameSource) and source.n_frames:
        _sample_hdf5(source, n_sample)


def describe_data(data, binning=None, n_sample: int = N_SAMPLE) -> DataFeatures:
    """Sizes and occupancy of ``data`` (see the module docstring), reading only samples.

    Parameters
    ----------
    data : ndarray, FrameSource, iterable source or EventStack
    binning : Binning, optional
        The occupancy is that of its pixels (default: every pixel).
    """
    from ..engine.events import EventStack
    from ..engine.frames import ArrayFrameSource, IterableFrameSource
    from ..io.load import EventFrameSource, HDF5FrameSource

    pix = None if binning is None else binning.pixel_index
    if isinstance(data, EventFrameSource):
        data = data.events
    if isinstance(data, EventStack):
        occ = data.occupancy
        if binning is not None and data.n_frames and binning.n_binned_pixels:
            counts = numpy.diff(data.offsets)
            rows = numpy.searchsorted(data.pixel_index, pix)
            ok = rows < data.n_pixels
            ok[ok] = data.pixel_index[rows[ok]] == pix[ok]
            occ = float(counts[rows[ok]].sum()) / (pix.size * data.n_frames)
        return DataFeatures("events", data.n_frames, tuple(data.frame_shape), occ, "events")
    shape = tuple(getattr(data, "frame_shape", None) or getattr(data, "shape", (0, 0, 0))[1:])
    n_frames = getattr(data, "n_frames", None)
    if n_frames is None and hasattr(data, "shape") and len(data.shape) == 3:
        n_frames = int(data.shape[0])
    frames, how, kind = None, "unknown", "iterable"
    if isinstance(data, IterableFrameSource):
        first = getattr(data, "_first", None)
        if first is not None:
            frames, how = first, f"first chunk of {first.shape[0]} frames"
    elif isinstance(data, HDF5FrameSource):
        kind = "hdf5"
        sampled = _sample_hdf5(data, n_sample) if data.n_frames else None
        if sampled is not None:
            frames, how = sampled
    else:
        array = data.array if isinstance(data, ArrayFrameSource) else data
        kind = "array" if isinstance(data, (ArrayFrameSource, numpy.ndarray)) else "file"
        if hasattr(data, "read_frames") and n_frames:
            idx = numpy.unique(numpy.linspace(0, n_frames - 1, n_sample).astype(int))
            frames, how = data.read_frames(idx), f"{idx.size} frames read"
        elif hasattr(array, "shape") and len(array.shape) == 3 and array.shape[0]:
            idx = numpy.unique(numpy.linspace(0, array.shape[0] - 1, 2 * n_sample).astype(int))
            frames = numpy.stack([numpy.asarray(array[int(i)]) for i in idx])
            how = f"{idx.size} frames read"
    if frames is None and isinstance(data, HDF5FrameSource) and data.n_frames:
        idx = numpy.unique(numpy.linspace(0, data.n_frames - 1, n_sample).astype(int))
        frames, how = data.read_frames(idx), f"{idx.size} frames read through h5py"
    occ = None if frames is None or frames.size == 0 else _binned_occupancy(frames, pix)
    return DataFeatures(kind, n_frames, shape, occ, how)


def estimate_occupancy(data, n_sample: int = 16) -> Optional[float]:
    """Fraction of non-zero pixel-frames, from samples (see :func:`describe_data`); None if
    unknown."""
    return describe_data(data, n_sample=n_sample).occupancy


def _opencl(device) -> Tuple[Optional[object], str]:
    """(OpenCLDevice or None, why not)."""
    try:
        from ..opencl.device import get_device

        return get_device(device), ""
    except Exception as e:  # no platform, or the device asked for is absent
        return None, str(e)


def _runnable(mode: str, method: str, dev, is_events: bool) -> bool:
    if is_events and method not in EVENT_METHODS[mode]:
        return False
    if method.startswith("opencl"):
        return dev is not None and (mode != "linear" or method in METHODS)
    return mode != "linear" or method in METHODS


def choose(mode: str, data, binning, device: Optional[str] = None,
           n_time_bins: Optional[int] = None, machine: Optional[str] = None,
           methods=None) -> Choice:
    """Choose the method of ``mode`` for ``data`` by the cost model (module docstring).

    Parameters
    ----------
    mode : {"linear", "multitau", "twotime"}
    data : the frames or events to correlate
    binning : Binning
    device : str, optional
        OpenCL device spec; "cpu" (or no OpenCL) keeps the CPU methods and PoCL's measured ones.
    n_time_bins : int, optional
        Two-time: nT of the maps (default: Nt, capped by the default time binning).
    machine : str, optional
        Cost table (:data:`~ewoksxpcs.correlators.costs.COSTS`); default: from the device.
    methods : sequence of str, optional
        Candidates (default: every method of the table), e.g. the OpenCL ones to choose only
        the data path (events or dense).
    """
    # The data first: its samples are read while ``ewoksxpcs run``'s warm-up thread is still
    # opening the device (about 1 s on an NVIDIA GPU), which get_device then waits for.
    feat = describe_data(data, binning)
    dev, why_not = (None, "") if device == "none" else _opencl(device)
    if device not in (None, "cpu", "auto") and dev is None:
        warnings.warn(f"auto: OpenCL device {device!r} unavailable ({why_not}); using the CPU",
                      RuntimeWarning, stacklevel=3)
    machine = machine or costs.machine_kind(dev.kind if dev is not None else None)
    n_frames = feat.n_frames or 1
    occ = 1.0 if feat.occupancy is None else feat.occupancy
    frame_pixels = int(numpy.prod(feat.frame_shape)) if not feat.is_events else 0
    if mode == "twotime" and n_time_bins is None:
        from ..engine.twotime import choose_time_bin

        n_time_bins = n_frames // choose_time_bin(n_frames)
    f = costs.features(n_frames, frame_pixels, binning.n_binned_pixels, occ, n_time_bins)
    budget_txt, passes, host_events = "", 1, False
    if dev is not None:
        from ..opencl.device import default_device_memory

        budget = default_device_memory(dev)
        # Events beyond the budget: the compaction reads the compressed data once more per
        # range of pixels that fits (ewoksxpcs.opencl.compact), a cost of the events path.
        itemsize = numpy.dtype(getattr(data, "dtype", numpy.uint16)).itemsize
        event_bytes = occ * frame_pixels * n_frames * (itemsize + 4)
        passes = max(1, int(numpy.ceil(event_bytes / max(budget, 1))))
        budget_txt = f", device budget {budget / 1e9:.3g} GB" + (
            f" (events ~{event_bytes / 1e9:.3g} GB: {passes} compaction passes)"
            if passes > 1 else "")
        if dev.kind == "cpu":
            # A CPU device's buffers are host memory that cannot spill to disk: its events
            # would grow the process beyond the host-memory cap the CPU paths keep to.
            from ..engine.spill import check_max_memory

            cap = check_max_memory(None)
            host_events = event_bytes > cap
            if host_events:
                budget_txt += (f"; opencl-events left out: its events (~{event_bytes / 1e9:.3g}"
                               f" GB) would exceed the {cap / 2**20:.0f} MiB host-memory cap "
                               f"in the CPU device's buffers")
    estimates = {}
    for method in costs.COSTS[machine].get(mode, {}):
        if host_events and method == "opencl-events":
            continue
        if (methods is None or method in methods) and _runnable(mode, method, dev,
                                                                   feat.is_events):
            fm = dict(f, frame_pixels=f["frame_pixels"] * passes) \
                if method.endswith("events") and passes > 1 else f
            estimates[method] = costs.estimate(machine, mode, method, fm)
    if not estimates:  # e.g. a registry without the table's methods: the NumPy oracle
        fallback = "reference" if mode == "linear" else "numpy"
        return Choice(fallback, None, f"no method of the {machine} cost table can run here: "
                      f"{fallback}", {})
    method = min(estimates, key=estimates.get)
    occ_txt = "unknown (counted dense)" if feat.occupancy is None else f"{feat.occupancy:.3g}"
    label = "sparse" if feat.is_events or occ < SPARSE_OCCUPANCY else "dense"
    where = "no OpenCL device" + (f" ({why_not})" if why_not else "") if dev is None else \
        f"OpenCL {dev.kind} {dev.name}"
    ranked = ", ".join(f"{m} {t:.3g} s" for m, t in sorted(estimates.items(), key=lambda x: x[1]))
    ny, nx = feat.frame_shape
    reason = (f"{mode}, {label} data: {n_frames} frames of {ny}x{nx}, "
              f"{binning.n_binned_pixels} binned pixels, occupancy {occ_txt} "
              f"[{feat.occupancy_from}]; {where}{budget_txt}; cost model '{machine}': {ranked}")
    chosen_device = device if method.startswith("opencl") else None
    logger.info("auto chose %r: %s", method, reason)
    return Choice(method, chosen_device, reason, estimates)


def choose_method(data, binning, device: Optional[str] = None) -> Tuple[str, Optional[str], str]:
    """Linear-lag method for ``data``: (registry name, device, reason); see :func:`choose`."""
    c = choose("linear", data, binning, device)
    return c.method, c.device, c.reason
