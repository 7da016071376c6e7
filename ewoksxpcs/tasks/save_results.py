"""Ewoks task :class:`SaveResults`: NeXus result file (+ PNG of the g2 curves)."""

from __future__ import annotations

import os
from typing import Any, Optional, Union

from ewokscore.model import BaseInputModel, BaseOutputModel
from pydantic import Field

from ..io.formats import check_formats, format_filenames
from ..io.inputfiles import check_not_input
from ..io.save import check_output, default_png, save_formats
from ..workflow.pipeline import fit_decays
from .base import XpcsTask

__all__ = ["SaveResults"]


class Inputs(BaseInputModel):
    output: str = Field(..., description="Result file (NeXus HDF5).", examples=["result.h5"])
    formats: Any = Field(
        None,
        description="Layouts: 'nexus' (default), 'aps' (APS 8-ID-I, xpcs-viewer), 'id02' "
        "(ESRF ID02, xpcsutilities), a list of them or a comma-separated string; the first "
        "writes 'output', the others files next to it.",
        examples=[["nexus", "aps"]],
    )
    q_edges: Any = Field(None, description="q bin edges (n_q + 1,), nm^-1 (nominal centres).")
    bad_pixels: Any = Field(None, description="Excluded pixels (Ny, Nx) bool (APS mask).")
    keep_events: bool = Field(
        False,
        description="Keep the per-pixel time series (events of every kept pixel) in the NeXus "
        "result, for 'ewoksxpcs rebin' (frames are compacted for it on the CPU).",
    )
    pixel_g2: bool = Field(
        False,
        description="APS layout: also the pixel-level G2, IP, IF at every delay "
        "(n_tau x 3 x Ny x Nx float32; from the events, frames compacted for it).",
    )
    events: Any = Field(None, description="EventStack or frames (keep_events, pixel_g2).")
    result: Any = Field(..., description="CorrelationResult from Normalise.")
    tau: Any = Field(..., description="Delays (n_tau,), tau_unit.")
    tau_unit: str = Field("s", description="Unit of tau.")
    q: Any = Field(..., description="q per bin (n_bins,), q_unit.")
    q_unit: str = Field("nm^-1", description="Unit of q.")
    chi: Any = Field(None, description="Sector centre per bin, degrees (optional).")
    qmask: Any = Field(None, description="Label image (Ny, Nx), saved with the results.")
    mean_image: Any = Field(None, description="Mean counts per pixel per frame (Ny, Nx).")
    frame_period: Optional[float] = Field(None, description="Seconds between frames (time axis).")
    overwrite: bool = Field(False, description="Replace existing result files.")
    plot: Union[bool, str, None] = Field(
        True,
        description="PNG of the g2 curves: True (next to the "
        "result, '<name>_g2.png'), a file name, or False.",
    )
    fit: Union[bool, str] = Field(
        True, description="Fit per bin and save it: 'exp' (or True) g2 = baseline + "
        "beta*exp(-2*gamma*tau), 'kww' (stretched), 'double', or 'none' (or False); then "
        "gamma(q) = D*q^n (ewoksxpcs.engine.fit).",
        examples=["exp", "kww", "double", "none"],
    )
    segments: Any = Field(None, description="SegmentResult from Correlate (stability), saved.")
    title: str = Field("XPCS g2", description="Title of the entry and the plot.")
    parameters: Optional[dict] = Field(
        None, description="Parameters recorded so far (saved in the file)."
    )


class Outputs(BaseOutputModel):
    output: str = Field(..., description="Result file written (absolute path).")
    files: Optional[dict] = Field(None, description="File written for each format.")
    png: Optional[str] = Field(None, description="PNG written (absolute path), or None.")
    fit: Optional[dict] = Field(
        None,
        description="Fit per bin: q, gamma (1/tau_unit), beta, baseline "
        "and their errors, as lists.",
    )


class SaveResults(XpcsTask, input_model=Inputs, output_model=Outputs):
    """Write the NeXus result (default plot: g2 vs q and tau, with errors) and the PNG.

    Never overwrites without ``overwrite``, never replaces an input file; the result and the
    PNG are committed together (:func:`ewoksxpcs.io.save.save_results`).
    """

    def run(self):
        self.start_progress()
        i = self.inputs
        formats = check_formats(i.formats)
        for name in format_filenames(i.output, formats).values():
            check_output(name, i.overwrite)
        png = None
        if i.plot is True:
            png = default_png(i.output)
        elif isinstance(i.plot, str) and i.plot:
            png = (
                i.plot
                if os.path.dirname(i.plot)
                else os.path.join(os.path.dirname(os.path.abspath(i.output)), i.plot)
            )
        if png is not None:
            check_output(png, i.overwrite)
        inputs = self.input_files()
        for name, what in ((i.output, "result file"), (png, "PNG")):
            check_not_input(name, inputs, what)
        result = i.result
        fit, power_law = fit_decays(i.tau, result, i.q, i.fit)
        self.report(0.3)
        params = self.record(
            "save",
            {
                "output": os.path.abspath(i.output),
                "formats": list(formats),
                "keep_events": i.keep_events,
                "pixel_g2": i.pixel_g2,
                "overwrite": i.overwrite,
                "plot": png,
                "fit": i.fit,
            },
        )
        events = None
        if i.keep_events or i.pixel_g2:
            from ..engine.events import EventStack
            from ..workflow.pipeline import compact_frames

            events = i.events
            if events is None:
                raise ValueError("keep_events/pixel_g2: no events nor frames given")
            if not isinstance(events, EventStack):
                events = compact_frames(events, bad_pixels=i.bad_pixels, token=self.token)
        written = save_formats(
            i.output,
            result,
            i.q,
            i.tau,
            q_unit=i.q_unit,
            tau_unit=i.tau_unit,
            qmask=i.qmask,
            mean_image=i.mean_image,
            frame_period=i.frame_period,
            parameters=params,
            fit=fit,
            chi=i.chi,
            overwrite=i.overwrite,
            png=png,
            cancel_token=self.token,
            title=i.title,
            segments=i.segments,
            power_law=power_law,
            formats=formats,
            q_edges=i.q_edges,
            bad_pixels=i.bad_pixels,
            events=events,
            keep_events=i.keep_events,
            pixel_g2=i.pixel_g2,
            inputs=inputs,
        )
        self.outputs.output = written["filename"]
        self.outputs.files = written["files"]
        self.outputs.png = written["png"]
        self.outputs.fit = (
            None
            if fit is None
            else {
                "q": [float(v) for v in i.q],
                **{
                    k: [float(v) for v in getattr(fit, k)]
                    for k in (
                        "gamma",
                        "gamma_err",
                        "beta",
                        "beta_err",
                        "baseline",
                        "baseline_err",
                        "chi2_red",
                    )
                },
                "model": fit.model,
                "status": fit.status_text,
                **({} if power_law is None else {
                    "D": power_law.D, "D_err": power_law.D_err,
                    "n": power_law.n, "n_err": power_law.n_err}),
            }
        )
        self.report(1.0)
