"""The path from a file to a result, top to bottom: the steps of the XPCS pipeline.

:func:`run_pipeline` calls the steps in order; each is a plain function of this module that
the Ewoks tasks (:mod:`ewoksxpcs.tasks`) also call, one task per step or group of steps::

    run_pipeline(frames, qmask, ...)                              task
      1. open_source         file/URL/array -> FrameSource or     LoadFrames
                             EventStack, built once here and
                             passed down unchanged
      2. build_q_bins        label image or geometry, masks ->     BuildQMask
                             q-mask, q per bin, bad pixels
         correlate_sums:                                           Correlate
         make_binning        q-mask, labels, bad pixels ->
                             Binning (pixel groups)
      3. exclude_bad_frames  bad frames given or detected
         weight_frames       per-frame monitor weights
      4. choose_correlator   (mode, backend) from the registry;
                             ``auto`` picks by the cost model
      5. correlator_input    what the backend reads: the frames,
                             events compacted on its device, or
                             frames rebuilt from events
      6. run_correlator      the additive sums, streamed with
                             progress and cancellation; the mean
                             image from the same pass
      7. correlate_segments  (optional) the same per time segment
      8. normalise_sums      g2, jackknife errors, tau, q           Normalise
      9. fit_decays          (optional) g2 fits, Gamma(q) law       SaveResults (+ writing)

The source is wrapped once: :func:`open_source` (step 1) builds it, and the later steps take
it as it is (or the views of it that exclude bad frames, weight frames or cut a time segment);
the cancellation/progress monitor is built once per pass over the frames
(:func:`run_correlator`, :func:`compact_frames`, the bad-frame detection).

Each step works without Ewoks, takes an optional
:class:`~ewoksxpcs.workflow.cancellation.CancelToken` and an optional ``progress(fraction)``
callback (fraction in [0, 1]) where it streams frames, and returns plain data.

Correlation *modes* are those of the registry
(:data:`ewoksxpcs.engine.correlation_modes.MODES`); :data:`MODES` holds each one's ``create``, ``correlate`` and ``normalise`` functions:

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
from ..engine.correlation_modes import MODE_OPTIONS, MODES as REGISTRY_MODES
from ..engine.options import check_options, positive_int
from ..engine.qmask import DEFAULT_GROUPS, Binning, cached_binning

__all__ = [
    "run_pipeline",
    "open_source",
    "build_q_bins",
    "make_binning",
    "exclude_bad_frames",
    "weight_frames",
    "choose_correlator",
    "correlator_input",
    "run_correlator",
    "correlate_sums",
    "normalise_sums",
    "fit_decays",
    "MODES",
    "register_mode",
    "check_mode",
    "check_mode_options",
    "compact_frames",
    "save_events",
    "mean_image_from_events",
    "tau_axis",
    "map_bins",
    "describe",
]

Progress = Optional[Callable[[float], None]]

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ file -> result
def run_pipeline(
    frames,
    qmask=None,
    method: str = "auto",
    device: Optional[str] = None,
    mode: str = "linear",
    mode_options: Optional[dict] = None,
    options: Optional[dict] = None,
    n_groups: int = DEFAULT_GROUPS,
    bad_frames=None,
    auto_bad_frames=None,
    normalise_by=None,
    segments: Optional[int] = None,
    fit=None,
    qmask_options: Optional[dict] = None,
    load_options: Optional[dict] = None,
    token: Optional[CancelToken] = None,
    progress: Progress = None,
) -> dict:
    """From a file (or frames) to the normalised result: every step of this module, in order.

    What the shipped workflow ``xpcs`` computes (without writing), in one process and without
    Ewoks: the same steps with the same inputs give the same result.

    Parameters
    ----------
    frames : str, os.PathLike, ndarray (Nt, Ny, Nx), FrameSource or EventStack
        What :func:`open_source` takes (``file.h5::/path``, events file, array ...).
    qmask : ndarray (Ny, Nx) of int, str (file, URL), or Binning, optional
        Label image (0 = unused); None: built from the geometry of ``qmask_options``. A
        :class:`Binning` is used as it is (no q, no masks).
    qmask_options : dict, optional
        Keyword arguments of :func:`ewoksxpcs.workflow.maskbin.build_qmask` (the BuildQMask
        task): ``q_values``, geometry (``poni`` or ``beam_center``, ``distance``,
        ``pixel_size``, ``wavelength``/``energy``), q bins, sectors, ``mask``, ``auto_mask``,
        ``file_mask``.
    load_options : dict, optional
        ``start``, ``stop``, ``step``, ``frame_period`` (s), ``detector``: see
        :func:`open_source`.
    fit : bool or str, optional
        Fit model of :func:`fit_decays` (True: "exp"); None: no fit.

    Other parameters are those of :func:`correlate_sums`.

    Returns
    -------
    dict
        The keys of :func:`correlate_sums` and of :func:`normalise_sums`, ``frame_period``
        (s, or None), ``q_bins`` (the :class:`~ewoksxpcs.workflow.maskbin.QBinning`, or None
        for a Binning given), ``fit`` (G2Fit or None) and ``power_law`` (PowerLawFit or None).
    """
    source = open_source(frames, **(load_options or {}))
    frame_period = getattr(source, "frame_period", None)
    q_bins = None if isinstance(qmask, Binning) else build_q_bins(source, qmask, qmask_options)
    correlated = correlate_sums(
        source,
        qmask if q_bins is None else q_bins.qmask,
        method=method,
        device=device,
        mode=mode,
        options=options,
        labels=None if q_bins is None else q_bins.labels,
        bad_pixels=None if q_bins is None else q_bins.bad_pixels,
        n_groups=n_groups,
        token=token,
        progress=progress,
        mode_options=mode_options,
        bad_frames=bad_frames,
        auto_bad_frames=auto_bad_frames,
        normalise_by=normalise_by,
        segments=segments,
    )
    info = {"auto_reason": correlated["auto_reason"]} if correlated["auto_reason"] else {}
    normalised = normalise_sums(
        correlated["sums"],
        correlated["binning"],
        frame_period=frame_period,
        q=None if q_bins is None else q_bins.q,
        q_labels=None if q_bins is None else q_bins.labels,
        chi=None if q_bins is None else q_bins.chi,
        method=correlated["method"],
        device=correlated["device"],
        mode=mode,
        info=info,
        mode_options=correlated["mode_options"],
    )
    g2_fit, power_law = fit_decays(normalised["tau"], normalised["result"], normalised["q"], fit)
    return {**correlated, **normalised, "frame_period": frame_period, "q_bins": q_bins,
            "fit": g2_fit, "power_law": power_law}


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
    """Correlate frames (or events) into the additive sums, with progress and cancellation:
    steps 3 to 7 (the Correlate task), on the source of step 1 (opened here if need be).

    Parameters
    ----------
    frames : FrameSource, ndarray (Nt, Ny, Nx), EventStack or what :func:`open_source` takes
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
    mode_options, options = _check_correlation_options(mode, mode_options, options, n_groups)
    t_start = time.perf_counter()
    binning = make_binning(qmask, labels=labels, bad_pixels=bad_pixels, n_groups=n_groups)
    source = open_source(frames)
    binning.check_frame_shape(source.frame_shape)
    source, excluded = exclude_bad_frames(source, bad_frames, auto_bad_frames, binning, token)
    source, weighted = weight_frames(source, normalise_by, binning)
    correlator = choose_correlator(mode, binning, method, device, source, options, mode_options)
    if token is not None:
        token.check("correlation")
    data, events, compaction_s = correlator_input(correlator, source, bad_pixels, token,
                                                  progress)
    t0 = time.perf_counter()
    sums, mean_image, correlate_s = run_correlator(mode, correlator, data, events, token,
                                                   progress, compaction_s)
    mean_image = _record_excluded(sums, mean_image, source)
    seg = None
    if segments:
        from .segments import correlate_segments

        seg = correlate_segments(source, binning, int(segments), correlate_sums,
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
        "n_frames": int(sums.n_frames),
        "bad_frames": excluded,
        "timings": {"setup_s": t0 - t_start - compaction_s, "compact_s": compaction_s,
                    "correlate_s": correlate_s},
    }


