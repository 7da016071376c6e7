"""Bad frames: excluded from every pair of the correlation, given or found from the data.

Exclusion
---------
A bad frame is read as zeros (:class:`ExcludedFrameSource`, the frames are zeroed as they are
read, before any backend sees them). Every correlation sum is a sum of products over pairs of
frames, so a zero frame removes each pair it belongs to from the sums, exactly (integer sums
stay int64). With w(t) = 0 for a bad frame and 1 otherwise:

    n2(q, τ) = Σ_t w(t)·w(t+τ) Σ_{p∈q} I(t, p)·I(t+τ, p)
    s2(q, τ) = Σ_t w(t)·w(t+τ) S(t, q)·S(t+τ, q)
    g2(q, τ) = N_q·n2 / s2

the definition of :mod:`ewoksxpcs.engine.normalise` evaluated on the remaining pairs; the jackknife
errors follow. Nothing in the linear-lag g2 divides by a number of pairs. Where a count is used it
is the count of remaining pairs P(τ) = Σ_t w(t)·w(t+τ) (:func:`pair_counts`: multi-tau
``symmetric`` normalisation, the ``n_pairs`` written with the result).

Multi-tau: a level-L frame is the sum of its 2^L member frames; with bad members zeroed it is the
sum of its good members (kept: it measures the same speckle over the good part of its window), and
it is excluded only when all its members are bad, w_L(t) = max_j w(2^L·t + j). The ``standard``
normalisation (a ratio of sums) needs nothing more; the ``symmetric`` one uses the past/future
sums and the pair count of the remaining level pairs.

Two-time: a zero time bin has S(T) = 0, so its row and column of C are NaN and the diagonal means
(g2 from the map, partial g2) skip them; a time bin of several frames sums its good ones (as a
multi-tau level frame).

Automatic detection (:func:`detect_bad_frames`)
-----------------------------------------------
On the per-bin frame sums S(t, q) (one reading pass) and on the total T(t) = Σ_q S(t, q): for
each series x, the running median m(t) over ``window`` frames (default 51) and the residual
r = x − m; the robust standard deviation σ = 1.4826·median(|r − median(r)|) over the scan, at
least √max(mean(x), 1) (the Poisson spread of a sum of counts: at low count rates most sums are
0 and the MAD vanishes). A frame is bad when |r(t)| > k·σ (default k = 6) in the total or in any
bin, or when its total is zero while the mean total exceeds 20 counts (a dropped frame; at lower
rates an empty frame is a normal count). For a Gaussian residual a false alarm per series and
frame has probability 2·10⁻⁹ at k = 6; beam dips, shutter closures, dropped frames and
cosmic-ray spikes of more than k·σ are caught. Runs of bad frames longer than half the window
move the median itself: give those frames explicitly (``--bad-frames``).
"""

from __future__ import annotations

import re
from typing import Iterable, Optional, Union

import numpy

from .lazy_imports import import_module
from .frames import FrameSource, MappedFrameSource, as_frame_source

__all__ = [
    "DEFAULT_WINDOW",
    "DEFAULT_THRESHOLD",
    "parse_frame_list",
    "format_frame_list",
    "scan_indices",
    "bad_frame_mask",
    "ExcludedFrameSource",
    "exclude_frames",
    "pair_counts",
    "level_weights",
    "frame_bin_sums",
    "detect_bad_frames",
    "find_bad_frames",
    "exclude_events",
    "kept_offsets",
    "apply_bad_frames",
    "excluded_of",
]

#: Running-median window of :func:`detect_bad_frames` (frames).
DEFAULT_WINDOW = 51
#: Threshold k of :func:`detect_bad_frames` (robust standard deviations).
DEFAULT_THRESHOLD = 6.0

