"""Widget of :class:`ewoksxpcs.tasks.compact_events.CompactEvents`: events per frame."""

import numpy
from silx.gui.plot import Plot1D

from ..tasks.compact_events import CompactEvents
from ._base import XpcsWidget, flag, optional_text, path

__all__ = ["OWCompactEvents"]


class OWCompactEvents(XpcsWidget, ewokstaskclass=CompactEvents):
    name = "Compact events"
    description = "Keep only the non-zero pixel values (sparse data), optionally as an events file"
    icon = "icons/category.svg"
    priority = 25
    keywords = ["xpcs", "events", "sparse", "compact"]

    PARAMETERS = {
        "events_file": path("events file", select="newfile"),
        "device": optional_text("device (cpu, gpu)"),
        "overwrite": flag("overwrite"),
    }

    def init_display(self, layout):
        self._plot = Plot1D(parent=self.mainArea)
        self._plot.setGraphTitle("intensity per frame")
        self._plot.getXAxis().setLabel("frame")
        self._plot.getYAxis().setLabel("counts")
        layout.addWidget(self._plot)

    def show_outputs(self, outputs):
        events = outputs["events"]
        sums = numpy.asarray(getattr(events, "frame_sums", numpy.zeros((0, 0))))
        self._plot.clear()
        if sums.ndim == 2 and sums.size:
            self._plot.addCurve(numpy.arange(sums.shape[0]), sums.sum(axis=1), legend="counts")
        elif sums.ndim == 1 and sums.size:
            self._plot.addCurve(numpy.arange(sums.size), sums, legend="counts")
        written = outputs.get("events_file")
        self.set_status(
            f"{outputs['n_events']} events, occupancy {outputs['occupancy']:.3g}"
            + (f"; written to {written}" if written else "")
        )