def _check_correlation_options(mode, mode_options, options, n_groups):
    """(mode options, backend options) validated, before any frame is read."""
    mode_options = check_mode_options(mode, mode_options)
    options = check_options(options)
    positive_int(n_groups, "n_groups")
    clash = sorted(set(options) & set(MODES[mode]["options"]))
    if clash:
        raise ValueError(f"give {', '.join(clash)} as mode options, not as engine options")
    return mode_options, options


# ------------------------------------------------------------------------------ the steps
def open_source(frames, start: int = 0, stop: Optional[int] = None, step: int = 1,
                frame_period: Optional[float] = None, detector: Optional[str] = None):
    """Step 1: the frames as a frame source (or an EventStack), built once.

    A :class:`~ewoksxpcs.engine.frames.FrameSource` or an EventStack passes through unchanged
    (the later steps call this on what an earlier one built); anything else is opened by
    :func:`ewoksxpcs.io.load.load_frames` (URL, file, events file, array, iterable of chunks),
    or taken from :mod:`ewoksxpcs.workflow.ahead` when this process opened the same frames
    ahead.

    Returns
    -------
    FrameSource or EventStack
        ``.frame_shape`` (Ny, Nx), ``.dtype``, ``.n_frames``, ``.frame_period`` (s or None).
    """
    from ..io.load import load_frames
    from . import ahead

    source = ahead.take(ahead.source_key(frames, start, stop, step, frame_period, detector))
    if source is not None:
        return source
    return load_frames(frames, start=start, stop=stop, step=step, frame_period=frame_period,
                       detector=detector)


