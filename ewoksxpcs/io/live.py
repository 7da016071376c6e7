"""Frame sources of a scan still being acquired: a growing HDF5 file, or a Bliss scan in Redis.

Both are :class:`~ewoksxpcs.engine.frames.FrameSource` objects, read once: :meth:`iter_chunks`
yields the frames as they appear and returns when the scan has ended. ``n_frames`` is None until
then, and afterwards the number of frames read. When the scan ended before all its frames came
(writer gone silent for ``quiet_timeout`` seconds, or fewer frames than announced), the source
logs a warning, ``ended_early`` holds its message ("scan ended early at frame N: ...") and the
frames read so far stand as the data.

- :class:`GrowingHDF5Source`: a 3-D dataset still being written (HDF5 SWMR, or a plain writer
  with file locking off, as Bliss and Lima run), or Lima data files appearing one after another
  (``files`` glob pattern). The scan has ended when its entry holds ``end_time`` (Bliss writes it
  at the end of a scan), or after ``quiet_timeout`` seconds without a new frame.
  When the dataset is chunked one frame per chunk, bitshuffle-LZ4 or unfiltered (Eiger,
  Lima), :meth:`~GrowingHDF5Source.iter_raw_chunks` yields the stored chunks as they are
  (:class:`RawChunks`: bytes read around HDF5 by :func:`~ewoksxpcs.io.hdf5chunks.read_chunks`)
  for a consumer that decodes them itself (an OpenCL device), instead of frames decoded by h5py
  on the host.
- :class:`BlissScanSource`: a scan published by Bliss in its Redis data store, read through
  ``blissdata`` (>= 2.4): the scan is loaded by key, the source waits for it to start and reads
  the image stream's slices as they are published; frames no longer in Redis memory
  (``IndexNoMoreThereError``) are read from the HDF5/Lima file (``fallback``, or the stream's own
  ``file_path``/``data_path``). The scan has ended when the stream is sealed.
"""

from __future__ import annotations

import glob
import logging
import os
import time
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple, Union

import numpy

from ..engine.frames import FrameSource, check_dtype, validate_chunk
from .hdf5chunks import ChunkLayout
from .load import _import_hdf5, find_frames_dataset, parse_url, read_frame_period

__all__ = ["LiveSource", "GrowingHDF5Source", "BlissScanSource", "RawChunks", "LIMA_DATA_PATH",
           "open_hdf5", "open_live_source"]

logger = logging.getLogger(__name__)

#: Where Lima's HDF5 data files keep their frames.
LIMA_DATA_PATH = "/entry_0000/measurement/data"


def open_hdf5(filename: str):
    """Open an HDF5 file another process is writing: SWMR reader if it can, else without
    file locking (Bliss and Lima write with locking off). Raises OSError if neither works."""
    h5py = _import_hdf5()
    try:
        return h5py.File(filename, "r", swmr=True, locking=False)
    except OSError:
        return h5py.File(filename, "r", locking=False)


@dataclass(frozen=True, eq=False)
class RawChunks:
    """Stored chunks of consecutive frames, one frame per chunk, not decoded.

    Attributes
    ----------
    layout : ChunkLayout
        Codec (``"bslz4"`` or ``"none"``), dtype, frame shape, bitshuffle block size of the
        chunks (:class:`~ewoksxpcs.io.hdf5chunks.ChunkLayout`, ``frames_per_chunk`` 1).
    data : numpy.ndarray
        (nbytes,) uint8, the chunks back to back.
    offsets : numpy.ndarray
        (n_frames + 1,) int64: frame ``i`` is ``data[offsets[i]:offsets[i + 1]]``.
    """

    layout: ChunkLayout
    data: numpy.ndarray
    offsets: numpy.ndarray

    @property
    def n_frames(self) -> int:
        return int(self.offsets.size - 1)

    @property
    def codec(self) -> str:
        return self.layout.codec

    def split(self, most: int) -> Iterator["RawChunks"]:
        """The same chunks in pieces of at most ``most`` frames (views of ``data``)."""
        import dataclasses

        most = max(1, int(most))
        if self.n_frames <= most:
            yield self
            return
        lay = self.layout
        for a in range(0, self.n_frames, most):
            b = min(self.n_frames, a + most)
            layout = dataclasses.replace(
                lay, file_index=lay.file_index[a:b], offsets=lay.offsets[a:b],
                sizes=lay.sizes[a:b], first_frame=lay.first_frame[a:b] - lay.first_frame[a],
                n_frames=b - a)
            lo, hi = int(self.offsets[a]), int(self.offsets[b])
            yield RawChunks(layout, self.data[lo:hi], self.offsets[a:b + 1] - lo)

    def decode(self, threads: int = 0) -> numpy.ndarray:
        """The frames, (n_frames, Ny, Nx) of the layout's dtype, decoded on the host (the same
        bits as h5py + hdf5plugin)."""
        layout = self.layout
        if layout.codec == "none":
            shape = (self.n_frames,) + tuple(layout.frame_shape)
            return self.data[: int(self.offsets[-1])].view(layout.dtype).reshape(shape).copy()
        from .hdf5chunks import decode_chunks_cpu

        return decode_chunks_cpu(layout, self.data, self.offsets, threads=threads)


