"""The gathered stack: the binned pixels of every frame, kept for backends that need all frames.

Dense backends that correlate whole time series (``matmul`` multiplies every pair of time
blocks, ``fft`` transforms each pixel's full series) must keep what the frame stream delivered.
:class:`GatheredStack` keeps only the binned pixels, in :attr:`Binning.pixel_index` order and in
the frames' native dtype (1 byte per pixel-frame for uint8), as time blocks appended in frame
order, in a :class:`~ewoksxpcs.engine.spill.SpillArray`: in RAM up to ``max_memory`` bytes (default
:data:`ewoksxpcs.engine.spill.DEFAULT_MAX_MEMORY`), beyond in an unlinked temporary file mapped with
:class:`numpy.memmap` (file-backed pages, not anonymous memory), so a correlation never holds
the whole stack in anonymous RAM, whatever the number of frames.
"""

from __future__ import annotations

import os
from typing import List, Optional

import numpy

from .spill import SpillArray, check_max_memory

__all__ = ["GatheredStack", "available_memory"]


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
        :data:`ewoksxpcs.engine.spill.DEFAULT_MAX_MEMORY`). 0 spills from the first frame.
    tmpdir : str, optional
        Directory of the temporary file (default: :func:`ewoksxpcs.engine.spill.spill_directory`).
    n_frames : int, optional
        Expected number of frames (storage sized once), when known.

    Notes
    -----
    Blocks are kept as appended: :meth:`block` ``(i)`` returns the ``i``-th appended block.
    """

    def __init__(self, n_pixels: int, dtype, max_memory: Optional[int] = None,
                 tmpdir: Optional[str] = None, n_frames: Optional[int] = None):
        self.n_pixels = int(n_pixels)
        self.dtype = numpy.dtype(dtype)
        self.max_memory = check_max_memory(max_memory)
        self.tmpdir = tmpdir
        self._rows = SpillArray((self.n_pixels,), self.dtype, self.max_memory,
                                capacity=n_frames, tmpdir=tmpdir)
        self._starts: List[int] = [0]  # first frame of each block, then the total

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
        return self._rows.spilled

    def block_sizes(self) -> numpy.ndarray:
        """Frames of each block, (n_blocks,) int64."""
        return numpy.diff(numpy.asarray(self._starts, dtype=numpy.int64))

    def block_range(self, i: int):
        """(first frame, end frame) of block ``i``."""
        return self._starts[i], self._starts[i + 1]

    # ------------------------------------------------------------------ writing
    def append(self, block: numpy.ndarray) -> None:
        """Append frames, (n, n_pixels) of :attr:`dtype` (copied into the stack's storage)."""
        block = numpy.asarray(block)
        if block.ndim != 2 or block.shape[1] != self.n_pixels:
            raise ValueError(
                f"gathered block must have shape (n, {self.n_pixels}); got {block.shape}"
            )
        if block.dtype != self.dtype:
            raise TypeError(f"gathered block dtype {block.dtype} differs from {self.dtype}")
        self._rows.append(block)
        self._starts.append(self.n_frames + block.shape[0])

    # ------------------------------------------------------------------ reading
    def block(self, i: int) -> numpy.ndarray:
        """Block ``i`` as appended, (n_i, n_pixels) (a view: of the file mapping when spilled)."""
        if not 0 <= i < self.n_blocks:
            raise IndexError(f"block {i} out of range ({self.n_blocks} blocks)")
        return self._rows.view(*self.block_range(i))

    def columns(self, p0: int, p1: int) -> numpy.ndarray:
        """Pixels ``p0:p1`` of every frame, (n_frames, p1 - p0), a new C-contiguous array."""
        if not 0 <= p0 <= p1 <= self.n_pixels:
            raise IndexError(f"pixel range {p0}:{p1} outside 0:{self.n_pixels}")
        return numpy.ascontiguousarray(self._rows.array()[:, p0:p1])

    # ------------------------------------------------------------------ cleanup
    def close(self) -> None:
        """Free the RAM or the temporary file (unlinked already: freed with its mapping)."""
        self._rows.close()
        self._starts = [0]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        where = "a temporary file" if self.spilled else "RAM"
        return (f"GatheredStack(n_frames={self.n_frames}, n_pixels={self.n_pixels}, "
                f"dtype={self.dtype}, in {where})")
