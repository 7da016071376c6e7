"""The steps of the XPCS pipeline as plain functions: what the Ewoks tasks call.

Each function works without Ewoks, takes an optional :class:`~ewoksxpcs.workflow.cancellation.CancelToken`
and an optional ``progress(fraction)`` callback (fraction in [0, 1]), and returns plain data.

Correlation *modes*, entries of :data:`MODES` with their own ``create``, ``correlate`` and
``normalise`` functions (the tasks dispatch on the name):

- ``linear``: every lag 0 … Nt−1 (:mod:`ewoksxpcs.correlators`, :mod:`ewoksxpcs.engine.normalise`);
- ``multitau``: log-spaced lags (:mod:`ewoksxpcs.engine.multitau`); options ``lags_per_level`` and
  ``normalisation``; the sums are :class:`~ewoksxpcs.engine.multitau.MultiTauSums`, the result a
  :class:`~ewoksxpcs.engine.multitau.MultiTauResult`;
- ``twotime``: two-time maps C(q, t1, t2) and the g2 derived from them
  (:mod:`ewoksxpcs.engine.twotime`); options ``twotime_bins`` (labels) and ``time_bin`` (frames); the
  correlation step already yields the :class:`~ewoksxpcs.engine.twotime.TwoTimeResult` (the maps are
  not additive sums), which the normalisation step completes (τ axis, provenance).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Callable, Dict, Optional, Tuple

import numpy

from .cancellation import CancelToken, MonitoredFrameSource
from ..engine.options import check_options, positive_int
from ..engine.qmask import DEFAULT_GROUPS, Binning

__all__ = [
    "MODES",
    "register_mode",
    "check_mode",
    "check_mode_options",
    "make_binning",
    "correlate_sums",
    "normalise_sums",
    "compact_frames",
    "save_events",
    "mean_image_from_events",
    "tau_axis",
    "map_bins",
    "describe",
]

Progress = Optional[Callable[[float], None]]

logger = logging.getLogger(__name__)


def describe(value, max_elements: int = 64):
    """A short, HDF5/JSON-friendly description of a parameter value (arrays summarised)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, numpy.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): describe(v, max_elements) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and len(value) <= max_elements:
        return [describe(v, max_elements) for v in value]
    if isinstance(value, numpy.ndarray):
        if value.size <= max_elements:
            return value.tolist()
        return f"array of shape {value.shape}, dtype {value.dtype}"
    url = getattr(value, "url", None)
    if isinstance(url, str):
        return url
    return repr(value)[:200]


# ------------------------------------------------------------------------------ binning
def make_binning(qmask, labels=None, bad_pixels=None, n_groups: int = DEFAULT_GROUPS) -> Binning:
    """A :class:`Binning` from a label image (kept as is when it already is one)."""
    if isinstance(qmask, Binning):
        if labels is not None and not numpy.array_equal(numpy.unique(labels), qmask.labels):
            raise ValueError("labels differ from those of the given Binning")
        return qmask
    if qmask is None:
        raise ValueError("no q-mask given")
    return Binning(qmask, labels=labels, bad_pixels=bad_pixels, n_groups=int(n_groups))


def map_bins(values, from_labels, to_labels, fill=numpy.nan) -> Optional[numpy.ndarray]:
    """Reorder per-bin ``values`` given for ``from_labels`` onto ``to_labels`` (missing: fill)."""
    if values is None:
        return None
    values = numpy.asarray(values)
    if from_labels is None:
        if values.shape[0] != len(to_labels):
            raise ValueError(f"{values.shape[0]} per-bin values for {len(to_labels)} bins")
        return values
    from_labels = numpy.asarray(from_labels, dtype=numpy.int64)
    if values.shape[0] != from_labels.size:
        raise ValueError(f"{values.shape[0]} per-bin values for {from_labels.size} labels")
    order = numpy.argsort(from_labels)
    pos = numpy.searchsorted(from_labels[order], to_labels)
    pos = numpy.clip(pos, 0, max(from_labels.size - 1, 0))
    found = from_labels[order][pos] == numpy.asarray(to_labels)
    out = numpy.full(
        (len(to_labels),) + values.shape[1:], fill, dtype=numpy.result_type(values, type(fill))
    )
    out[found] = values[order][pos[found]]
    return out


# ------------------------------------------------------------------------------ modes
def _linear_create(binning, method, device, data, **options):
    from ..correlators import create_correlator

    return create_correlator(binning, method=method, device=device, data=data, **options)