class LiveSource(FrameSource):
    """Common part of the live sources: read once, end-of-scan bookkeeping.

    Attributes
    ----------
    frames_read : int
        Frames yielded so far.
    expected_frames : int or None
        Frames the scan announced, when known.
    ended_early : str
        "" after a complete scan, else the message "scan ended early at frame N: <why>".
    """

    reiterable = False
    n_frames = None

    def __init__(self, quiet_timeout: float, poll: float, chunk_frames: Optional[int]):
        if not quiet_timeout > 0:
            raise ValueError(f"quiet_timeout must be > 0 seconds, got {quiet_timeout}")
        self.quiet_timeout = float(quiet_timeout)
        self.poll = float(poll)
        self.chunk_frames = chunk_frames
        self.frames_read = 0
        self.expected_frames: Optional[int] = None
        self.ended_early = ""
        self._consumed = False

    def _start(self):
        if self._consumed:
            raise RuntimeError("a live frame source is read once; it was already read")
        self._consumed = True

    def _chunk(self, frames, t0) -> numpy.ndarray:
        chunk = validate_chunk(frames, self.frame_shape, self.dtype, t0)
        self.frames_read += chunk.shape[0]
        return chunk

    def _split(self, frames: numpy.ndarray, chunk_frames: Optional[int]) -> Iterator[numpy.ndarray]:
        step = int(chunk_frames or self.chunk_frames or self.default_chunk_frames())
        for i in range(0, frames.shape[0], step):
            yield self._chunk(frames[i : i + step], self.frames_read)

    def _finish(self, why: str = "") -> None:
        """Record the end of the scan; ``why`` non-empty: it ended early for that reason."""
        n = self.frames_read
        self.n_frames = n
        if not why and self.expected_frames is not None and n < self.expected_frames:
            why = f"{n} of the {self.expected_frames} frames announced"
        if why:
            self.ended_early = f"scan ended early at frame {n}: {why}"
            logger.warning("%s", self.ended_early)


