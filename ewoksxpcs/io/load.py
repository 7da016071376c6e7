"""Frame sources backed by files: HDF5 (Bliss scans, NeXus, plain), EDF/CBF series, events.

:func:`load_frames` turns a URL into a lazy :class:`~ewoksxpcs.engine.frames.FrameSource` (or, for an
ewoksxpcs events file, an :class:`~ewoksxpcs.engine.events.EventStack`). Files are read chunk by chunk,
never whole, and the sources pickle by file name (no open handle), so they travel between
processes (Ewoks ppf and dask engines).

URLs
----
``file.h5::/path`` or a silx DataUrl (``silx:///file.h5?path=/path&slice=10:1000``). The path
may name

- a 3-D dataset (Nt, Ny, Nx);
- a Bliss scan entry (``/1.1``): its ``measurement/<det>`` 3-D dataset, or
  ``instrument/<det>/data`` (``detector`` picks one when there are several);
- an NXdetector group (its ``data``), an NXdata group (its signal), an NXentry or the file root
  (followed through their ``default`` attributes, or their single entry).

A group of sparse frames (``frame_ptr``, ``index``, ``intensity``: ESRF Lima/pyFAI, also inside
a Bliss scan), when no 3-D dataset is found, is read straight into an
:class:`~ewoksxpcs.engine.events.EventStack` (:mod:`ewoksxpcs.io.sparse`; ``start``/``stop`` apply).

A name ending in ``.edf``, ``.cbf``, ``.tif``… (or a glob pattern like ``img_*.edf``) is read
through fabio, one or more frames per file, files in sorted order.

Frame period
------------
Given explicitly, or read from the file, first found of (``<det>`` is the detector group the
data belongs to, seconds unless the dataset has a ``units`` attribute):

1. ``<det>/acquisition/frame_period``, ``<det>/frame_time`` (NeXus), ``<det>/frame_period``;
2. ``<det>/acq_parameters/acq_expo_time`` + ``acq_latency_time`` (Lima, Bliss);
3. ``<det>/acquisition/count_time`` + ``latency_time``, ``<det>/count_time`` (+ ``dead_time``).

The period of the loaded frames is that of the file times the frame ``step``.
"""

from __future__ import annotations

import glob
import os
import re
from typing import List, Optional, Sequence, Tuple

import numpy

from ..engine.frames import FrameSource, as_frame_source, check_dtype, default_chunk_frames, validate_chunk
from ..engine.options import positive_int
from .hdf5chunks import check_virtual_sources

__all__ = [
    "HDF5FrameSource",
    "FabioFrameSource",
    "EventFrameSource",
    "load_frames",
    "read_image",
    "parse_url",
    "find_frames_dataset",
    "read_frame_period",
    "is_events_file",
]

#: File name endings read through fabio.
FABIO_EXTENSIONS = (".edf", ".edf.gz", ".cbf", ".tif", ".tiff", ".img", ".mccd", ".npy.fabio")

_UNIT_SCALE = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "microsecond": 1e-6,
    "ns": 1e-9,
}


def _import_hdf5():
    import h5py
    import hdf5plugin  # noqa: F401  (registers bitshuffle/LZ4 and other filters)

    return h5py


def parse_url(url) -> Tuple[str, Optional[str], Optional[tuple]]:
    """Split ``file.h5::/path`` or a silx DataUrl into (file name, data path, data slice).

    Raises
    ------
    ValueError
        The URL cannot be parsed or names no file.
    """
    from silx.io.url import DataUrl

    if isinstance(url, os.PathLike):
        url = os.fspath(url)
    if not isinstance(url, str) or not url:
        raise TypeError(f"a URL must be a non-empty string, not {type(url).__name__}")
    if "::" not in url and "?" not in url and "://" not in url:
        return url, None, None
    parsed = DataUrl(url)
    if not parsed.is_valid() or not parsed.file_path():
        raise ValueError(f"cannot parse the URL {url!r} (expected 'file.h5::/path')")
    return parsed.file_path(), parsed.data_path() or None, parsed.data_slice()


def _is_fabio_name(filename: str) -> bool:
    return filename.lower().endswith(FABIO_EXTENSIONS)


def _check_file(filename: str) -> None:
    if not os.path.exists(filename):
        raise FileNotFoundError(f"input file {filename!r} does not exist")
    if os.path.isdir(filename):
        raise ValueError(f"input {filename!r} is a directory, not a file")


# ---------------------------------------------------------------------------------- HDF5 lookup
def _nx_class(obj) -> str:
    value = obj.attrs.get("NX_class", "")
    return value.decode() if isinstance(value, bytes) else str(value)


def _attr_str(obj, name) -> Optional[str]:
    value = obj.attrs.get(name)
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, numpy.ndarray):
        value = value.ravel()[0] if value.size else None
        return (
            value.decode() if isinstance(value, bytes) else (None if value is None else str(value))
        )
    return str(value)


def _is_3d_dataset(obj, h5py) -> bool:
    return isinstance(obj, h5py.Dataset) and obj.ndim == 3


