"""Stability: partial g2 and mean intensity over N equal time segments, in every mode.

The frames 0 … Nt−1 are cut into ``n_segments`` successive segments [e_s, e_{s+1}) with
e_s = ⌊s·Nt/N⌋; each segment is correlated on its own, in the mode of the run (linear,
multi-tau or two-time, same method and options, bad frames and frame weights included): its g2
holds the pairs whose two frames lie in the segment. The lags kept are those every segment has
(the shortest segment's). The mean intensity of bin q in segment s, counts per pixel per frame,
is Σ_t S(t, q) / (N_q · kept frames of the segment) — a SAXS-like curve per segment. Drifts of
g2 or of the intensity from segment to segment reveal ageing, beam damage or instabilities.

The frames are read once per segment (a source read once, e.g. a generator, is refused).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy

from ..engine.frames import FrameSource, MappedFrameSource, as_frame_source, frames_at

__all__ = ["SegmentResult", "segment_edges", "RangeFrameSource", "events_range",
           "correlate_segments"]


@dataclass
class SegmentResult:
    """Partial g2 and intensities of the time segments.

    Attributes
    ----------
    edges : ndarray (n_segments + 1,) int64
        First frame of each segment (frames of the correlated stack), and Nt.
    lags : ndarray (n_lags,)
        Lags in frames.
    g2, g2_err : ndarray (n_segments, n_bins, n_lags) float64
    labels : ndarray (n_bins,) int64
    intensity : ndarray (n_segments, n_bins) float64
        Mean counts per pixel per frame.
    mode : str
    """

    edges: numpy.ndarray
    lags: numpy.ndarray
    g2: numpy.ndarray
    g2_err: numpy.ndarray
    labels: numpy.ndarray
    intensity: numpy.ndarray
    mode: str = "linear"

    @property
    def n_segments(self) -> int:
        return int(self.edges.size - 1)


def segment_edges(n_frames: int, n_segments: int) -> numpy.ndarray:
    """e_s = ⌊s·Nt/N⌋, s = 0 … N, (N + 1,) int64."""
    if n_segments < 1 or n_segments > n_frames // 2:
        raise ValueError(
            f"segments must be between 1 and half the number of frames ({n_frames // 2}), "
            f"got {n_segments}"
        )
    return (numpy.arange(n_segments + 1, dtype=numpy.int64) * n_frames) // n_segments


class RangeFrameSource(MappedFrameSource):
    """Frames [start, stop) of a re-iterable source (the excluded/weighted views follow)."""

    def __init__(self, source: FrameSource, start: int, stop: int):
        if not source.reiterable:
            raise ValueError("segments need frames that can be read again (not a generator)")
        super().__init__(source)
        self.start, self.stop = int(start), int(stop)
        self.n_frames = self.stop - self.start
        from ..engine.badframes import excluded_of

        excluded = excluded_of(source)  # the excluded frames of the range
        self.excluded = None if excluded is None else excluded[self.start: self.stop]

    def iter_chunks(self, chunk_frames: Optional[int] = None):
        t0 = 0
        for chunk in self.source.iter_chunks(chunk_frames):
            n = chunk.shape[0]
            a, b = max(self.start - t0, 0), min(self.stop - t0, n)
            if a < b:
                yield chunk[a:b]
            t0 += n
            if t0 >= self.stop:
                break

    def __getitem__(self, index):
        t = range(self.start, self.stop)[index]
        return frames_at(self.source, t if isinstance(t, int) else slice(t.start, t.stop, t.step))


def events_range(events, start: int, stop: int):
    """The events of frames [start, stop), times shifted to start at 0."""
    from ..engine.badframes import kept_offsets
    from ..engine.events import EventStack

    keep = (events.times >= start) & (events.times < stop)
    out = EventStack(events.values[keep], events.times[keep] - start, kept_offsets(events, keep),
                     events.pixel_index, events.frame_shape, stop - start, events.dtype)
    out.frame_period = getattr(events, "frame_period", None)
    excluded = getattr(events, "excluded", None)
    if excluded is not None:
        out.excluded = excluded[start:stop]
    return out


def correlate_segments(data, binning, n_segments: int, correlate_sums, normalise_sums,
                       mode: str = "linear", method: str = "auto", device=None, options=None,
                       mode_options=None) -> SegmentResult:
    """Partial g2 and intensity of ``n_segments`` time segments (see the module docstring).

    Parameters
    ----------
    data : FrameSource or EventStack
        What the main correlation read (bad frames excluded, weights applied).
    binning : Binning
    n_segments : int
    correlate_sums, normalise_sums : callable
        The pipeline's steps (:func:`ewoksxpcs.workflow.pipeline.correlate_sums` and
        ``normalise_sums``; passed in: the pipeline calls this module).
    mode, method, device, options, mode_options
        As for :func:`ewoksxpcs.workflow.pipeline.correlate_sums`.
    """
    from ..engine.badframes import excluded_of
    from ..engine.events import EventStack

    is_events = isinstance(data, EventStack)
    source = data if is_events else as_frame_source(data)
    edges = segment_edges(int(source.n_frames), int(n_segments))
    mode_options = dict(mode_options or {})
    parts = []
    for a, b in zip(edges[:-1].tolist(), edges[1:].tolist()):
        part = events_range(data, a, b) if is_events else RangeFrameSource(source, a, b)
        c = correlate_sums(part, binning, method=method, device=device, mode=mode,
                           options=options, mode_options=mode_options)
        r = normalise_sums(c["sums"], binning, mode=mode, mode_options=c["mode_options"])
        res = r["result"]
        ex = excluded_of(part)
        fs = numpy.asarray(res.frame_sums, dtype=numpy.float64)
        used = fs.shape[0] * int(getattr(res, "time_bin", 1))  # two-time: whole time bins
        kept = used - (0 if ex is None else int(ex[:used].sum()))
        with numpy.errstate(invalid="ignore", divide="ignore"):
            inten = fs.sum(axis=0) / (res.n_pixels * max(kept, 1))
        parts.append((res.lags, r["g2"], r["g2_err"], res.labels, inten))
    n = min(p[0].size for p in parts)
    return SegmentResult(
        edges=edges,
        lags=numpy.asarray(parts[0][0][:n]),
        g2=numpy.stack([p[1][:, :n] for p in parts]),
        g2_err=numpy.stack([p[2][:, :n] for p in parts]),
        labels=numpy.asarray(parts[0][3], dtype=numpy.int64),
        intensity=numpy.stack([p[4] for p in parts]),
        mode=mode,
    )
