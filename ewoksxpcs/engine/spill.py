"""Host memory bounded for any frame count: arrays that outgrow a cap live in temporary files.

Buffers that grow with the number of frames (the events of a compaction, the gathered pixel
stack of ``fft`` and ``matmul``, the binned frames of two-time) hold at most ``max_memory``
bytes each in RAM: the ``max_memory`` option of the backends, else the environment variable
``EWOKSXPCS_MAX_MEMORY`` (bytes), else :data:`DEFAULT_MAX_MEMORY` (64 MiB).
Beyond, they live in a temporary file mapped with :class:`numpy.memmap`:

- the file is created in :func:`spill_directory` — ``$EWOKSXPCS_TMPDIR``, else Python's
  temporary directory (``$TMPDIR``, then ``/tmp``) — and unlinked as soon as it is opened
  (:func:`tempfile.TemporaryFile`), so nothing is left behind, even after a crash;
- its pages are file-backed, not anonymous memory: the kernel writes them back to disk and
  drops them under memory pressure, and they do not count in ``RssAnon``. (On a ``tmpfs``
  directory they are shared memory instead: point ``EWOKSXPCS_TMPDIR`` at a disk.)

Code that reads such arrays works on blocks (of pixels or of events) so that no step makes an
anonymous copy proportional to the number of frames.
"""

from __future__ import annotations

import os
import tempfile
from typing import Optional, Tuple

import numpy

__all__ = [
    "DEFAULT_MAX_MEMORY",
    "TMPDIR_VARIABLE",
    "MAX_MEMORY_VARIABLE",
    "spill_directory",
    "check_max_memory",
    "empty",
    "SpillArray",
    "rss_anon",
]

#: Bytes a growing host buffer keeps in RAM before it moves to a temporary file.
DEFAULT_MAX_MEMORY = 64 * 1024**2
#: Environment variable naming the directory of the temporary files.
TMPDIR_VARIABLE = "EWOKSXPCS_TMPDIR"
#: Environment variable overriding :data:`DEFAULT_MAX_MEMORY` (bytes).
MAX_MEMORY_VARIABLE = "EWOKSXPCS_MAX_MEMORY"


def spill_directory() -> str:
    """Directory of the temporary files: ``$EWOKSXPCS_TMPDIR``, else :func:`tempfile.gettempdir`."""
    return os.environ.get(TMPDIR_VARIABLE) or tempfile.gettempdir()


def check_max_memory(max_memory) -> int:
    """Validate a ``max_memory`` option (bytes, >= 0); None gives ``$EWOKSXPCS_MAX_MEMORY``,
    else :data:`DEFAULT_MAX_MEMORY`."""
    if max_memory is None:
        env = os.environ.get(MAX_MEMORY_VARIABLE, "").strip()
        if not env:
            return DEFAULT_MAX_MEMORY
        try:
            max_memory = int(float(env))
        except ValueError:
            raise ValueError(f"{MAX_MEMORY_VARIABLE} must be a number of bytes, got {env!r}") from None
    if isinstance(max_memory, bool) or not isinstance(max_memory, (int, numpy.integer)):
        raise TypeError(f"max_memory must be an integer number of bytes, not {max_memory!r}")
    if max_memory < 0:
        raise ValueError(f"max_memory must be >= 0 bytes, got {max_memory}")
    return int(max_memory)


def _file_array(shape: Tuple[int, ...], dtype, tmpdir: Optional[str] = None) -> numpy.ndarray:
    """A zero-filled writable memmap of a new, already unlinked, temporary file."""
    dtype = numpy.dtype(dtype)
    nbytes = int(numpy.prod(shape, dtype=numpy.int64)) * dtype.itemsize
    with tempfile.TemporaryFile(prefix="ewoksxpcs-", dir=tmpdir or spill_directory()) as f:
        f.truncate(max(nbytes, 1))  # sparse: disk blocks are taken as pages are written
        # The mapping keeps its own reference to the file: closing ours frees it with the array.
        return numpy.memmap(f, dtype=dtype, mode="r+", shape=tuple(shape))