def find_frames_dataset(group, detector: Optional[str] = None, _depth: int = 0):
    """Return the 3-D frames dataset that ``group`` (an h5py Group or Dataset) designates.

    See the module docstring for the rules. Raises ValueError naming the candidates when the
    choice is ambiguous, and describing what was found when there is none.
    """
    h5py = _import_hdf5()
    where = f"{group.file.filename}::{group.name}"
    if isinstance(group, h5py.Dataset):
        if group.ndim != 3:
            raise ValueError(
                f"{where} is a {group.ndim}-D dataset of shape {group.shape}: frames must be "
                "a 3-D dataset (n_frames, Ny, Nx)"
            )
        return group
    if _depth > 4:
        raise ValueError(f"{where}: too many levels of 'default' attributes")
    nx_class = _nx_class(group)
    # Bliss scan: measurement/<det> (3-D), instrument/<det>/data.
    candidates = {}
    if "measurement" in group and isinstance(group["measurement"], h5py.Group):
        for name, obj in group["measurement"].items():
            if _is_3d_dataset(obj, h5py):
                candidates[name] = obj
    if "instrument" in group and isinstance(group["instrument"], h5py.Group):
        for name, obj in group["instrument"].items():
            if isinstance(obj, h5py.Group) and "data" in obj and _is_3d_dataset(obj["data"], h5py):
                candidates.setdefault(name, obj["data"])
    if candidates:
        if detector is not None:
            if detector not in candidates:
                raise ValueError(
                    f"{where} has no detector {detector!r}; 3-D detector datasets: "
                    f"{sorted(candidates)}"
                )
            return candidates[detector]
        if len(candidates) > 1:
            raise ValueError(
                f"{where} holds several 3-D detector datasets {sorted(candidates)}: "
                "choose one with 'detector' or a full path"
            )
        return next(iter(candidates.values()))
    if detector is not None and detector in group:
        return find_frames_dataset(group[detector], None, _depth + 1)
    if nx_class == "NXdetector" and "data" in group:
        return find_frames_dataset(group["data"], None, _depth + 1)
    if nx_class == "NXdata":
        signal = _attr_str(group, "signal")
        if signal and signal in group:
            return find_frames_dataset(group[signal], None, _depth + 1)
    default = _attr_str(group, "default")
    if default and default in group:
        return find_frames_dataset(group[default], detector, _depth + 1)
    if "data" in group and _is_3d_dataset(group["data"], h5py):
        return group["data"]
    subgroups = [obj for obj in group.values() if isinstance(obj, h5py.Group)]
    datasets3 = [obj for obj in group.values() if _is_3d_dataset(obj, h5py)]
    if len(datasets3) == 1:
        return datasets3[0]
    if len(datasets3) > 1:
        raise ValueError(
            f"{where} holds several 3-D datasets {[d.name for d in datasets3]}: give a full path"
        )
    if len(subgroups) == 1 and _depth < 2:
        return find_frames_dataset(subgroups[0], detector, _depth + 1)
    if len(subgroups) > 1:
        names = sorted(g.name for g in subgroups)[:10]
        raise ValueError(
            f"{where} holds several groups {names}: give the path of a scan or a dataset "
            "(e.g. 'file.h5::/1.1/measurement/eiger')"
        )
    raise ValueError(f"no 3-D frames dataset found at {where}")


def _read_seconds(node) -> Optional[float]:
    """A time value in seconds from a scalar or per-frame dataset (its median), or None."""
    try:
        value = numpy.asarray(node[()], dtype=numpy.float64)
    except (TypeError, ValueError):
        return None
    if value.size == 0 or not numpy.all(numpy.isfinite(value)):
        return None
    value = float(numpy.median(value))
    units = _attr_str(node, "units")
    if units:
        scale = _UNIT_SCALE.get(units.strip().lower())
        if scale is None:
            return None
        value *= scale
    return value


def _detector_groups(dataset) -> List:
    """Groups that may hold the acquisition metadata of ``dataset``."""
    h5py = _import_hdf5()
    groups = []
    parent = dataset.parent
    groups.append(parent)
    name = dataset.name.rsplit("/", 1)[-1]
    # Bliss: /<scan>/measurement/<det> links /<scan>/instrument/<det>/data.
    if _nx_class(parent) == "NXcollection" or parent.name.endswith("/measurement"):
        scan = parent.parent
        inst = scan.get("instrument")
        if isinstance(inst, h5py.Group) and isinstance(inst.get(name), h5py.Group):
            groups.insert(0, inst[name])
    return groups


#: Where detector files keep their pixel mask, relative to a detector group: NeXus NXdetector,
#: DECTRIS Eiger master files.
PIXEL_MASK_PATHS = ("pixel_mask", "detectorSpecific/pixel_mask")


