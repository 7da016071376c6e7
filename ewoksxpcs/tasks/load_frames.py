"""Ewoks task :class:`LoadFrames`: open the frames (lazily) or a saved events file."""

from __future__ import annotations

from typing import Any, List, Optional

from ewokscore.model import BaseInputModel, BaseOutputModel
from pydantic import Field

from ..workflow.pipeline import open_source
from .base import XpcsTask

__all__ = ["LoadFrames"]


class Inputs(BaseInputModel):
    url: Any = Field(
        ...,
        description="Frames (Nt, Ny, Nx) of counts: 'file.h5::/path' or a silx DataUrl (Bliss "
        "scan '/1.1', its 'measurement/<det>', NeXus or plain HDF5 dataset), an EDF/CBF file or "
        "glob pattern, an ewoksxpcs events file, sparse frames (frame_ptr/index/intensity, read "
        "as events), or a 3-D NumPy array.",
        examples=["scan.h5::/1.1/measurement/eiger", "scan.h5::/1.1"],
    )
    start: int = Field(0, description="First frame (index in the dataset).", ge=0)
    stop: Optional[int] = Field(
        None, description="End of the frame range (excluded); None: to the end."
    )
    step: int = Field(1, description="Frame stride (the frame period is multiplied by it).", ge=1)
    frame_period: Optional[float] = Field(
        None,
        description="Seconds between the loaded frames; None: read from the file "
        "(detector frame period, or count time + latency) times step.",
        gt=0,
    )
    detector: Optional[str] = Field(
        None, description="Detector name, to pick one dataset in a Bliss scan."
    )
    parameters: Optional[dict] = Field(None, description="Parameters recorded so far (provenance).")


class Outputs(BaseOutputModel):
    frames: Any = Field(
        ...,
        description="Lazy frame source (FrameSource: frame_shape, dtype, n_frames, "
        "frame_period, iter_chunks) or EventStack for an events file.",
    )
    frame_period: Optional[float] = Field(
        None, description="Seconds between frames (None: unknown)."
    )
    n_frames: int = Field(..., description="Number of frames Nt.")
    frame_shape: List[int] = Field(..., description="(Ny, Nx), pixels.")
    dtype: str = Field(..., description="Pixel type.")
    is_events: bool = Field(False, description="Whether the input was an events file.")
    parameters: dict = Field(..., description="Parameters recorded so far (provenance).")


class LoadFrames(XpcsTask, input_model=Inputs, output_model=Outputs):
    """Open frames lazily (HDF5/Bliss/NeXus, EDF/CBF series, events file or NumPy array).

    Nothing is read but metadata: frames are read chunk by chunk by the tasks that stream them.
    """

    def source_url(self):
        """What to open: the ``url`` input."""
        return self.inputs.url

    def run(self):
        self.start_progress()
        inputs = self.inputs
        frames = open_source(
            self.source_url(),
            start=inputs.start,
            stop=inputs.stop,
            step=inputs.step,
            frame_period=inputs.frame_period,
            detector=inputs.detector,
        )
        from ..engine.events import EventStack
        from ..io.readahead import start_readahead

        # The stored chunks come into the page cache while the next steps start (a cold disk
        # then delivers them during the start-up, not during the correlation).
        start_readahead(frames)
        is_events = isinstance(frames, EventStack)
        period = getattr(frames, "frame_period", None)
        self.outputs.frames = frames
        self.outputs.frame_period = period
        self.outputs.n_frames = int(frames.n_frames)
        self.outputs.frame_shape = [int(n) for n in frames.frame_shape]
        self.outputs.dtype = str(frames.dtype)
        self.outputs.is_events = is_events
        self.outputs.parameters = self.record(
            "load",
            {
                "url": inputs.url if isinstance(inputs.url, str) else repr(frames),
                "source": getattr(frames, "url", getattr(frames, "filename", repr(frames))),
                "start": inputs.start,
                "stop": inputs.stop,
                "step": inputs.step,
                "detector": inputs.detector,
                "frame_period_given": inputs.frame_period,
                "frame_period": period,
                "frame_period_source": getattr(
                    frames, "frame_period_source", "given" if inputs.frame_period else ""
                ),
                "n_frames": int(frames.n_frames),
                "frame_shape": list(frames.frame_shape),
                "dtype": str(frames.dtype),
                "events": is_events,
            },
        )
        self.report(1.0)
