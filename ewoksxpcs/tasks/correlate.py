"""Ewoks task :class:`Correlate`: the correlation sums, by any registered method."""

from __future__ import annotations

from typing import Any, Optional, Union

from ewokscore.model import BaseInputModel, BaseOutputModel
from pydantic import Field

from ..workflow.pipeline import correlate_sums
from ..engine.qmask import DEFAULT_GROUPS
from .base import XpcsTask

__all__ = ["Correlate"]


class Inputs(BaseInputModel):
    frames: Any = Field(
        ..., description="Frame source, 3-D array (Nt, Ny, Nx) or EventStack (counts)."
    )
    qmask: Any = Field(
        ..., description="Label image (Ny, Nx) of integers (0 = unused) or a Binning."
    )
    labels: Any = Field(
        None, description="Bins to correlate (labels), default: those in the q-mask."
    )
    bad_pixels: Any = Field(
        None, description="Pixels to ignore (Ny, Nx) bool (in addition to label 0)."
    )
    method: str = Field(
        "auto",
        description="Correlation method: 'auto' or a registered name "
        "(ewoksxpcs.available_methods()).",
        examples=["auto", "fft", "matmul"],
    )
    device: Optional[str] = Field(
        None, description="OpenCL device for OpenCL methods: 'cpu', 'gpu' or 'platform:device'."
    )
    mode: str = Field(
        "linear",
        description="Correlation mode: 'linear' (every lag), 'multitau' (log-spaced lags) or "
        "'twotime' (two-time maps C(q, t1, t2) and the g2 derived from them).",
        examples=["linear", "multitau", "twotime"],
    )
    lags_per_level: Optional[int] = Field(
        None,
        description="Mode 'multitau': lags per level m (even, >= 2; default 8): lags "
        "0..m-1 frames, then m/2 lags per level of frames summed pairwise.",
    )
    normalisation: Optional[str] = Field(
        None,
        description="Mode 'multitau': 'standard' (default: the linear g2 at level 0) or "
        "'symmetric' (past/future mean intensities, as scikit-beam).",
        examples=["standard", "symmetric"],
    )
    twotime_bins: Any = Field(
        None, description="Mode 'twotime': q-mask labels to map (default: every bin)."
    )
    time_bin: Optional[int] = Field(
        None,
        description="Mode 'twotime': frames summed per time bin (default: the smallest "
        "giving at most 10000 time bins).",
    )
    options: Optional[dict] = Field(None, description="Engine options (e.g. chunk_frames).")
    n_groups: int = Field(
        DEFAULT_GROUPS, description="Pixel groups per bin for the jackknife errors.", ge=1
    )
    parameters: Optional[dict] = Field(None, description="Parameters recorded so far (provenance).")
    bad_frames: Any = Field(
        None, description="Frames excluded from every pair: scan indices, e.g. '10,200-250' "
        "(ranges inclusive), a list of ints or a bool mask (ewoksxpcs.engine.badframes).")
    auto_bad_frames: Union[bool, float, None] = Field(
        None, description="Also find bad frames from the data: True, or the threshold k in "
        "robust standard deviations (default 6).")
    normalise_by: Any = Field(
        None, description="Per-frame weights: 'frame-sum', a counter of the scan "
        "(measurement/<name>), or the monitor values (ewoksxpcs.engine.frameweights).")
    segments: Optional[int] = Field(
        None, description="Also correlate this many equal time segments (stability).", ge=1)