# ------------------------------------------------------------------------------ growing HDF5
class GrowingHDF5Source(LiveSource):
    """Frames of an HDF5 dataset (or series of Lima files) still being written, as they come.

    Parameters
    ----------
    url : str
        ``file.h5::/path`` of the frames dataset or of the Bliss scan entry holding it (as for
        :func:`~ewoksxpcs.io.load.load_frames`); with ``files``: the Bliss master file and scan
        entry to watch for ``end_time`` (``file.h5::/1.1``), or None.
    files : str, optional
        Glob pattern of Lima data files (``scan0001/eiger_*.h5``), read in sorted order, each
        from ``data_path``. A file is read to its end once the next one appears.
    data_path : str
        Dataset of the frames in each of ``files``.
    entry : str, optional
        Group whose ``end_time`` marks the end of the scan (default: the first component of the
        data path, ``/1.1``).
    detector : str, optional
        Detector name, to pick a dataset in a Bliss scan holding several.
    expected_frames : int, optional
        Frames of the complete scan; fewer at the end: ended early.
    quiet_timeout : float
        Seconds without a new frame after which the scan counts as ended (early).
    wait_timeout : float
        Seconds to wait for the dataset (or the first file) to appear.
    poll : float
        Seconds between looks at the file.
    frame_period : float, optional
        Seconds between frames (default: read from the file, as for the offline readers).
    chunk_frames : int, optional
        Most frames per chunk yielded.
    read_in_process : bool
        Whether a live run reads the stored chunks (:meth:`iter_raw_chunks`) in a process of
        its own (:func:`ewoksxpcs.io.reader_process.raw_chunks`; default).
    """

    def __init__(self, url=None, files: Optional[str] = None, data_path: str = LIMA_DATA_PATH,
                 entry: Optional[str] = None, detector: Optional[str] = None,
                 expected_frames: Optional[int] = None, quiet_timeout: float = 30.0,
                 wait_timeout: float = 60.0, poll: float = 0.05,
                 frame_period: Optional[float] = None, chunk_frames: Optional[int] = None,
                 read_in_process: bool = True):
        super().__init__(quiet_timeout, poll, chunk_frames)
        self.read_in_process = bool(read_in_process)
        self._chunk_index = (None, None)  # (file, frame_chunk_index of its frames dataset)
        if url is None and files is None:
            raise ValueError("give the URL of the frames (file.h5::/path) or a Lima files pattern")
        self.master, master_path = (None, None)
        if url is not None:
            self.master, master_path, _ = parse_url(os.fspath(url))
            self.master = os.path.abspath(self.master)
        self.files = None if files is None else os.path.abspath(os.fspath(files))
        self.data_path = data_path
        self.expected_frames = expected_frames
        deadline = time.monotonic() + float(wait_timeout)
        while True:
            try:
                first, path, shape, dtype, period = self._describe(master_path, detector)
                break
            except (OSError, KeyError, ValueError) as e:
                if time.monotonic() > deadline:
                    raise ValueError(
                        f"no frames to follow after {wait_timeout:g} s: {e}") from None
                time.sleep(self.poll)
        self.path = path
        self.frame_shape = shape
        self.dtype = check_dtype(dtype)
        self.frame_period = float(frame_period) if frame_period is not None else period
        if entry is None and master_path and self.master is not None:
            parts = (path if self.files is None else master_path).strip("/").split("/")
            entry = "/" + parts[0] if parts and parts[0] else None
        self.entry = entry

    def __repr__(self) -> str:
        return f"GrowingHDF5Source({self.url!r}, frame_shape={self.frame_shape}, dtype={self.dtype})"

    @property
    def url(self) -> str:
        return self.files if self.files else f"{self.master}::{self.path}"

    def _describe(self, master_path, detector):
        """(first file, dataset path, frame shape, dtype, period) once the data exist."""
        if self.files is not None:
            names = sorted(glob.glob(self.files))
            if not names:
                raise ValueError(f"no file matches {self.files!r} yet")
            filename, path = names[0], self.data_path
        else:
            filename, path = self.master, master_path or "/"
        with open_hdf5(filename) as f:
            if path not in f:
                raise KeyError(f"{filename!r} has no {path!r} yet")
            dset = find_frames_dataset(f[path], detector)
            period, _ = read_frame_period(dset)
            return filename, dset.name, tuple(int(n) for n in dset.shape[1:]), dset.dtype, period

    def _segments(self) -> List[str]:
        return sorted(glob.glob(self.files)) if self.files else [self.master]

    def _ended(self) -> bool:
        """Whether the scan entry holds ``end_time`` (Bliss writes it when the scan ends)."""
        if not self.entry or self.master is None:
            return False
        try:
            with open_hdf5(self.master) as f:
                group = f.get(self.entry)
                return group is not None and "end_time" in group
        except OSError:
            return False

    def _read(self, filename: str, start: int, most: int) -> Optional[numpy.ndarray]:
        """Frames ``start`` … (at most ``most``) of the dataset in ``filename`` (None: none
        readable now)."""
        try:
            with open_hdf5(filename) as f:
                dset = f.get(self.path)
                if dset is None or dset.shape[0] <= start:
                    return None
                return dset[start : start + most]
        except OSError:
            return None  # being written: look again at the next poll

    def _read_raw(self, filename: str, start: int, most: int):
        """Frames ``start`` … (at most ``most``) of the dataset in ``filename`` as
        :class:`RawChunks` (their stored bytes); decoded frames (an ndarray) where the chunks
        cannot be read raw (another codec, a chunk stored without its filter); None: none
        readable now."""
        from .hdf5chunks import (LOOKUP_OVER_VISIT, frame_chunk_index, frame_chunks_codec,
                                 read_chunks, stored_frame_chunks)

        try:
            with open_hdf5(filename) as f:
                dset = f.get(self.path)
                if dset is None or dset.shape[0] <= start:
                    return None
                n = int(dset.shape[0])
                stop = min(n, start + most)
                codec, _ = frame_chunks_codec(dset)
                if codec is None or dset.chunks[0] != 1:
                    return dset[start:stop]
                # The frames written since the last pass over the chunk index: one lookup
                # each, or a new pass when that is cheaper (a reader behind its writer
                # catches up with one pass instead of a lookup per frame).
                indexed, index = self._chunk_index
                known = index.shape[0] if indexed == filename and index is not None else 0
                if (n - max(start, known)) * LOOKUP_OVER_VISIT > n:
                    index = frame_chunk_index(dset)
                    self._chunk_index = (filename, index)  # earlier files are complete
                elif indexed != filename:
                    index = None
                layout, unfiltered = stored_frame_chunks(dset, start, stop, index)
                if layout is None:
                    return dset[start:start + 1] if unfiltered else None
        except OSError:
            return None  # being written: look again at the next poll
        data, offsets = read_chunks(layout, 0, layout.n_chunks)
        return RawChunks(layout, data, offsets)

    def raw_codec(self) -> Tuple[Optional[str], str]:
        """``(codec, "")`` when the frames' dataset (the first file's) is chunked one frame per
        chunk with a codec :meth:`iter_raw_chunks` hands on raw (``"bslz4"``, ``"none"``),
        else ``(None, reason)``."""
        from .hdf5chunks import frame_chunks_codec

        filename = self._segments()[0] if self.files else self.master
        try:
            with open_hdf5(filename) as f:
                dset = f[self.path]
                codec, why = frame_chunks_codec(dset)
                if codec is not None and dset.chunks[0] != 1:
                    codec, why = None, f"{dset.chunks[0]} frames per chunk"
                return codec, why
        except (OSError, KeyError, IndexError) as e:
            return None, str(e)

    def iter_chunks(self, chunk_frames: Optional[int] = None):
        return self._follow(self._read, chunk_frames)

    def iter_raw_chunks(self, chunk_frames: Optional[int] = None
                        ) -> Iterator[Union[RawChunks, numpy.ndarray]]:
        """As :meth:`iter_chunks`, but the frames come as their stored chunks
        (:class:`RawChunks`), not decoded; frames whose chunks cannot be read raw come decoded
        (an ndarray), as from :meth:`iter_chunks`. In this process; a live run reads them
        through :func:`ewoksxpcs.io.reader_process.raw_chunks` (a process of its own when
        :attr:`read_in_process`)."""
        return self._follow(self._read_raw, chunk_frames)

    def _raw_or_chunk(self, item):
        if isinstance(item, RawChunks):
            layout = item.layout
            if layout.frame_shape != tuple(self.frame_shape) or layout.dtype != self.dtype:
                raise ValueError(f"{self.url}: chunks of {layout.frame_shape} "
                                 f"{layout.dtype} frames, expected {self.frame_shape} "
                                 f"{self.dtype}")
            self.frames_read += item.n_frames
            return item
        return self._chunk(item, self.frames_read)

    def _follow(self, read, chunk_frames: Optional[int]):
        self._start()
        segment, done = 0, 0  # current file, frames read from it
        last_new = time.monotonic()
        while True:
            ended = self._ended()  # before reading: what it announces is then all read
            names = self._segments()
            progressed = False
            most = int(chunk_frames or self.chunk_frames or self.default_chunk_frames())
            while segment < len(names):
                # A reader behind its writer catches up chunk by chunk, never reading it all.
                frames = read(names[segment], done, most)
                n = 0 if frames is None else (frames.n_frames if isinstance(frames, RawChunks)
                                              else frames.shape[0])
                if n:
                    done += n
                    progressed = True
                    yield self._raw_or_chunk(frames)
                    continue
                if segment + 1 < len(names):
                    segment, done = segment + 1, 0  # the next file exists: this one is complete
                else:
                    break
            now = time.monotonic()
            if progressed:
                last_new = now
            elif ended:
                self._finish()
                return
            elif now - last_new > self.quiet_timeout:
                self._finish(f"no new frame for {self.quiet_timeout:g} s and no end_time in "
                             f"{self.master}::{self.entry}")
                return
            else:
                time.sleep(self.poll)