def _linear_correlate(correlator, data):
    return correlator.compute_sums(data)


def _linear_normalise(sums, binning, method, device, s2_method, info):
    from ..engine.normalise import normalise

    return normalise(sums, binning, method=method, device=device, s2_method=s2_method, info=info)


def _multitau_create(binning, method, device, data, lags_per_level=None, normalisation=None,
                     **options):
    from ..correlators import create_multitau
    from ..engine.multitau import DEFAULT_LAGS_PER_LEVEL

    correlator = create_multitau(
        binning,
        method=method,
        device=device,
        data=data,
        lags_per_level=DEFAULT_LAGS_PER_LEVEL if lags_per_level is None else lags_per_level,
        normalisation=normalisation or "standard",
        **options,
    )
    correlator.input_kind = "any"  # reads frames and EventStacks itself
    return correlator


def _multitau_correlate(correlator, data):
    return correlator.compute_sums(data)


def _multitau_normalise(sums, binning, method, device, s2_method, info, normalisation=None,
                        lags_per_level=None):
    from ..engine.multitau import normalise_multitau

    if lags_per_level is not None and int(lags_per_level) != sums.lags_per_level:
        raise ValueError(
            f"lags_per_level={lags_per_level} differs from that of the sums ({sums.lags_per_level})"
        )
    return normalise_multitau(
        sums, binning, normalisation or "standard", method=method, device=device, info=info
    )


def _twotime_create(binning, method, device, data, twotime_bins=None, time_bin=None, **options):
    from ..correlators import create_twotime

    correlator = create_twotime(
        binning, method=method, device=device, data=data, bins=twotime_bins, time_bin=time_bin,
        **options
    )
    correlator.input_kind = "any"  # reads frames and EventStacks itself
    return correlator


def _twotime_correlate(correlator, data):
    # The maps are the product of this step (not additive): the result, completed later.
    return correlator.correlate(data)


def _twotime_normalise(result, binning, method, device, s2_method, info, twotime_bins=None,
                       time_bin=None):
    from ..engine.twotime import TwoTimeResult

    if not isinstance(result, TwoTimeResult):
        raise TypeError(
            f"mode 'twotime' normalises a TwoTimeResult (Correlate mode 'twotime'), "
            f"not a {type(result).__name__}"
        )
    if time_bin is not None and int(time_bin) != result.time_bin:
        raise ValueError(f"time_bin={time_bin} differs from that of the maps ({result.time_bin})")
    # A shallow copy (the maps are shared): the correlation step's output stays as it was.
    return dataclasses.replace(
        result,
        method=method or result.method,
        device=device or result.device,
        info={**result.info, **info},
    )


#: mode name -> functions of the mode:
#:
#: - ``create(binning, method, device, data, **options)`` -> a correlator (``.name``,
#:   ``.device_name``, ``.input_kind`` "dense"/"events"/"any", optional ``.auto_reason``);
#: - ``correlate(correlator, data)`` -> additive sums (``.n_frames``);
#: - ``normalise(sums, binning, method, device, s2_method, info, **mode_options)`` -> a result
#:   (``.lags`` frames, ``.labels``, ``.g2``, ``.g2_err``, ``.n_pixels``);
#: - ``options``: names of the mode's options (keyword arguments of ``create`` and
#:   ``normalise``).
MODES: Dict[str, dict] = {}


def register_mode(
    name: str,
    create: Callable,
    correlate: Callable,
    normalise: Callable,
    options: Tuple[str, ...] = (),
) -> None:
    """Make a correlation mode selectable in :func:`correlate_sums` / :func:`normalise_sums`
    (and so in the Correlate and Normalise tasks); ``options`` names its mode options."""
    MODES[name] = {
        "create": create,
        "correlate": correlate,
        "normalise": normalise,
        "options": tuple(options),
    }


register_mode("linear", _linear_create, _linear_correlate, _linear_normalise)
register_mode(
    "multitau",
    _multitau_create,
    _multitau_correlate,
    _multitau_normalise,
    options=("lags_per_level", "normalisation"),
)
register_mode(
    "twotime",
    _twotime_create,
    _twotime_correlate,
    _twotime_normalise,
    options=("twotime_bins", "time_bin"),
)


