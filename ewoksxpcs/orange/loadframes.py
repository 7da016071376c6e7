"""Widget of :class:`ewoksxpcs.tasks.load_frames.LoadFrames`: the first frame and the stack's shape."""

import numpy
from silx.gui.colors import Colormap
from silx.gui.plot import Plot2D

from ..tasks.load_frames import LoadFrames
from ._base import XpcsWidget, integer, optional_float, optional_int, optional_text, path

__all__ = ["OWLoadFrames"]


class OWLoadFrames(XpcsWidget, ewokstaskclass=LoadFrames):
    name = "Load frames"
    description = "Open a frame stack (Bliss scan, NeXus, HDF5, EDF/CBF) lazily, with a frame range"
    icon = "icons/category.svg"
    priority = 10
    keywords = ["xpcs", "load", "hdf5", "bliss", "frames"]

    PARAMETERS = {
        "url": path("frames (file.h5::/1.1)"),
        "start": integer("first frame"),
        "stop": optional_int("stop (excluded)"),
        "step": {"value_for_type": 1, "label": "frame step"},
        "frame_period": optional_float("frame period (s)"),
        "detector": optional_text("detector"),
    }

    def init_display(self, layout):
        self._plot = Plot2D(parent=self.mainArea)
        self._plot.setGraphTitle("first frame")
        self._plot.setKeepDataAspectRatio(True)
        layout.addWidget(self._plot)

    def show_outputs(self, outputs):
        frames = outputs["frames"]
        first = None
        if hasattr(frames, "iter_chunks"):
            if getattr(frames, "reiterable", True):
                first = next(iter(frames.iter_chunks(1)))[0]
        elif hasattr(frames, "to_dense"):  # an events file
            first = None
        image = None if first is None else numpy.asarray(first, dtype=float)
        self._plot.clear()
        if image is not None:
            self._plot.addImage(image, legend="frame 0", colormap=Colormap("viridis", normalization="log"))
        period = outputs.get("frame_period")
        self.set_status(
            f"{outputs.get('n_frames')} frames of {tuple(outputs.get('frame_shape', ()))} "
            f"{outputs.get('dtype', '')}, frame period "
            + (f"{period:g} s" if period else "unknown")
        )