# ------------------------------------------------------------------------------ blissdata
class BlissScanSource(LiveSource):
    """Frames of a Bliss scan read from its Redis data store as they are published (blissdata).

    Parameters
    ----------
    redis_url : str
        The data store, ``redis://host:port``.
    scan_key : str
        Key of the scan (``esrf:scan:...``).
    stream : str, optional
        Name of the image stream (default: the scan's only stream of 2-D points).
    fallback : str, optional
        ``file.h5::/path`` of the frames on disk, for frames no longer in Redis memory
        (default: the stream's ``file_path``/``data_path`` when it has them).
    quiet_timeout : float
        Seconds without a new frame after which the scan counts as ended (early).
    wait_timeout : float
        Seconds to wait for the scan to start.
    frame_period : float, optional
        Seconds between frames (default: the scan's ``frame_period`` or ``count_time`` info).
    chunk_frames : int, optional
        Most frames per chunk yielded.
    """

    def __init__(self, redis_url: str, scan_key: str, stream: Optional[str] = None,
                 fallback: Optional[str] = None, quiet_timeout: float = 30.0,
                 wait_timeout: float = 60.0, poll: float = 0.2,
                 frame_period: Optional[float] = None, chunk_frames: Optional[int] = None):
        super().__init__(quiet_timeout, poll, chunk_frames)
        if not self.poll > 0:
            raise ValueError(f"poll must be > 0 seconds, got {poll}")
        try:
            from blissdata.redis_engine.scan import ScanState
            from blissdata.redis_engine.store import DataStore
        except ImportError:
            raise ImportError("reading Bliss scans from Redis needs blissdata: "
                              "pip install 'ewoksxpcs[live]'") from None
        self.redis_url, self.scan_key = redis_url, scan_key
        self._store = DataStore(redis_url)
        self.scan = self._store.load_scan(scan_key)
        deadline = time.monotonic() + float(wait_timeout)
        while self.scan.state < ScanState.STARTED:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"scan {scan_key} did not start within {wait_timeout:g} s "
                                   f"(state {self.scan.state.name})")
            self.scan.update(timeout=min(left, 1.0))
        self.stream = self._pick_stream(stream)
        self.frame_shape = tuple(int(n) for n in self.stream.shape)
        self.dtype = check_dtype(self.stream.dtype)
        info = self.scan.info or {}
        npoints = info.get("npoints")
        self.expected_frames = int(npoints) if npoints else None
        if frame_period is None:
            frame_period = info.get("frame_period") or info.get("count_time")
        self.frame_period = None if frame_period is None else float(frame_period)
        self.fallback = self._fallback_url(fallback)
        #: Frames read from the fallback file (no longer in Redis memory).
        self.frames_from_file = 0

    def __repr__(self) -> str:
        return (f"BlissScanSource({self.scan_key!r}, stream={self.stream.name!r}, "
                f"frame_shape={self.frame_shape}, dtype={self.dtype})")

    @property
    def url(self) -> str:
        return f"{self.redis_url}/{self.scan_key}/{self.stream.name}"

    def _pick_stream(self, name: Optional[str]):
        streams = self.scan.streams
        if name is not None:
            if name not in streams:
                raise ValueError(f"scan {self.scan_key} has no stream {name!r}; streams: "
                                 f"{sorted(streams)}")
            stream = streams[name]
        else:
            images = [s for s in streams.values() if len(getattr(s, "shape", ()) or ()) == 2]
            if len(images) != 1:
                raise ValueError(f"scan {self.scan_key} has {len(images)} image streams "
                                 f"{sorted(s.name for s in images)}: choose one with 'stream'")
            stream = images[0]
        if len(stream.shape) != 2:
            raise ValueError(f"stream {stream.name!r} holds points of shape {stream.shape}, "
                             "not 2-D images")
        return stream

    def _fallback_url(self, fallback) -> Optional[Tuple[str, str]]:
        if fallback is not None:
            filename, path, _ = parse_url(fallback)
            return filename, path or LIMA_DATA_PATH
        info = self.stream.info or {}
        if info.get("file_path") and info.get("data_path"):
            return info["file_path"], info["data_path"]
        return None

    def _from_file(self, start: int, stop: int) -> numpy.ndarray:
        """Frames [start, stop) from the fallback file, waiting for its writer to get there."""
        if self.fallback is None:
            raise RuntimeError(
                f"frames {start}-{stop - 1} of {self.url} are no longer in Redis memory and no "
                "fallback file is known (give fallback='file.h5::/path')")
        filename, path = self.fallback
        deadline = time.monotonic() + self.quiet_timeout
        while True:
            try:
                with open_hdf5(filename) as f:
                    dset = f[path]
                    if dset.shape[0] >= stop:
                        return dset[start:stop]
            except (OSError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"frames {start}-{stop - 1} of {self.url} are neither in "
                                   f"Redis memory nor in {filename}::{path}")
            time.sleep(self.poll)

    def _view_frames(self, view) -> numpy.ndarray:
        from blissdata.exceptions import IndexNoMoreThereError

        try:
            return numpy.asarray(view.get_data())
        except IndexNoMoreThereError:
            pass
        # The oldest frames of the view were trimmed from Redis: those from the file.
        expired = getattr(getattr(view, "_events", None), "nb_expired", len(view))
        old = self._from_file(view.index, view.index + expired)
        self.frames_from_file += old.shape[0]
        if expired == len(view):
            return old
        return numpy.concatenate([old, numpy.asarray(view.get_data(expired))])

    def iter_chunks(self, chunk_frames: Optional[int] = None):
        from blissdata.exceptions import EndOfStream

        self._start()
        cursor = self.stream.cursor()
        last_new = time.monotonic()
        while True:
            try:
                view = cursor.read(timeout=self.poll)
            except EndOfStream:  # sealed: the scan has ended
                self._finish()
                return
            if view is None:
                if time.monotonic() - last_new > self.quiet_timeout:
                    self._finish(f"no new frame for {self.quiet_timeout:g} s and the stream "
                                 f"{self.stream.name!r} is not sealed")
                    return
                continue
            last_new = time.monotonic()
            frames = self._view_frames(view)
            if view.index != self.frames_read:
                raise RuntimeError(f"{self.url}: frames {self.frames_read}-{view.index - 1} "
                                   "were skipped")
            yield from self._split(frames.reshape((-1,) + self.frame_shape), chunk_frames)