def check_mode(mode: str) -> str:
    """Return ``mode`` if it is a known correlation mode, else raise ValueError naming them."""
    if mode not in MODES:
        raise ValueError(f"unknown correlation mode {mode!r}; available modes: {', '.join(MODES)}")
    return mode


def check_mode_options(mode: str, mode_options: Optional[dict]) -> dict:
    """The options of ``mode`` that are set (None values dropped), validated.

    Raises
    ------
    ValueError
        An option that the mode does not take (e.g. ``time_bin`` with mode ``multitau``), or a
        bad value (``lags_per_level`` not an even integer >= 2, unknown ``normalisation``,
        ``time_bin`` < 1, ``twotime_bins`` not a list of integer labels).
    """
    check_mode(mode)
    given = {k: v for k, v in (mode_options or {}).items() if v is not None}
    allowed = MODES[mode]["options"]
    wrong = sorted(set(given) - set(allowed))
    if wrong:
        messages = []
        for k in wrong:
            owners = ", ".join(repr(m) for m, entry in MODES.items() if k in entry["options"])
            messages.append(
                f"option {k!r} does not apply to mode {mode!r}"
                + (f" (it is an option of mode {owners})" if owners else "")
            )
        raise ValueError("; ".join(messages))
    if "lags_per_level" in given:
        from ..engine.multitau import check_lags_per_level

        given["lags_per_level"] = check_lags_per_level(given["lags_per_level"])
    if "normalisation" in given:
        from ..engine.multitau import check_normalisation

        check_normalisation(given["normalisation"])
    if "time_bin" in given:
        from ..engine.twotime import choose_time_bin

        given["time_bin"] = choose_time_bin(None, given["time_bin"])
    if "twotime_bins" in given:
        bins = given["twotime_bins"]
        if numpy.isscalar(bins):
            bins = [bins]
        arr = numpy.asarray(bins)
        if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
            raise ValueError(
                f"twotime_bins must be a non-empty list of integer labels, got {bins!r}"
            )
        given["twotime_bins"] = [int(v) for v in arr]
    return given


# ------------------------------------------------------------------------------ correlate
def mean_image_from_events(events) -> numpy.ndarray:
    """Mean counts per pixel per frame (Ny, Nx) float64 of an EventStack."""
    ny, nx = events.frame_shape
    total = numpy.zeros(ny * nx)
    total[events.pixel_index] = pixel_totals(events)
    return (total / max(events.n_frames, 1)).reshape(ny, nx)


def pixel_totals(events) -> numpy.ndarray:
    """Sum of the events of each kept pixel, (n_pix,) int64 (float64 for float events).

    Segment sums (``reduceat``) over blocks of pixels: the cast of the values is bounded by
    :data:`ewoksxpcs.engine.events.EVENT_BLOCK` events, which matters at 10^9 events.
    """
    if getattr(events, "pixel_sums", None) is not None:
        return events.pixel_sums  # summed on the device during the compaction
    from ..engine.events import pixel_blocks

    acc = numpy.float64 if numpy.dtype(events.values.dtype).kind == "f" else numpy.int64
    counts = numpy.diff(events.offsets)
    out = numpy.zeros(events.n_pixels, dtype=acc)
    # By blocks of pixels: reduceat casts its input to ``acc`` whole.
    for p0, p1 in pixel_blocks(events.offsets):
        e0, e1 = int(events.offsets[p0]), int(events.offsets[p1])
        has = numpy.flatnonzero(counts[p0:p1] > 0)
        if e1 > e0:
            # reduceat of an empty segment returns one value instead of 0: only non-empty ones.
            out[p0 + has] = numpy.add.reduceat(events.values[e0:e1],
                                               events.offsets[p0:p1][has] - e0, dtype=acc)
    return out


