"""Ewoks task :class:`LoadPixelSeries`: the per-pixel time series of a result or events file,
for re-binning on a new partition (:mod:`ewoksxpcs.io.rebin`)."""

from __future__ import annotations

from ..io.rebin import pixel_series
from .load_frames import Inputs, LoadFrames, Outputs

__all__ = ["LoadPixelSeries"]


class LoadPixelSeries(LoadFrames, input_model=Inputs, output_model=Outputs):
    """Open the events of an events file, or those kept in a result (``--keep-events``) or
    recorded by it (``--events-file``); outputs as :class:`LoadFrames` (``url``: the file).

    Fails with one line when the file holds no per-pixel time series.
    """

    def source_url(self):
        return pixel_series(self.inputs.url)[0]
