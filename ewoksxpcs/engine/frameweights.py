"""Per-frame intensity normalisation: frames scaled by a monitor or by their own sum.

Each frame is multiplied, as it is read, by a weight c(t) = ⟨M⟩/M(t), where M is

- a monitor of the scan (``normalise_by="<counter>"``: a Bliss counter of the same scan,
  ``<scan>/measurement/<counter>``, e.g. an I0 monitor or the transmission), or
- the frame's own total in the bins (``normalise_by="frame-sum"``, one extra reading pass),

and ⟨M⟩ its mean over the frames kept (the scale of the counts is kept). Every mode then sees
I'(t, p) = c(t)·I(t, p) in place of I(t, p) in its definition (:mod:`ewoksxpcs.engine.normalise`,
:mod:`ewoksxpcs.engine.multitau`, :mod:`ewoksxpcs.engine.twotime`): a pair (t, t+τ) of the linear g2 weighs
c(t)·c(t+τ) in both n2 and s2, the symmetric multi-tau past/future means and the intensity vs time
become flux-corrected. Frames with M(t) <= 0 or not finite get c = 0 (excluded, as bad frames).

Exactness: the weighted frames are float32, so the sums are float64 (no longer exact integers);
with integer frames and no normalisation the sums stay exact int64. The linear g2 = N_q·n2/s2
and the two-time map are ratios whose per-pair value does not depend on a frame scale, so a flux
drift only re-weights their pairs; the symmetric multi-tau normalisation and every intensity
(mean image, intensity vs time, segments) do depend on it.
"""

from __future__ import annotations

from typing import Optional

import numpy

from .frames import FrameSource, MappedFrameSource, as_frame_source

__all__ = ["FRAME_SUM", "read_monitor", "frame_weights", "WeightedFrameSource",
           "weight_events", "apply_normalisation"]

#: ``normalise_by`` value: each frame by its own total in the bins.
FRAME_SUM = "frame-sum"


def read_monitor(source, name: str) -> numpy.ndarray:
    """Counter ``name`` of the scan of an HDF5 frame source, for its frames, (Nt,) float64.

    Looked up as ``<scan>/measurement/<name>`` (Bliss), then ``<scan>/<name>`` and ``name``
    as an absolute path, where ``<scan>`` is the first group of the frames' path.
    """
    import h5py

    inner = source
    while not hasattr(inner, "filename") and getattr(inner, "source", None) is not None:
        inner = inner.source
    filename, path = getattr(inner, "filename", None), getattr(inner, "path", None)
    if filename is None or path is None:
        raise ValueError(
            f"normalise by monitor {name!r}: the frames are not read from an HDF5 scan"
        )
    scan = "/" + path.strip("/").split("/")[0]
    candidates = [f"{scan}/measurement/{name}", f"{scan}/{name}", name]
    with h5py.File(filename, "r") as f:
        for c in candidates:
            if c in f and isinstance(f[c], h5py.Dataset) and f[c].ndim == 1:
                values = f[c][()]
                break
        else:
            raise ValueError(
                f"normalise by monitor: no counter {name!r} in {filename} "
                f"(looked for {', '.join(candidates)})"
            )
    r = getattr(inner, "_range", range(inner.n_frames))
    if len(values) < r.stop:
        raise ValueError(
            f"monitor {name!r} has {len(values)} values, the frames need {r.stop}"
        )
    return numpy.asarray(values[r.start: r.stop: r.step], dtype=numpy.float64)


def frame_weights(monitor, excluded: Optional[numpy.ndarray] = None) -> numpy.ndarray:
    """c(t) = ⟨M⟩/M(t), (Nt,) float64; 0 where M <= 0, not finite or excluded."""
    m = numpy.asarray(monitor, dtype=numpy.float64)
    good = numpy.isfinite(m) & (m > 0)
    if excluded is not None:
        good &= ~numpy.asarray(excluded, dtype=bool)
    if not good.any():
        raise ValueError("normalisation: the monitor is zero or invalid on every frame")
    c = numpy.zeros_like(m)
    c[good] = m[good].mean() / m[good]
    return c


class WeightedFrameSource(MappedFrameSource):
    """Frames of ``source`` multiplied by ``weights`` (Nt,), as float32."""

    def __init__(self, source: FrameSource, weights: numpy.ndarray):
        super().__init__(source, numpy.float32)
        self.weights = numpy.asarray(weights, dtype=numpy.float64)
        if self.n_frames is not None and self.weights.size != self.n_frames:
            raise ValueError(f"{self.weights.size} frame weights for {self.n_frames} frames")
        #: zero weights are excluded frames
        self.excluded = self.weights == 0

    def map_frames(self, frames, t):
        w = self.weights[t].astype(numpy.float32)
        return frames.astype(numpy.float32) * w[:, None, None]

    def __repr__(self) -> str:
        return f"WeightedFrameSource({self.source!r})"


def weight_events(events, weights: numpy.ndarray):
    """An EventStack whose values are multiplied by ``weights`` of their frame (float32)."""
    from .badframes import kept_offsets
    from .events import EventStack

    w = numpy.asarray(weights, dtype=numpy.float64)
    keep = w[events.times] != 0
    values = (events.values[keep] * w[events.times[keep]]).astype(numpy.float32)
    out = EventStack(values, events.times[keep], kept_offsets(events, keep), events.pixel_index,
                     events.frame_shape, events.n_frames, numpy.float32)
    out.frame_period = getattr(events, "frame_period", None)
    out.excluded = w == 0
    return out


def apply_normalisation(data, normalise_by, binning=None):
    """``data`` with each frame scaled by c(t) (see the module docstring), and a record.

    Parameters
    ----------
    data : FrameSource, array or EventStack
        (bad frames already excluded, if any).
    normalise_by : str or ndarray (Nt,)
        ``"frame-sum"``, a counter name of the scan, or the monitor values themselves.
    binning : Binning
        Needed for ``"frame-sum"``.

    Returns
    -------
    data, info
        ``info``: ``normalise_by`` (str), ``weights`` (Nt,) float64.
    """
    from .badframes import excluded_of, frame_bin_sums
    from .events import EventStack

    is_events = isinstance(data, EventStack)
    source = data if is_events else as_frame_source(data)
    excluded = excluded_of(source)
    if isinstance(normalise_by, str) and normalise_by == FRAME_SUM:
        if binning is None:
            raise ValueError("normalisation by the frame sum needs the binning")
        if is_events:
            monitor = data.frame_sums_for(binning).sum(axis=1)
        else:
            monitor = frame_bin_sums(source, binning).sum(axis=1)
        label = FRAME_SUM
    elif isinstance(normalise_by, str):
        if is_events:
            raise ValueError("normalisation by a monitor applies to frames, not to events")
        monitor, label = read_monitor(source, normalise_by), normalise_by
    else:
        monitor, label = numpy.asarray(normalise_by, dtype=numpy.float64), "given monitor"
    if monitor.shape != (source.n_frames,):
        raise ValueError(f"{monitor.size} monitor values for {source.n_frames} frames")
    w = frame_weights(monitor, excluded)
    out = weight_events(data, w) if is_events else WeightedFrameSource(source, w)
    return out, {"normalise_by": label, "weights": w}
