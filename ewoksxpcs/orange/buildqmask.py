"""Widget of :class:`ewoksxpcs.tasks.build_qmask.BuildQMask`: the q bins over the first frames' mean."""

import numpy

from ..tasks.build_qmask import BuildQMask
from ._base import XpcsWidget, flag, optional_float, optional_int, path
from .plots import LabelOverMeanPlot

__all__ = ["OWBuildQMask", "sample_mean"]


def sample_mean(frames, n_frames: int = 32):
    """Mean (Ny, Nx) float64 of up to ``n_frames`` first frames (a preview, not the whole stack)."""
    if hasattr(frames, "iter_chunks"):
        if not getattr(frames, "reiterable", True):
            return None
        chunk = next(iter(frames.iter_chunks(n_frames)))
    elif hasattr(frames, "to_dense"):
        return None
    else:
        chunk = numpy.asarray(frames[:n_frames])
    return numpy.asarray(chunk, dtype=numpy.float64).mean(axis=0)


class OWBuildQMask(XpcsWidget, ewokstaskclass=BuildQMask):
    name = "Build q-mask"
    description = "q bins from a label image or a geometry (PONI), with detector and hot-pixel masks"
    icon = "icons/category.svg"
    priority = 20
    keywords = ["xpcs", "qmask", "mask", "bins", "poni"]

    PARAMETERS = {
        "qmask": path("label image"),
        "poni": path("PONI file"),
        "n_bins": optional_int("q bins"),
        "n_sectors": optional_int("azimuthal sectors"),
        "energy": optional_float("energy (keV)"),
        "mask": path("detector mask"),
        "auto_mask": flag("mask hot/dead pixels"),
    }

    def init_display(self, layout):
        self._plot = LabelOverMeanPlot(parent=self.mainArea)
        layout.addWidget(self._plot)

    def show_outputs(self, outputs):
        labels = numpy.asarray(outputs["qmask"])
        mean = sample_mean(self.input_value("frames"))
        self._plot.set_images(mean, labels)
        q = numpy.asarray(outputs.get("q", []), dtype=float)
        unit = outputs.get("q_unit", "")
        n = numpy.asarray(outputs.get("n_pixels", []))
        qtext = f"q {q.min():.4g} … {q.max():.4g} {unit}" if q.size and unit else ""
        self.set_status(f"{len(outputs['labels'])} bins, {int(n.sum())} pixels; {qtext}")