def read_pixel_mask(dataset) -> Tuple[Optional[numpy.ndarray], str]:
    """The detector's own pixel mask stored next to a frames dataset (non-zero = bad).

    Returns
    -------
    (ndarray of bool (Ny, Nx) or None, str)
        The bad pixels (None if no 2-D mask of the frame shape is found) and the dataset path.
    """
    h5py = _import_hdf5()
    shape = tuple(dataset.shape[1:])
    for group in _detector_groups(dataset):
        for path in PIXEL_MASK_PATHS:
            node = group.get(path)
            if isinstance(node, h5py.Dataset) and tuple(node.shape) == shape:
                return numpy.asarray(node[()]) != 0, node.name
    return None, ""


def read_frame_period(dataset) -> Tuple[Optional[float], str]:
    """Frame period in seconds stored next to a frames dataset (module docstring rules).

    Returns
    -------
    (float or None, str)
        The period (None if not found) and where it was read from.
    """
    h5py = _import_hdf5()
    for group in _detector_groups(dataset):

        def get(path, group=group):
            node = group.get(path)
            return node if isinstance(node, h5py.Dataset) else None

        for path in ("acquisition/frame_period", "frame_time", "frame_period"):
            node = get(path)
            if node is not None:
                value = _read_seconds(node)
                if value and value > 0:
                    return value, node.name
        expo = get("acq_parameters/acq_expo_time")
        if expo is not None:
            value = _read_seconds(expo)
            lat = get("acq_parameters/acq_latency_time")
            latency = _read_seconds(lat) if lat is not None else 0.0
            if value and value > 0:
                return value + (latency or 0.0), expo.name + (
                    " + latency" if lat is not None else ""
                )
        for path, extra in (
            ("acquisition/count_time", "acquisition/latency_time"),
            ("count_time", "dead_time"),
        ):
            node = get(path)
            if node is not None:
                value = _read_seconds(node)
                lat = get(extra)
                latency = _read_seconds(lat) if lat is not None else 0.0
                if value and value > 0:
                    return value + (latency or 0.0), node.name + (
                        " + latency" if lat is not None else ""
                    )
    return None, ""


def is_events_file(filename: str, path: Optional[str] = None) -> bool:
    """Whether ``filename`` (group ``path``, default ``events``) is an ewoksxpcs events file."""
    if _is_fabio_name(filename) or not os.path.isfile(filename):
        return False
    h5py = _import_hdf5()
    try:
        with h5py.File(filename, "r") as f:
            group = f.get(path or "events")
            return isinstance(group, h5py.Group) and "ewoksxpcs_events_format" in group.attrs
    except OSError:
        return False


# ------------------------------------------------------------------------------ frame ranges
def _frame_range(total: int, start: int, stop: Optional[int], step: int) -> range:
    for name, value in (("start", start), ("stop", stop), ("step", step)):
        if value is not None and not isinstance(value, (int, numpy.integer)):
            raise TypeError(f"frame {name} must be an integer, not {type(value).__name__}")
    if step < 1:
        raise ValueError(f"frame step must be >= 1, got {step}")
    if start < 0 or (stop is not None and stop < 0):
        raise ValueError(f"frame range [{start}:{stop}] must not be negative")
    if start >= total or (stop is not None and stop > total):
        raise ValueError(
            f"frame range [{start}:{stop}] is beyond the data: it has {total} frames "
            f"(valid indices 0 to {total - 1})"
        )
    if stop is not None and stop <= start:
        raise ValueError(f"frame range [{start}:{stop}] selects no frame (stop <= start)")
    return range(start, total if stop is None else stop, step)


def _range_from_slice(data_slice, start, stop, step):
    """Merge a URL ``slice=`` with explicit start/stop/step (only one of them may be given)."""
    if not data_slice:
        return start, stop, step
    if len(data_slice) != 1 or not isinstance(data_slice[0], slice):
        raise ValueError(
            f"URL slice {data_slice!r}: only a frame range 'start:stop:step' is supported"
        )
    if (start, stop, step) != (0, None, 1):
        raise ValueError(
            "give the frame range either in the URL ('slice=') or as start/stop/step, not both"
        )
    s = data_slice[0]
    return s.start or 0, s.stop, s.step or 1


class _IndexableSource(FrameSource):
    """Common frame-range logic: ``self._range`` of file frame indices, ``_read(indices)``."""

    _range: range

    def _read_range(self, sub: range) -> numpy.ndarray:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.n_frames

    def __getitem__(self, index):
        """Frame ``index`` (in the selected range), (Ny, Nx); used to sample frames."""
        if isinstance(index, (int, numpy.integer)):
            i = int(index)
            if i < 0:
                i += self.n_frames
            if not 0 <= i < self.n_frames:
                raise IndexError(f"frame {index} out of range ({self.n_frames} frames)")
            return self._read_range(self._range[i : i + 1])[0]
        if isinstance(index, slice):
            return self._read_range(self._range[index])
        raise TypeError("frames are indexed by an integer or a slice")

    def read_frames(self, indices: Sequence[int]) -> numpy.ndarray:
        """Frames at positions ``indices`` of the selected range, (n, Ny, Nx)."""
        if len(indices) == 0:
            return numpy.zeros((0,) + tuple(self.frame_shape), dtype=self.dtype)
        return numpy.stack([self[int(i)] for i in indices])


