"""Widget of :class:`ewoksxpcs.tasks.correlate.Correlate`: the q bins over the mean frame."""

import numpy

from ..correlators import available_methods
from ..tasks.correlate import Correlate
from ._base import XpcsWidget, choice, flag, integer, optional_int, optional_text
from .plots import LabelOverMeanPlot

__all__ = ["OWCorrelate"]


def _methods():
    try:
        return ["auto"] + list(available_methods())
    except Exception:  # listing must not prevent the widget from loading
        return ["auto", "reference", "matmul", "fft", "opencl-dense", "opencl-events"]


def _modes():
    from ..workflow.pipeline import MODES

    return list(MODES)


class OWCorrelate(XpcsWidget, ewokstaskclass=Correlate):
    name = "Correlate"
    description = "Correlation sums of every q bin (method auto, matmul, fft, OpenCL...)"
    icon = "icons/category.svg"
    priority = 30
    keywords = ["xpcs", "correlate", "g2", "opencl", "fft"]

    PARAMETERS = {
        "method": choice(_methods(), "method"),
        "device": optional_text("OpenCL device"),
        "mode": choice(_modes(), "mode"),
        "lags_per_level": optional_int("multi-tau: lags per level"),
        "normalisation": optional_text("multi-tau: normalisation"),
        "time_bin": optional_int("two-time: frames per time bin"),
        "n_groups": integer("pixel groups (errors)"),
        "bad_frames": optional_text("bad frames (e.g. 10,200-250)"),
        "auto_bad_frames": flag("find bad frames"),
        "normalise_by": optional_text("normalise by (frame-sum or counter)"),
        "segments": optional_int("stability: time segments"),
    }

    def init_display(self, layout):
        self._plot = LabelOverMeanPlot(parent=self.mainArea)
        layout.addWidget(self._plot)

    def show_outputs(self, outputs):
        labels = self.input_value("qmask")
        mean = outputs.get("mean_image")
        if labels is not None and not hasattr(labels, "pixel_index"):
            self._plot.set_images(None if mean is None else numpy.asarray(mean), numpy.asarray(labels))
        reason = outputs.get("auto_reason") or ""
        self.set_status(
            f"{outputs.get('n_frames')} frames correlated with {outputs['method']!r} on "
            f"{outputs['device']} (mode {outputs.get('mode')})" + (f": {reason}" if reason else "")
        )