def open_live_source(source: str, stream: Optional[str] = None, fallback: Optional[str] = None,
                     files: Optional[str] = None, detector: Optional[str] = None,
                     expected_frames: Optional[int] = None, quiet_timeout: float = 30.0,
                     wait_timeout: float = 60.0, frame_period: Optional[float] = None,
                     chunk_frames: Optional[int] = None) -> LiveSource:
    """A live frame source from a string.

    ``redis://host:port/<scan key>`` is a Bliss scan in that data store (:class:`BlissScanSource`,
    ``stream``, ``fallback``); anything else an HDF5 URL (``file.h5::/1.1``) followed as it grows
    (:class:`GrowingHDF5Source`, ``files``, ``detector``, ``expected_frames``).
    """
    source = os.fspath(source)
    if source.startswith(("redis://", "rediss://", "unix://")):
        scheme, rest = source.split("://", 1)
        host, _, key = rest.partition("/")
        if not key:
            raise ValueError(f"{source!r}: give the scan key after the server, "
                             "redis://host:port/<scan key>")
        return BlissScanSource(f"{scheme}://{host}", key, stream=stream, fallback=fallback,
                               quiet_timeout=quiet_timeout, wait_timeout=wait_timeout,
                               frame_period=frame_period, chunk_frames=chunk_frames)
    return GrowingHDF5Source(source, files=files, detector=detector,
                             expected_frames=expected_frames, quiet_timeout=quiet_timeout,
                             wait_timeout=wait_timeout, frame_period=frame_period,
                             chunk_frames=chunk_frames)
