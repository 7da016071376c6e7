"""Ewoks task :class:`LiveCorrelate`: g2 while the scan runs, the final result when it ends."""

from __future__ import annotations

from typing import Any, Optional

from ewokscore.model import BaseInputModel, BaseOutputModel
from pydantic import Field

from ..io.live import open_live_source
from ..workflow.live import run_live
from .base import XpcsTask

__all__ = ["LiveCorrelate"]


class Inputs(BaseInputModel):
    source: str = Field(..., description="redis://host:port/<scan key> (Bliss scan in Redis), "
                        "or file.h5::/1.1 still being written.")
    qmask: Any = Field(..., description="Label image (Ny, Nx): array, .npy/EDF file or HDF5 URL.")
    output: str = Field(..., description="Result file (NeXus HDF5), replaced at each update.")
    every: float = Field(2.0, description="Seconds between updates (0: final result only).", ge=0)
    mode: str = Field("multitau", description="multitau, linear or twotime.")
    method: str = Field("auto", description="Linear mode: the backend.")
    device: Optional[str] = Field(None, description="Linear mode: OpenCL device.")
    mode_options: Optional[dict] = Field(None, description="Options of the mode.")
    mask: Any = Field(None, description="Detector mask(s), non-zero = bad.")
    q_values: Any = Field(None, description="q of each label, nm^-1.")
    stream: Optional[str] = Field(None, description="Redis: the image stream.")
    fallback: Optional[str] = Field(None, description="Redis: file.h5::/path of the frames.")
    lima_files: Optional[str] = Field(None, description="HDF5: Lima data files (glob).")
    detector: Optional[str] = Field(None, description="HDF5: detector of the scan.")
    expected_frames: Optional[int] = Field(None, description="HDF5: frames of the scan.")
    frame_period: Optional[float] = Field(None, description="Seconds between frames.", gt=0)
    quiet_timeout: float = Field(30.0, description="End after this many s without a frame.", gt=0)
    wait_timeout: float = Field(60.0, description="Wait this many s for the scan.", gt=0)
    plot: bool = Field(True, description="Also write '<output>_g2.png'.")
    overwrite: bool = Field(False, description="Replace an existing result file.")
    on_snapshot: Any = Field(None, description="In-process callable given each snapshot dict "
                             "(g2, g2_err, tau, labels, q, n_frames...; the Orange widget draws "
                             "them), the final one included.")


class Outputs(BaseOutputModel):
    output: str = Field(..., description="Result file written (absolute path).")
    png: Optional[str] = Field(None, description="PNG written, or None.")
    n_frames: int = Field(..., description="Frames correlated.")
    ended_early: str = Field(..., description="'' or 'scan ended early at frame N: ...'.")
    latency_s: float = Field(..., description="Seconds from the last frame to the final file.")


class LiveCorrelate(XpcsTask, input_model=Inputs, output_model=Outputs):
    """Correlate a scan while it is acquired (``ewoksxpcs.workflow.live.run_live``)."""

    def run(self):
        self.start_progress()
        i = self.inputs
        source = open_live_source(
            i.source, stream=i.stream, fallback=i.fallback, files=i.lima_files,
            detector=i.detector, expected_frames=i.expected_frames,
            quiet_timeout=i.quiet_timeout, wait_timeout=i.wait_timeout,
            frame_period=i.frame_period)
        final = run_live(source, i.qmask, i.output, every=i.every, mode=i.mode, method=i.method,
                         device=i.device, mode_options=i.mode_options, mask=i.mask,
                         q=i.q_values, png=i.plot, overwrite=i.overwrite, report=None,
                         on_snapshot=i.on_snapshot, token=self.token)
        self.outputs.output = final["output"]
        self.outputs.png = final["png"]
        self.outputs.n_frames = final["n_frames"]
        self.outputs.ended_early = final["ended_early"]
        self.outputs.latency_s = final["latency_s"]
        self.report(1.0)
