"""Sparse detector files read straight into the event path, without densifying.

ESRF sparse frames (Lima sparse saving at ID10, pyFAI ``sparsify``, read by fabio's
``SparseImage``) store a stack of frames frame-major, as compressed sparse rows, in one group:

- ``frame_ptr`` (n_frames + 1,): the values of frame t are ``frame_ptr[t]:frame_ptr[t+1]``;
- ``index`` (n_values,): flat pixel index y·Nx + x of each value;
- ``intensity`` (n_values,): the counts;
- the frame shape from a 2-D ``mask`` dataset (fabio's convention: NaN = masked pixel, for a
  float mask; non-zero = masked for an integer one) or a ``frame_shape`` attribute.

The group sits at the root's default entry (pyFAI/fabio files) or anywhere inside a Bliss scan
(``/1.1/...``); :func:`find_sparse_group` finds it. :func:`read_sparse_events` transposes it to
the pixel-major :class:`~ewoksxpcs.engine.events.EventStack` in chunks of frames, in two passes over
the file (count per pixel, then place): the memory is the events themselves plus one int64 per
detector pixel. Background models of pyFAI's sparsification (``background_avg``) are not added:
the events are the stored values, as counted by the detector.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy

__all__ = ["SPARSE_FIELDS", "is_sparse_group", "find_sparse_group", "read_sparse_events"]

SPARSE_FIELDS = ("frame_ptr", "index", "intensity")


def is_sparse_group(group) -> bool:
    """Whether an h5py object is a group holding ``frame_ptr``, ``index`` and ``intensity``."""
    import h5py

    return isinstance(group, h5py.Group) and all(
        isinstance(group.get(name), h5py.Dataset) for name in SPARSE_FIELDS)


def find_sparse_group(group, detector: Optional[str] = None, _depth: int = 0):
    """The sparse-frames group at or below ``group`` (default links, then a unique match up to
    three levels down), or None. ValueError when several match and ``detector`` does not pick
    one (matched against the group's name and its parent's)."""
    import h5py

    if is_sparse_group(group):
        return group
    if not isinstance(group, h5py.Group) or _depth > 3:
        return None
    for key in ("pyFAI_sparse_frames", "default"):
        name = group.attrs.get(key)
        name = name.decode() if isinstance(name, bytes) else name
        if isinstance(name, str) and name in group:
            found = find_sparse_group(group[name], detector, _depth + 1)
            if found is not None:
                return found
    found = {}
    for obj in group.values():
        if isinstance(obj, h5py.Group):
            hit = find_sparse_group(obj, detector, _depth + 1)
            if hit is not None:
                found[hit.name] = hit
    if detector is not None:
        found = {k: v for k, v in found.items() if detector in k.split("/")[-2:]}
    if len(found) > 1:
        raise ValueError(f"{group.file.filename}::{group.name} holds several sparse frame groups "
                         f"{sorted(found)}: give a full path or a detector name")
    return next(iter(found.values()), None)


def _frame_shape(group) -> tuple:
    mask = group.get("mask")
    if mask is not None and mask.ndim == 2:
        return tuple(int(n) for n in mask.shape)
    shape = group.attrs.get("frame_shape")
    if shape is not None and len(shape) == 2:
        return tuple(int(n) for n in shape)
    raise ValueError(f"sparse frames {group.file.filename}::{group.name} give no frame shape "
                     "(a 2-D 'mask' dataset or a 'frame_shape' attribute)")


def _stored_mask(group) -> Optional[numpy.ndarray]:
    """Masked pixels of the file (NaN in a float mask, non-zero in an integer one), or None."""
    mask = group.get("mask")
    if mask is None or mask.ndim != 2:
        return None
    mask = mask[()]
    return ~numpy.isfinite(mask) if mask.dtype.kind == "f" else mask != 0


def read_sparse_events(filename, path: Optional[str] = None, detector: Optional[str] = None,
                       start: int = 0, stop: Optional[int] = None, bad_pixels=None,
                       chunk_frames: int = 1000, frame_period: Optional[float] = None):
    """Read sparse frames (module docstring) into an :class:`~ewoksxpcs.engine.events.EventStack`.

    Parameters
    ----------
    filename : str
        HDF5 file.
    path : str, optional
        The sparse group, or a group above it (a scan, an entry); default: the root.
    detector : str, optional
        Picks one of several sparse groups.
    start, stop : int
        Frame range [start, stop) (the events' times count from ``start``).
    bad_pixels : ndarray (Ny, Nx) of bool, optional
        Pixels to drop, in addition to those masked in the file.
    chunk_frames : int
        Frames read at a time.
    frame_period : float, optional
        s; default: a ``frame_period`` attribute of the group, else None.

    Returns
    -------
    EventStack
        Pixel-major events of every kept pixel (``frame_period`` and ``filename`` attributes),
        identical to :func:`ewoksxpcs.engine.events.compact` of the densified frames.

    Raises
    ------
    ValueError
        No sparse group, inconsistent pointers, an index outside the frame, a pixel twice in a
        frame, a negative value, a bad frame range.
    """
    import h5py

    from ..engine.events import EventStack

    filename = os.fspath(filename)
    with h5py.File(filename, "r") as f:
        top = f[path] if path else f
        group = find_sparse_group(top, detector)
        if group is None:
            raise ValueError(f"no sparse frames (frame_ptr, index, intensity) at "
                             f"{filename}::{path or '/'}")
        where = f"{filename}::{group.name}"
        shape = _frame_shape(group)
        n_pix = shape[0] * shape[1]
        ptr = numpy.asarray(group["frame_ptr"][()], dtype=numpy.int64)
        total = ptr.size - 1
        stop = total if stop is None else int(stop)
        if not 0 <= int(start) <= stop <= total:
            raise ValueError(f"{where}: frame range [{start}, {stop}) outside 0..{total}")
        if ptr[0] != 0 or numpy.any(numpy.diff(ptr) < 0) or ptr[-1] > group["index"].shape[0]:
            raise ValueError(f"{where}: frame_ptr is not a non-decreasing list of offsets "
                             "into index/intensity")
        bad = numpy.zeros(n_pix, dtype=bool)
        stored = _stored_mask(group)
        if stored is not None:
            bad |= stored.ravel()
        if bad_pixels is not None:
            bad_pixels = numpy.asarray(bad_pixels, dtype=bool)
            if bad_pixels.shape != shape:
                raise ValueError(f"bad-pixel mask shape {bad_pixels.shape} differs from the "
                                 f"frame shape {shape}")
            bad |= bad_pixels.ravel()
        index_ds, value_ds = group["index"], group["intensity"]
        dtype = value_ds.dtype
        if frame_period is None and "frame_period" in group.attrs:
            frame_period = float(group.attrs["frame_period"])
        steps = range(int(start), stop, max(1, int(chunk_frames)))

        def chunks():
            for t0 in steps:
                t1 = min(t0 + chunk_frames, stop)
                lo, hi = int(ptr[t0]), int(ptr[t1])
                idx = numpy.asarray(index_ds[lo:hi], dtype=numpy.int64)
                val = value_ds[lo:hi]
                if idx.size and (idx.min() < 0 or idx.max() >= n_pix):
                    raise ValueError(f"{where}: pixel index outside the {shape} frame")
                if val.size and dtype.kind in "if" and val.min() < 0:
                    raise ValueError(f"{where}: negative value in frames {t0}..{t1 - 1} "
                                     "(events are counts)")
                t = numpy.repeat(numpy.arange(t0 - start, t1 - start, dtype=numpy.int64),
                                 numpy.diff(ptr[t0:t1 + 1]))
                keep = (val != 0) & ~bad[idx]
                yield idx[keep], val[keep], t[keep]

        # Pass 1: events per pixel.
        counts = numpy.zeros(n_pix, dtype=numpy.int64)
        for idx, _, _ in chunks():
            counts += numpy.bincount(idx, minlength=n_pix)
        cursor = numpy.concatenate([[0], numpy.cumsum(counts)[:-1]])
        n_events = int(counts.sum())
        values = numpy.empty(n_events, dtype=dtype)
        times = numpy.empty(n_events, dtype=numpy.uint32)
        # Pass 2: each chunk's events placed after the pixel's earlier ones (frame-major in,
        # pixel-major out; a stable sort keeps the times ascending within a pixel).
        for idx, val, t in chunks():
            order = numpy.argsort(idx, kind="stable")
            idx, val, t = idx[order], val[order], t[order]
            same = (idx[1:] == idx[:-1]) & (t[1:] == t[:-1])
            if same.any():
                i = int(numpy.argmax(same))
                raise ValueError(f"{where}: pixel {int(idx[i])} appears twice in frame "
                                 f"{int(t[i]) + start}")
            first = numpy.flatnonzero(numpy.r_[True, idx[1:] != idx[:-1]]) if idx.size else idx
            n = numpy.diff(numpy.r_[first, idx.size])
            pix = idx[first]
            pos = cursor[idx] + (numpy.arange(idx.size) - numpy.repeat(first, n))
            values[pos] = val
            times[pos] = t
            cursor[pix] += n
    kept = numpy.flatnonzero(~bad).astype(numpy.int64)
    offsets = numpy.concatenate([[0], numpy.cumsum(counts[kept])]).astype(numpy.int64)
    events = EventStack(values, times, offsets, kept, shape, stop - int(start), dtype)
    events.frame_period = frame_period
    events.filename = os.path.abspath(filename)
    return events
