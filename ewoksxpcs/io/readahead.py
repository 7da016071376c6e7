"""Read a scan's stored chunks into the page cache while a run starts.

A run spends its first seconds importing, opening the OpenCL device and compiling kernels
before it reads the first frame; on a cold page cache the reads that follow then go at the
disk's rate (an Eiger 4M x 10 000 scan: 2.4 GB at 1.5 GB/s on the H200 machine's disk, 3 times
the time of the rest of the data stage). :func:`start_readahead` asks the kernel, from a
background thread, to read the scan's stored chunks in frame order (``posix_fadvise(
POSIX_FADV_WILLNEED)``, which reads without copying anything into this process) while those
first seconds pass. It reads at most :func:`readahead_budget` bytes: a fraction of the memory
available, so that a scan larger than that is read ahead only in its first part and nothing
the machine needs is pushed out of memory.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import List, Optional, Tuple

import numpy

__all__ = ["READAHEAD_FRACTION", "MAX_READAHEAD_BYTES", "readahead_budget", "readahead_runs",
           "start_readahead"]

logger = logging.getLogger(__name__)

#: Read ahead at most this fraction of the memory available (MemAvailable) ...
READAHEAD_FRACTION = 0.25
#: ... and at most this many bytes.
MAX_READAHEAD_BYTES = 16 * 1024**3
#: Bytes asked for per call: the thread stops between calls when asked to.
SLICE_BYTES = 64 * 1024**2


def readahead_budget() -> int:
    """Bytes a run may read ahead: :data:`READAHEAD_FRACTION` of MemAvailable, at most
    :data:`MAX_READAHEAD_BYTES` (0 where the available memory cannot be read: not Linux)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    return int(min(MAX_READAHEAD_BYTES, READAHEAD_FRACTION * available))
    except (OSError, ValueError, IndexError):
        pass
    return 0


def readahead_runs(layout, max_bytes: int) -> List[Tuple[str, int, int]]:
    """(file, offset, length) of the chunks of ``layout`` in frame order, chunks that follow
    each other in a file merged, the first ``max_bytes`` bytes only.

    Parameters
    ----------
    layout : ewoksxpcs.io.hdf5chunks.ChunkLayout
    max_bytes : int
        Stored bytes to cover (the last run is cut there).
    """
    sizes = numpy.asarray(layout.sizes, dtype=numpy.int64)
    offsets = numpy.asarray(layout.offsets, dtype=numpy.int64)
    files = numpy.asarray(layout.file_index, dtype=numpy.int64)
    if max_bytes <= 0 or sizes.size == 0:
        return []
    # The chunks that start within the budget, the last one cut at it (vectorised: a scan of
    # 10^6 small frames has 10^6 chunks).
    ends = numpy.cumsum(sizes)
    n = int(numpy.searchsorted(ends - sizes, max_bytes, side="left"))
    sizes = sizes[:n].copy()
    sizes[-1] -= max(0, int(ends[n - 1]) - int(max_bytes))
    offsets, files = offsets[:n], files[:n]
    # A new run where the file changes or a chunk does not follow the previous one.
    new = numpy.ones(n, dtype=bool)
    new[1:] = (files[1:] != files[:-1]) | (offsets[1:] != offsets[:-1] + sizes[:-1])
    starts = numpy.flatnonzero(new)
    lengths = numpy.add.reduceat(sizes, starts)
    return [(layout.files[int(files[i])], int(offsets[i]), int(length))
            for i, length in zip(starts, lengths)]


class _Readahead(threading.Thread):
    def __init__(self, runs):
        # A daemon: it runs no Python code that an exit could stop half-way (no h5py), and a
        # process that ends before the scan is read ahead does not wait for it.
        super().__init__(name="ewoksxpcs-readahead", daemon=True)
        self.runs = runs
        self.stopped = threading.Event()
        self.advised = 0  # bytes asked for so far

    def run(self):
        try:
            for name, offset, length in self.runs:
                fd = os.open(name, os.O_RDONLY)
                try:
                    end = offset + length
                    while offset < end and not self.stopped.is_set():
                        n = min(SLICE_BYTES, end - offset)
                        # Returns once the block layer has taken the reads: the thread goes
                        # at the disk's pace, without the GIL.
                        os.posix_fadvise(fd, offset, n, os.POSIX_FADV_WILLNEED)
                        offset += n
                        self.advised += n
                finally:
                    os.close(fd)
                if self.stopped.is_set():
                    return
        except OSError:  # a file gone or unreadable: the reader itself reports it
            logger.debug("readahead stopped", exc_info=True)


_starting = threading.Lock()  # one readahead per source, whoever starts it
_started: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # source -> its thread


def start_readahead(source, max_bytes: Optional[int] = None) -> Optional[threading.Thread]:
    """Start reading the stored chunks of ``source`` into the page cache, in the background.

    The chunks' places are found in this thread (``source.chunk_layout()``: 0.04 s for 10 000
    chunks in 16 files, cached by the source for its reader).

    Parameters
    ----------
    source : FrameSource
        A source with ``chunk_layout()`` (HDF5, Bliss, virtual datasets); others are left
        alone.
    max_bytes : int, optional
        Bytes to read ahead (default :func:`readahead_budget`).

    Returns
    -------
    threading.Thread or None
        The daemon thread (its ``stopped`` event stops it between slices of
        :data:`SLICE_BYTES`, ``advised`` counts the bytes asked for), or None when there is
        nothing to do (no raw chunks, no ``posix_fadvise``, no budget).
    """
    get_layout = getattr(source, "chunk_layout", None)
    if not hasattr(os, "posix_fadvise") or get_layout is None:
        return None
    max_bytes = readahead_budget() if max_bytes is None else int(max_bytes)
    if max_bytes <= 0:
        return None
    with _starting:
        started = _started.get(source)
        if started is not None:  # once per source (it may have been opened ahead: ahead.py)
            return started
        try:
            layout, _ = get_layout()
        except Exception:  # unreadable layout: the reader reports the file's problem itself
            logger.debug("no readahead of %r", source, exc_info=True)
            return None
        if layout is None:
            return None
        thread = _Readahead(readahead_runs(layout, max_bytes))
        thread.start()
        _started[source] = thread
    return thread
