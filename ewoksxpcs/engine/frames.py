"""Lazy frame sources: a frame stack is read chunk by chunk, never loaded whole.

A *frame source* describes a stack of detector frames of shape (Nt, Ny, Nx) and yields it as
consecutive chunks of shape (n, Ny, Nx). Every correlator consumes frame sources through
:func:`as_frame_source`, which accepts

- a 3-D NumPy array (or anything with ``shape``, ``dtype`` and slicing, e.g. an ``h5py.Dataset``),
- an iterable of 3-D chunks (n, Ny, Nx) (e.g. a generator: read once),
- an existing :class:`FrameSource`.

Chunks are validated as they stream: dtype, dimensionality, consistent frame shape and, for
floating point data, finite values.
"""

from __future__ import annotations

import numbers
import queue
import threading
from typing import Iterable, Iterator, Optional, Tuple

import numpy

from .options import positive_int

__all__ = [
    "SUPPORTED_DTYPES",
    "FrameSource",
    "ArrayFrameSource",
    "IterableFrameSource",
    "as_frame_source",
    "MappedFrameSource",
    "frames_at",
    "check_dtype",
    "validate_chunk",
    "read_ahead",
]

#: Pixel types the engine accepts (detectors count photons in unsigned integers; float32 for
#: corrected or simulated data; signed types for pre-processed data).
SUPPORTED_DTYPES = tuple(
    numpy.dtype(t)
    for t in ("int8", "uint8", "int16", "uint16", "int32", "uint32", "float32")
)

DEFAULT_CHUNK_BYTES = 64 * 1024**2


def check_dtype(dtype) -> numpy.dtype:
    """Return ``dtype`` as a NumPy dtype, or raise TypeError naming the supported ones."""
    dtype = numpy.dtype(dtype)
    if dtype not in SUPPORTED_DTYPES:
        names = ", ".join(str(d) for d in SUPPORTED_DTYPES)
        raise TypeError(f"unsupported frame dtype {dtype}: supported dtypes are {names}")
    return dtype


def validate_chunk(
    chunk, frame_shape: Optional[Tuple[int, int]], dtype: Optional[numpy.dtype], t0: int
) -> numpy.ndarray:
    """Check one chunk of frames and return it as a C-contiguous NumPy array.

    Parameters
    ----------
    chunk : array_like, shape (n, Ny, Nx)
    frame_shape : (Ny, Nx) or None
        Expected frame shape (None: not yet known).
    dtype : numpy.dtype or None
        Expected dtype (None: not yet known).
    t0 : int
        Index of the chunk's first frame in the stack (for error messages).
    """
    chunk = numpy.ascontiguousarray(chunk)
    if chunk.ndim != 3:
        raise ValueError(
            f"frames must be 3-D (n_frames, Ny, Nx); got a chunk at frame {t0} with "
            f"{chunk.ndim} dimension(s), shape {chunk.shape}"
        )
    check_dtype(chunk.dtype)
    if frame_shape is not None and chunk.shape[1:] != tuple(frame_shape):
        raise ValueError(
            f"inconsistent chunk shapes: chunk at frame {t0} has frame shape "
            f"{chunk.shape[1:]}, expected {tuple(frame_shape)}"
        )
    if dtype is not None and chunk.dtype != dtype:
        raise TypeError(
            f"inconsistent chunk dtypes: chunk at frame {t0} is {chunk.dtype}, expected {dtype}"
        )
    if chunk.dtype.kind == "f" and not numpy.isfinite(chunk).all():
        bad = numpy.argwhere(~numpy.isfinite(chunk))[0]
        raise ValueError(
            f"frames contain NaN or infinite values (first at frame {t0 + int(bad[0])}, "
            f"pixel (y={int(bad[1])}, x={int(bad[2])}))"
        )
    return chunk