def build_q_bins(source, qmask=None, qmask_options: Optional[dict] = None):
    """Step 2 (the BuildQMask task): the q-mask of ``source``'s frames, q per bin and the
    pixels left out, from a label image or the geometry, with the masks (given, automatic,
    the detector's own mask stored with the frames): :func:`ewoksxpcs.workflow.maskbin.build_qmask`.

    Returns
    -------
    QBinning
        ``.qmask`` (Ny, Nx), ``.labels``, ``.q`` (nm⁻¹), ``.chi``, ``.bad_pixels`` (Ny, Nx) bool.
    """
    from .maskbin import build_qmask

    return build_qmask(tuple(source.frame_shape), qmask=qmask, frames=source,
                       **(qmask_options or {}))


def make_binning(qmask, labels=None, bad_pixels=None, n_groups: int = DEFAULT_GROUPS) -> Binning:
    """The first step of :func:`correlate_sums`: a :class:`Binning` (bins, pixel groups) from
    a label image and the bad pixels (kept as is when it already is one)."""
    if isinstance(qmask, Binning):
        if labels is not None and not numpy.array_equal(numpy.unique(labels), qmask.labels):
            raise ValueError("labels differ from those of the given Binning")
        return qmask
    if qmask is None:
        raise ValueError("no q-mask given")
    cached = cached_binning(qmask, labels, bad_pixels, n_groups)  # that of build_q_bins
    if cached is not None:
        return cached
    return Binning(qmask, labels=labels, bad_pixels=bad_pixels, n_groups=int(n_groups))


def exclude_bad_frames(source, bad_frames=None, auto_bad_frames=None, binning=None, token=None):
    """Step 3: (the source with its bad frames excluded, what was excluded or None).

    The detection pass reads through its own monitor (cancellable).
    """
    if bad_frames is None and not auto_bad_frames:
        return source, None
    from ..engine.badframes import apply_bad_frames

    def reading(source):
        return MonitoredFrameSource(source, token=token, what="bad-frame detection")

    data, info = apply_bad_frames(source, bad_frames, auto_bad_frames, binning, reading=reading)
    if info["scan_indices"].size:
        logger.info("excluding %d bad frame(s)", info["scan_indices"].size)
    return data, info


def weight_frames(source, normalise_by=None, binning=None):
    """Step 3 (continued): (the source with each frame weighted by its monitor, record or None); see
    :mod:`ewoksxpcs.engine.frameweights`."""
    if normalise_by is None:
        return source, None
    from ..engine.frameweights import apply_normalisation

    return apply_normalisation(source, normalise_by, binning)


