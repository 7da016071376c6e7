"""Result file formats: names, file names, and the view of a result the layout writers share.

``nexus`` is ewoksxpcs's own NeXus layout (:mod:`ewoksxpcs.io.save`); ``aps`` the APS 8-ID-I
layout that ``xpcs-viewer`` reads (:mod:`ewoksxpcs.io.save_aps`); ``id02`` the ESRF ID02
``XPCSResultFile_v2.0`` layout that ``xpcsutilities`` reads (:mod:`ewoksxpcs.io.save_id02`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Optional

import numpy

__all__ = ["FORMATS", "check_formats", "format_filenames", "ResultView", "result_view",
           "nominal_centres", "geometry_from_parameters"]

FORMATS = ("nexus", "aps", "id02")

#: Suffix replacing the extension of the output name for a format that is not the first.
_SUFFIX = {"nexus": ".h5", "aps": "_results.hdf", "id02": "_id02.h5"}


def check_formats(formats) -> tuple:
    """The formats as a tuple without repeats (default ``("nexus",)``); ValueError if unknown."""
    if formats is None or (isinstance(formats, (list, tuple)) and not formats):
        return ("nexus",)
    if isinstance(formats, str):
        formats = [f for f in formats.replace(",", " ").split() if f]
    out = []
    for f in formats:
        f = str(f).lower()
        if f not in FORMATS:
            raise ValueError(f"unknown result format {f!r}: choose from {', '.join(FORMATS)}")
        if f not in out:
            out.append(f)
    return tuple(out)


def format_filenames(output, formats) -> Dict[str, str]:
    """File of each format: the first format writes ``output``, the others write next to it.

    ``result.h5`` with ``("nexus", "aps", "id02")`` → ``result.h5``, ``result_results.hdf``
    (xpcs-viewer lists ``.hdf``/``.h5`` files and strips ``_results.hdf`` from the label),
    ``result_id02.h5``.
    """
    formats = check_formats(formats)
    output = os.path.abspath(os.fspath(output))
    stem = os.path.splitext(output)[0]
    names = {formats[0]: output}
    for f in formats[1:]:
        name = stem + _SUFFIX[f]
        names[f] = stem + f"_{f}.h5" if name in names.values() else name  # r.h5 as aps, nexus
    return names


@dataclass
class ResultView:
    """What the layout writers need from a result, in one place (no τ = 0 delay).

    Attributes
    ----------
    mode : str
        "linear", "multitau" or "twotime".
    g2, g2_err : ndarray (n_bins, n_τ) float64
        Rows: bins (labels order); columns: delays τ > 0.
    lags : ndarray (n_τ,) float64
        Delays in frames (> 0).
    frame_period : float or None
        s.
    labels, n_pixels : ndarray (n_bins,) int64
    q : ndarray (n_bins,) float64
        q per bin, nm⁻¹ (mean q of the bin's pixels), or the labels when unknown.
    q_known : bool
    q_nominal : ndarray (n_bins,) float64 or None
        Centre of each bin's q interval, nm⁻¹ (None without q edges).
    chi : ndarray (n_bins,) float64 or None
        Sector centre, degrees.
    qmask : ndarray (Ny, Nx) int32 or None
        Label image, 0 = unused.
    mean_image : ndarray (Ny, Nx) float64 or None
        Mean counts per pixel per frame.
    frame_sums : ndarray (n_t, n_bins) or None
        Counts per frame (per time bin for two-time) and bin.
    time_bin : int
        Frames per row of ``frame_sums``.
    geometry : dict or None
        :meth:`ewoksxpcs.workflow.maskbin.Geometry.as_dict` (SI units), None when unknown.
    n_frames : int
    """

    mode: str
    g2: numpy.ndarray
    g2_err: numpy.ndarray
    lags: numpy.ndarray
    frame_period: Optional[float]
    labels: numpy.ndarray
    n_pixels: numpy.ndarray
    q: numpy.ndarray
    q_known: bool
    q_nominal: Optional[numpy.ndarray]
    chi: Optional[numpy.ndarray]
    qmask: Optional[numpy.ndarray]
    mean_image: Optional[numpy.ndarray]
    frame_sums: Optional[numpy.ndarray]
    time_bin: int
    geometry: Optional[dict]
    n_frames: int
    result: object = None

    @property
    def mean_intensity(self) -> numpy.ndarray:
        """Mean counts per pixel per frame of each bin, (n_bins,) float64 (NaN if empty)."""
        if self.frame_sums is None:
            return numpy.full(self.labels.size, numpy.nan)
        total = numpy.asarray(self.frame_sums, dtype=numpy.float64).sum(axis=0)
        frames = self.frame_sums.shape[0] * self.time_bin
        with numpy.errstate(invalid="ignore", divide="ignore"):
            return total / (self.n_pixels * max(frames, 1))

    def intensity_segments(self, n_segments: int = 10) -> numpy.ndarray:
        """Mean counts per pixel per frame of each bin in successive time segments,
        (n_seg, n_bins) float64 (fewer segments than asked for short series)."""
        fs = numpy.asarray(self.frame_sums, dtype=numpy.float64)
        n = max(1, min(int(n_segments), fs.shape[0]))
        edges = numpy.linspace(0, fs.shape[0], n + 1).astype(numpy.int64)
        seg = numpy.add.reduceat(fs, edges[:-1], axis=0)
        frames = numpy.diff(edges)[:, None] * self.time_bin
        with numpy.errstate(invalid="ignore", divide="ignore"):
            return seg / (self.n_pixels[None, :] * frames)

    @property
    def mean_per_frame(self) -> numpy.ndarray:
        """Mean counts per binned pixel of each row of ``frame_sums``, (n_t,) float64."""
        fs = numpy.asarray(self.frame_sums, dtype=numpy.float64)
        return fs.sum(axis=1) / max(int(self.n_pixels.sum()), 1) / self.time_bin

    @property
    def times(self) -> numpy.ndarray:
        """Time of each row of ``frame_sums``: s, or frames without a frame period."""
        t = getattr(self.result, "times", None)
        t = numpy.arange(self.frame_sums.shape[0], dtype=numpy.float64) if t is None else t
        return numpy.asarray(t, dtype=numpy.float64) * (self.frame_period or 1.0)


def nominal_centres(q_edges, labels) -> Optional[numpy.ndarray]:
    if q_edges is None or isinstance(q_edges, str):
        return None
    edges = numpy.asarray(q_edges, dtype=numpy.float64)
    if edges.ndim != 1 or edges.size < 2:
        return None
    n_q = edges.size - 1
    centres = 0.5 * (edges[:-1] + edges[1:])
    return centres[(numpy.asarray(labels) - 1) % n_q]


def geometry_from_parameters(parameters: Optional[dict]) -> Optional[dict]:
    """The geometry recorded by BuildQMask (``parameters["qmask"]["geometry"]``), or None."""
    geometry = ((parameters or {}).get("qmask") or {}).get("geometry")
    return geometry if isinstance(geometry, dict) else None


def result_view(result, q, q_unit: str = "nm^-1", qmask=None, mean_image=None,
                frame_period: Optional[float] = None, chi=None, q_edges=None,
                geometry: Optional[dict] = None, parameters: Optional[dict] = None) -> ResultView:
    """Gather a result and its description into a :class:`ResultView` (τ = 0 dropped)."""
    mode = (getattr(result, "info", None) or {}).get("mode", getattr(result, "mode", "linear"))
    lags = numpy.asarray(result.lags, dtype=numpy.float64)
    keep = lags > 0
    labels = numpy.asarray(result.labels, dtype=numpy.int64)
    if frame_period is None:
        frame_period = getattr(result, "frame_period", None)
    if geometry is None:
        geometry = geometry_from_parameters(parameters)
    q_known = bool(q_unit)
    q = numpy.asarray(q, dtype=numpy.float64)
    if q_known and q_unit != "nm^-1":
        raise ValueError(f"q in {q_unit!r}: the exported layouts expect nm^-1")
    fs = getattr(result, "frame_sums", None)
    return ResultView(
        mode=mode,
        g2=numpy.asarray(result.g2, dtype=numpy.float64)[:, keep],
        g2_err=numpy.asarray(result.g2_err, dtype=numpy.float64)[:, keep],
        lags=lags[keep],
        frame_period=None if frame_period is None else float(frame_period),
        labels=labels,
        n_pixels=numpy.asarray(result.n_pixels, dtype=numpy.int64),
        q=q,
        q_known=q_known,
        q_nominal=nominal_centres(q_edges, labels) if q_known else None,
        chi=None if chi is None else numpy.asarray(chi, dtype=numpy.float64),
        qmask=None if qmask is None else numpy.asarray(qmask, dtype=numpy.int32),
        mean_image=None if mean_image is None else numpy.asarray(mean_image, numpy.float64),
        frame_sums=None if fs is None else numpy.asarray(fs),
        time_bin=int(getattr(result, "time_bin", 1) or 1),
        geometry=geometry,
        n_frames=int(getattr(result, "n_frames", 0) or 0),
        result=result,
    )


def sector_grid(chi: Optional[numpy.ndarray], labels: numpy.ndarray, q_edges=None):
    """(q index, sector index, n_q, n_sectors) of each bin: labels are ``s·n_q + i + 1``.

    Without sectors every label is its own q index (n_sectors = 1).
    """
    labels = numpy.asarray(labels, dtype=numpy.int64)
    edges = None if q_edges is None or isinstance(q_edges, str) else numpy.asarray(q_edges)
    if chi is None or edges is None:
        return numpy.arange(labels.size), numpy.zeros(labels.size, numpy.int64), labels.size, 1
    n_q = edges.size - 1
    qi = (labels - 1) % n_q
    si = (labels - 1) // n_q
    return qi, si, n_q, int(si.max()) + 1