_ITEM = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def parse_frame_list(spec: Union[str, Iterable[int], None]) -> numpy.ndarray:
    """Frame indices from ``"10,200-250"`` (ranges inclusive) or a sequence of ints.

    Returns
    -------
    ndarray (n,) int64
        Sorted, unique, non-negative indices.
    """
    if spec is None:
        return numpy.zeros(0, numpy.int64)
    if isinstance(spec, str):
        out = []
        for item in filter(None, (s.strip() for s in spec.split(","))):
            m = _ITEM.match(item)
            if m is None:
                raise ValueError(
                    f"bad frame list item {item!r}: expected an index or a range 'a-b' (inclusive)"
                )
            a = int(m.group(1))
            b = int(m.group(2)) if m.group(2) is not None else a
            if b < a:
                raise ValueError(f"bad frame range {item!r}: the end is before the start")
            out.append(numpy.arange(a, b + 1, dtype=numpy.int64))
        return numpy.unique(numpy.concatenate(out)) if out else numpy.zeros(0, numpy.int64)
    arr = numpy.asarray(list(spec) if not hasattr(spec, "__array__") else spec)
    if arr.size == 0:
        return numpy.zeros(0, numpy.int64)
    if arr.dtype == bool:
        return numpy.flatnonzero(arr).astype(numpy.int64)
    if arr.dtype.kind not in "iu" or arr.ndim != 1:
        raise ValueError(f"bad frames must be a 1-D list of integer frame indices, got {spec!r}")
    if (arr < 0).any():
        raise ValueError(f"bad frame indices must be >= 0, got {int(arr.min())}")
    return numpy.unique(arr.astype(numpy.int64))


def format_frame_list(indices) -> str:
    """Compact text of frame indices: ``[10, 200, 201, 202]`` → ``"10,200-202"``."""
    idx = numpy.unique(numpy.asarray(indices, dtype=numpy.int64))
    if idx.size == 0:
        return ""
    breaks = numpy.flatnonzero(numpy.diff(idx) != 1)
    starts = numpy.concatenate([[0], breaks + 1])
    ends = numpy.concatenate([breaks, [idx.size - 1]])
    return ",".join(
        str(idx[a]) if a == b else f"{idx[a]}-{idx[b]}" for a, b in zip(starts, ends)
    )


def scan_indices(source) -> Optional[numpy.ndarray]:
    """Indices in the original scan of the frames of ``source`` (its frame range), or None
    when the source has none (frame t is then scan frame t)."""
    r = getattr(source, "_range", None)
    if isinstance(r, range):
        return numpy.arange(r.start, r.stop, r.step, dtype=numpy.int64)
    inner = getattr(source, "source", None)
    return None if inner is None else scan_indices(inner)


def bad_frame_mask(bad_frames, n_frames: int, indices: Optional[numpy.ndarray] = None):
    """Boolean (n_frames,) mask of the frames to exclude.

    Parameters
    ----------
    bad_frames : str, sequence of int or bool array
        Scan frame indices (see :func:`parse_frame_list`); a bool array is the mask itself.
    n_frames : int
    indices : ndarray (n_frames,) int64, optional
        Scan index of each frame read (a frame range); default 0 … n_frames − 1.
    """
    if isinstance(bad_frames, numpy.ndarray) and bad_frames.dtype == bool:
        if bad_frames.shape != (n_frames,):
            raise ValueError(f"bad-frame mask of shape {bad_frames.shape} for {n_frames} frames")
        return bad_frames.copy()
    bad = parse_frame_list(bad_frames)
    if indices is None:
        indices = numpy.arange(n_frames, dtype=numpy.int64)
        last = n_frames - 1
        if bad.size and bad[-1] > last:
            raise ValueError(
                f"bad frame {int(bad[-1])} is beyond the scan's last frame {last}"
            )
    return numpy.isin(indices, bad)