def correlate_sums(
    frames,
    qmask,
    method: str = "auto",
    device: Optional[str] = None,
    mode: str = "linear",
    options: Optional[dict] = None,
    labels=None,
    bad_pixels=None,
    n_groups: int = DEFAULT_GROUPS,
    token: Optional[CancelToken] = None,
    progress: Progress = None,
    mode_options: Optional[dict] = None,
    bad_frames=None,
    auto_bad_frames=None,
    normalise_by=None,
    segments: Optional[int] = None,
) -> dict:
    """Correlate frames (or events) into the additive sums, with progress and cancellation.

    Parameters
    ----------
    frames : FrameSource, ndarray (Nt, Ny, Nx) or EventStack
    qmask : ndarray (Ny, Nx) of int, or Binning
    method : str
        Registry name or ``auto``.
    device : str, optional
        OpenCL device ("cpu", "gpu", "platform:device").
    mode : str
        Correlation mode (see :data:`MODES`).
    options : dict, optional
        Backend options (e.g. ``chunk_frames``).
    mode_options : dict, optional
        Options of the mode (None values ignored): ``multitau``: ``lags_per_level`` (even
        int >= 2, default 8), ``normalisation`` ("standard" default, or "symmetric");
        ``twotime``: ``twotime_bins`` (labels, default all), ``time_bin`` (frames per time bin,
        default: the smallest giving at most 10 000 time bins).
    labels : sequence of int, optional
        Bins to keep (a label without pixel gives a NaN row), default: those present.
    bad_pixels : ndarray of bool (Ny, Nx), optional
    n_groups : int
        Pixel groups per bin for the error bars.
    bad_frames, auto_bad_frames
        Frames excluded from every pair (scan indices, e.g. "10,200-250"), and whether to
        detect more (True, or the threshold k): see :mod:`ewoksxpcs.engine.badframes`.
    normalise_by : str or ndarray, optional
        Per-frame weights: "frame-sum", a counter of the scan, or monitor values
        (:mod:`ewoksxpcs.engine.frameweights`).
    segments : int, optional
        Also correlate that many equal time segments (:mod:`ewoksxpcs.workflow.segments`).

    Returns
    -------
    dict
        ``bad_frames`` (what was excluded, see :func:`ewoksxpcs.engine.badframes.apply_bad_frames`,
        or None), ``normalised_by`` (record, or None), ``segments`` (SegmentResult or None),
        ``sums`` (CorrelationSums; MultiTauSums; TwoTimeResult), ``binning``, ``method`` and
        ``device`` used, ``auto_reason``, ``mode``, ``mode_options`` (those set, validated: pass
        them to :func:`normalise_sums`), ``mean_image`` (Ny, Nx) float64 counts per pixel per
        frame, ``n_frames``, ``timings`` (s).
    """
    from ..engine.events import EventStack
    from ..engine.frames import as_frame_source
    from ..io.load import EventFrameSource

    mode_options = check_mode_options(mode, mode_options)
    options = check_options(options)
    positive_int(n_groups, "n_groups")
    clash = sorted(set(options) & set(MODES[mode]["options"]))
    if clash:
        raise ValueError(f"give {', '.join(clash)} as mode options, not as engine options")
    t_start = time.perf_counter()
    binning = make_binning(qmask, labels=labels, bad_pixels=bad_pixels, n_groups=n_groups)
    is_events = isinstance(frames, EventStack)
    if not is_events:
        frames = as_frame_source(frames)
    binning.check_frame_shape(frames.frame_shape)
    frames, excluded = _exclude_bad_frames(frames, bad_frames, auto_bad_frames, binning, token)
    weighted = None
    if normalise_by is not None:
        from ..engine.frameweights import apply_normalisation

        frames, weighted = apply_normalisation(frames, normalise_by, binning)
    segment_data = frames
    correlator = MODES[mode]["create"](binning, method, device, frames, **mode_options, **options)
    if token is not None:
        token.check("correlation")
    n_frames = frames.n_frames
    mean_image = None
    data = frames
    monitor = None
    compaction_s = 0.0
    if is_events and getattr(correlator, "input_kind", "dense") == "dense":
        data = EventFrameSource(frames, getattr(frames, "frame_period", None))
    elif not is_events and getattr(correlator, "compaction_options", lambda: None)() is not None:
        # An OpenCL event correlator given frames: compact them on its device first (raw
        # compressed chunks are then decompressed there), the mean image comes from the events.
        t_c = time.perf_counter()
        frames = compact_frames(
            frames,
            **correlator.compaction_options(),
            bad_pixels=bad_pixels,
            token=token,
            progress=None if progress is None else (lambda f: progress(0.5 * f)),
        )
        compaction_s = time.perf_counter() - t_c
        logger.info("compacted %d frames into %d events in %.2f s (%s)", frames.n_frames,
                    frames.n_events, compaction_s, getattr(frames, "compaction", ""))
        data, is_events = frames, True
    # Progress: [lo, read_end) while the frames stream, [read_end, 0.95) for the work a
    # correlator does after reading them (its ``compute_share`` of the time), which it reports
    # through ``report_progress(fraction)``.
    lo = 0.5 if compaction_s else 0.0
    share = 1.0 if isinstance(data, EventStack) else float(getattr(correlator, "compute_share", 0))
    read_end = lo + (0.95 - lo) * (1.0 - share)
    if progress is not None and share:
        try:
            correlator.report_progress = lambda f: progress(read_end + (0.95 - read_end) * f)
        except AttributeError:  # a correlator without the attribute: no report
            pass
    if not isinstance(data, EventStack):

        def report(done, total):
            if progress is not None and total:
                progress(lo + (read_end - lo) * done / total)

        monitor = MonitoredFrameSource(
            data, token=token, progress=report, sum_image=not is_events, what="correlation"
        )
        data = monitor
    t0 = time.perf_counter()
    sums = MODES[mode]["correlate"](correlator, data)
    t1 = time.perf_counter()
    if token is not None:
        token.check("correlation")
    n_frames = sums.n_frames
    if is_events:
        mean_image = mean_image_from_events(frames)
    elif monitor is not None and monitor.sum_image is not None:
        mean_image = monitor.sum_image / max(n_frames, 1)
    from ..engine.badframes import excluded_of

    mask = excluded_of(segment_data)
    if mask is not None and mask.any():
        sums.excluded = mask  # multi-tau: the remaining pairs' counts; saved with the result
        if mean_image is not None:  # the mean over the frames kept
            mean_image = mean_image * (n_frames / max(int((~mask).sum()), 1))
    seg = None
    if segments:
        from .segments import correlate_segments

        seg = correlate_segments(segment_data, binning, int(segments), correlate_sums,
                                 normalise_sums, mode, method, device, options, mode_options)
    if progress is not None:
        progress(1.0)
    return {
        "normalised_by": weighted,
        "segments": seg,
        "sums": sums,
        "binning": binning,
        "method": getattr(correlator, "name", str(method)),
        "device": str(getattr(correlator, "device_name", device or "cpu")),
        "auto_reason": getattr(correlator, "auto_reason", "") or "",
        "mode": mode,
        "mode_options": mode_options,
        "mean_image": mean_image,
        "n_frames": int(n_frames),
        "bad_frames": excluded,
        "timings": {"setup_s": t0 - t_start - compaction_s, "compact_s": compaction_s,
                    "correlate_s": t1 - t0},
    }