class HDF5FrameSource(_IndexableSource):
    """Frames of a 3-D HDF5 dataset, read chunk by chunk (pickles by file name and path).

    Parameters
    ----------
    filename : str
        HDF5 file.
    path : str
        Absolute path of the 3-D dataset (Nt, Ny, Nx) in the file.
    start, stop, step : int
        Frame range in the dataset (slice semantics, non-negative; ``stop`` None: to the end).
    frame_period : float, optional
        Seconds between the *loaded* frames; default: read from the file (module docstring)
        times ``step``.
    decode_threads : int
        Threads that read and decompress the stored chunks in :meth:`iter_chunks`, bypassing
        h5py, when the storage allows it (:meth:`chunk_layout`): 0 = one per CPU (at most 32),
        1 = read through h5py. The frames are identical either way.

    Attributes
    ----------
    frame_period_source : str
        Where the frame period came from ("given", a dataset path, or "" if unknown).
    hdf5_chunks : tuple or None
        The dataset's chunk shape; reads are aligned to it.
    decode_threads : int
        As the parameter; may be changed.
    """

    def __init__(
        self,
        filename: str,
        path: str,
        start: int = 0,
        stop: Optional[int] = None,
        step: int = 1,
        frame_period: Optional[float] = None,
        decode_threads: int = 0,
    ):
        h5py = _import_hdf5()
        self.decode_threads = int(decode_threads)
        if self.decode_threads < 0:
            raise ValueError(f"decode_threads must be >= 0, got {decode_threads}")
        self._chunk_layout = None
        self.filename = os.path.abspath(os.fspath(filename))
        _check_file(self.filename)
        with h5py.File(self.filename, "r") as f:
            if path not in f:
                raise ValueError(f"{self.filename!r} has no dataset {path!r}")
            dset = f[path]
            if not isinstance(dset, h5py.Dataset):
                raise ValueError(f"{self.filename}::{path} is a group, not a dataset")
            if dset.ndim != 3:
                raise ValueError(
                    f"{self.filename}::{path} is a {dset.ndim}-D dataset of shape {dset.shape}: "
                    "frames must be a 3-D dataset (n_frames, Ny, Nx)"
                )
            self.path = dset.name
            self.dtype = check_dtype(dset.dtype)
            self.frame_shape = tuple(int(n) for n in dset.shape[1:])
            self.total_frames = int(dset.shape[0])
            self.hdf5_chunks = dset.chunks
            file_period, source = read_frame_period(dset)
            self._range = _frame_range(
                self.total_frames, int(start), None if stop is None else int(stop), int(step)
            )
            if len(self._range):  # HDF5 would read a lost source file as zeros
                check_virtual_sources(dset, min(self._range), max(self._range) + 1)
        self.start, self.stop, self.step = self._range.start, self._range.stop, self._range.step
        self.n_frames = len(self._range)
        if frame_period is not None:
            frame_period = float(frame_period)
            if not frame_period > 0:
                raise ValueError(f"frame_period must be > 0 seconds, got {frame_period}")
            self.frame_period, self.frame_period_source = frame_period, "given"
        elif file_period is not None:
            self.frame_period = file_period * self.step
            self.frame_period_source = source
        else:
            self.frame_period, self.frame_period_source = None, ""

    def __repr__(self) -> str:
        return (
            f"HDF5FrameSource({self.filename}::{self.path}, frames {self.start}:{self.stop}:"
            f"{self.step}, shape={self.shape}, dtype={self.dtype})"
        )

    @property
    def url(self) -> str:
        return f"{self.filename}::{self.path}"

    def default_chunk_frames(self) -> int:
        """Frames per read: about 64 MiB, a whole number of HDF5 chunks when contiguous."""
        n = default_chunk_frames(self.frame_shape, self.dtype)
        c0 = self.hdf5_chunks[0] if self.hdf5_chunks else 1
        if self.step == 1 and c0 > 1:
            n = max(c0, (n // c0) * c0)
        return n

    def _read_range(self, sub: range) -> numpy.ndarray:
        h5py = _import_hdf5()
        with h5py.File(self.filename, "r") as f:
            return self._read_from(f[self.path], sub)

    @staticmethod
    def _read_from(dset, sub: range) -> numpy.ndarray:
        if len(sub) == 0:
            return numpy.zeros((0,) + dset.shape[1:], dtype=dset.dtype)
        if sub.step == 1:
            out = numpy.empty((len(sub),) + dset.shape[1:], dtype=dset.dtype)
            dset.read_direct(out, numpy.s_[sub.start : sub.stop])
            return out
        return dset[sub.start : sub.stop : sub.step]

    def _blocks(self, chunk_frames: int):
        """Sub-ranges of the selection; with step 1 their edges fall on HDF5 chunk edges."""
        r = self._range
        c0 = self.hdf5_chunks[0] if self.hdf5_chunks else 1
        if r.step == 1 and c0 > 1 and chunk_frames % c0 == 0:
            a = r.start
            while a < r.stop:
                b = min(r.stop, (a // chunk_frames + 1) * chunk_frames)
                yield range(a, b)
                a = b
        else:
            for i in range(0, len(r), chunk_frames):
                yield r[i : i + chunk_frames]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_chunk_layout"] = None  # rebuilt on demand: keeps pickles small
        return state

    def pixel_mask(self) -> Tuple[Optional[numpy.ndarray], str]:
        """The detector's pixel mask from the file (:func:`read_pixel_mask`)."""
        h5py = _import_hdf5()
        with h5py.File(self.filename, "r") as f:
            mask, where = read_pixel_mask(f[self.path])
        return mask, (f"{self.filename}::{where}" if where else "")

    def chunk_layout(self):
        """Where the stored chunks of the selected frames lie (cached).

        Returns
        -------
        (ChunkLayout or None, str)
            See :func:`ewoksxpcs.io.hdf5chunks.chunk_layout`: None and the reason when the frames
            cannot be read around h5py.
        """
        cached = getattr(self, "_chunk_layout", None)
        if cached is None or cached[2] != self._file_stamps(cached[0]):
            from .hdf5chunks import chunk_layout

            layout, reason = chunk_layout(
                self.filename, self.path, self.start, self.stop, self.step
            )
            self._chunk_layout = (layout, reason, self._file_stamps(layout))
        return self._chunk_layout[:2]

    def _file_stamps(self, layout) -> tuple:
        """Identity of the files a layout depends on: it is rebuilt when one changes."""
        stamps = []
        for name in (self.filename,) + (layout.files if layout is not None else ()):
            try:
                st = os.stat(name)
                stamps.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                stamps.append(None)
        return tuple(stamps)

    def iter_chunks(self, chunk_frames: Optional[int] = None):
        chunk_frames = positive_int(chunk_frames, "chunk_frames") or self.default_chunk_frames()
        layout = None
        if getattr(self, "decode_threads", 0) != 1:
            layout, _ = self.chunk_layout()
        if layout is not None:
            yield from self._iter_decoded(layout, chunk_frames)
            return
        h5py = _import_hdf5()
        t0 = 0
        with h5py.File(self.filename, "r") as f:
            dset = f[self.path]
            for sub in self._blocks(chunk_frames):
                chunk = self._read_from(dset, sub)
                yield validate_chunk(chunk, self.frame_shape, self.dtype, t0)
                t0 += chunk.shape[0]

    def read_frames(self, indices: Sequence[int]) -> numpy.ndarray:
        """Frames at positions ``indices`` of the selected range, (n, Ny, Nx): their stored
        chunks read at once (in parallel: scattered reads of a cold disk overlap) and
        decompressed by threads, as :meth:`iter_chunks` does; through h5py, one frame at a
        time, when the storage does not allow it. The frames are identical either way."""
        layout = None
        if len(indices) and getattr(self, "decode_threads", 0) != 1:
            layout, _ = self.chunk_layout()
        if layout is None:
            return super().read_frames(indices)
        from .hdf5chunks import decode_chunks_cpu, read_chunks

        idx = numpy.asarray(indices, dtype=numpy.int64).reshape(-1)
        if (idx < 0).any() or (idx >= self.n_frames).any():
            raise IndexError(f"frames {idx.tolist()} out of range ({self.n_frames} frames)")
        first = numpy.array([layout.chunk_range(int(i), int(i) + 1)[0] for i in idx])
        chunks, where = numpy.unique(first, return_inverse=True)
        sub = layout.take(chunks)
        threads = getattr(self, "decode_threads", 0)
        buf, offsets = read_chunks(sub, 0, sub.n_chunks, threads=threads)
        frames = decode_chunks_cpu(sub, buf, offsets, threads=threads)
        k = layout.frames_per_chunk
        pick = where.reshape(-1) * k + (idx - layout.first_frame[first])
        if numpy.array_equal(pick, numpy.arange(frames.shape[0])):
            return frames  # one frame per chunk, increasing indices: already in place
        return frames[pick]

    def _iter_decoded(self, layout, chunk_frames: int):
        """:meth:`iter_chunks` through raw chunk reads and threaded decompression; the next
        block is read and decoded while the current one is consumed."""
        from concurrent.futures import ThreadPoolExecutor

        from .hdf5chunks import decode_chunks_cpu, read_chunks

        threads = getattr(self, "decode_threads", 0)
        step, start = self.step, self.start

        def load(sub: range) -> numpy.ndarray:
            i0 = (sub.start - start) // step  # selection indices [i0, i1)
            i1 = i0 + len(sub)
            c0, c1 = layout.chunk_range(i0, i1)
            buf, offsets = read_chunks(layout, c0, c1 - c0, threads=threads)
            frames = decode_chunks_cpu(layout, buf, offsets, threads=threads, first=c0)
            skip = i0 - int(layout.first_frame[c0])
            return frames[skip : skip + len(sub)]

        blocks = list(self._blocks(chunk_frames))
        t0 = 0
        with ThreadPoolExecutor(1, thread_name_prefix="ewoksxpcs-prefetch") as ahead:
            future = ahead.submit(load, blocks[0]) if blocks else None
            for j in range(len(blocks)):
                chunk = future.result()
                future = ahead.submit(load, blocks[j + 1]) if j + 1 < len(blocks) else None
                yield validate_chunk(chunk, self.frame_shape, self.dtype, t0)
                t0 += chunk.shape[0]


# ------------------------------------------------------------------------------ fabio series
_CBF_PERIOD = re.compile(r"Exposure_period\s+([0-9.eE+-]+)\s*s")
_HEADER_PERIOD_KEYS = ("frame_period", "acq_frame_period")


def _fabio_header_period(image) -> Optional[float]:
    header = getattr(image, "header", {}) or {}
    for key in _HEADER_PERIOD_KEYS:
        if key in header:
            try:
                return float(str(header[key]).split()[0])
            except ValueError:
                pass
    if "acq_expo_time" in header:
        try:
            value = float(str(header["acq_expo_time"]).split()[0])
            latency = float(str(header.get("acq_latency_time", "0")).split()[0])
            return value + latency
        except ValueError:
            pass
    for value in header.values():
        m = _CBF_PERIOD.search(str(value))
        if m:
            return float(m.group(1))
    return None


class FabioFrameSource(_IndexableSource):
    """Frames of a series of image files read through fabio (EDF, CBF, TIFF...).

    Parameters
    ----------
    filenames : str or sequence of str
        Files in frame order, or one glob pattern (sorted). A file may hold several frames.
    start, stop, step : int
        Frame range over the whole series.
    frame_period : float, optional
        Seconds between loaded frames; default: from the first header (``frame_period``,
        ``acq_expo_time`` + ``acq_latency_time``, CBF ``Exposure_period``) times ``step``.
    """

    def __init__(
        self,
        filenames,
        start: int = 0,
        stop: Optional[int] = None,
        step: int = 1,
        frame_period: Optional[float] = None,
    ):
        import fabio

        if isinstance(filenames, (str, os.PathLike)):
            pattern = os.fspath(filenames)
            names = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
            if not names:
                raise FileNotFoundError(f"no file matches {pattern!r}")
        else:
            names = [os.fspath(n) for n in filenames]
        if not names:
            raise ValueError("no image file given")
        for name in names:
            _check_file(name)
        self.filenames = [os.path.abspath(n) for n in names]
        index = []  # (file number, frame in file) of every frame of the series
        first = None
        for i, name in enumerate(self.filenames):
            with fabio.open(name) as img:
                if first is None:
                    first = (img.data.shape, img.data.dtype, _fabio_header_period(img))
                index.extend((i, k) for k in range(max(1, img.nframes)))
        shape, dtype, file_period = first
        if len(shape) != 2:
            raise ValueError(f"{self.filenames[0]!r}: images must be 2-D, got shape {shape}")
        self.frame_shape = tuple(int(n) for n in shape)
        self.dtype = check_dtype(dtype)
        self._index = numpy.asarray(index, dtype=numpy.int64).reshape(-1, 2)
        self.total_frames = len(index)
        self._range = _frame_range(
            self.total_frames, int(start), None if stop is None else int(stop), int(step)
        )
        self.n_frames = len(self._range)
        self.step = self._range.step
        if frame_period is not None:
            self.frame_period, self.frame_period_source = float(frame_period), "given"
        elif file_period:
            self.frame_period = file_period * self.step
            self.frame_period_source = f"{self.filenames[0]} header"
        else:
            self.frame_period, self.frame_period_source = None, ""

    def __repr__(self) -> str:
        return (
            f"FabioFrameSource({len(self.filenames)} files, shape={self.shape}, dtype={self.dtype})"
        )

    @property
    def url(self) -> str:
        return (
            self.filenames[0]
            if len(self.filenames) == 1
            else f"{self.filenames[0]} (+{len(self.filenames) - 1} files)"
        )

    def _read_range(self, sub: range) -> numpy.ndarray:
        import fabio

        out = numpy.empty((len(sub),) + self.frame_shape, dtype=self.dtype)
        opened = {}
        try:
            for j, t in enumerate(sub):
                f, k = (int(v) for v in self._index[t])
                if f not in opened:
                    for img in opened.values():
                        img.close()
                    opened = {f: fabio.open(self.filenames[f])}
                img = opened[f]
                frame = img.data if k == 0 else img.getframe(k).data
                if frame.shape != self.frame_shape:
                    raise ValueError(
                        f"{self.filenames[f]!r} frame {k} has shape {frame.shape}, expected {self.frame_shape}"
                    )
                out[j] = frame
        finally:
            for img in opened.values():
                img.close()
        return out

    def iter_chunks(self, chunk_frames: Optional[int] = None):
        chunk_frames = positive_int(chunk_frames, "chunk_frames") or self.default_chunk_frames()
        t0 = 0
        for i in range(0, self.n_frames, chunk_frames):
            chunk = self._read_range(self._range[i : i + chunk_frames])
            yield validate_chunk(chunk, self.frame_shape, self.dtype, t0)
            t0 += chunk.shape[0]


# ------------------------------------------------------------------------------ events
class EventFrameSource(_IndexableSource):
    """Dense frames rebuilt from an :class:`~ewoksxpcs.engine.events.EventStack`, chunk by chunk.

    Lets a dense correlator run on events (each chunk is rebuilt from the events of its frames).

    Parameters
    ----------
    events : EventStack
    frame_period : float, optional
        Seconds between frames.
    """

    def __init__(self, events, frame_period: Optional[float] = None):
        self.events = events
        self.frame_shape = tuple(events.frame_shape)
        self.dtype = check_dtype(events.dtype)
        self.n_frames = int(events.n_frames)
        self._range = range(self.n_frames)
        self.frame_period = frame_period

    def _read_range(self, sub: range) -> numpy.ndarray:
        """Frames ``sub`` rebuilt by a scan of the events, pixel block by pixel block."""
        from ..engine.events import pixel_blocks

        ny, nx = self.frame_shape
        out = numpy.zeros((len(sub), ny * nx), dtype=self.dtype)
        ev = self.events
        if len(sub) == 0 or ev.n_events == 0:
            return out.reshape((len(sub), ny, nx))
        for p0, p1 in pixel_blocks(ev.offsets):
            e0, e1 = int(ev.offsets[p0]), int(ev.offsets[p1])
            t = ev.times[e0:e1].astype(numpy.int64)
            sel = numpy.flatnonzero((t >= sub.start) & (t < sub.stop)
                                    & ((t - sub.start) % sub.step == 0))
            pix = numpy.repeat(ev.pixel_index[p0:p1], numpy.diff(ev.offsets[p0 : p1 + 1]))
            out[(t[sel] - sub.start) // sub.step, pix[sel]] = ev.values[e0:e1][sel]
        return out.reshape((len(sub), ny, nx))

    def iter_chunks(self, chunk_frames: Optional[int] = None):
        """Consecutive chunks; each pixel's next event is tracked by a cursor (no frame-major
        copy of the events: memory bounded by the chunk and the pixel count)."""
        chunk_frames = positive_int(chunk_frames, "chunk_frames") or self.default_chunk_frames()
        ev = self.events
        ny, nx = self.frame_shape
        cursor = ev.offsets[:-1].copy()
        end = ev.offsets[1:]
        for t0 in range(0, self.n_frames, chunk_frames):
            t1 = min(t0 + chunk_frames, self.n_frames)
            out = numpy.zeros((t1 - t0, ny * nx), dtype=self.dtype)
            active = numpy.flatnonzero(cursor < end)
            while active.size:  # one event per pixel and pass: times ascend within a pixel
                c = cursor[active]
                t = ev.times[c].astype(numpy.int64)
                now = t < t1
                active, c, t = active[now], c[now], t[now]
                out[t - t0, ev.pixel_index[active]] = ev.values[c]
                cursor[active] += 1
                active = active[cursor[active] < end[active]]
            yield out.reshape((t1 - t0, ny, nx))


# ------------------------------------------------------------------------------ entry points
def load_frames(
    source,
    start: int = 0,
    stop: Optional[int] = None,
    step: int = 1,
    frame_period: Optional[float] = None,
    detector: Optional[str] = None,
    events_path: str = "events",
):
    """Open frames lazily from a URL, a file name, a NumPy array or a frame source.

    Parameters
    ----------
    source : str, os.PathLike, ndarray (Nt, Ny, Nx), FrameSource or EventStack
        ``file.h5::/path``, a silx DataUrl, an HDF5 file, an EDF/CBF file or glob pattern, an
        ewoksxpcs events file, an HDF5 file of sparse frames (read as events, see
        :mod:`ewoksxpcs.io.sparse`), or in-memory frames.
    start, stop, step : int
        Frame range (slice semantics, non-negative). Not supported for events.
    frame_period : float, optional
        Seconds between the loaded frames (default: from the file, times ``step``).
    detector : str, optional
        Detector name, to pick a dataset in a Bliss scan holding several.
    events_path : str
        Group of an events file.

    Returns
    -------
    FrameSource or EventStack
        ``.frame_shape`` (Ny, Nx), ``.dtype``, ``.n_frames``, ``.frame_period`` (s or None).

    Raises
    ------
    FileNotFoundError
        Missing file.
    ValueError
        Wrong dataset path, not 3-D, frame range beyond the data, ambiguous scan.
    TypeError
        Unsupported pixel type or source type.
    """
    from ..engine.events import EventStack
    from ..engine.frames import ArrayFrameSource

    if frame_period is not None:
        frame_period = float(frame_period)
        if not frame_period > 0:
            raise ValueError(f"frame_period must be > 0 seconds, got {frame_period}")
    if isinstance(source, (EventStack, FrameSource)):
        if (start, stop, step) != (0, None, 1):
            what = "an EventStack" if isinstance(source, EventStack) else "an existing FrameSource"
            raise ValueError(f"a frame range cannot be applied to {what}")
        if frame_period is not None:
            source.frame_period = frame_period
        return source
    if isinstance(source, (str, os.PathLike)):
        filename, data_path, data_slice = parse_url(source)
        start, stop, step = _range_from_slice(data_slice, start, stop, step)
        if _is_fabio_name(filename) or glob.has_magic(filename):
            if data_path:
                raise ValueError(f"{filename!r}: a data path is only valid for HDF5 files")
            return FabioFrameSource(filename, start, stop, step, frame_period)
        _check_file(filename)
        if is_events_file(filename, data_path or events_path):
            if (start, stop, step) != (0, None, 1):
                raise ValueError(f"{filename!r} is an events file: a frame range cannot be applied")
            return load_events_file(filename, data_path or events_path, frame_period)
        h5py = _import_hdf5()
        try:
            f = h5py.File(filename, "r")
        except OSError as e:
            raise ValueError(f"cannot read {filename!r} as HDF5: {e}") from None
        with f:
            path = data_path or "/"
            if path not in f:
                raise ValueError(f"{filename!r} has no dataset or group {path!r}")
            try:
                dset = find_frames_dataset(f[path], detector)
            except ValueError:
                from .sparse import find_sparse_group

                sparse = find_sparse_group(f[path], detector)
                if sparse is None:
                    raise
                dset, path = None, sparse.name
            else:
                path = dset.name
        if dset is None:  # sparse frames (ESRF Lima/pyFAI): straight to events
            from .sparse import read_sparse_events

            if step != 1:
                raise ValueError(f"{filename}::{path} holds sparse frames: a frame step "
                                 "cannot be applied")
            return read_sparse_events(filename, path, start=start, stop=stop,
                                      frame_period=frame_period)
        return HDF5FrameSource(filename, path, start, stop, step, frame_period)
    if hasattr(source, "shape") and hasattr(source, "dtype"):
        if len(source.shape) != 3:
            raise ValueError(
                f"frames must be 3-D (n_frames, Ny, Nx); got shape {tuple(source.shape)}"
            )
        _frame_range(int(source.shape[0]), int(start), stop, int(step))
        return ArrayFrameSource(source, start, stop, step, frame_period=frame_period)
    if source is None:
        raise TypeError("no frames given: expected a URL, a file name or a 3-D array")
    return as_frame_source(source, frame_period=frame_period)


def load_events_file(filename: str, path: str = "events", frame_period: Optional[float] = None):
    """Read an events file (see :meth:`EventStack.save`), with its frame period when stored.

    The returned EventStack has a ``frame_period`` attribute (s, or None) and ``filename``.
    """
    from ..engine.events import EventStack

    h5py = _import_hdf5()
    _check_file(filename)
    events = EventStack.load(filename, path)
    stored = None
    with h5py.File(filename, "r") as f:
        g = f[path]
        if "frame_period" in g.attrs:
            stored = float(g.attrs["frame_period"])
    events.frame_period = frame_period if frame_period is not None else stored
    events.filename = os.path.abspath(filename)
    return events


def read_image(source, name: str = "image", dtype=None) -> numpy.ndarray:
    """Read a 2-D image (label image, mask) from an array, a ``.npy``/EDF/TIFF file or an HDF5 URL.

    Parameters
    ----------
    source : array_like (Ny, Nx), str or os.PathLike
    name : str
        What the image is, for error messages.

    Raises
    ------
    FileNotFoundError, ValueError
        Missing file, wrong path, not 2-D.
    """
    if isinstance(source, (str, os.PathLike)):
        filename, data_path, data_slice = parse_url(source)
        _check_file(filename)
        if filename.endswith(".npy"):
            image = numpy.load(filename)
        elif _is_fabio_name(filename):
            import fabio

            with fabio.open(filename) as img:
                image = numpy.asarray(img.data)
        else:
            h5py = _import_hdf5()
            try:
                f = h5py.File(filename, "r")
            except OSError as e:
                raise ValueError(f"cannot read {name} file {filename!r}: {e}") from None
            with f:
                if not data_path:
                    raise ValueError(
                        f"{name}: give the dataset path, e.g. '{filename}::/path/to/{name}'"
                    )
                if data_path not in f or not isinstance(f[data_path], h5py.Dataset):
                    raise ValueError(f"{name}: {filename!r} has no dataset {data_path!r}")
                dset = f[data_path]
                if not data_slice and dset.ndim != 2:  # checked before reading a stack
                    raise ValueError(f"{name} must be a 2-D image (Ny, Nx); got shape {dset.shape}")
                image = dset[data_slice] if data_slice else dset[()]
    elif source is None:
        raise TypeError(f"no {name} given")
    else:
        image = numpy.asarray(source)
    if image.ndim != 2:
        raise ValueError(f"{name} must be a 2-D image (Ny, Nx); got shape {image.shape}")
    return image if dtype is None else image.astype(dtype)
