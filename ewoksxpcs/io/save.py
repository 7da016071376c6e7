"""Results on disk: a NeXus HDF5 file (``silx view`` opens on g2) and a PNG of the g2 curves.

Layout of the result file (``n_q`` bins, ``n_τ`` delays, Nt frames, (Ny, Nx) detector)::

    /                        NXroot   @default=entry
    /entry                   NXentry  @default=xpcs   title, start_time
    /entry/xpcs              NXprocess @default=g2
        program, version, date, mode, method, device, auto_reason
        parameters           NXcollection: every workflow parameter, one group per step
        g2                   NXdata  signal g2 (n_q, n_τ) float64 with g2_errors,
                                     axes q (nm⁻¹) and tau (s); labels, n_pixels, lags (frames);
                                     expected_pairs (n_q, n_τ): photon pairs of uncorrelated
                                     light at each lag (g2 is NaN below 10, see normalise)
        fit                  NXdata  gamma (s⁻¹) vs q with errors; every parameter of the
                                     model (exp, kww, double: ewoksxpcs.engine.fit) with errors,
                                     chi2_red, status (0 = ok, meanings in status_meaning)
            power_law        NXcollection  gamma = D·q^n: D, n with errors, D2 (n = 2)
        excluded_frames      NXdata  1 for the frames excluded from every pair (bad frames)
        segments             NXdata  mean intensity per time segment and bin (stability),
            partial_g2       NXdata  g2 of each segment (n_seg, n_q, n_τ)
        qmask                NXdata  label image (Ny, Nx) int32 (0 = unused)
        mean_image           NXdata  mean counts per pixel per frame (Ny, Nx) float64
        intensity            NXdata  mean counts per pixel per frame of each bin vs time
                                     (n_q, Nt), axes q and time (s)
        pixels_per_bin       NXdata  n_pixels vs q
        sums                 NXcollection: n2, s2 (n_q, n_τ), frame_sums (Nt, n_q): the exact
                                     sums g2 was computed from (int64 for integer frames)

Mode ``multitau``: ``g2`` is the multi-tau g2 (log-spaced τ), with ``level`` and ``n_pairs``
per delay, ``normalisation`` and ``lags_per_level``; ``sums`` holds n2 and d2 (the
denominator: s2 of each level for the standard normalisation). Mode ``twotime``: ``g2`` is the
g2 derived from the two-time maps (diagonal means, standard error of the mean) of the selected
bins, ``intensity`` is per time bin, and::

        twotime              NXcollection  time_bin, n_frames
            maps             NXdata  signal C (n_sel, nT, nT) float32, @interpretation image
                                     (one map per bin: an image stack in ``silx view``), axes
                                     labels, t1, t2 (s); q, frame_sums, n_pixels
            g2               NXdata  derived g2 vs labels and tau (s)
            partial_g2       NXdata  g2 of successive age segments

Writing is atomic: everything goes to a temporary file in the output directory, renamed at
the end, so a failure or a cancellation leaves no partial file; an existing file is replaced
only with ``overwrite``.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
from typing import Optional

import numpy

__all__ = ["check_output", "save_results", "save_formats", "plot_g2", "atomic_output",
           "default_png", "save_figure"]

MAX_PARAMETER_ELEMENTS = 4096


def check_output(filename, overwrite: bool = False) -> str:
    """Check that ``filename`` can be written; return its absolute path.

    Raises
    ------
    FileExistsError
        The file exists and ``overwrite`` is False.
    ValueError
        The directory does not exist, the name is a directory.
    PermissionError
        The directory is not writable (checked by creating a probe file).
    """
    if filename is None or not os.fspath(filename):
        raise ValueError("no output file name given")
    filename = os.path.abspath(os.fspath(filename))
    directory = os.path.dirname(filename)
    if not os.path.isdir(directory):
        raise ValueError(f"output directory {directory!r} does not exist")
    if os.path.isdir(filename):
        raise ValueError(f"output {filename!r} is a directory")
    if os.path.exists(filename) and not overwrite:
        raise FileExistsError(f"output file {filename!r} exists (use overwrite to replace it)")
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".ewoksxpcs-probe-")
    except OSError as e:
        raise PermissionError(
            f"output directory {directory!r} is not writable ({e.strerror})"
        ) from None
    os.close(fd)
    os.remove(probe)
    return filename


class atomic_output:
    """Context manager: a temporary file in the target's directory, renamed on success.

    ``with atomic_output(filename, overwrite) as tmp: write(tmp)``. On an exception the
    temporary file is removed and the target is untouched. Without ``overwrite`` the rename
    refuses to replace a file that appeared meanwhile.
    """

    def __init__(self, filename, overwrite: bool = False):
        self.filename = check_output(filename, overwrite)
        self.overwrite = overwrite

    def __enter__(self) -> str:
        base = os.path.basename(self.filename)
        fd, self.tmp = tempfile.mkstemp(
            dir=os.path.dirname(self.filename), prefix=f".{base}.", suffix=".tmp"
        )
        os.close(fd)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            _remove(self.tmp)
            return False
        try:
            if self.overwrite:
                os.replace(self.tmp, self.filename)
            else:
                try:
                    os.link(self.tmp, self.filename)  # fails if the target exists
                except FileExistsError:
                    raise FileExistsError(
                        f"output file {self.filename!r} exists (use overwrite to replace it)"
                    ) from None
                except OSError:  # no hard links on this file system
                    if os.path.exists(self.filename):
                        raise FileExistsError(
                            f"output file {self.filename!r} exists (use overwrite to replace it)"
                        ) from None
                    os.replace(self.tmp, self.filename)
        finally:
            _remove(self.tmp)
        return False


def _remove(name):
    try:
        os.remove(name)
    except FileNotFoundError:
        pass


def default_png(filename) -> str:
    """PNG name next to a result file: ``result.h5`` → ``result_g2.png``."""
    return os.path.splitext(os.fspath(filename))[0] + "_g2.png"


# ------------------------------------------------------------------------------ HDF5 helpers
def _write_value(group, name: str, value) -> None:
    """Write a parameter: scalars, strings, small arrays, nested dicts (as groups)."""
    name = str(name).replace("/", "_") or "_"
    if isinstance(value, dict):
        sub = group.create_group(name)
        sub.attrs["NX_class"] = "NXcollection"
        for k, v in value.items():
            _write_value(sub, k, v)
        return
    if value is None:
        group[name] = "None"
        return
    if isinstance(value, (bool, numpy.bool_)):
        group[name] = bool(value)
        return
    if isinstance(value, (int, float, numpy.integer, numpy.floating)):
        group[name] = value
        return
    if isinstance(value, (str, bytes, os.PathLike)):
        group[name] = os.fspath(value) if isinstance(value, os.PathLike) else value
        return
    if isinstance(value, (list, tuple, numpy.ndarray)):
        try:
            arr = numpy.asarray(value)
        except ValueError:
            arr = None
        if arr is not None and arr.dtype.kind in "biuf" and arr.size <= MAX_PARAMETER_ELEMENTS:
            group[name] = arr
            return
        if arr is not None and arr.dtype.kind in "biuf":
            group[name] = f"array of shape {arr.shape}, dtype {arr.dtype}"
            return
        if all(isinstance(v, str) for v in value):
            group[name] = json.dumps(list(value))
            return
    group[name] = repr(value)[:1000]


def _nxdata(parent, name: str, signal: str, axes=None, title: str = ""):
    g = parent.create_group(name)
    g.attrs["NX_class"] = "NXdata"
    g.attrs["signal"] = signal
    if axes:
        g.attrs["axes"] = list(axes)
        for i, a in enumerate(axes):
            if a != ".":
                g.attrs[f"{a}_indices"] = i
    if title:
        g["title"] = title
    return g


def _dataset(
    group, name, data, units: Optional[str] = None, long_name: Optional[str] = None, **attrs
):
    d = group.create_dataset(name, data=data)
    if units:
        d.attrs["units"] = units
    if long_name:
        d.attrs["long_name"] = long_name
    for k, v in attrs.items():
        d.attrs[k] = v
    return d


_SUMS_DESCRIPTION = {
    "linear": "g2 = n_pixels * n2 / s2; n2 = sum_t sum_p I(t,p) I(t+tau,p); "
    "s2 = sum_t S(t) S(t+tau), S = frame_sums",
    "multitau": "g2 = n_pixels * n2 / d2 per level L of frames summed 2^L at a time; "
    "n2 = sum_t sum_p X_L(t,p) X_L(t+k,p); d2 = s2 of the level (standard normalisation) or "
    "past sum * future sum / pairs (symmetric); frame_sums of the unsummed frames",
    "twotime": "frame_sums: counts per time bin and bin; the maps are under twotime/maps",
}


_PLOT_TITLES = {"multitau": "{} (multi-tau)", "twotime": "{} (from the two-time maps)"}


def _g2_title(result, mode: str) -> str:
    if mode == "multitau":
        return f"multi-tau g2(q, tau), {result.normalisation} normalisation"
    if mode == "twotime":
        return "g2(q, tau) from the two-time maps"
    return "g2(q, tau)"


def save_results(
    filename,
    result,
    q,
    tau,
    q_unit: str = "nm^-1",
    tau_unit: str = "s",
    qmask=None,
    mean_image=None,
    frame_period: Optional[float] = None,
    parameters: Optional[dict] = None,
    fit=None,
    chi=None,
    overwrite: bool = False,
    png: Optional[str] = None,
    cancel_token=None,
    title: str = "XPCS g2",
    segments=None,
    power_law=None,
    q_edges=None,
    geometry: Optional[dict] = None,
) -> dict:
    """Write a :class:`~ewoksxpcs.engine.result.CorrelationResult` as NeXus (layout in the module doc).

    Parameters
    ----------
    filename : str
        Result file (.h5).
    result : CorrelationResult, MultiTauResult or TwoTimeResult
        Its ``info["mode"]`` ("linear" by default) selects the layout.
    q : ndarray (n_q,)
        q of each row of ``result`` (``q_unit``).
    tau : ndarray (n_τ,)
        Delays (``tau_unit``: s, or "frame" when the frame period is unknown).
    qmask : ndarray (Ny, Nx), optional
        Label image.
    mean_image : ndarray (Ny, Nx), optional
        Mean counts per pixel per frame.
    frame_period : float, optional
        s, for the time axis of the intensity.
    parameters : dict, optional
        Workflow parameters (nested dicts), recorded under ``xpcs/parameters``.
    fit : G2Fit, optional
        Written as ``xpcs/fit`` and drawn on the PNG (bins of status ok).
    segments : SegmentResult, optional
        Stability: ``xpcs/segments`` and a ``_stability.png``.
    power_law : PowerLawFit, optional
        Γ(q) = D·q^n: ``xpcs/fit/power_law`` and a ``_gamma.png``.
    chi : ndarray (n_q,), optional
        Azimuthal sector centre of each row, degrees.
    overwrite : bool
        Replace existing files.
    png : str, optional
        Also draw the g2 curves into this PNG file.
    cancel_token : CancelToken, optional
        Checked before the files are renamed into place.
    q_edges : ndarray (n_q + 1,), optional
        q bin edges (``q_unit``): ``g2/q_nominal`` holds the centre of each bin's interval.
    geometry : dict, optional
        :meth:`ewoksxpcs.workflow.maskbin.Geometry.as_dict`, written as ``xpcs/geometry`` (default: the
        one recorded in ``parameters``; "unknown" when the q-mask was given directly).

    Returns
    -------
    dict
        ``{"filename": ..., "png": ... or None}``.
    """
    import h5py

    from .. import __version__

    q = numpy.asarray(q, dtype=numpy.float64)
    tau = numpy.asarray(tau, dtype=numpy.float64)
    g2 = numpy.asarray(result.g2, dtype=numpy.float64)
    if g2.shape != (q.size, tau.size):
        raise ValueError(f"g2 has shape {g2.shape}, expected (n_q={q.size}, n_tau={tau.size})")
    check_output(filename, overwrite)
    if png is not None:
        check_output(png, overwrite)
        for name in extra_png_names(png, result, fit, power_law, segments).values():
            check_output(name, overwrite)
    now = datetime.datetime.now().astimezone().isoformat()
    info = dict(getattr(result, "info", {}) or {})
    mode = info.get("mode", getattr(result, "mode", "linear"))
    with atomic_output(filename, overwrite) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["NX_class"] = "NXroot"
            f.attrs["creator"] = f"ewoksxpcs {__version__}"
            f.attrs["file_time"] = now
            f.attrs["default"] = "entry"
            entry = f.create_group("entry")
            entry.attrs["NX_class"] = "NXentry"
            entry.attrs["default"] = "xpcs"
            entry["title"] = title
            entry["start_time"] = now
            proc = entry.create_group("xpcs")
            proc.attrs["NX_class"] = "NXprocess"
            proc.attrs["default"] = "g2"
            proc["program"] = "ewoksxpcs"
            proc["version"] = __version__
            proc["date"] = now
            proc["mode"] = mode
            proc["method"] = result.method
            proc["device"] = result.device
            proc["auto_reason"] = str(info.get("auto_reason", ""))
            proc["n_frames"] = int(getattr(result, "n_frames", 0) or 0)
            if frame_period is not None:
                _dataset(proc, "frame_period", float(frame_period), units="s")
            params = proc.create_group("parameters")
            params.attrs["NX_class"] = "NXcollection"
            for k, v in (parameters or {}).items():
                _write_value(params, k, v)

            q_label = f"q ({q_unit})" if q_unit else "bin"
            tau_label = f"tau ({tau_unit})"
            g = _nxdata(proc, "g2", "g2", ["q", "tau"], title=_g2_title(result, mode))
            g.attrs["SILX_style"] = json.dumps({"axes_scale_types": ["linear", "log"]})
            _dataset(g, "g2", g2, long_name="g2", interpretation="spectrum")
            _dataset(g, "g2_errors", numpy.asarray(result.g2_err, dtype=numpy.float64))
            _dataset(g, "q", q, units=q_unit or None, long_name=q_label)
            _dataset(g, "tau", tau, units=tau_unit, long_name=tau_label)
            _dataset(g, "lags", numpy.asarray(result.lags, dtype=numpy.int64), units="frame")
            _dataset(g, "labels", numpy.asarray(result.labels, dtype=numpy.int64))
            _dataset(g, "n_pixels", numpy.asarray(result.n_pixels, dtype=numpy.int64))
            pairs = getattr(result, "expected_pairs", None)
            if pairs is not None:
                _dataset(g, "expected_pairs", numpy.asarray(pairs, dtype=numpy.float64))
            if chi is not None:
                _dataset(g, "chi", numpy.asarray(chi, dtype=numpy.float64), units="deg")
            _write_geometry(proc, g, result, q_edges, geometry, parameters, q_unit)
            if mode == "multitau":
                _dataset(g, "level", numpy.asarray(result.level, dtype=numpy.int64))
                _dataset(g, "n_pairs", numpy.asarray(result.n_pairs, dtype=numpy.int64))
                g["normalisation"] = str(result.normalisation)
                g["lags_per_level"] = int(result.lags_per_level)
            if mode == "twotime":
                g["description"] = (
                    "g2 = mean over t of C(q, t, t + tau) of the two-time maps; errors: "
                    "standard error of that mean"
                )
                tt = result.write_nexus(proc, "twotime")
                for name in ("maps", "g2"):
                    _dataset(tt[name], "q", q, units=q_unit or None, long_name=q_label)

            if fit is not None:
                write_fit(proc, fit, q, q_unit, tau_unit, power_law)
            write_science(proc, result, q, q_unit, tau_unit, frame_period, segments)

            if qmask is not None:
                mg = _nxdata(proc, "qmask", "labels", title="q-mask labels (0 = unused)")
                d = mg.create_dataset(
                    "labels", data=numpy.asarray(qmask, dtype=numpy.int32), compression="gzip"
                )
                d.attrs["interpretation"] = "image"
            if mean_image is not None:
                ig = _nxdata(
                    proc, "mean_image", "mean_image", title="mean counts per pixel per frame"
                )
                d = ig.create_dataset(
                    "mean_image",
                    data=numpy.asarray(mean_image, dtype=numpy.float64),
                    compression="gzip",
                )
                d.attrs["interpretation"] = "image"
                d.attrs["units"] = "counts/frame"

            fs = getattr(result, "frame_sums", None)
            # Two-time frame sums are per time bin of time_bin frames.
            time_bin = int(getattr(result, "time_bin", 1) or 1)
            if fs is not None:
                fs = numpy.asarray(fs)
                n_pix = numpy.asarray(result.n_pixels, dtype=numpy.float64)
                with numpy.errstate(invalid="ignore", divide="ignore"):
                    mean_t = (fs / (n_pix[None, :] * time_bin)).T  # (n_q, Nt)
                excluded = info.get("excluded_frames")
                if excluded is not None and time_bin == 1 and len(excluded) == mean_t.shape[1]:
                    mean_t[:, numpy.asarray(excluded, dtype=bool)] = numpy.nan  # not measured
                tg = _nxdata(
                    proc,
                    "intensity",
                    "intensity",
                    ["q", "time"],
                    title="mean counts per pixel per frame vs time",
                )
                _dataset(tg, "intensity", mean_t, units="counts/frame", interpretation="spectrum")
                _dataset(tg, "q", q, units=q_unit or None, long_name=q_label)
                # Time of each row: frame index, or centre of the time bin (two-time).
                t_frames = numpy.asarray(
                    getattr(result, "times", numpy.arange(fs.shape[0])), dtype=numpy.float64
                )
                if frame_period is not None:
                    _dataset(
                        tg,
                        "time",
                        t_frames * float(frame_period),
                        units="s",
                        long_name="time (s)",
                    )
                else:
                    _dataset(tg, "time", t_frames, units="frame", long_name="time (frame)")

            pg = _nxdata(proc, "pixels_per_bin", "n_pixels", ["q"], title="pixels per bin")
            _dataset(pg, "n_pixels", numpy.asarray(result.n_pixels, dtype=numpy.int64))
            _dataset(pg, "q", q, units=q_unit or None, long_name=q_label)

            # The exact sums g2 was computed from (those the result carries).
            sums = proc.create_group("sums")
            sums.attrs["NX_class"] = "NXcollection"
            sums["description"] = _SUMS_DESCRIPTION.get(mode, _SUMS_DESCRIPTION["linear"])
            for name in ("n2", "s2", "d2"):
                value = getattr(result, name, None)
                if value is not None:
                    _dataset(sums, name, numpy.asarray(value), units="counts^2")
            if fs is not None:
                _dataset(sums, "frame_sums", fs, units="counts")
        if cancel_token is not None:
            cancel_token.check("saving the results")
    png_name = _write_pngs(png, [filename], result, q, tau, q_unit, tau_unit, frame_period,
                           fit, power_law, segments, chi, overwrite, title)
    return {"filename": os.path.abspath(filename), "png": png_name}


def _write_pngs(png, written, result, q, tau, q_unit, tau_unit, frame_period, fit, power_law,
                segments, chi, overwrite, title) -> Optional[str]:
    """The g2 PNG and its companions; on failure the ``written`` result files are removed."""
    if png is None:
        return None
    try:
        png_name = plot_g2(
            png,
            tau,
            numpy.asarray(result.g2, dtype=numpy.float64),
            result.g2_err,
            q,
            q_unit=q_unit,
            tau_unit=tau_unit,
            fit=fit,
            chi=chi,
            overwrite=overwrite,
            title=_PLOT_TITLES.get(_mode(result), "{}").format(title),
            keep=_drawn(result),
        )
        extra_pngs(png, result, q, q_unit, tau_unit, frame_period, fit, power_law,
                   segments, overwrite)
    except BaseException:
        for name in written:
            _remove(os.path.abspath(name))  # all or nothing
        raise
    return png_name


def _drawn(result):
    from .plots import drawn_lags

    try:
        return drawn_lags(result)
    except (AttributeError, TypeError):  # a result without pair information: draw every lag
        return None


def write_fit(proc, fit, q, q_unit: str, tau_unit: str, power_law=None):
    """``xpcs/fit``: NXdata gamma vs q, every parameter with errors, status, reduced χ²;
    ``fit/power_law`` when given."""
    q_label = f"q ({q_unit})" if q_unit else "bin"
    fg = _nxdata(proc, "fit", "gamma", ["q"], title=f"g2 = {fit.formula}")
    _dataset(fg, "gamma", fit.gamma, units=f"{tau_unit}^-1", long_name=f"gamma ({tau_unit}^-1)")
    _dataset(fg, "gamma_errors", fit.gamma_err)
    _dataset(fg, "q", q, units=q_unit or None, long_name=q_label)
    for name, value in fit.params.items():
        if name != "gamma":
            _dataset(fg, name, value)
            _dataset(fg, f"{name}_errors", fit.errors[name])
    _dataset(fg, "chi2_red", fit.chi2_red)
    _dataset(fg, "status", fit.status.astype(numpy.int8))
    from ..engine.fit import STATUSES

    fg["status_meaning"] = json.dumps(dict(enumerate(STATUSES)))
    fg.attrs["auxiliary_signals"] = ["beta", "baseline"]
    fg["model"] = f"g2(q, tau) = {fit.formula}"
    fg["model_name"] = fit.model
    fg["tau_range"] = numpy.asarray(
        [numpy.nan if v is None else v for v in fit.tau_range], dtype=numpy.float64
    )
    if power_law is not None:
        pg = fg.create_group("power_law")
        pg.attrs["NX_class"] = "NXcollection"
        pg["model"] = "gamma = D * q**n (bins of status ok); D2: n fixed to 2"
        for name in ("D", "D_err", "n", "n_err", "D2", "D2_err", "chi2_red"):
            pg[name] = float(getattr(power_law, name))
        pg["used"] = numpy.asarray(power_law.used, dtype=bool)
        pg["D"].attrs["units"] = f"{tau_unit}^-1 ({q_unit})^-n"


def write_science(proc, result, q, q_unit, tau_unit, frame_period, segments=None):
    """``xpcs/excluded_frames`` (bad frames) and ``xpcs/segments`` (stability), when present."""
    excluded = (getattr(result, "info", None) or {}).get("excluded_frames")
    if excluded is not None:
        eg = _nxdata(proc, "excluded_frames", "excluded", ["frame"],
                     title="frames excluded from every pair (1 = excluded)")
        _dataset(eg, "excluded", numpy.asarray(excluded, dtype=numpy.int8))
        _dataset(eg, "frame", numpy.arange(len(excluded), dtype=numpy.int64), units="frame")
        _dataset(eg, "indices", numpy.flatnonzero(excluded).astype(numpy.int64), units="frame")
    if segments is not None:
        q_label = f"q ({q_unit})" if q_unit else "bin"
        sg = _nxdata(proc, "segments", "intensity", ["segment", "q"],
                     title="mean counts per pixel per frame per time segment")
        _dataset(sg, "intensity", segments.intensity, units="counts/frame",
                 interpretation="spectrum")
        _dataset(sg, "segment", numpy.arange(segments.n_segments, dtype=numpy.int64))
        q_rows = map_rows(q, getattr(result, "labels", None), segments.labels)
        _dataset(sg, "q", q_rows, units=q_unit or None, long_name=q_label)
        _dataset(sg, "edges", segments.edges, units="frame")
        pg = _nxdata(sg, "partial_g2", "g2", ["segment", "labels", "tau"],
                     title="g2 of each time segment")
        _dataset(pg, "g2", segments.g2)
        _dataset(pg, "g2_errors", segments.g2_err)
        _dataset(pg, "segment", numpy.arange(segments.n_segments, dtype=numpy.int64))
        _dataset(pg, "labels", segments.labels)
        lags = numpy.asarray(segments.lags, dtype=numpy.float64)
        _dataset(pg, "tau", lags * frame_period if frame_period else lags,
                 units=tau_unit if frame_period else "frame")


def map_rows(q, labels, to_labels):
    """q of the rows ``to_labels`` from q per ``labels`` (NaN where absent)."""
    q = numpy.asarray(q, dtype=numpy.float64)
    if labels is None or q.size != len(labels):
        return q if q.size == len(to_labels) else numpy.full(len(to_labels), numpy.nan)
    where = {int(k): i for i, k in enumerate(numpy.asarray(labels).tolist())}
    return numpy.array([q[where[int(k)]] if int(k) in where else numpy.nan for k in to_labels])


def extra_pngs(png, result, q, q_unit, tau_unit, frame_period, fit, power_law, segments,
               overwrite) -> list:
    """The figures beside the g2 PNG: ``_gamma.png`` (with a power law), ``_stability.png``
    (with segments), ``_twotime.png`` (mode two-time)."""
    from . import plots

    names = extra_png_names(png, result, fit, power_law, segments)
    out = []
    if "gamma" in names:
        out.append(save_figure(plots.gamma_figure(q, fit, power_law, q_unit, tau_unit),
                               names["gamma"], overwrite))
    if "stability" in names:
        fs = getattr(result, "frame_sums", None)
        inten = None
        if fs is not None and getattr(result, "mode", "linear") != "twotime":
            with numpy.errstate(invalid="ignore", divide="ignore"):
                inten = (numpy.asarray(fs, dtype=numpy.float64) / result.n_pixels[None, :]).T
        fig = plots.stability_figure(
            segments, map_rows(q, result.labels, segments.labels), tau_unit, frame_period, inten,
            (result.info or {}).get("excluded_frames"), q_unit)
        out.append(save_figure(fig, names["stability"], overwrite))
    if "twotime" in names:
        out.append(save_figure(plots.twotime_figure(result, q, q_unit), names["twotime"],
                               overwrite))
    return out


def save_figure(fig, filename, overwrite: bool = False) -> str:
    """Write a matplotlib figure as PNG, atomically; the absolute file name."""
    fig.tight_layout()
    with atomic_output(filename, overwrite) as tmp:
        with open(tmp, "wb") as fh:
            fig.savefig(fh, format="png")
    return os.path.abspath(filename)


def extra_png_names(png, result, fit, power_law, segments) -> dict:
    """Figure name -> file of :func:`extra_pngs`: ``<base>_gamma.png``, ``<base>_stability.png``,
    ``<base>_twotime.png`` beside ``<base>_g2.png`` (or ``<png stem>_…``)."""
    base = os.path.splitext(os.fspath(png))[0]
    base = base[:-3] if base.endswith("_g2") else base
    names = {}
    if fit is not None and power_law is not None:
        names["gamma"] = base + "_gamma.png"
    if segments is not None:
        names["stability"] = base + "_stability.png"
    if getattr(result, "mode", "") == "twotime":
        names["twotime"] = base + "_twotime.png"
    return names


def _write_events(filename, events, frame_period) -> None:
    import h5py

    with h5py.File(filename, "a") as f:
        g = f.create_group("entry/xpcs/events")
        events.write_group(g)
        period = frame_period or getattr(events, "frame_period", None)
        if period:
            g.attrs["frame_period"] = float(period)
        g.attrs["description"] = ("per-pixel time series of every kept pixel (ewoksxpcs "
                                  "events layout): 'ewoksxpcs rebin' re-bins from them")


def _mode(result) -> str:
    return (getattr(result, "info", None) or {}).get("mode", getattr(result, "mode", "linear"))


def _write_geometry(proc, g, result, q_edges, geometry, parameters, q_unit) -> None:
    """``g2/q_nominal`` (centre of each bin's q interval) and ``xpcs/geometry``."""
    from .formats import nominal_centres, geometry_from_parameters

    nominal = nominal_centres(q_edges, result.labels) if q_unit else None
    if nominal is not None:
        _dataset(g, "q_nominal", nominal, units=q_unit,
                 long_name=f"q ({q_unit}), centre of the bin's interval")
        g["q"].attrs["description"] = "mean q of the bin's pixels"
    geometry = geometry if geometry is not None else geometry_from_parameters(parameters)
    if geometry is None:
        proc["geometry"] = "unknown (q-mask given directly)"
        return
    geo = proc.create_group("geometry")
    geo.attrs["NX_class"] = "NXcollection"
    geo["convention"] = "pyFAI (SI units: m, radians)"
    for k, v in geometry.items():
        _write_value(geo, k, v)


def save_formats(filename, result, q, tau, formats=("nexus",), q_edges=None,
                 geometry: Optional[dict] = None, bad_pixels=None, png: Optional[str] = None,
                 events=None, keep_events: bool = False, pixel_g2: bool = False,
                 **kwargs) -> dict:
    """Write a result in one or more layouts (:data:`ewoksxpcs.io.formats.FORMATS`).

    The first format writes ``filename``, the others files next to it
    (:func:`ewoksxpcs.io.formats.format_filenames`). Every file is written to a temporary file
    first and all are renamed together at the end: on any error none is left and no existing
    file was replaced. ``kwargs`` are those of :func:`save_results`; ``bad_pixels`` (Ny, Nx)
    bool gives the APS mask. ``events`` (an :class:`~ewoksxpcs.engine.events.EventStack`): with
    ``keep_events`` kept in the NeXus file as ``entry/xpcs/events`` (events-file layout), the
    per-pixel time series that ``ewoksxpcs rebin`` re-bins exactly (:mod:`ewoksxpcs.io.rebin`);
    with ``pixel_g2`` the pixel-level G2/IP/IF of the APS layout (:mod:`ewoksxpcs.engine.pixelcorr`).

    Returns
    -------
    dict
        ``{"filename": first file, "png": ... or None, "files": {format: file}}``.
    """
    import contextlib

    from .formats import format_filenames, result_view
    from .save_aps import write_aps
    from .save_id02 import write_id02

    overwrite = bool(kwargs.get("overwrite", False))
    names = format_filenames(filename, formats)
    if keep_events and "nexus" not in names:
        raise ValueError("the per-pixel time series (events) are kept in the nexus file: "
                         "add the nexus format")
    if pixel_g2 and "aps" not in names:
        raise ValueError("pixel-level G2 is written in the aps layout: add the aps format")
    if (keep_events or pixel_g2) and events is None:
        raise ValueError("keeping the events or pixel-level G2 needs the events")
    for name in list(names.values()) + ([png] if png else []):
        check_output(name, overwrite)
    if png:
        extra = extra_png_names(png, result, kwargs.get("fit"), kwargs.get("power_law"),
                                kwargs.get("segments"))
        for name in extra.values():
            check_output(name, overwrite)
    view = None
    with contextlib.ExitStack() as stack:
        for fmt, name in names.items():
            tmp = stack.enter_context(atomic_output(name, overwrite))
            if fmt == "nexus":
                save_results(tmp, result, q, tau, q_edges=q_edges, geometry=geometry,
                             **{**kwargs, "overwrite": True})
                if keep_events:
                    _write_events(tmp, events, kwargs.get("frame_period"))
                continue
            if view is None:
                view = result_view(result, q, q_unit=kwargs.get("q_unit", "nm^-1"),
                                   qmask=kwargs.get("qmask"), mean_image=kwargs.get("mean_image"),
                                   frame_period=kwargs.get("frame_period"), chi=kwargs.get("chi"),
                                   q_edges=q_edges, geometry=geometry,
                                   parameters=kwargs.get("parameters"))
            title = kwargs.get("title", "XPCS g2")
            if fmt == "aps":
                write_aps(tmp, view, q_edges=q_edges, bad_pixels=bad_pixels, title=title,
                          events=events if pixel_g2 else None, segments=kwargs.get("segments"))
            else:
                write_id02(tmp, view, title=title)
        if kwargs.get("cancel_token") is not None:
            kwargs["cancel_token"].check("saving the results")
    png_name = _write_pngs(png, list(names.values()), result, numpy.asarray(q, numpy.float64),
                           numpy.asarray(tau, numpy.float64), kwargs.get("q_unit", "nm^-1"),
                           kwargs.get("tau_unit", "s"), kwargs.get("frame_period"),
                           kwargs.get("fit"), kwargs.get("power_law"), kwargs.get("segments"),
                           kwargs.get("chi"), overwrite, kwargs.get("title", "XPCS g2"))
    return {"filename": next(iter(names.values())), "png": png_name, "files": names}


def plot_g2(
    filename,
    tau,
    g2,
    g2_err,
    q,
    q_unit: str = "nm^-1",
    tau_unit: str = "s",
    fit=None,
    chi=None,
    overwrite: bool = False,
    title: str = "XPCS g2",
    keep=None,
) -> str:
    """Draw g2 curves (log τ, error bars, fits of status ok if given) into a PNG file
    (:func:`ewoksxpcs.io.plots.draw_g2`; ``keep``: (n_τ,) bool, the lags to draw).

    Returns the absolute file name.
    """
    from .plots import draw_g2, new_figure

    fig = new_figure()
    ax = fig.add_subplot(1, 1, 1)
    draw_g2(ax, tau, g2, g2_err, q, q_unit=q_unit, fit=fit, chi=chi, keep=keep, fig=fig)
    ax.set_xlabel(f"τ ({tau_unit})")
    ax.set_title(title)
    return save_figure(fig, filename, overwrite)