def choose_correlator(mode: str, binning: Binning, method: str, device: Optional[str], source,
                      options: dict, mode_options: dict):
    """Step 4: the correlator of (``mode``, ``method``) from the registry; ``auto`` picks the
    backend from samples of ``source`` (:mod:`ewoksxpcs.correlators.auto`).

    Returns
    -------
    correlator
        ``.name``, ``.device_name``, ``.input_kind`` ("dense", "events" or "any"),
        ``.auto_reason`` (why ``auto`` chose it).
    """
    return MODES[mode]["create"](binning, method, device, source, **mode_options, **options)


def correlator_input(correlator, source, bad_pixels=None, token: Optional[CancelToken] = None,
                     progress: Progress = None):
    """Step 5: (what ``correlator`` reads, the EventStack behind it or None for frames,
    seconds spent compacting).

    An EventStack given to a dense backend is read as frames rebuilt from the events; frames
    given to an OpenCL event backend are compacted on its device first (raw compressed chunks
    are then decompressed there; progress 0 to 0.5); otherwise ``source`` itself.
    """
    from ..engine.events import EventStack

    if isinstance(source, EventStack):
        if getattr(correlator, "input_kind", "dense") == "dense":
            from ..io.load import EventFrameSource

            return EventFrameSource(source, getattr(source, "frame_period", None)), source, 0.0
        return source, source, 0.0
    options = getattr(correlator, "compaction_options", lambda: None)()
    if options is None:
        return source, None, 0.0
    t_c = time.perf_counter()
    events = compact_frames(
        source,
        **options,
        bad_pixels=bad_pixels,
        token=token,
        progress=None if progress is None else (lambda f: progress(0.5 * f)),
    )
    compaction_s = time.perf_counter() - t_c
    logger.info("compacted %d frames into %d events in %.2f s (%s)", events.n_frames,
                events.n_events, compaction_s, getattr(events, "compaction", ""))
    return events, events, compaction_s


def run_correlator(mode: str, correlator, data, events=None, token: Optional[CancelToken] = None,
                   progress: Progress = None, compaction_s: float = 0.0):
    """Step 6: (the sums of ``data``, the mean image (Ny, Nx) float64 or None, seconds spent
    correlating).

    Frames stream through one :class:`MonitoredFrameSource` (cancellation, progress, the sum
    image of the mean image: no second pass); ``events`` (the EventStack behind ``data``, if
    any) are read in place and give the mean image. Progress: [lo, read_end) while the frames stream, [read_end, 0.95)
    for the work a correlator does after reading them (its ``compute_share`` of the time),
    which it reports through ``report_progress(fraction)``; ``lo`` is 0.5 after a compaction.
    """
    from ..engine.events import EventStack

    is_events = events is not None
    lo = 0.5 if compaction_s else 0.0
    share = 1.0 if isinstance(data, EventStack) else float(getattr(correlator, "compute_share", 0))
    read_end = lo + (0.95 - lo) * (1.0 - share)
    if progress is not None and share:
        try:
            correlator.report_progress = lambda f: progress(read_end + (0.95 - read_end) * f)
        except AttributeError:  # a correlator without the attribute: no report
            pass
    monitor = None
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
    correlate_s = time.perf_counter() - t0
    if token is not None:
        token.check("correlation")
    mean_image = None
    if is_events:
        mean_image = mean_image_from_events(events)
    elif monitor is not None and monitor.sum_image is not None:
        mean_image = monitor.sum_image / max(sums.n_frames, 1)
    return sums, mean_image, correlate_s


def _record_excluded(sums, mean_image, source):
    """The excluded frames of ``source`` (bad frames) recorded in ``sums``; the mean image
    (Ny, Nx) over the frames kept."""
    from ..engine.badframes import excluded_of

    mask = excluded_of(source)
    if mask is not None and mask.any():
        sums.excluded = mask  # multi-tau: the remaining pairs' counts; saved with the result
        if mean_image is not None:  # the mean over the frames kept
            mean_image = mean_image * (sums.n_frames / max(int((~mask).sum()), 1))
    return mean_image


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


