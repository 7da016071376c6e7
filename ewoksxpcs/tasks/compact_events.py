"""Ewoks task :class:`CompactEvents`: frames → sparse events, optionally saved to a file."""

from __future__ import annotations

from typing import Any, Optional

from ewokscore.model import BaseInputModel, BaseOutputModel
from pydantic import Field

from ..io.inputfiles import check_not_input
from ..io.save import check_output
from ..workflow.pipeline import compact_frames, save_events
from .base import XpcsTask

__all__ = ["CompactEvents"]


class Inputs(BaseInputModel):
    frames: Any = Field(..., description="Frame source or 3-D array of non-negative counts.")
    qmask: Any = Field(
        None,
        description="Label image (Ny, Nx): the per-frame bin sums are stored with "
        "the events (optional).",
    )
    bad_pixels: Any = Field(
        None,
        description="Pixels to drop (Ny, Nx) bool; all others are kept, so "
        "the events can be re-binned later.",
    )
    device: Optional[str] = Field(
        None,
        description="None: NumPy compaction; an OpenCL device ('cpu', "
        "'gpu', 'platform:device'): OpenCL compaction (same events).",
    )
    chunk_frames: Optional[int] = Field(None, description="Frames per chunk.", ge=1)
    events_file: Optional[str] = Field(
        None, description="Write the events to this HDF5 file.", examples=["events.h5"]
    )
    overwrite: bool = Field(False, description="Replace an existing events file.")
    frame_period: Optional[float] = Field(
        None,
        description="Seconds between frames, stored in the "
        "events file (default: the frame source's).",
        gt=0,
    )
    parameters: Optional[dict] = Field(None, description="Parameters recorded so far (provenance).")


class Outputs(BaseOutputModel):
    events: Any = Field(
        ..., description="EventStack: non-zero values, their frame index, per pixel."
    )
    events_file: Optional[str] = Field(
        None, description="Events file written (absolute path), or None."
    )
    n_events: int = Field(..., description="Number of non-zero pixel values.")
    occupancy: float = Field(..., description="Fraction of pixel-frames holding an event.")
    frame_period: Optional[float] = Field(None, description="Seconds between frames.")
    parameters: dict = Field(..., description="Parameters recorded so far (provenance).")


class CompactEvents(XpcsTask, input_model=Inputs, output_model=Outputs):
    """Stream the frames through compaction (with progress; cancellable); save the events."""

    def run(self):
        self.start_progress()
        i = self.inputs
        inputs = self.input_files()
        if i.events_file:  # fail before the work
            check_output(i.events_file, i.overwrite)
            check_not_input(i.events_file, inputs, "events file")
        period = i.frame_period or getattr(i.frames, "frame_period", None)
        events = compact_frames(
            i.frames,
            bad_pixels=i.bad_pixels,
            qmask=i.qmask,
            device=i.device,
            chunk_frames=i.chunk_frames,
            token=self.token,
            progress=lambda f: self.report(0.9 * f),
        )
        events.frame_period = period
        filename = None
        if i.events_file:
            filename = save_events(
                events,
                i.events_file,
                frame_period=period,
                overwrite=i.overwrite,
                token=self.token,
                source=str(getattr(i.frames, "url", "")),
                inputs=inputs,
            )
            events.filename = filename
        self.outputs.events = events
        self.outputs.events_file = filename
        self.outputs.n_events = int(events.n_events)
        self.outputs.occupancy = float(events.occupancy)
        self.outputs.frame_period = period
        self.outputs.parameters = self.record(
            "compact",
            {
                "device": i.device or "numpy",
                "chunk_frames": i.chunk_frames,
                "events_file": filename,
                "n_events": int(events.n_events),
                "occupancy": float(events.occupancy),
                "n_kept_pixels": int(events.n_pixels),
            },
        )
        self.report(1.0)
