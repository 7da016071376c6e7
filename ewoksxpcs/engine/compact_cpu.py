"""Compaction of frames into events on the CPU threads (numba): the input stage of
``cpu-events`` when it is given frames (the per-frame sums are then taken by its pair kernel).

Each chunk of frames is read twice while it is in memory: pass 1 counts each binned pixel's
non-zero values; pass 2 writes the values and times
pixel-major into the chunk's own arrays. After the last chunk, each pixel's events of every
chunk are appended in chunk order (times stay ascending). Threads take blocks of pixels, so no
two threads write the same counter. Only the binned pixels are kept (unlike
:func:`ewoksxpcs.events.compact`, which keeps every good pixel for later re-binning).
"""

from __future__ import annotations

from typing import Optional

import numpy

from .events import EventStack, check_non_negative
from .frames import as_frame_source
from .qmask import Binning
from .spill import SpillArray, empty as empty_spillable

__all__ = ["compact_cpu"]

#: Frames per chunk by default: a chunk of 512×512 uint8 frames is 16 MiB.
DEFAULT_CHUNK_BYTES = 64 * 2**20


def compact_cpu(frames, binning: Binning, chunk_frames: Optional[int] = None,
                max_memory: Optional[int] = None):
    """Compact the binned pixels of frames into an EventStack.

    Parameters
    ----------
    frames : ndarray (Nt, Ny, Nx), iterable of chunks, or FrameSource
        Non-negative counts (int8 … uint32, float32).
    binning : Binning
    chunk_frames : int, optional
        Frames per chunk (default: about 64 MiB of frames).
    max_memory : int, optional
        Bytes of events kept in RAM per array, beyond in a temporary file (default:
        :func:`ewoksxpcs.engine.spill.check_max_memory`).

    Returns
    -------
    EventStack
        The binned pixels' events (``pixel_index`` = the binned pixels, ascending).

    Raises
    ------
    ValueError
        On a negative value (events are counts), naming its frame and pixel.
    """
    import numba

    from . import events_numba

    source = as_frame_source(frames)
    shape = tuple(source.frame_shape)
    binning.check_frame_shape(shape)
    dtype = numpy.dtype(source.dtype)
    idx = numpy.sort(binning.pixel_index)  # raster order: reads in line
    n_pix = idx.size
    n_blocks = max(1, min(4 * numba.get_num_threads(), n_pix))
    block_cuts = numpy.linspace(0, n_pix, n_blocks + 1).astype(numpy.int64)
    if chunk_frames is None:
        chunk_frames = max(1, DEFAULT_CHUNK_BYTES // max(1, dtype.itemsize * shape[0] * shape[1]))
    counts_total = numpy.zeros(n_pix, dtype=numpy.int64)
    # Every chunk's events, appended: in RAM up to the host cap, beyond in a temporary file
    # (ewoksxpcs.engine.spill), so that the memory does not grow with the frames.
    all_values = SpillArray((), dtype, max_memory)
    all_times = SpillArray((), numpy.uint32, max_memory)
    chunk_offsets = []  # per chunk: its pixels' offsets into its slice of all_values
    t0 = 0
    for chunk in source.iter_chunks(chunk_frames):
        n = chunk.shape[0]
        flat = numpy.ascontiguousarray(chunk).reshape(n, -1)
        counts = numpy.zeros(n_pix, dtype=numpy.int64)
        no_values = numpy.zeros(0, dtype=dtype)
        no_times = numpy.zeros(0, dtype=numpy.uint32)
        if n_pix and events_numba.scan_chunk(flat, idx, block_cuts, t0, counts, no_values,
                                             no_times, False):
            check_non_negative(chunk, t0)  # raises with the frame and pixel
        c_offsets = numpy.concatenate([[0], numpy.cumsum(counts)]).astype(numpy.int64)
        c_values = numpy.empty(int(c_offsets[-1]), dtype=dtype)
        c_times = numpy.empty(int(c_offsets[-1]), dtype=numpy.uint32)
        if c_values.size:
            events_numba.scan_chunk(flat, idx, block_cuts, t0, c_offsets[:-1].copy(), c_values,
                                    c_times, True)
        all_values.append(c_values)
        all_times.append(c_times)
        chunk_offsets.append(c_offsets)
        counts_total += counts
        t0 += n
    if t0 >= 2**32:
        raise ValueError(f"too many frames for uint32 times: {t0}")
    offsets = numpy.concatenate([[0], numpy.cumsum(counts_total)]).astype(numpy.int64)
    if len(chunk_offsets) == 1:
        values, times = all_values.array(), all_times.array()
    else:
        values = numpy.asarray(empty_spillable(int(offsets[-1]), dtype, max_memory))
        times = numpy.asarray(empty_spillable(int(offsets[-1]), numpy.uint32, max_memory))
        pos = offsets[:-1].copy()
        start = 0
        for c_offsets in chunk_offsets:
            stop = start + int(c_offsets[-1])
            if stop > start:
                events_numba.merge_chunk(numpy.asarray(all_values.view(start, stop)),
                                         numpy.asarray(all_times.view(start, stop)),
                                         c_offsets, pos, values, times)
            start = stop
        all_values.close()
        all_times.close()
    return EventStack(values, times, offsets, idx, shape, t0, dtype)