def _exclude_bad_frames(frames, bad_frames, auto_bad_frames, binning, token=None):
    """(frames with the bad ones excluded, what was excluded or None); the detection pass is
    cancellable."""
    if bad_frames is None and not auto_bad_frames:
        return frames, None
    from ..engine.badframes import apply_bad_frames

    def reading(source):
        return MonitoredFrameSource(source, token=token, what="bad-frame detection")

    data, info = apply_bad_frames(frames, bad_frames, auto_bad_frames, binning, reading=reading)
    if info["scan_indices"].size:
        logger.info("excluding %d bad frame(s)", info["scan_indices"].size)
    return data, info


def tau_axis(lags, frame_period: Optional[float]):
    """Delays (τ, unit): lags × frame period in seconds, or lags in frames when unknown."""
    lags = numpy.asarray(lags)
    if frame_period is None:
        return lags.astype(numpy.float64), "frame"
    frame_period = float(frame_period)
    if not frame_period > 0:
        raise ValueError(f"frame_period must be > 0 seconds, got {frame_period}")
    return lags * frame_period, "s"


def normalise_sums(
    sums,
    binning: Binning,
    frame_period: Optional[float] = None,
    q=None,
    q_labels=None,
    chi=None,
    method: str = "",
    device: str = "cpu",
    mode: str = "linear",
    info: Optional[dict] = None,
    s2_method: str = "auto",
    mode_options: Optional[dict] = None,
) -> dict:
    """g2 with error bars, τ in seconds and q per bin from the sums.

    Parameters
    ----------
    sums : CorrelationSums
    binning : Binning
    frame_period : float, optional
        s; without it τ is in frames.
    q : ndarray (n,), optional
        q per bin, for the labels ``q_labels`` (default: the binning's labels).
    chi : ndarray (n,), optional
        Sector centre per bin (degrees), same labels as ``q``.
    mode, mode_options
        Correlation mode of the sums and its options (``mode_options`` of
        :func:`correlate_sums`; multi-tau: ``normalisation``).

    Returns
    -------
    dict
        ``result`` (CorrelationResult, MultiTauResult or TwoTimeResult), ``g2``, ``g2_err``
        (n_bins, n_τ), ``tau``, ``tau_unit``, ``q``, ``chi``, ``labels``, ``n_pixels``. The
        rows are the result's bins (two-time: the selected ones).
    """
    mode_options = check_mode_options(mode, mode_options)
    info = dict(info or {})
    info["mode"] = mode
    if mode_options:
        info["mode_options"] = dict(mode_options)
    normalise = MODES[mode]["normalise"]
    result = normalise(sums, binning, method, device, s2_method, info, **mode_options)
    if getattr(sums, "excluded", None) is not None:
        result.info["excluded_frames"] = numpy.asarray(sums.excluded, dtype=bool)
    tau, tau_unit = tau_axis(result.lags, frame_period)
    if hasattr(result, "frame_period"):  # multi-tau, two-time: τ of their own NeXus groups
        result.frame_period = None if frame_period is None else float(frame_period)
    labels = result.labels
    if q_labels is None and not numpy.array_equal(labels, binning.labels):
        q_labels = binning.labels  # q given per bin of the binning; the rows are a selection
    if q is None:
        q_rows = labels.astype(numpy.float64)
    else:
        q_rows = map_bins(numpy.asarray(q, dtype=numpy.float64), q_labels, labels)
    chi_rows = (
        None if chi is None else map_bins(numpy.asarray(chi, dtype=numpy.float64), q_labels, labels)
    )
    return {
        "result": result,
        "g2": result.g2,
        "g2_err": result.g2_err,
        "tau": tau,
        "tau_unit": tau_unit,
        "q": q_rows,
        "chi": chi_rows,
        "labels": labels,
        "n_pixels": result.n_pixels,
    }