def empty(shape, dtype, max_memory: Optional[int] = None,
          tmpdir: Optional[str] = None) -> numpy.ndarray:
    """An uninitialised array in RAM when it fits ``max_memory`` bytes, else file-backed.

    Parameters
    ----------
    shape : int or tuple of int
    dtype : numpy.dtype
    max_memory : int, optional
        Bytes allowed in RAM (default :data:`DEFAULT_MAX_MEMORY`).
    tmpdir : str, optional
        Directory of the temporary file (default :func:`spill_directory`).

    Returns
    -------
    ndarray
        :func:`numpy.empty`, or a :class:`numpy.memmap` (zero-filled) of an unlinked file.
    """
    shape = (int(shape),) if numpy.isscalar(shape) else tuple(int(n) for n in shape)
    dtype = numpy.dtype(dtype)
    nbytes = int(numpy.prod(shape, dtype=numpy.int64)) * dtype.itemsize
    if nbytes <= check_max_memory(max_memory) or nbytes == 0:
        return numpy.empty(shape, dtype=dtype)
    return _file_array(shape, dtype, tmpdir)


class SpillArray:
    """An array growing along its first axis: in RAM up to ``max_memory`` bytes, then in a
    temporary file (see the module docstring).

    Parameters
    ----------
    row_shape : tuple of int
        Shape of one row (``()`` for a 1-D array).
    dtype : numpy.dtype
    max_memory : int, optional
        Bytes kept in RAM (default :data:`DEFAULT_MAX_MEMORY`); 0 spills from the first row.
    capacity : int, optional
        Expected number of rows (e.g. Nt when known): storage is sized once for it.
    tmpdir : str, optional
        Directory of the temporary file.
    """

    def __init__(self, row_shape=(), dtype=numpy.float64, max_memory: Optional[int] = None,
                 capacity: Optional[int] = None, tmpdir: Optional[str] = None):
        self.row_shape = tuple(int(n) for n in row_shape)
        self.dtype = numpy.dtype(dtype)
        self.max_memory = check_max_memory(max_memory)
        self.tmpdir = tmpdir
        self.n = 0
        self._data = self._allocate(int(capacity or 0))

    @property
    def row_bytes(self) -> int:
        return int(numpy.prod(self.row_shape, dtype=numpy.int64)) * self.dtype.itemsize

    @property
    def spilled(self) -> bool:
        """Whether the rows live in a temporary file."""
        return isinstance(self._data, numpy.memmap)

    @property
    def capacity(self) -> int:
        return self._data.shape[0]

    def _allocate(self, rows: int) -> numpy.ndarray:
        shape = (rows,) + self.row_shape
        if rows * self.row_bytes <= self.max_memory or self.row_bytes == 0:
            return numpy.empty(shape, dtype=self.dtype)
        return _file_array(shape, self.dtype, self.tmpdir)

    def append(self, rows) -> None:
        """Append ``rows`` (n,) + row_shape, cast to :attr:`dtype`."""
        rows = numpy.asarray(rows)
        if rows.shape[1:] != self.row_shape:
            raise ValueError(f"rows of shape {rows.shape[1:]} appended to rows of {self.row_shape}")
        n = rows.shape[0]
        if self.n + n > self.capacity:
            # Grow by half (amortised appends); into a file once past the RAM cap.
            grown = self._allocate(max(self.n + n, self.capacity + self.capacity // 2, 1024))
            grown[: self.n] = self._data[: self.n]
            self._data = grown
        self._data[self.n : self.n + n] = rows
        self.n += n

    def view(self, start: int = 0, stop: Optional[int] = None) -> numpy.ndarray:
        """Rows ``start:stop`` (no copy: a view of RAM or of the file mapping)."""
        stop = self.n if stop is None else min(int(stop), self.n)
        return self._data[int(start) : stop]

    def array(self) -> numpy.ndarray:
        """The rows appended, trimmed to :attr:`n` (a view)."""
        return self._data[: self.n]

    def close(self) -> None:
        """Release the storage (the temporary file goes with its last mapping)."""
        self._data = numpy.empty((0,) + self.row_shape, dtype=self.dtype)
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        where = "file" if self.spilled else "RAM"
        return f"SpillArray(n={self.n}, row_shape={self.row_shape}, dtype={self.dtype}, in {where})"


def rss_anon() -> Optional[int]:
    """Anonymous resident memory of this process, bytes (``RssAnon`` of /proc), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
