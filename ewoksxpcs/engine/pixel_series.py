"""The gathered stack: the binned pixels of every frame, kept for backends that need all frames.

Dense backends that correlate whole time series (``matmul`` multiplies every pair of time
blocks, ``fft`` transforms each pixel's full series) must keep what the frame stream delivered.
:class:`GatheredStack` keeps only the binned pixels, in :attr:`Binning.pixel_index` order and in
the frames' native dtype (1 byte per pixel-frame for uint8), as time blocks appended in frame
order. It stays in RAM while it is smaller than ``max_memory`` bytes and otherwise moves to a
temporary file read back through :class:`numpy.memmap` (unlinked as soon as it is opened, so
nothing is left even after a kill; its space is freed by :meth:`GatheredStack.close`),
so a correlation never needs the whole stack in RAM.
"""

from __future__ import annotations

import os
import tempfile
import weakref
from typing import List, Optional

import numpy

__all__ = ["GatheredStack", "default_max_memory", "available_memory"]

#: Fraction of the available RAM a gathered stack may use before it spills to disk.
MEMORY_FRACTION = 0.25


def available_memory() -> int:
    """Bytes of RAM available to new allocations (MemAvailable on Linux), or 4 GiB if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 * 1024**3


def default_max_memory() -> int:
    """Default RAM limit of a gathered stack: a quarter of the available memory, bytes."""
    return int(available_memory() * MEMORY_FRACTION)


def check_max_memory(max_memory) -> int:
    """Validate a ``max_memory`` option (bytes, >= 0; None = default)."""
    if max_memory is None:
        return default_max_memory()
    if isinstance(max_memory, bool) or not isinstance(max_memory, (int, numpy.integer)):
        raise TypeError(f"max_memory must be an integer number of bytes, not {max_memory!r}")
    if max_memory < 0:
        raise ValueError(f"max_memory must be >= 0 bytes, got {max_memory}")
    return int(max_memory)


class GatheredStack:
    """Append-only stack of gathered frames, shape (n_frames, n_pixels), native dtype.

    Parameters
    ----------
    n_pixels : int
        Binned pixels per frame (columns).
    dtype : numpy.dtype
        Pixel type, stored as is.
    max_memory : int, optional
        Bytes the stack may hold in RAM; beyond, it lives in a temporary file (default:
        :func:`default_max_memory`). 0 spills from the first frame.
    tmpdir : str, optional
        Parent directory of the temporary file (default: the system's temporary directory).

    Notes
    -----
    Blocks are kept as appended: :meth:`block` ``(i)`` returns the ``i``-th appended block.
    """

    def __init__(self, n_pixels: int, dtype, max_memory: Optional[int] = None,
                 tmpdir: Optional[str] = None):
        self.n_pixels = int(n_pixels)
        self.dtype = numpy.dtype(dtype)
        self.max_memory = check_max_memory(max_memory)
        self.tmpdir = tmpdir
        self._blocks: List[numpy.ndarray] = []  # in RAM, until spilled
        self._starts: List[int] = [0]  # first frame of each block, then the total
        self._dir: Optional[str] = None
        self._file = None
        self._finalizer = None

    # ------------------------------------------------------------------ state
    @property
    def n_frames(self) -> int:
        return self._starts[-1]

    @property
    def n_blocks(self) -> int:
        return len(self._starts) - 1

    @property
    def row_bytes(self) -> int:
        return self.n_pixels * self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.n_frames * self.row_bytes

    @property
    def spilled(self) -> bool:
        """Whether the stack lives in a temporary file."""
        return self._file is not None

    @property
    def path(self) -> Optional[str]:
        """Directory of the (unlinked, hence unlisted) temporary file, when spilled."""
        return self._dir

    def block_sizes(self) -> numpy.ndarray:
        """Frames of each block, (n_blocks,) int64."""
        return numpy.diff(numpy.asarray(self._starts, dtype=numpy.int64))

    def block_range(self, i: int):
        """(first frame, end frame) of block ``i``."""
        return self._starts[i], self._starts[i + 1]

    # ------------------------------------------------------------------ writing
    def append(self, block: numpy.ndarray, copy: bool = True) -> None:
        """Append frames, (n, n_pixels) of :attr:`dtype`.

        ``copy=False`` keeps a C-contiguous ``block`` itself in RAM (the caller gives it away).
        """
        block = numpy.asarray(block)
        if block.ndim != 2 or block.shape[1] != self.n_pixels:
            raise ValueError(
                f"gathered block must have shape (n, {self.n_pixels}); got {block.shape}"
            )
        if block.dtype != self.dtype:
            raise TypeError(f"gathered block dtype {block.dtype} differs from {self.dtype}")
        if not self.spilled and self.nbytes + block.nbytes > self.max_memory:
            self._spill()
        if self.spilled:
            self._file.write(numpy.ascontiguousarray(block).tobytes())
            self._file.flush()
        else:
            self._blocks.append(numpy.array(block, copy=True, order="C") if copy
                                else numpy.ascontiguousarray(block))
        self._starts.append(self.n_frames + block.shape[0])

    def _spill(self) -> None:
        """Move the stack to a temporary file (the RAM blocks are written first).

        The file is unlinked as soon as it is opened (``O_TMPFILE`` on Linux): its space is
        freed when it is closed or when the process dies, even by SIGKILL.
        """
        self._dir = os.path.abspath(self.tmpdir or tempfile.gettempdir())
        self._file = tempfile.TemporaryFile(prefix="ewoksxpcs-gathered-", dir=self._dir)
        # Close the file even if close() is never called.
        self._finalizer = weakref.finalize(self, self._file.close)
        for b in self._blocks:
            self._file.write(b.tobytes())
        self._file.flush()
        self._blocks = []

    # ------------------------------------------------------------------ reading
    def _memmap(self, t0: int, t1: int) -> numpy.ndarray:
        if t1 <= t0 or self.n_pixels == 0:
            return numpy.zeros((max(t1 - t0, 0), self.n_pixels), dtype=self.dtype)
        return numpy.memmap(self._file, dtype=self.dtype, mode="r",
                            offset=t0 * self.row_bytes, shape=(t1 - t0, self.n_pixels))

    def block(self, i: int) -> numpy.ndarray:
        """Block ``i`` as appended, (n_i, n_pixels) (a read-only memmap when spilled)."""
        if not 0 <= i < self.n_blocks:
            raise IndexError(f"block {i} out of range ({self.n_blocks} blocks)")
        if self.spilled:
            return self._memmap(*self.block_range(i))
        return self._blocks[i]

    def columns(self, p0: int, p1: int) -> numpy.ndarray:
        """Pixels ``p0:p1`` of every frame, (n_frames, p1 - p0), a new C-contiguous array."""
        if not 0 <= p0 <= p1 <= self.n_pixels:
            raise IndexError(f"pixel range {p0}:{p1} outside 0:{self.n_pixels}")
        out = numpy.empty((self.n_frames, p1 - p0), dtype=self.dtype)
        if self.spilled:
            out[...] = self._memmap(0, self.n_frames)[:, p0:p1]
        else:
            for i, b in enumerate(self._blocks):
                t0, t1 = self.block_range(i)
                out[t0:t1] = b[:, p0:p1]
        return out

    # ------------------------------------------------------------------ cleanup
    def close(self) -> None:
        """Free the RAM blocks and remove the temporary file, if any."""
        self._blocks = []
        self._starts = [0]
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        self._file = None
        self._dir = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        where = f"a temporary file in {self._dir!r}" if self.spilled else "RAM"
        return (f"GatheredStack(n_frames={self.n_frames}, n_pixels={self.n_pixels}, "
                f"dtype={self.dtype}, in {where})")