# ------------------------------------------------------------------------------ events
def compact_frames(
    frames,
    bad_pixels=None,
    qmask=None,
    device: Optional[str] = None,
    chunk_frames: Optional[int] = None,
    token: Optional[CancelToken] = None,
    progress: Progress = None,
    max_device_memory: Optional[int] = None,
):
    """Compact frames into an :class:`~ewoksxpcs.engine.events.EventStack`, streaming.

    ``device`` None compacts with NumPy (:func:`ewoksxpcs.engine.events.compact`); an OpenCL device
    spec ("cpu", "gpu", "platform:device") compacts on that device
    (:func:`ewoksxpcs.opencl.compact.compact_opencl`). Both give identical events.
    """
    from ..engine.events import compact
    from ..engine.frames import as_frame_source

    source = as_frame_source(frames)

    def report(done, total):
        if progress is not None and total:
            progress(done / total)

    monitor = MonitoredFrameSource(source, token=token, progress=report, what="compaction")
    if device is not None:
        from ..opencl.compact import compact_opencl

        events = compact_opencl(
            monitor, bad_pixels=bad_pixels, qmask=qmask, chunk_frames=chunk_frames, device=device,
            max_device_memory=max_device_memory,
        )
    else:
        events = compact(monitor, bad_pixels=bad_pixels, qmask=qmask, chunk_frames=chunk_frames)
    if token is not None:
        token.check("compaction")
    events.frame_period = getattr(source, "frame_period", None)
    return events


def save_events(
    events,
    filename,
    frame_period: Optional[float] = None,
    overwrite: bool = False,
    token: Optional[CancelToken] = None,
    source: str = "",
    inputs=(),
) -> str:
    """Write an EventStack to an HDF5 events file atomically, with its frame period (s).

    ``inputs``: files the run read; the events file may not be one of them.

    A later run reads it with :func:`ewoksxpcs.io.load.load_frames` and re-bins without the raw
    frames.
    """
    import h5py

    from ..io.inputfiles import check_not_input
    from ..io.save import PendingFile, commit

    check_not_input(filename, inputs or (), "events file")
    with PendingFile(filename, overwrite) as pending:
        with h5py.File(pending.file, "w") as f:
            events.write_group(f.create_group("events"))
            g = f["events"]
            if frame_period is not None:
                g.attrs["frame_period"] = float(frame_period)
            g.attrs["source"] = str(source)
            f.attrs["creator"] = "ewoksxpcs"
        if token is not None:
            token.check("writing the events file")
        commit([pending])
    return os.path.abspath(os.fspath(filename))
