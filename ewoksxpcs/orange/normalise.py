"""Widget of :class:`ewoksxpcs.tasks.normalise.Normalise`: g2 curves and the two-time map."""

import numpy
from AnyQt import QtWidgets

from ..tasks.normalise import Normalise
from ._base import XpcsWidget, optional_float
from .plots import G2Plot, TwoTimePlot

__all__ = ["OWNormalise"]


class OWNormalise(XpcsWidget, ewokstaskclass=Normalise):
    name = "Normalise"
    description = "g2(q, τ) with jackknife error bars, τ in seconds"
    icon = "icons/category.svg"
    priority = 40
    keywords = ["xpcs", "g2", "normalise", "two-time"]

    PARAMETERS = {"frame_period": optional_float("frame period (s)")}

    def init_display(self, layout):
        self._tabs = QtWidgets.QTabWidget(self.mainArea)
        self._g2 = G2Plot(parent=self._tabs)
        self._tabs.addTab(self._g2, "g2")
        page = QtWidgets.QWidget(self._tabs)
        vbox = QtWidgets.QVBoxLayout(page)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(QtWidgets.QLabel("q bin:"))
        self._bin = QtWidgets.QComboBox(page)
        self._bin.currentIndexChanged.connect(self._show_twotime)
        row.addWidget(self._bin)
        row.addStretch(1)
        vbox.addLayout(row)
        self._twotime = TwoTimePlot(parent=page)
        vbox.addWidget(self._twotime)
        self._tabs.addTab(page, "two-time")
        layout.addWidget(self._tabs)
        self._result = None
        self._n_g2 = (0, 0)

    def show_outputs(self, outputs):
        self.show_result(outputs["result"], outputs["tau"], outputs["g2"], outputs["g2_err"],
                         outputs.get("labels"), outputs.get("q"), outputs.get("q_unit", ""),
                         outputs.get("tau_unit", "s"))

    def show_result(self, result, tau, g2, g2_err, labels=None, q=None, q_unit="", tau_unit="s"):
        """Draw g2 and, for a two-time result (``result.C``), the map of the chosen bin."""
        self._g2.getXAxis().setLabel(f"τ ({tau_unit})")
        self._g2.set_g2(tau, g2, g2_err, labels=labels, q=q if q_unit else None, q_units=q_unit)
        self._n_g2 = (numpy.atleast_2d(g2).shape[0], len(tau))
        self.set_twotime(result if getattr(result, "C", None) is not None else None)

    def set_twotime(self, result):
        """Show the two-time maps of ``result`` (a :class:`~ewoksxpcs.engine.twotime.TwoTimeResult`)."""
        self._result = result
        self._bin.blockSignals(True)
        self._bin.clear()
        if result is not None:
            self._bin.addItems([str(v) for v in numpy.asarray(result.labels).tolist()])
        self._bin.blockSignals(False)
        self._show_twotime()
        n_bins, n_tau = getattr(self, "_n_g2", (0, 0))
        text = f"g2 of {n_bins} bins, {n_tau} delays"
        if result is None:
            self.set_status(text + " (two-time maps: Correlate mode 'twotime')")
        else:
            self.set_status(text + f"; two-time maps of {self._bin.count()} bins, "
                            f"{result.C.shape[-1]}² time bins of {result.time_bin} frame(s)")

    def _show_twotime(self, *_):
        result = self._result
        maps = getattr(result, "C", None)
        self._twotime.clear()
        if maps is None or self._bin.currentIndex() < 0:
            return
        period = getattr(result, "frame_period", None)
        scale = period * result.time_bin if period else None
        self._twotime.set_map(maps[self._bin.currentIndex()], frame_period=scale,
                              title=f"two-time correlation, bin {self._bin.currentText()}")
