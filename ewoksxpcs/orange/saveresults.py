"""Widget of :class:`ewoksxpcs.tasks.save_results.SaveResults`: the saved g2 and its fit."""

import numpy

from ..tasks.save_results import SaveResults
from ._base import XpcsWidget, flag, path, text
from .plots import G2Plot

__all__ = ["OWSaveResults"]


class OWSaveResults(XpcsWidget, ewokstaskclass=SaveResults):
    name = "Save results"
    description = "NeXus result file (silx view opens on g2) and a PNG of the g2 curves"
    icon = "icons/category.svg"
    priority = 50
    keywords = ["xpcs", "save", "nexus", "hdf5"]

    PARAMETERS = {
        "output": path("result file", select="newfile"),
        "overwrite": flag("overwrite"),
        "plot": flag("PNG of g2"),
        "fit": flag("fit exp(-2Γτ)"),
        "title": text("title"),
    }

    def init_display(self, layout):
        self._plot = G2Plot(parent=self.mainArea)
        layout.addWidget(self._plot)

    def show_outputs(self, outputs):
        result = self.input_value("result")
        tau = self.input_value("tau")
        if result is not None and tau is not None:
            self._plot.set_g2(tau, result.g2, getattr(result, "g2_err", None),
                              labels=getattr(result, "labels", None))
            fit = outputs.get("fit") or {}
            gamma = numpy.asarray(fit.get("gamma", []), dtype=float)
            beta = numpy.asarray(fit.get("beta", []), dtype=float)
            base = numpy.asarray(fit.get("baseline", []), dtype=float)
            ok = [s == "ok" for s in fit.get("status", [])]
            t = numpy.asarray(tau, dtype=float)
            t = t[t > 0]
            # The single-exponential curve of the bins whose fit is ok (kww, double: in the PNG).
            for i in range(min(gamma.size, beta.size, base.size, len(ok))):
                if ok[i] and fit.get("model") == "exp":
                    self._plot.addCurve(t, base[i] + beta[i] * numpy.exp(-2 * gamma[i] * t),
                                        legend=f"fit {i}", linestyle="--", color="black", resetzoom=False)
        self.set_status(f"saved {outputs['output']}" + (f" and {outputs['png']}" if outputs.get("png") else ""))