class ExcludedFrameSource(MappedFrameSource):
    """A frame source whose bad frames read as zeros (see the module docstring).

    Parameters
    ----------
    source : FrameSource
    mask : ndarray (n_frames,) bool
        True for the frames to exclude.
    """

    def __init__(self, source: FrameSource, mask: numpy.ndarray):
        super().__init__(source)
        self.mask = numpy.asarray(mask, dtype=bool)
        if self.n_frames is not None and self.mask.size != self.n_frames:
            raise ValueError(f"bad-frame mask of {self.mask.size} frames for {self.n_frames}")

    def chunk_layout(self):
        """The wrapped source's raw chunk layout: device readers zero the excluded frames
        themselves (:func:`ewoksxpcs.opencl.compact.compact_opencl`)."""
        get = getattr(self.source, "chunk_layout", None)
        if get is None:
            return None, f"{type(self.source).__name__} has no raw chunks"
        return get()

    def map_frames(self, frames, t):
        sel = self.mask[t]
        if sel.any():
            frames = frames.copy()  # never write into the caller's array
            frames[sel] = 0
        return frames

    def __repr__(self) -> str:
        return f"ExcludedFrameSource({self.source!r}, {int(self.mask.sum())} excluded)"


def exclude_frames(frames, bad_frames) -> ExcludedFrameSource:
    """Wrap ``frames`` (array or FrameSource) so that ``bad_frames`` (scan indices of the frames'
    range, a str list or a bool mask) read as zeros."""
    source = as_frame_source(frames)
    if source.n_frames is None:
        raise ValueError("bad frames need a frame source of known length")
    return ExcludedFrameSource(source, bad_frame_mask(bad_frames, source.n_frames, scan_indices(source)))


def pair_counts(excluded: Optional[numpy.ndarray], n_frames: int, lags) -> numpy.ndarray:
    """Remaining pairs per lag, P(τ) = Σ_t w(t)·w(t+τ), (n_lags,) int64 (w = not excluded)."""
    lags = numpy.asarray(lags, dtype=numpy.int64)
    if excluded is None:
        return numpy.maximum(n_frames - lags, 0)
    w = (~numpy.asarray(excluded, dtype=bool)).astype(numpy.int64)
    return numpy.array([int(w[: max(n_frames - k, 0)] @ w[k:]) for k in lags.tolist()],
                       dtype=numpy.int64)


def level_weights(excluded: numpy.ndarray, level: int) -> numpy.ndarray:
    """w_L (n_L,) int64 of multi-tau level L: 1 when any of its 2^L members is good."""
    w = (~numpy.asarray(excluded, dtype=bool)).astype(numpy.int64)
    for _ in range(level):
        n = w.shape[0] // 2
        w = numpy.maximum(w[0 : 2 * n : 2], w[1 : 2 * n : 2])
    return w


def _label_image(labels) -> numpy.ndarray:
    """A label image from an image or a :class:`~ewoksxpcs.engine.qmask.Binning` (bins 1 … n)."""
    if hasattr(labels, "pixel_index"):
        img = numpy.zeros(int(numpy.prod(labels.shape)), dtype=numpy.int64)
        for i in range(labels.n_bins):
            img[labels.pixel_index[labels.bin_offsets[i]: labels.bin_offsets[i + 1]]] = i + 1
        return img.reshape(labels.shape)
    return numpy.asarray(labels)