def default_chunk_frames(frame_shape, dtype, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Number of frames per chunk so that a chunk holds about ``chunk_bytes`` bytes."""
    frame_bytes = int(numpy.prod(frame_shape)) * numpy.dtype(dtype).itemsize
    return max(1, chunk_bytes // max(frame_bytes, 1))


class FrameSource:
    """A lazy stack of frames, shape (n_frames, Ny, Nx).

    Attributes
    ----------
    frame_shape : (int, int)
        (Ny, Nx), pixels.
    dtype : numpy.dtype
        Pixel type, one of :data:`SUPPORTED_DTYPES`.
    n_frames : int or None
        Number of frames Nt, or None when unknown until the source is exhausted.
    frame_period : float or None
        Time between frames, seconds (None: unknown).
    reiterable : bool
        Whether :meth:`iter_chunks` can be called more than once.
    """

    frame_shape: Tuple[int, int]
    dtype: numpy.dtype
    n_frames: Optional[int] = None
    frame_period: Optional[float] = None
    reiterable: bool = True

    def iter_chunks(self, chunk_frames: Optional[int] = None) -> Iterator[numpy.ndarray]:
        """Yield validated chunks of shape (n, Ny, Nx), in frame order."""
        raise NotImplementedError

    @property
    def shape(self) -> Tuple[Optional[int], int, int]:
        return (self.n_frames,) + tuple(self.frame_shape)

    def default_chunk_frames(self) -> int:
        return default_chunk_frames(self.frame_shape, self.dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype})"


class ArrayFrameSource(FrameSource):
    """Frames from a 3-D array-like (NumPy array, h5py.Dataset, memmap) with frame range.

    Parameters
    ----------
    array : array_like, shape (Nt, Ny, Nx)
    start, stop, step : int, optional
        Frame range (Python slice semantics, non-negative step).
    frame_period : float, optional
        Seconds between frames.
    """

    def __init__(self, array, start: int = 0, stop: Optional[int] = None, step: int = 1,
                 frame_period: Optional[float] = None):
        ndim = len(getattr(array, "shape", ()))
        if ndim != 3:
            raise ValueError(
                f"frames must be 3-D (n_frames, Ny, Nx); got shape {tuple(getattr(array, 'shape', ()))}"
            )
        self.array = array
        self.dtype = check_dtype(array.dtype)
        self.frame_shape = tuple(int(n) for n in array.shape[1:])
        total = int(array.shape[0])
        if step < 1:
            raise ValueError(f"frame step must be >= 1, got {step}")
        if start < 0 or start > total or (stop is not None and not (start <= stop <= total)):
            raise ValueError(
                f"frame range [{start}:{stop}] is outside the data's {total} frames"
            )
        self._range = range(start, total if stop is None else stop, step)
        self.n_frames = len(self._range)
        self.frame_period = frame_period

    def iter_chunks(self, chunk_frames=None):
        chunk_frames = positive_int(chunk_frames, "chunk_frames") or self.default_chunk_frames()
        r = self._range
        for i in range(0, len(r), chunk_frames):
            sub = r[i : i + chunk_frames]
            chunk = self.array[sub.start : sub.stop : sub.step] if len(sub) else None
            yield validate_chunk(chunk, self.frame_shape, self.dtype, i)


class IterableFrameSource(FrameSource):
    """Frames from an iterable of chunks (n, Ny, Nx); read once.

    Parameters
    ----------
    chunks : iterable of array_like, each (n, Ny, Nx)
    n_frames : int, optional
        Total number of frames, when known in advance.
    frame_period : float, optional
        Seconds between frames.
    """

    reiterable = False

    def __init__(self, chunks: Iterable, n_frames: Optional[int] = None,
                 frame_period: Optional[float] = None):
        self._iterator = iter(chunks)
        self._consumed = False
        try:
            first = next(self._iterator)
        except StopIteration:
            raise ValueError("frames: the iterable of chunks is empty") from None
        first = validate_chunk(first, None, None, 0)
        self._first = first
        self.frame_shape = first.shape[1:]
        self.dtype = first.dtype
        self.n_frames = n_frames
        self.frame_period = frame_period

    def iter_chunks(self, chunk_frames=None):
        # Chunks are passed through as they come: re-chunking would copy for nothing.
        if self._consumed:
            raise RuntimeError("this frame source is an iterable that was already consumed")
        self._consumed = True
        t0 = 0
        chunk = self._first
        self._first = None
        while True:
            yield chunk
            t0 += chunk.shape[0]
            try:
                chunk = next(self._iterator)
            except StopIteration:
                break
            chunk = validate_chunk(chunk, self.frame_shape, self.dtype, t0)
        if self.n_frames is not None and t0 != self.n_frames:
            raise ValueError(f"frames: expected {self.n_frames} frames, the chunks held {t0}")
        self.n_frames = t0


def frames_at(source, index) -> numpy.ndarray:
    """``source[index]`` (a frame or frames by position) of a source that can be indexed."""
    if isinstance(source, ArrayFrameSource):
        t = source._range[index]
        return numpy.asarray(source.array[t] if isinstance(t, int)
                             else source.array[t.start: t.stop: t.step])
    if not hasattr(source, "__getitem__"):
        raise TypeError(f"{type(source).__name__} cannot be indexed")
    return numpy.asarray(source[index])


class MappedFrameSource(FrameSource):
    """A source whose frames are those of ``source`` passed through :meth:`map_frames`
    (per-frame operations: bad frames zeroed, weights; subclasses define it).

    Parameters
    ----------
    source : FrameSource
    dtype : numpy.dtype, optional
        dtype of the mapped frames (default: the source's).
    """

    def __init__(self, source: FrameSource, dtype=None):
        self.source = source
        self.frame_shape = source.frame_shape
        self.dtype = numpy.dtype(source.dtype if dtype is None else dtype)
        self.n_frames = source.n_frames
        self.frame_period = source.frame_period
        self.reiterable = source.reiterable

    def map_frames(self, frames: numpy.ndarray, t: numpy.ndarray) -> numpy.ndarray:
        """The mapped frames (n, Ny, Nx) of ``frames`` whose indices are ``t`` (n,)."""
        raise NotImplementedError

    def default_chunk_frames(self) -> int:
        return self.source.default_chunk_frames()

    def iter_chunks(self, chunk_frames: Optional[int] = None):
        t0 = 0
        for chunk in self.source.iter_chunks(chunk_frames):
            n = chunk.shape[0]
            yield self.map_frames(chunk, numpy.arange(t0, t0 + n))
            t0 += n

    # Sampling (the ``auto`` method estimates the occupancy from a few frames).
    def __len__(self):
        return self.n_frames

    def __getitem__(self, index):
        x = frames_at(self.source, index)
        t = numpy.arange(self.n_frames)[index]
        if numpy.ndim(t) == 0:
            return self.map_frames(x[None], t[None])[0]
        return self.map_frames(x, t)


def as_frame_source(frames, frame_period: Optional[float] = None,
                    n_frames: Optional[int] = None) -> FrameSource:
    """Wrap ``frames`` (array, iterable of chunks or FrameSource) as a :class:`FrameSource`."""
    if isinstance(frames, FrameSource):
        return frames
    if isinstance(frames, (str, bytes, numbers.Number)) or frames is None:
        raise TypeError(
            f"frames must be a 3-D array, an iterable of 3-D chunks or a FrameSource, "
            f"not {type(frames).__name__}"
        )
    if hasattr(frames, "shape") and hasattr(frames, "dtype"):
        if len(frames.shape) != 3:
            raise ValueError(
                f"frames must be 3-D (n_frames, Ny, Nx); got shape {tuple(frames.shape)}"
            )
        return ArrayFrameSource(frames, frame_period=frame_period)
    if isinstance(frames, (list, tuple)) and frames and numpy.ndim(frames[0]) == 2:
        # A list of 2-D frames.
        return ArrayFrameSource(numpy.asarray(frames), frame_period=frame_period)
    try:
        iterator = iter(frames)
    except TypeError:
        raise TypeError(
            f"frames must be a 3-D array, an iterable of 3-D chunks or a FrameSource, "
            f"not {type(frames).__name__}"
        ) from None
    return IterableFrameSource(iterator, n_frames=n_frames, frame_period=frame_period)


class _Failed:
    """An exception of :func:`read_ahead`'s producer, handed to the consumer."""

    def __init__(self, error: BaseException):
        self.error = error


def read_ahead(items: Iterable, depth: int = 2, join_timeout: float = 1.0) -> Iterator:
    """The items of ``items``, produced by a thread of its own up to ``depth`` items ahead of
    the consumer: reading the next chunks overlaps the work on the previous ones.

    An error of the producer is raised in the consumer, at the item where it happened. Closing
    the generator (or an error of the consumer) stops the producer at its next item; it is
    waited for at most ``join_timeout`` seconds (a producer blocked waiting for data it may
    never get, such as a live source's next frames, is a daemon thread left to end alone).
    """
    out: "queue.Queue" = queue.Queue(maxsize=max(1, int(depth)))
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        out.put(item, timeout=0.05)
                        break
                    except queue.Full:
                        pass
                if stop.is_set():
                    return
            out.put(done)
        except BaseException as e:  # handed to the consumer
            out.put(_Failed(e))

    thread = threading.Thread(target=produce, name="ewoksxpcs-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = out.get()
            if item is done:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join(join_timeout)
