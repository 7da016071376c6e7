"""Compaction of dense frames into an :class:`~ewoksxpcs.events.EventStack` on OpenCL.

Same result as :func:`ewoksxpcs.events.compact` (array for array), computed on a device: each
chunk of frames is uploaded once; one kernel counts the non-zero values of every kept pixel
(and detects negative values), the host turns the counts into offsets (prefix sum), a second
kernel writes the chunk's (value, frame) events pixel-major, and a third sums each frame over
each bin when a qmask is given (``kernels/compact.cl``). The chunks' events are merged into the
final pixel-major arrays on the host at the end, in linear time.
"""

from __future__ import annotations

import numpy

from .events import EventStack, _kept_pixels, check_non_negative
from .frames import as_frame_source
from .opencl import OpenCLDevice, get_device, get_kernel
from .qmask import Binning

__all__ = ["compact_opencl"]

_CTYPES = {
    "int8": "char", "uint8": "uchar", "int16": "short", "uint16": "ushort",
    "int32": "int", "uint32": "uint", "float32": "float",
}


def compact_opencl(frames, bad_pixels=None, qmask=None, chunk_frames: int | None = None,
                   device=None, progress=None) -> EventStack:
    """Compact frames into an :class:`EventStack` on an OpenCL device, streaming over chunks.

    Parameters
    ----------
    frames : array (Nt, Ny, Nx), iterable of chunks, or FrameSource
        Non-negative counts (int8 … uint32, float32).
    bad_pixels : array_like of bool (Ny, Nx), optional
        Pixels to drop (True = bad). All other pixels are kept.
    qmask : array_like of int (Ny, Nx) or Binning, optional
        When given, the per-frame bin sums are stored with the events.
    chunk_frames : int, optional
        Frames per chunk.
    device : str or OpenCLDevice, optional
        OpenCL device spec (see :func:`ewoksxpcs.opencl.get_device`).
    progress : callable, optional
        Called as ``progress(frames_done, n_frames_or_None)`` after each chunk.

    Returns
    -------
    EventStack
        Equal to ``ewoksxpcs.events.compact(frames, bad_pixels, qmask)``.

    Raises
    ------
    ValueError
        Negative values (with the first frame and pixel), mismatched mask shapes.
    """
    import pyopencl

    dev = device if isinstance(device, OpenCLDevice) else get_device(device)
    source = as_frame_source(frames)
    shape = tuple(source.frame_shape)
    npix = shape[0] * shape[1]
    dtype = numpy.dtype(source.dtype)
    if dtype.kind == "f" and qmask is not None and not dev.has_fp64:
        raise ValueError(f"float32 bin sums need double precision; {dev.name} has no cl_khr_fp64")
    kept = _kept_pixels(shape, bad_pixels)
    n_kept = int(kept.size)
    binning = None
    if qmask is not None:
        binning = qmask if isinstance(qmask, Binning) else Binning(qmask, bad_pixels=bad_pixels,
                                                                    n_groups=1)
        binning.check_frame_shape(shape)
    defines = {"VAL_T": _CTYPES[dtype.name]}
    if dtype.kind == "f":
        defines["IS_FLOAT"] = 1
    count_k = get_kernel(dev, "compact.cl", "count_events", defines)
    scatter_k = get_kernel(dev, "compact.cl", "scatter_events", defines)
    ctx, queue = dev.context, dev.queue
    mf = pyopencl.mem_flags

    def upload(a):
        a = numpy.ascontiguousarray(a)
        if a.size == 0:
            a = numpy.zeros(1, a.dtype)
        return pyopencl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=a)

    d_kept = upload(kept)
    d_counts = pyopencl.Buffer(ctx, mf.READ_WRITE, max(4, 4 * n_kept))
    d_neg = pyopencl.Buffer(ctx, mf.READ_WRITE, 4)
    if binning is not None:
        sums_k = get_kernel(dev, "compact.cl", "bin_sums", defines)
        d_pixel_index = upload(binning.pixel_index)
        d_bin_offsets = upload(binning.bin_offsets)
    d_chunk, chunk_cap = None, 0
    counts_parts, value_parts, time_parts, sum_parts = [], [], [], []
    counts = numpy.empty(n_kept, dtype=numpy.int32)
    neg = numpy.zeros(1, dtype=numpy.int32)
    t0 = 0
    for chunk in source.iter_chunks(chunk_frames):
        n = int(chunk.shape[0])
        if n == 0:
            continue
        if t0 + n > 2**32:
            raise ValueError(f"too many frames for uint32 times: {t0 + n}")
        if chunk.nbytes > chunk_cap:
            chunk_cap = chunk.nbytes
            d_chunk = pyopencl.Buffer(ctx, mf.READ_ONLY, chunk_cap)
        pyopencl.enqueue_copy(queue, d_chunk, numpy.ascontiguousarray(chunk))
        pyopencl.enqueue_copy(queue, d_neg, numpy.zeros(1, numpy.int32))
        if n_kept:
            count_k(queue, (n_kept,), None, d_chunk, numpy.int32(n), numpy.int64(npix), d_kept,
                    numpy.int32(n_kept), d_counts, d_neg)
            pyopencl.enqueue_copy(queue, counts, d_counts)
        pyopencl.enqueue_copy(queue, neg, d_neg)
        if neg[0]:
            check_non_negative(chunk, t0)  # raises with the frame and pixel
        offsets = numpy.zeros(n_kept + 1, dtype=numpy.int64)
        numpy.cumsum(counts, out=offsets[1:])
        n_events = int(offsets[-1])
        values = numpy.empty(n_events, dtype=dtype)
        times = numpy.empty(n_events, dtype=numpy.uint32)
        if n_events:
            d_values = pyopencl.Buffer(ctx, mf.WRITE_ONLY, values.nbytes)
            d_times = pyopencl.Buffer(ctx, mf.WRITE_ONLY, times.nbytes)
            scatter_k(queue, (n_kept,), None, d_chunk, numpy.int32(n), numpy.int64(npix), d_kept,
                      numpy.int32(n_kept), upload(offsets), numpy.uint32(t0), d_values, d_times)
            pyopencl.enqueue_copy(queue, values, d_values)
            pyopencl.enqueue_copy(queue, times, d_times)
        counts_parts.append(counts.copy())
        value_parts.append(values)
        time_parts.append(times)
        if binning is not None:
            sums = numpy.empty((n, binning.n_bins),
                               dtype=numpy.float64 if dtype.kind == "f" else numpy.int64)
            d_sums = pyopencl.Buffer(ctx, mf.WRITE_ONLY, sums.nbytes)
            sums_k(queue, (n, binning.n_bins), None, d_chunk, numpy.int32(n), numpy.int64(npix),
                   d_pixel_index, d_bin_offsets, numpy.int32(binning.n_bins), d_sums)
            pyopencl.enqueue_copy(queue, sums, d_sums)
            sum_parts.append(sums)
        t0 += n
        if progress is not None:
            progress(t0, source.n_frames)

    # Merge: pixel q's events of chunk c go after its events of the earlier chunks.
    per_chunk = numpy.stack(counts_parts) if counts_parts else numpy.zeros((0, n_kept), numpy.int32)
    total = per_chunk.sum(axis=0, dtype=numpy.int64)
    offsets = numpy.zeros(n_kept + 1, dtype=numpy.int64)
    numpy.cumsum(total, out=offsets[1:])
    n_events = int(offsets[-1])
    values = numpy.empty(n_events, dtype=dtype)
    times = numpy.empty(n_events, dtype=numpy.uint32)
    if len(value_parts) == 1:
        values, times = value_parts[0], time_parts[0]
    else:
        before = numpy.zeros(n_kept, dtype=numpy.int64)  # events of pixel q in earlier chunks
        for c_counts, c_values, c_times in zip(counts_parts, value_parts, time_parts):
            if c_values.size:
                c_off = numpy.zeros(n_kept, dtype=numpy.int64)
                numpy.cumsum(c_counts[:-1], out=c_off[1:])
                shift = offsets[:-1] + before - c_off
                dest = numpy.repeat(shift, c_counts) + numpy.arange(c_values.size, dtype=numpy.int64)
                values[dest] = c_values
                times[dest] = c_times
            before += c_counts
    frame_sums = labels = None
    if binning is not None:
        frame_sums = (numpy.concatenate(sum_parts, axis=0) if sum_parts else
                      numpy.zeros((0, binning.n_bins),
                                  dtype=numpy.float64 if dtype.kind == "f" else numpy.int64))
        labels = binning.labels
    return EventStack(values, times, offsets, kept, shape, t0, dtype,
                      frame_sums=frame_sums, labels=labels)