def frame_bin_sums(frames, labels: numpy.ndarray, chunk_frames: Optional[int] = None):
    """Per-frame sums of every bin, one pass over the frames.

    Parameters
    ----------
    frames : FrameSource or array (Nt, Ny, Nx)
    labels : ndarray (Ny, Nx) int, or Binning
        0 = unused; bins are the sorted positive labels.

    Returns
    -------
    ndarray (Nt, n_bins)
        int64 for integer frames, float64 otherwise.
    """
    source = as_frame_source(frames)
    flat = _label_image(labels).ravel()
    # The pixels of the bins in label order: one gather and one segment sum per chunk.
    order = numpy.argsort(flat, kind="stable")
    order = order[flat[order] > 0]
    sorted_labels = flat[order]
    starts = numpy.flatnonzero(numpy.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    n_bins = int(starts.size) if order.size else 0
    acc = numpy.int64 if numpy.dtype(source.dtype).kind in "iu" else numpy.float64
    out = [numpy.zeros((0, n_bins), acc)]
    for chunk in source.iter_chunks(chunk_frames):
        x = numpy.take(chunk.reshape(chunk.shape[0], -1), order, axis=1)
        out.append(numpy.add.reduceat(x, starts, axis=1, dtype=acc) if n_bins and x.shape[0]
                   else numpy.zeros((x.shape[0], n_bins), acc))
    return numpy.concatenate(out, axis=0)


def _outliers(x: numpy.ndarray, window: int, threshold: float) -> numpy.ndarray:
    """|x − running median| > threshold·(1.4826·MAD of the residuals), per column of x (n, m)."""
    median_filter = import_module("scipy.ndimage").median_filter

    x = numpy.asarray(x, dtype=numpy.float64)
    w = max(1, min(int(window), x.shape[0]) | 1)  # odd
    med = median_filter(x, size=(w, 1), mode="nearest")
    r = x - med
    sigma = 1.4826 * numpy.median(numpy.abs(r - numpy.median(r, axis=0)), axis=0)
    # Counting floor: at low counts most sums are 0 and the MAD vanishes; a Poisson sum of mean
    # m has σ = √m (and a departure of one count is never an outlier).
    sigma = numpy.maximum(sigma, numpy.sqrt(numpy.maximum(x.mean(axis=0), 1.0)))
    return numpy.abs(r) > threshold * sigma


def detect_bad_frames(bin_sums: numpy.ndarray, window: int = DEFAULT_WINDOW,
                      threshold: float = DEFAULT_THRESHOLD) -> numpy.ndarray:
    """Bad frames from per-frame bin sums (see the module docstring for the rule).

    Parameters
    ----------
    bin_sums : ndarray (Nt, n_bins)
        Counts per frame and bin (:func:`frame_bin_sums`).
    window : int
        Running-median window, frames (made odd).
    threshold : float
        k, in robust standard deviations.

    Returns
    -------
    ndarray (Nt,) bool
    """
    if threshold <= 0 or window < 1:
        raise ValueError(f"threshold must be > 0 and window >= 1, got {threshold}, {window}")
    s = numpy.asarray(bin_sums)
    if s.ndim == 1:
        s = s[:, None]
    total = s.sum(axis=1, dtype=numpy.float64)
    if s.shape[0] < 3:
        return (total == 0) & (total.mean() > 20)
    # A zero total is a dropped frame where it is improbable (Poisson: e^-mean < e^-20).
    bad = _outliers(total[:, None], window, threshold)[:, 0] | ((total == 0) & (total.mean() > 20))
    if s.shape[1] > 1:
        bad |= _outliers(s, window, threshold).any(axis=1)
    return bad


def find_bad_frames(frames, labels, window: int = DEFAULT_WINDOW,
                    threshold: float = DEFAULT_THRESHOLD) -> numpy.ndarray:
    """Scan indices of the bad frames of ``frames`` (one extra reading pass), (n,) int64."""
    source = as_frame_source(frames)
    mask = detect_bad_frames(frame_bin_sums(source, labels), window, threshold)
    idx = scan_indices(source)
    return (numpy.flatnonzero(mask) if idx is None else idx[mask]).astype(numpy.int64)


def kept_offsets(events, keep: numpy.ndarray) -> numpy.ndarray:
    """Pixel offsets (n_pix + 1,) int64 of the events ``keep`` (n_events,) bool of an
    EventStack (pixel-major: a pixel's events stay contiguous)."""
    counts = numpy.zeros(events.pixel_index.size, numpy.int64)
    has = numpy.diff(events.offsets) > 0  # reduceat of an empty segment gives one value
    if keep.size:
        counts[has] = numpy.add.reduceat(keep.astype(numpy.int64), events.offsets[:-1][has])
    return numpy.concatenate([[0], numpy.cumsum(counts)])


def exclude_events(events, mask: numpy.ndarray):
    """An EventStack without the events of the excluded frames (``mask`` (n_frames,) bool)."""
    from .events import EventStack

    mask = numpy.asarray(mask, dtype=bool)
    if mask.shape != (events.n_frames,):
        raise ValueError(f"bad-frame mask of {mask.size} frames for {events.n_frames}")
    keep = ~mask[events.times]
    offsets = kept_offsets(events, keep)
    frame_sums = None
    if events.frame_sums is not None:
        frame_sums = numpy.where(mask[:, None], 0, events.frame_sums)
    out = EventStack(events.values[keep], events.times[keep], offsets, events.pixel_index,
                     events.frame_shape, events.n_frames, events.dtype, frame_sums=frame_sums,
                     labels=events.labels)
    out.frame_period = getattr(events, "frame_period", None)
    out.excluded = mask
    return out


def excluded_of(data) -> Optional[numpy.ndarray]:
    """The excluded-frame mask of ``data`` (an ExcludedFrameSource, possibly wrapped), or None."""
    while data is not None:
        if isinstance(data, ExcludedFrameSource):
            return data.mask
        if getattr(data, "excluded", None) is not None:
            return data.excluded
        data = getattr(data, "source", None)
    return None


def apply_bad_frames(data, bad_frames=None, auto=None, binning=None,
                     window: int = DEFAULT_WINDOW, reading=None):
    """``data`` with its bad frames excluded, and what was excluded.

    Parameters
    ----------
    data : FrameSource, array (Nt, Ny, Nx) or EventStack
    bad_frames : str, sequence of int or bool mask, optional
        Scan frame indices (of the original scan, the frame range of ``data`` applied).
    auto : bool or float, optional
        Also detect bad frames (:func:`detect_bad_frames`); a float is the threshold k.
    binning : Binning, optional
        Bins of the per-bin test (needed with ``auto``).
    reading : callable, optional
        ``reading(source)`` -> the source the detection pass reads (e.g. a monitored one, for
        progress and cancellation).

    Returns
    -------
    data : FrameSource or EventStack
        Unchanged when nothing is excluded.
    info : dict or None
        ``mask`` (Nt,) bool, ``scan_indices`` (n,) int64 of the excluded frames, ``given`` and
        ``detected`` (scan indices), ``threshold`` and ``window`` of the detection; None when
        neither ``bad_frames`` nor ``auto`` was given.
    """
    from .events import EventStack

    if bad_frames is None and not auto:
        return data, None
    is_events = isinstance(data, EventStack)
    source = data if is_events else as_frame_source(data)
    n = source.n_frames
    if n is None:
        raise ValueError("bad frames need a frame source of known length")
    idx = None if is_events else scan_indices(source)
    mask = numpy.zeros(n, dtype=bool)
    if bad_frames is not None:
        mask |= bad_frame_mask(bad_frames, n, idx)
    given = mask.copy()
    threshold = None
    if auto:
        threshold = DEFAULT_THRESHOLD if auto is True else float(auto)
        if binning is None:
            raise ValueError("automatic bad frames need the binning")
        if is_events:
            sub = data.frame_sums_for(binning)
            sums = numpy.add.reduceat(sub, binning.bin_sub_offsets[:-1][binning.n_groups_per_bin > 0],
                                      axis=1) if sub.size else sub
        else:
            sums = frame_bin_sums(source if reading is None else reading(source), binning)
        mask |= detect_bad_frames(sums, window, threshold)
    scan = numpy.arange(n) if idx is None else idx
    info = {
        "mask": mask,
        "scan_indices": scan[mask].astype(numpy.int64),
        "given": scan[given].astype(numpy.int64),
        "detected": scan[mask & ~given].astype(numpy.int64),
        "threshold": threshold,
        "window": int(window) if auto else None,
    }
    if mask.all():
        raise ValueError("every frame is a bad frame: nothing left to correlate")
    if not mask.any():
        return data, info
    return (exclude_events(data, mask) if is_events else ExcludedFrameSource(source, mask)), info
