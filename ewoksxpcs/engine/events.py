"""Sparse "event" form of a frame stack, and its compaction from frames on the CPU.

An :class:`EventStack` holds the non-zero pixel values of a stack of frames, pixel-major (as
compressed sparse rows, one row per pixel):

- ``pixel_index`` (n_pix,) int64: flat indices (y·Nx + x) of the pixels kept, ascending: every
  pixel that is not masked as bad, whether or not it is in a q bin, so the stack can be re-binned
  later without the raw frames;
- ``offsets`` (n_pix + 1,) int64: events of kept pixel ``k`` are ``offsets[k]:offsets[k+1]``;
- ``values`` (n_events,) the frames' dtype: the non-zero values, counts;
- ``times`` (n_events,) uint32: frame index of each value, ascending within a pixel (no 65 535
  frame limit);
- optional ``frame_sums`` (n_frames, n_bins) and ``labels`` (n_bins,): per-frame intensity of the
  bins of the qmask given at compaction time, counts.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy

from .frames import as_frame_source
from .qmask import Binning
from .spill import SpillArray, empty as empty_spillable

__all__ = ["EventStack", "DeviceEvents", "EventCompactor", "compact", "load_events"]

FORMAT_VERSION = 1


class EventStack:
    """Pixel-major sparse events of a frame stack (see the module docstring for the arrays).

    Parameters
    ----------
    values, times, offsets, pixel_index : ndarray
    frame_shape : (int, int)
        (Ny, Nx).
    n_frames : int
        Nt.
    dtype : numpy.dtype
        dtype of the original frames.
    frame_sums, labels : ndarray, optional
        Per-frame bin sums (n_frames, n_bins) and the labels of their bins (n_bins,).
    resident : DeviceEvents, optional
        Values and times on an OpenCL device (from :func:`ewoksxpcs.opencl.compact.compact_opencl`).
    trusted : bool
        True only for stacks made by this package's compactions, whose times and values are
        right by construction: the O(n_events) checks of :func:`check_events` are skipped.

    Raises
    ------
    ValueError
        When the arrays break an invariant (:func:`check_layout` always, :func:`check_events`
        unless ``trusted`` or ``resident``), naming the first violation.
    """

    def __init__(self, values, times, offsets, pixel_index, frame_shape, n_frames, dtype=None,
                 frame_sums=None, labels=None, resident=None, trusted: bool = False):
        self.offsets = _as_index_array(offsets, "offsets", numpy.int64)
        self.pixel_index = _as_index_array(pixel_index, "pixel_index", numpy.int64)
        self.frame_shape = tuple(int(n) for n in frame_shape)
        self.n_frames = int(n_frames)
        self.frame_sums = None if frame_sums is None else numpy.asarray(frame_sums)
        self.labels = None if labels is None else numpy.asarray(labels, dtype=numpy.int64)
        #: DeviceEvents: the values and times in OpenCL buffers (see :class:`DeviceEvents`);
        #: the host arrays are then downloaded on first access.
        self.resident = resident
        #: (n_pix,) int64 sum of each kept pixel's values when the compaction took it (integer
        #: frames on a device), else None.
        self.pixel_sums = None
        if resident is not None:
            self._values = self._times = None
            self.dtype = numpy.dtype(dtype if dtype is not None else resident.dtype)
            n = resident.n_events
        else:
            self._values = numpy.asarray(values)
            self._times = _as_index_array(times, "times", numpy.uint32)
            self.dtype = numpy.dtype(dtype if dtype is not None else self._values.dtype)
            if self._values.size != self._times.size:
                raise ValueError("EventStack: values, times and offsets[-1] disagree on the "
                                 "event count")
            n = self._values.size
        if self.offsets.ndim != 1 or self.offsets.size != self.pixel_index.size + 1:
            raise ValueError("EventStack: offsets must have one more element than pixel_index")
        if int(self.offsets[-1]) != n:
            raise ValueError("EventStack: values, times and offsets[-1] disagree on the event count")
        check_layout(self)
        if not trusted and resident is None:
            check_events(self)

    # ------------------------------------------------------------------ event arrays
    @property
    def values(self) -> numpy.ndarray:
        """(n_events,) event values (downloaded from the device on first access if resident)."""
        if self._values is None:
            self._values, self._times = self.resident.download()
        return self._values

    @values.setter
    def values(self, array):
        self._values = numpy.asarray(array)

    @property
    def times(self) -> numpy.ndarray:
        """(n_events,) uint32 frame index of each event."""
        if self._times is None:
            self._values, self._times = self.resident.download()
        return self._times

    @times.setter
    def times(self, array):
        self._times = numpy.asarray(array, dtype=numpy.uint32)

    def resident_on(self, dev) -> Optional["DeviceEvents"]:
        """The device buffers of the events (:class:`DeviceEvents`) when they live in the OpenCL
        context of ``dev`` (compacted there), else None: a correlator on that device reads them
        in place, without a round trip through the host."""
        resident = self.resident
        if resident is None or resident.dev.context != dev.context:
            return None
        return resident

    @property
    def values_dtype(self) -> numpy.dtype:
        """dtype of :attr:`values`, without downloading them."""
        return self.resident.dtype if self._values is None else self._values.dtype

    def __getstate__(self):
        # Pickles (processes, dask) carry host arrays, never device buffers.
        state = dict(self.__dict__)
        state["_values"], state["_times"] = self.values, self.times
        state["resident"] = None
        return state

    # ------------------------------------------------------------------ properties
    @property
    def n_events(self) -> int:
        return int(self.offsets[-1])

    @property
    def n_pixels(self) -> int:
        return int(self.pixel_index.size)

    @property
    def occupancy(self) -> float:
        """Fraction of kept pixel-frames that hold an event."""
        return self.n_events / max(1, self.n_pixels * self.n_frames)

    @property
    def events_per_pixel(self) -> numpy.ndarray:
        return numpy.diff(self.offsets)

    def __repr__(self) -> str:
        return (
            f"EventStack(frame_shape={self.frame_shape}, n_frames={self.n_frames}, "
            f"n_pixels={self.n_pixels}, n_events={self.n_events}, dtype={self.dtype})"
        )

    def __eq__(self, other) -> bool:
        if not isinstance(other, EventStack):
            return NotImplemented
        same = (
            self.frame_shape == other.frame_shape
            and self.n_frames == other.n_frames
            and self.dtype == other.dtype
            and all(
                numpy.array_equal(getattr(self, a), getattr(other, a))
                for a in ("values", "times", "offsets", "pixel_index")
            )
        )
        for a in ("frame_sums", "labels"):
            x, y = getattr(self, a), getattr(other, a)
            same = same and ((x is None and y is None) or (
                x is not None and y is not None and numpy.array_equal(x, y)))
        return bool(same)

    # ------------------------------------------------------------------ binning
    def pixel_sub_bins(self, binning: Binning) -> numpy.ndarray:
        """Sub-bin of each kept pixel, (n_pix,) int64, -1 outside every bin.

        Raises ValueError if the binning uses a pixel this stack does not hold (masked as bad).
        """
        binning.check_frame_shape(self.frame_shape)
        sub_image = binning.sub_image()
        if self.n_pixels == sub_image.size:
            # Every pixel of the frame held (pixel_index strictly ascending inside the frame:
            # 0 … n − 1): the image is the answer, no check and no gather.
            return sub_image
        kept = numpy.zeros(sub_image.size, dtype=bool)
        kept[self.pixel_index] = True
        missing = numpy.flatnonzero(~kept[binning.pixel_index])
        if missing.size:
            p = int(binning.pixel_index[missing[0]])
            raise ValueError(
                f"qmask bins use {missing.size} pixel(s) that this EventStack does not hold "
                f"(masked as bad at compaction), e.g. pixel (y={p // self.frame_shape[1]}, "
                f"x={p % self.frame_shape[1]})"
            )
        return sub_image[self.pixel_index]

    def check_counts(self) -> None:
        """Raise ValueError, naming the frame and pixel, if an event value is negative."""
        if self.values.size and self.values.dtype.kind in "if" and self.values.min() < 0:
            e = int(numpy.argmax(self.values < 0))
            p = int(self.pixel_index[numpy.searchsorted(self.offsets, e, side="right") - 1])
            raise ValueError(
                f"event methods need non-negative counts; the EventStack has a negative value "
                f"at frame {int(self.times[e])}, pixel (y={p // self.frame_shape[1]}, "
                f"x={p % self.frame_shape[1]})"
            )

    def frame_sums_for(self, binning: Binning) -> numpy.ndarray:
        """Per-frame sums S(t, k) over each sub-bin k, (n_frames, n_sub).

        int64 for integer events (exact), float64 otherwise. Raises ValueError on a negative
        value (every event consumer calls this, so hand-made stacks are checked too).
        """
        self.check_counts()
        sub = self.pixel_sub_bins(binning)
        size = self.n_frames * binning.n_sub
        # bincount sums in float64: exact for integers while a sum stays below 2**53 (partial
        # sums of pixel blocks too). Blocks of pixels bound the per-event temporaries.
        out = numpy.zeros(size)
        for p0, p1 in pixel_blocks(self.offsets):
            e0, e1 = int(self.offsets[p0]), int(self.offsets[p1])
            ev_sub = numpy.repeat(sub[p0:p1], numpy.diff(self.offsets[p0 : p1 + 1]))
            keep = ev_sub >= 0
            key = self.times[e0:e1][keep].astype(numpy.int64) * binning.n_sub + ev_sub[keep]
            out += numpy.bincount(key, weights=self.values[e0:e1][keep].astype(numpy.float64),
                                  minlength=size)
        if self.values.dtype.kind in "iu":
            out = numpy.rint(out).astype(numpy.int64)
        return out.reshape(self.n_frames, binning.n_sub)

    def to_dense(self) -> numpy.ndarray:
        """The frames back, (n_frames, Ny, Nx) of :attr:`dtype` (small data only)."""
        out = numpy.zeros((self.n_frames, self.frame_shape[0] * self.frame_shape[1]),
                          dtype=self.dtype)
        pix = numpy.repeat(self.pixel_index, self.events_per_pixel)
        out[self.times.astype(numpy.int64), pix] = self.values
        return out.reshape((self.n_frames,) + self.frame_shape)

    # ------------------------------------------------------------------ HDF5
    def save(self, filename: str, path: str = "events", overwrite: bool = False) -> str:
        """Write to an HDF5 file (group ``path``), through a temporary file renamed at the end.

        Raises FileExistsError if ``filename`` exists and ``overwrite`` is False.
        """
        import h5py

        filename = os.fspath(filename)
        if os.path.exists(filename) and not overwrite:
            raise FileExistsError(f"events file {filename!r} exists (use overwrite=True)")
        tmp = filename + ".tmp"
        try:
            with h5py.File(tmp, "w") as f:
                self.write_group(f.create_group(path))
            os.replace(tmp, filename)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        return filename

    def write_group(self, g) -> None:
        """Write the arrays into an open, empty h5py group (the layout :meth:`load` reads)."""
        g.attrs["NX_class"] = "NXcollection"
        g.attrs["ewoksxpcs_events_format"] = FORMAT_VERSION
        g.attrs["frame_shape"] = numpy.asarray(self.frame_shape, dtype=numpy.int64)
        g.attrs["n_frames"] = self.n_frames
        g.attrs["dtype"] = str(self.dtype)
        for name in ("values", "times", "offsets", "pixel_index"):
            arr = getattr(self, name)
            g.create_dataset(name, data=arr, chunks=True if arr.size else None,
                             compression="gzip" if arr.size > 4096 else None,
                             compression_opts=1 if arr.size > 4096 else None)
        if self.frame_sums is not None:
            g.create_dataset("frame_sums", data=self.frame_sums)
            g.create_dataset("labels", data=self.labels)

    @classmethod
    def load(cls, filename: str, path: str = "events") -> "EventStack":
        """Read an EventStack written by :meth:`save`, checked as the constructor checks it.

        Raises
        ------
        ValueError
            One line naming the file and the first problem: not an events group, a format
            version this package does not read, a missing array or attribute, or an invariant
            broken (see :func:`check_layout`, :func:`check_events`).
        """
        import h5py

        where = f"{os.fspath(filename)}::{path}"
        with h5py.File(filename, "r") as f:
            if path not in f:
                raise ValueError(f"{os.fspath(filename)!r} has no events group {path!r}")
            g = f[path]
            if not isinstance(g, h5py.Group) or "ewoksxpcs_events_format" not in g.attrs:
                raise ValueError(f"{where} is not an ewoksxpcs events group")
            version = g.attrs["ewoksxpcs_events_format"]
            if numpy.ndim(version) != 0 or numpy.asarray(version).dtype.kind not in "iu" \
                    or int(version) != FORMAT_VERSION:
                raise ValueError(f"{where}: events format version {version!r} is not "
                                 f"{FORMAT_VERSION}, the one this ewoksxpcs reads")
            missing = [n for n in ("values", "times", "offsets", "pixel_index") if n not in g]
            missing += [f"attribute {a}" for a in ("frame_shape", "n_frames", "dtype")
                        if a not in g.attrs]
            if "frame_sums" in g and "labels" not in g:
                missing.append("labels")
            if missing:
                raise ValueError(f"{where}: events group lacks {', '.join(missing)}")
            for a in ("frame_shape", "n_frames"):  # int() would truncate 40.5 silently
                value = numpy.asarray(g.attrs[a])
                if value.dtype.kind not in "iu":
                    raise ValueError(f"{where}: attribute {a} is {value.tolist()!r}, not integers")
            try:
                frame_shape = tuple(int(n) for n in numpy.ravel(g.attrs["frame_shape"]))
                return cls(
                    values=_read_spillable(g["values"]),
                    times=_read_spillable(g["times"]),
                    offsets=g["offsets"][()],
                    pixel_index=g["pixel_index"][()],
                    frame_shape=frame_shape,
                    n_frames=int(g.attrs["n_frames"]),
                    dtype=numpy.dtype(str(g.attrs["dtype"])),
                    frame_sums=g["frame_sums"][()] if "frame_sums" in g else None,
                    labels=g["labels"][()] if "labels" in g else None,
                )
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{where}: {exc}") from exc


def _as_index_array(a, name: str, dtype) -> numpy.ndarray:
    """``a`` as an integer array of ``dtype``; ValueError if its values do not fit (a cast
    would wrap them) or are not integers."""
    a = numpy.asarray(a)
    if a.dtype == dtype:
        return a
    if a.size and a.dtype.kind not in "iub":
        raise ValueError(f"invalid EventStack: {name} are {a.dtype}, not integers")
    if a.size and a.dtype.kind != "b":
        info = numpy.iinfo(dtype)
        lo, hi = int(a.min()), int(a.max())
        if lo < info.min or hi > info.max:
            k = int(numpy.argmax((a < info.min) | (a > info.max)))
            raise ValueError(f"invalid EventStack: {name}[{k}] = {int(a.flat[k])} does not fit "
                             f"{numpy.dtype(dtype).name}")
    return a.astype(dtype)


def _where(events, e: int) -> str:
    """'event e (pixel (y=…, x=…))' of event index ``e``."""
    k = int(numpy.searchsorted(events.offsets, e, side="right")) - 1
    p = int(events.pixel_index[k])
    nx = events.frame_shape[1]
    return f"event {e} (pixel (y={p // nx}, x={p % nx}))"


def check_layout(events: EventStack) -> None:
    """Check the O(n_pixels) invariants of an EventStack; raise ValueError at the first violation.

    frame shape of two positive integers; 0 ≤ n_frames < 2³² (uint32 times); offsets (n_pix + 1,)
    starting at 0, non-decreasing, ending at n_events; pixel_index strictly ascending inside the
    frame; frame_sums (n_frames, n_bins) with labels (n_bins,) when given.
    """
    shape = events.frame_shape
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"invalid EventStack: frame_shape {shape} is not two positive integers")
    if not 0 <= events.n_frames < 2**32:
        raise ValueError(f"invalid EventStack: n_frames {events.n_frames} is outside 0 … 2^32 − 1")
    off, pix = events.offsets, events.pixel_index
    if pix.ndim != 1:
        raise ValueError("invalid EventStack: pixel_index is not one-dimensional")
    if int(off[0]) != 0:
        raise ValueError(f"invalid EventStack: offsets[0] is {int(off[0])}, not 0")
    step = numpy.diff(off)
    if step.size and step.min() < 0:
        k = int(numpy.argmax(step < 0))
        raise ValueError(f"invalid EventStack: offsets decrease at pixel entry {k}: "
                         f"offsets[{k}] = {int(off[k])} > offsets[{k + 1}] = {int(off[k + 1])}")
    if pix.size:
        npix = shape[0] * shape[1]
        outside = (pix < 0) | (pix >= npix)
        if outside.any():
            k = int(numpy.argmax(outside))
            raise ValueError(f"invalid EventStack: pixel_index[{k}] = {int(pix[k])} is outside "
                             f"the frame of {shape[0]}×{shape[1]} pixels")
        d = numpy.diff(pix)
        if d.size and d.min() <= 0:
            k = int(numpy.argmax(d <= 0))
            raise ValueError(f"invalid EventStack: pixel_index not strictly ascending at entry "
                             f"{k + 1}: {int(pix[k + 1])} after {int(pix[k])}")
    if events.frame_sums is not None:
        fs = events.frame_sums
        n_bins = None if events.labels is None else events.labels.size
        if fs.ndim != 2 or fs.shape[0] != events.n_frames or (n_bins is not None
                                                               and fs.shape[1] != n_bins):
            raise ValueError(f"invalid EventStack: frame_sums shape {fs.shape} is not "
                             f"(n_frames={events.n_frames}, n_bins={n_bins})")


#: Events checked per step of :func:`check_events` (its temporary arrays stay below ~80 MB).
CHECK_STEP = 1 << 22


def check_events(events: EventStack) -> None:
    """Check the O(n_events) invariants of an EventStack's host arrays (vectorised, in steps).

    Times below n_frames and strictly increasing within each pixel (no duplicate or reversed
    times); values of the stack's dtype, non-zero (events hold the non-zero values only),
    non-negative (counts) and finite. Raises ValueError naming the first violation: event
    index, pixel and value.
    """
    values, times, off = events.values, events.times, events.offsets
    if values.ndim != 1 or times.ndim != 1:
        raise ValueError("invalid EventStack: values and times must be one-dimensional")
    if values.dtype != events.dtype:
        raise ValueError(f"invalid EventStack: values are {values.dtype} but dtype says "
                         f"{events.dtype}")
    if values.dtype.kind not in "iuf":
        raise ValueError(f"invalid EventStack: unsupported value dtype {values.dtype}")
    n, nt = values.size, events.n_frames
    for e0 in range(0, n, CHECK_STEP):
        e1 = min(n, e0 + CHECK_STEP)
        t = times[e0:e1]
        late = t >= nt
        if late.any():
            e = e0 + int(numpy.argmax(late))
            raise ValueError(f"invalid EventStack: {_where(events, e)} has time {int(times[e])}"
                             f", not below n_frames = {nt}")
        # Pairs (e, e+1) inside one pixel must have increasing times; e+1 starting a pixel
        # (an offset) is exempt.
        t = times[e0:min(n, e1 + 1)].astype(numpy.int64)
        bad = numpy.diff(t) <= 0
        a, b = numpy.searchsorted(off, [e0 + 1, e0 + bad.size + 1])
        bad[off[a:b] - e0 - 1] = False
        if bad.any():
            e = e0 + 1 + int(numpy.argmax(bad))
            kind = "duplicate" if times[e] == times[e - 1] else "reversed"
            raise ValueError(f"invalid EventStack: {_where(events, e)} has time {int(times[e])}"
                             f" after {int(times[e - 1])} ({kind} time; times must increase "
                             "strictly within a pixel)")
        v = values[e0:e1]
        wrong = ~(v > 0)  # zero, negative or NaN
        if values.dtype.kind == "f":
            wrong |= ~numpy.isfinite(v)
        if wrong.any():
            e = e0 + int(numpy.argmax(wrong))
            what = ("zero (events hold non-zero values only)" if values[e] == 0
                    else "not a finite count" if values.dtype.kind == "f" and not values[e] < 0
                    else "negative (event methods need non-negative counts)")
            raise ValueError(f"invalid EventStack: {_where(events, e)} at frame "
                             f"{int(times[e])} has value {values[e]}: {what}")


def _read_spillable(dataset) -> numpy.ndarray:
    """A whole 1-D HDF5 dataset read into :func:`ewoksxpcs.engine.spill.empty` storage (a
    temporary file mapped in memory beyond the cap), block by block."""
    out = empty_spillable(dataset.shape, dataset.dtype)
    step = max(1, EVENT_BLOCK)
    for i in range(0, dataset.shape[0], step):
        dataset.read_direct(out, numpy.s_[i: i + step], numpy.s_[i: i + step])
    return out


def load_events(filename: str, path: str = "events") -> EventStack:
    """Read an EventStack from an HDF5 file (see :meth:`EventStack.save`)."""
    return EventStack.load(filename, path)


def _kept_pixels(frame_shape, bad_pixels) -> numpy.ndarray:
    npix = frame_shape[0] * frame_shape[1]
    if bad_pixels is None:
        return numpy.arange(npix, dtype=numpy.int64)
    bad_pixels = numpy.asarray(bad_pixels, dtype=bool)
    if bad_pixels.shape != tuple(frame_shape):
        raise ValueError(
            f"bad-pixel mask shape {bad_pixels.shape} differs from the frame shape {tuple(frame_shape)}"
        )
    return numpy.flatnonzero(~bad_pixels.ravel()).astype(numpy.int64)


def check_non_negative(chunk: numpy.ndarray, t0: int) -> None:
    """Raise ValueError if a chunk of frames holds a negative value (events are counts)."""
    if chunk.dtype.kind in "if" and chunk.size and chunk.min() < 0:
        bad = numpy.argwhere(chunk < 0)[0]
        raise ValueError(
            f"event methods need non-negative counts; frame {t0 + int(bad[0])} has a negative "
            f"value at pixel (y={int(bad[1])}, x={int(bad[2])})"
        )


class DeviceEvents:
    """Values and times of an :class:`EventStack` kept in OpenCL buffers after compaction on
    a device, so that a correlator on the same device reads them without a round trip.

    Parameters
    ----------
    dev : ewoksxpcs.opencl.device.OpenCLDevice
    d_values, d_times : pyopencl.Buffer
        (n_events,) values of ``dtype`` and uint32 times, from byte 0.
    n_events : int
    dtype : numpy.dtype
    d_offsets : pyopencl.Buffer, optional
        (n_pixels + 1,) int64 offsets of the stack's pixels, where the device has them (the
        compaction's own): a correlator then reads them there instead of uploading the host's.
    """

    def __init__(self, dev, d_values, d_times, n_events: int, dtype, d_offsets=None):
        self.dev, self.d_values, self.d_times = dev, d_values, d_times
        self.n_events, self.dtype = int(n_events), numpy.dtype(dtype)
        self.d_offsets = d_offsets

    def download(self):
        """(values, times) as host arrays."""
        import pyopencl

        values = numpy.empty(self.n_events, dtype=self.dtype)
        times = numpy.empty(self.n_events, dtype=numpy.uint32)
        if self.n_events:
            queue = self.dev.queue
            pyopencl.enqueue_copy(queue, values, self.d_values, is_blocking=False)
            pyopencl.enqueue_copy(queue, times, self.d_times)
        return values, times


#: Most events a CPU step handles at once (compaction's second pass, per-block reductions):
#: bounds the anonymous temporaries (a few tens of bytes per event) whatever the frame count.
EVENT_BLOCK = 1 << 22
#: Pixel-frames of a chunk turned into events at once by :func:`compact`.
SLICE_PIXELS = 1 << 20


def count_blocks(ends, max_events: Optional[int] = None):
    """Ranges (i0, i1) of consecutive items holding at most ``max_events`` events together (or
    one item, if it alone holds more), covering every item.

    Parameters
    ----------
    ends : ndarray, (n,) int
        Cumulative event counts: items 0 … i hold ``ends[i]`` events.
    max_events : int, optional
        Default :data:`EVENT_BLOCK`.
    """
    max_events = EVENT_BLOCK if max_events is None else int(max_events)
    n = len(ends)
    i0 = 0
    while i0 < n:
        base = int(ends[i0 - 1]) if i0 else 0
        i1 = int(numpy.searchsorted(ends, base + max_events, side="right"))
        i1 = min(max(i1, i0 + 1), n)
        yield i0, i1
        i0 = i1


def pixel_blocks(offsets: numpy.ndarray, max_events: Optional[int] = None):
    """Ranges (p0, p1) of consecutive kept pixels of at most ``max_events`` events each (see
    :func:`count_blocks`), from the CSR ``offsets`` (n_pix + 1,) of an :class:`EventStack`."""
    return count_blocks(offsets[1:] - offsets[0], max_events)


def compact(frames, bad_pixels=None, qmask=None, chunk_frames: Optional[int] = None,
            progress=None, max_memory: Optional[int] = None) -> EventStack:
    """Compact frames into an :class:`EventStack`, streaming over chunks (NumPy).

    Two passes, host memory bounded whatever the number of frames: the chunks' events are
    appended frame-major (pixel rank int32, value) to :class:`~ewoksxpcs.engine.spill.SpillArray`
    buffers while the events of each pixel are counted; then each chunk's events are sorted by
    pixel (stable, chunk-sized) and written at their pixel's place in the output arrays, which
    live in temporary files mapped in memory once larger than ``max_memory`` (see
    :mod:`ewoksxpcs.engine.spill`). The result is the same as a global stable sort by pixel.

    Parameters
    ----------
    frames : array (Nt, Ny, Nx), iterable of chunks, or FrameSource
        Non-negative counts.
    bad_pixels : array_like of bool (Ny, Nx), optional
        Pixels to drop (True = bad). All other pixels are kept.
    qmask : array_like of int (Ny, Nx) or Binning, optional
        When given, the per-frame bin sums are stored with the events.
    chunk_frames : int, optional
        Frames per chunk.
    progress : callable, optional
        Called as ``progress(frames_done, n_frames_or_None)`` after each chunk.
    max_memory : int, optional
        Bytes each event buffer keeps in RAM (default
        :data:`ewoksxpcs.engine.spill.DEFAULT_MAX_MEMORY`).
    """
    source = as_frame_source(frames)
    compactor = EventCompactor(source.frame_shape, source.dtype, bad_pixels, qmask, max_memory)
    try:
        for chunk in source.iter_chunks(chunk_frames):
            compactor.feed(chunk)
            if progress is not None:
                progress(compactor.n_frames, source.n_frames)
        return compactor.stack()
    finally:
        compactor.close()


class EventCompactor:
    """Frames compacted into events chunk by chunk; the events of the frames so far at any time.

    What :func:`compact` runs on a frame source, and what live correlation feeds as frames
    arrive: the same code gives the same events. Host memory is bounded whatever the number of
    frames: :meth:`feed` (first pass) appends each chunk's events frame-major (pixel rank,
    value) to :class:`~ewoksxpcs.engine.spill.SpillArray` buffers and counts the events of each
    pixel; :meth:`stack` (second pass, any number of times) writes them at their pixel's place
    in spillable output arrays (see :func:`compact`).

    Parameters
    ----------
    frame_shape : (int, int)
    dtype : numpy.dtype
        Pixel type of the frames.
    bad_pixels, qmask, max_memory
        As for :func:`compact`.
    """

    def __init__(self, frame_shape, dtype, bad_pixels=None, qmask=None,
                 max_memory: Optional[int] = None):
        shape = tuple(int(n) for n in frame_shape)
        self.frame_shape = shape
        self.dtype = numpy.dtype(dtype)
        self.max_memory = max_memory
        self.kept = _kept_pixels(shape, bad_pixels)
        self.rank = numpy.full(shape[0] * shape[1], -1, dtype=numpy.int64)
        self.rank[self.kept] = numpy.arange(self.kept.size)
        self.binning = None
        if qmask is not None:
            self.binning = (qmask if isinstance(qmask, Binning)
                            else Binning(qmask, bad_pixels=bad_pixels, n_groups=1))
            self.binning.check_frame_shape(shape)
            self.bin_image = self.binning.bin_image()
        self.pix_dtype = numpy.int32 if self.kept.size < 2**31 else numpy.int64
        self._pix = SpillArray((), self.pix_dtype, max_memory)
        self._val = SpillArray((), self.dtype, max_memory)
        self._counts = numpy.zeros(self.kept.size, dtype=numpy.int64)  # events per kept pixel
        self._chunks = []  # per slice: (first frame, events per frame)
        self._fs = []
        self.n_frames = 0
        # Chunks are taken SLICE_PIXELS pixel-frames at a time: the per-event temporaries of
        # nonzero() stay small whatever the chunk size.
        self._slice_frames = max(1, SLICE_PIXELS // max(1, shape[0] * shape[1]))

    def feed(self, chunk: numpy.ndarray) -> None:
        """Take the next frames, (n, Ny, Nx), non-negative."""
        check_non_negative(chunk, self.n_frames)
        binning = self.binning
        for s0 in range(0, chunk.shape[0], self._slice_frames):
            part = chunk[s0: s0 + self._slice_frames]
            n = part.shape[0]
            flat = part.reshape(n, -1)
            ti, pi = numpy.nonzero(flat)
            r = self.rank[pi]
            keep = r >= 0
            tk, rk = ti[keep], r[keep]
            self._val.append(flat[tk, pi[keep]])
            self._pix.append(rk.astype(self.pix_dtype, copy=False))
            self._counts += numpy.bincount(rk, minlength=self.kept.size)
            self._chunks.append((self.n_frames, numpy.bincount(tk, minlength=n)))
            if binning is not None:
                b = self.bin_image[pi]
                inb = b >= 0
                key = ti[inb] * binning.n_bins + b[inb]
                w = flat[ti[inb], pi[inb]]
                fs = numpy.bincount(key, weights=w, minlength=n * binning.n_bins)
                self._fs.append(fs.reshape(n, binning.n_bins))
            self.n_frames += n

    def stack(self) -> EventStack:
        """The :class:`EventStack` of the frames fed so far (feeding may go on)."""
        t0 = self.n_frames
        if t0 >= 2**32:
            raise ValueError(f"too many frames for uint32 times: {t0}")
        kept = self.kept
        offsets = numpy.zeros(kept.size + 1, dtype=numpy.int64)
        numpy.cumsum(self._counts, out=offsets[1:])
        n_events = int(offsets[-1])
        values = empty_spillable(n_events, self.dtype, self.max_memory)
        times = empty_spillable(n_events, numpy.uint32, self.max_memory)
        # Second pass: each chunk's events go after those of earlier chunks of the same pixel,
        # so times stay ascending within a pixel.
        cursor = offsets[:-1].copy()
        e0 = 0
        for c0, per_frame in self._chunks:
            e1 = e0 + int(per_frame.sum())
            # A chunk's events in pieces of at most EVENT_BLOCK (whole frames).
            ends = numpy.cumsum(per_frame)
            for f0, f1 in count_blocks(ends):
                a, b = e0 + (int(ends[f0 - 1]) if f0 else 0), e0 + int(ends[f1 - 1])
                if b > a:
                    _scatter(self._pix.view(a, b), self._val.view(a, b),
                             numpy.repeat(numpy.arange(c0 + f0, c0 + f1, dtype=numpy.uint32),
                                          per_frame[f0:f1]),
                             cursor, values, times)
            e0 = e1
        frame_sums = labels = None
        if self.binning is not None:
            frame_sums = (numpy.concatenate(self._fs, axis=0) if self._fs
                          else numpy.zeros((0, self.binning.n_bins)))
            frame_sums = (numpy.rint(frame_sums).astype(numpy.int64)
                          if self.dtype.kind in "iu" else frame_sums)
            labels = self.binning.labels
        return EventStack(values, times, offsets, kept, self.frame_shape, t0, self.dtype,
                          frame_sums=frame_sums, labels=labels, trusted=True)  # sorted above

    def close(self) -> None:
        """Release the first pass's buffers (no more :meth:`feed` or :meth:`stack`)."""
        self._pix.close()
        self._val.close()


def _scatter(pix, vals, ts, cursor, values, times) -> None:
    """Write frame-major events (pixel rank, value, time) at their pixel's next free places.

    ``cursor`` (n_pix,) int64 is each pixel's next free index in ``values``/``times``; it is
    advanced by the events written.
    """
    order = numpy.argsort(pix, kind="stable")  # frame order kept within a pixel
    ps = pix[order]
    first = numpy.flatnonzero(numpy.concatenate(([True], ps[1:] != ps[:-1])))
    run = numpy.diff(numpy.append(first, ps.size))
    starts = numpy.repeat(first, run)
    dest = cursor[ps] + (numpy.arange(ps.size) - starts)
    values[dest] = vals[order]
    times[dest] = ts[order]
    cursor[ps[first]] += run