class Outputs(BaseOutputModel):
    sums: Any = Field(
        ...,
        description="CorrelationSums (linear): n2 (n_sub, n_lags), frame sums (Nt, n_sub), "
        "lags (frames); counts, exact int64 for integer frames. MultiTauSums (multitau); "
        "TwoTimeResult (twotime: the maps).",
    )
    binning: Any = Field(..., description="Binning the sums refer to (bins, pixel groups).")
    method: str = Field(..., description="Method used.")
    device: str = Field(..., description="Where it ran ('cpu' or the OpenCL device).")
    auto_reason: str = Field("", description="Why 'auto' chose the method.")
    mode: str = Field(..., description="Correlation mode.")
    mode_options: dict = Field(
        ..., description="Options of the mode that were set (for Normalise), e.g. normalisation."
    )
    mean_image: Any = Field(None, description="Mean counts per pixel per frame (Ny, Nx) float64.")
    n_frames: int = Field(..., description="Frames correlated.")
    segments: Any = Field(None, description="SegmentResult (partial g2, intensity) or None.")
    parameters: dict = Field(..., description="Parameters recorded so far (provenance).")


def _mode_details(sums) -> dict:
    """What a mode chose by itself (two-time: time bin and mapped bins), for the record."""
    details = {}
    if hasattr(sums, "time_bin"):
        details["time_bin_used"] = int(sums.time_bin)
        details["twotime_bins_used"] = [int(v) for v in sums.labels]
    return details


def _science_details(out, inputs) -> dict:
    """Bad frames, frame weights and segments, for the record (compact frame lists)."""
    from ..engine.badframes import format_frame_list

    details = {}
    bad = out.get("bad_frames")
    if bad is not None:
        details["bad_frames"] = {
            "excluded": format_frame_list(bad["scan_indices"]),
            "given": format_frame_list(bad["given"]),
            "detected": format_frame_list(bad["detected"]),
            "n_excluded": int(bad["scan_indices"].size),
            "threshold": bad["threshold"],
            "window": bad["window"],
        }
    if out.get("normalised_by") is not None:
        details["normalise_by"] = out["normalised_by"]["normalise_by"]
    if inputs.segments:
        details["segments"] = int(inputs.segments)
    return details


class Correlate(XpcsTask, input_model=Inputs, output_model=Outputs):
    """Correlate the frames (streamed, with progress; cancellable) into additive sums."""

    def run(self):
        self.start_progress()
        i = self.inputs
        prefetching = []

        def progress(fraction):
            if fraction > 0 and not prefetching:  # frames are being read: import what follows
                from ..workflow.prefetch import prefetch

                prefetching.append(True)
                prefetch()
            self.report(fraction)

        out = correlate_sums(
            i.frames,
            i.qmask,
            method=i.method,
            device=i.device,
            mode=i.mode,
            options=i.options,
            labels=i.labels,
            bad_pixels=i.bad_pixels,
            n_groups=i.n_groups,
            token=self.token,
            progress=progress,
            mode_options={
                "lags_per_level": i.lags_per_level,
                "normalisation": i.normalisation,
                "twotime_bins": i.twotime_bins,
                "time_bin": i.time_bin,
            },
            bad_frames=i.bad_frames,
            auto_bad_frames=i.auto_bad_frames,
            normalise_by=i.normalise_by,
            segments=i.segments,
        )
        if not prefetching:  # no progress was reported while reading: now, for what follows
            from ..workflow.prefetch import prefetch

            prefetch()
        for name in (
            "sums",
            "binning",
            "method",
            "device",
            "auto_reason",
            "mode",
            "mode_options",
            "mean_image",
            "n_frames",
            "segments",
        ):
            setattr(self.outputs, name, out[name])
        self.outputs.parameters = self.record(
            "correlate",
            {
                "method_requested": i.method,
                "method": out["method"],
                "device_requested": i.device,
                "device": out["device"],
                "auto_reason": out["auto_reason"],
                "mode": i.mode,
                "mode_options": out["mode_options"],
                "options": i.options or {},
                "n_groups": i.n_groups,
                "n_frames": out["n_frames"],
                "n_bins": int(out["binning"].n_bins),
                "timings_s": out["timings"],
                **_mode_details(out["sums"]),
                **_science_details(out, i),
            },
        )
        self.report(1.0)