def fit_decays(tau, result, q=None, fit=None):
    """Step 9: (fit of every bin's g2 or None, fit of Γ(q) = D·q^n or None).

    Parameters
    ----------
    tau : ndarray (n_tau,)
        Delays (s, or frames).
    result
        The normalised result (``.g2``, ``.g2_err`` (n_bins, n_tau)).
    q : ndarray (n_bins,), optional
        q per row, for the power law.
    fit : bool or str, optional
        None, False or "none": no fit; True: "exp"; else a model of
        :data:`ewoksxpcs.engine.fit.MODELS` ("exp", "kww", "double").
    """
    from ..engine.fit import fit_g2, fit_power_law

    model = fit_model(fit)
    if model is None:
        return None, None
    g2_fit = fit_g2(tau, result.g2, result.g2_err, model=model)
    return g2_fit, fit_power_law(q, g2_fit.gamma, g2_fit.gamma_err, g2_fit.ok)


def fit_model(fit) -> Optional[str]:
    """The model name of a ``fit`` option (see :func:`fit_decays`), or None for no fit."""
    from ..engine.fit import MODELS

    if fit is True:
        return "exp"
    if fit is False or fit in (None, "none", ""):
        return None
    if fit not in MODELS:
        raise ValueError(f"unknown fit model {fit!r}; valid: {', '.join(MODELS)}, none")
    return fit


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


#: mode name -> the pipeline's functions of the mode, one entry per mode of the registry
#: (:data:`ewoksxpcs.engine.correlation_modes.MODES`, which the registry of backends is keyed
#: by; same order):
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
    options: Optional[Tuple[str, ...]] = None,
) -> None:
    """Make a correlation mode selectable in :func:`correlate_sums` / :func:`normalise_sums`
    (and so in the Correlate and Normalise tasks); ``options`` names its mode options
    (default: those of :data:`ewoksxpcs.engine.correlation_modes.MODE_OPTIONS`).

    ``name`` must be a mode of the registry (:data:`ewoksxpcs.engine.correlation_modes.MODES`,
    the modes of :mod:`ewoksxpcs.correlators.registry`).
    """
    if name not in REGISTRY_MODES:
        raise ValueError(
            f"mode {name!r} is not a mode of the correlator registry "
            f"({', '.join(REGISTRY_MODES)}): add it to ewoksxpcs.engine.correlation_modes.MODES"
        )
    MODES[name] = {
        "create": create,
        "correlate": correlate,
        "normalise": normalise,
        "options": tuple(MODE_OPTIONS[name] if options is None else options),
    }


register_mode("linear", _linear_create, _linear_correlate, _linear_normalise)
register_mode("multitau", _multitau_create, _multitau_correlate, _multitau_normalise)
register_mode("twotime", _twotime_create, _twotime_correlate, _twotime_normalise)


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


# ------------------------------------------------------------------------------ helpers
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


def tau_axis(lags, frame_period: Optional[float]):
    """Delays (τ, unit): lags × frame period in seconds, or lags in frames when unknown."""
    lags = numpy.asarray(lags)
    if frame_period is None:
        return lags.astype(numpy.float64), "frame"
    frame_period = float(frame_period)
    if not frame_period > 0:
        raise ValueError(f"frame_period must be > 0 seconds, got {frame_period}")
    return lags * frame_period, "s"


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
    prepare=None,
):
    """Compact frames into an :class:`~ewoksxpcs.engine.events.EventStack`, streaming.

    ``device`` None compacts with NumPy (:func:`ewoksxpcs.engine.events.compact`); an OpenCL device
    spec ("cpu", "gpu", "platform:device") compacts on that device
    (:func:`ewoksxpcs.opencl.compact.compact_opencl`, with ``prepare``). Both give identical
    events.
    """
    from ..engine.events import compact

    source = open_source(frames)

    def report(done, total):
        if progress is not None and total:
            progress(done / total)

    monitor = MonitoredFrameSource(source, token=token, progress=report, what="compaction")
    if device is not None:
        from ..opencl.compact import compact_opencl

        events = compact_opencl(
            monitor, bad_pixels=bad_pixels, qmask=qmask, chunk_frames=chunk_frames, device=device,
            max_device_memory=max_device_memory, prepare=prepare,
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
