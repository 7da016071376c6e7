"""silx plot widgets showing XPCS results (used by the Orange widgets' main areas).

- :class:`G2Plot`: g2(q, τ) curves with error bars, τ in seconds on a log axis;
- :class:`TwoTimePlot`: a two-time correlation map C(t1, t2);
- :class:`LabelOverMeanPlot`: the q-bin label image over the mean frame.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy
from silx.gui import qt
from silx.gui.colors import Colormap
from silx.gui.plot import Plot1D, Plot2D

__all__ = ["G2Plot", "TwoTimePlot", "LabelOverMeanPlot"]


class G2Plot(Plot1D):
    """g2 curves, one per q bin, with error bars; log τ axis."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setGraphTitle("g2(q, τ)")
        self.setXAxisLogarithmic(True)
        self.getXAxis().setLabel("τ (s)")
        self.getYAxis().setLabel("g2")

    def set_g2(self, tau, g2, g2_err=None, labels: Optional[Sequence] = None,
               q: Optional[Sequence[float]] = None, q_units: str = "1/nm",
               max_fraction: float = 0.5) -> None:
        """Show g2 (n_bins, n_lags) against τ (n_lags,) seconds (τ = 0 is left out: log axis).

        Lags beyond ``max_fraction`` of the series are not drawn: they average few frame pairs
        and their error bars would hide the rest (the data and the saved file keep them all).

        Parameters
        ----------
        tau : ndarray, (n_lags,) float, seconds (or frames)
        g2, g2_err : ndarray, (n_bins, n_lags) float
        labels : sequence, optional
            qmask label of each bin (legend).
        q : sequence of float, optional
            q of each bin (legend), in ``q_units``.
        """
        self.clear()
        tau = numpy.asarray(tau, dtype=float)
        g2 = numpy.atleast_2d(numpy.asarray(g2, dtype=float))
        keep = tau > 0
        if 0 < max_fraction < 1 and tau.size > 4:
            keep &= numpy.arange(tau.size) <= max_fraction * tau.size
        for i in range(g2.shape[0]):
            y = g2[i, keep]
            if not numpy.isfinite(y).any():
                continue
            err = None if g2_err is None else numpy.nan_to_num(numpy.asarray(g2_err)[i, keep])
            name = f"bin {labels[i] if labels is not None else i}"
            if q is not None:
                name += f", q = {float(q[i]):.3g} {q_units}"
            self.addCurve(tau[keep], y, yerror=err, legend=name, symbol="o", linestyle="-",
                          resetzoom=False)
        self.resetZoom()

    def curve_count(self) -> int:
        return len(self.getAllCurves())


class TwoTimePlot(Plot2D):
    """A two-time correlation map C(t1, t2), axes in seconds when the frame period is known."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setGraphTitle("two-time correlation")
        self.getXAxis().setLabel("t1")
        self.getYAxis().setLabel("t2")

    def set_map(self, ttcf, frame_period: Optional[float] = None, title: str = "") -> None:
        """Show ``ttcf`` (Nt, Nt) float; ``frame_period`` in seconds scales the axes."""
        ttcf = numpy.asarray(ttcf, dtype=float)
        if ttcf.ndim != 2:
            raise ValueError(f"a two-time map must be 2-D (Nt, Nt); got shape {ttcf.shape}")
        scale = (frame_period, frame_period) if frame_period else (1.0, 1.0)
        unit = "s" if frame_period else "frame"
        self.getXAxis().setLabel(f"t1 ({unit})")
        self.getYAxis().setLabel(f"t2 ({unit})")
        if title:
            self.setGraphTitle(title)
        finite = ttcf[numpy.isfinite(ttcf)]
        vmin, vmax = (numpy.percentile(finite, [1, 99]) if finite.size else (0, 1))
        self.addImage(ttcf, legend="ttcf", scale=scale,
                      colormap=Colormap("viridis", vmin=float(vmin), vmax=float(vmax)), resetzoom=True)


class LabelOverMeanPlot(Plot2D):
    """The q-bin label image, half transparent, over the mean frame (log colour scale)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setGraphTitle("q bins over the mean frame")
        self.getXAxis().setLabel("x (pixel)")
        self.getYAxis().setLabel("y (pixel)")
        self.setKeepDataAspectRatio(True)

    def set_images(self, mean_frame, labels, alpha: float = 0.45) -> None:
        """Show ``mean_frame`` (Ny, Nx) counts/frame under ``labels`` (Ny, Nx) int (0: unused)."""
        labels = numpy.asarray(labels)
        self.clear()
        if mean_frame is not None:
            mean_frame = numpy.asarray(mean_frame, dtype=float)
            if mean_frame.shape != labels.shape:
                raise ValueError(
                    f"mean frame shape {mean_frame.shape} differs from the label image shape {labels.shape}"
                )
            positive = mean_frame[mean_frame > 0]
            vmin = float(positive.min()) if positive.size else 1e-3
            vmax = float(mean_frame.max()) if positive.size else 1.0
            self.addImage(mean_frame, legend="mean", z=0, resetzoom=False,
                          colormap=Colormap("gray", normalization="log", vmin=vmin, vmax=max(vmax, vmin * 10)))
        overlay = numpy.where(labels > 0, labels, numpy.nan).astype(float)
        cmap = Colormap("jet", vmin=float(numpy.nanmin(overlay)) if numpy.isfinite(overlay).any() else 0,
                        vmax=float(numpy.nanmax(overlay)) if numpy.isfinite(overlay).any() else 1)
        cmap.setNaNColor(qt.QColor(0, 0, 0, 0))  # unused pixels: the mean frame shows through
        self.addImage(overlay, legend="labels", z=1, colormap=cmap, resetzoom=True)
        self.getImage("labels").setAlpha(alpha)
