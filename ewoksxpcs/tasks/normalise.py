"""Ewoks task :class:`Normalise`: g2(q, τ) with error bars, τ in seconds, q per bin."""

from __future__ import annotations

from typing import Any, Optional

from ewokscore.model import BaseInputModel, BaseOutputModel
from pydantic import Field

from ..workflow.pipeline import normalise_sums
from .base import XpcsTask

__all__ = ["Normalise"]


class Inputs(BaseInputModel):
    sums: Any = Field(..., description="CorrelationSums from Correlate.")
    binning: Any = Field(..., description="Binning the sums refer to.")
    frame_period: Optional[float] = Field(
        None, description="Seconds between frames; None: tau in frames.", gt=0
    )
    q: Any = Field(
        None, description="q per bin (q_unit), for the labels 'labels' (default: the labels)."
    )
    q_unit: str = Field("nm^-1", description="Unit of q ('' when q holds labels).")
    labels: Any = Field(None, description="Labels the q values refer to (default: the binning's).")
    chi: Any = Field(None, description="Azimuthal sector centre per bin, degrees (optional).")
    method: str = Field("", description="Method used (recorded).")
    device: str = Field("cpu", description="Device used (recorded).")
    auto_reason: str = Field("", description="Why 'auto' chose the method (recorded).")
    mode: str = Field("linear", description="Correlation mode of the sums.")
    mode_options: Optional[dict] = Field(
        None,
        description="Options of the mode from Correlate (multitau: normalisation, "
        "lags_per_level; twotime: twotime_bins, time_bin).",
    )
    parameters: Optional[dict] = Field(None, description="Parameters recorded so far (provenance).")


class Outputs(BaseOutputModel):
    result: Any = Field(
        ...,
        description="CorrelationResult (g2, g2_err, n2, s2, lags, labels, n_pixels, ...); "
        "MultiTauResult (multitau); TwoTimeResult (twotime: maps C, derived g2).",
    )
    g2: Any = Field(..., description="g2 (n_bins, n_tau) float64.")
    g2_err: Any = Field(
        ..., description="Standard error of g2 (jackknife over pixel groups), (n_bins, n_tau)."
    )
    tau: Any = Field(..., description="Delays (n_tau,): lag x frame period, in tau_unit.")
    tau_unit: str = Field(..., description="'s', or 'frame' when the frame period is unknown.")
    q: Any = Field(..., description="q per bin (n_bins,), in q_unit.")
    q_unit: str = Field(..., description="Unit of q.")
    chi: Any = Field(None, description="Sector centre per bin (n_bins,), degrees, or None.")
    labels: Any = Field(..., description="Label of each row (n_bins,).")
    parameters: dict = Field(..., description="Parameters recorded so far (provenance).")


class Normalise(XpcsTask, input_model=Inputs, output_model=Outputs):
    """Normalise the sums: g2 = N_q·n2/s2 with jackknife errors; τ = lag × frame period."""

    def run(self):
        self.start_progress()
        i = self.inputs
        info = {"auto_reason": i.auto_reason} if i.auto_reason else {}
        out = normalise_sums(
            i.sums,
            i.binning,
            frame_period=i.frame_period,
            q=i.q,
            q_labels=i.labels,
            chi=i.chi,
            method=i.method,
            device=i.device,
            mode=i.mode,
            info=info,
            mode_options=i.mode_options,
        )
        for name in ("result", "g2", "g2_err", "tau", "tau_unit", "q", "chi", "labels"):
            setattr(self.outputs, name, out[name])
        self.outputs.q_unit = i.q_unit if i.q is not None else ""
        self.outputs.parameters = self.record(
            "normalise",
            {
                "frame_period": i.frame_period,
                "tau_unit": out["tau_unit"],
                "q_unit": i.q_unit,
                "mode": i.mode,
                "mode_options": i.mode_options or {},
            },
        )
        self.report(1.0)
