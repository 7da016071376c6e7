"""Ewoks task :class:`BuildQMask`: the q-bin label image, from a label image or from geometry."""

from __future__ import annotations

from typing import Any, Optional

from ewokscore.model import BaseInputModel, BaseOutputModel
from pydantic import Field

from ..workflow.maskbin import build_qmask
from .base import XpcsTask

__all__ = ["BuildQMask"]


class Inputs(BaseInputModel):
    frames: Any = Field(
        ...,
        description="Frame source, EventStack or 3-D array: its frame shape, "
        "and the data of the automatic bad-pixel mask.",
    )
    qmask: Any = Field(
        None,
        description="Label image (Ny, Nx) of integers, 0 = unused: array, "
        ".npy/EDF file or HDF5 URL 'file.h5::/path'.",
        examples=["scan.h5::/1.1/simulation/labels"],
    )
    q_values: Any = Field(
        None,
        description="q of each label of qmask (nm^-1), sorted label order: "
        "sequence, .npy file or HDF5 URL.",
    )
    poni: Optional[str] = Field(
        None, description="pyFAI PONI file (geometry).", examples=["detector.poni"]
    )
    beam_center: Optional[Any] = Field(
        None,
        description="Beam centre (y0, x0), pixels (pixel centres at integer indices).",
        examples=[[511.5, 520.0]],
    )
    distance: Optional[float] = Field(None, description="Sample-detector distance, m.", gt=0)
    pixel_size: Optional[Any] = Field(
        None, description="Pixel size, m (one value or (rows, columns)).", examples=[75e-6]
    )
    wavelength: Optional[float] = Field(None, description="X-ray wavelength, m.", gt=0)
    energy: Optional[float] = Field(
        None, description="X-ray energy, keV (instead of the wavelength).", gt=0
    )
    q_edges: Optional[Any] = Field(None, description="q bin edges, nm^-1 (increasing).")
    n_bins: Optional[int] = Field(None, description="Number of q bins over q_range.", ge=1)
    q_range: Optional[Any] = Field(None, description="(q_min, q_max), nm^-1; default: all pixels.")
    log_bins: bool = Field(False, description="Bins equal in log q instead of q.")
    n_sectors: Optional[int] = Field(
        None, description="Equal azimuthal sectors from -180 degrees.", ge=1
    )
    sectors: Optional[Any] = Field(
        None, description="Azimuthal sectors [[chi_min, chi_max], ...], degrees."
    )
    mask: Any = Field(
        None, description="Detector mask(s), non-zero = bad: array, file or URL, or a list."
    )
    auto_mask: bool = Field(
        False,
        description="Add hot, dead and detector-flagged pixels found in the "
        "data (rule: ewoksxpcs.workflow.maskbin.auto_bad_pixels).",
    )
    auto_mask_options: Optional[dict] = Field(
        None,
        description="n_sample, hot_factor, hot_min_counts, dead_min_counts of the automatic mask.",
    )
    file_mask: bool = Field(
        True,
        description="Also mask the detector's own pixel mask stored with the frames "
        "(NXdetector pixel_mask, Eiger detectorSpecific/pixel_mask), when present.",
    )
    parameters: Optional[dict] = Field(None, description="Parameters recorded so far (provenance).")


class Outputs(BaseOutputModel):
    qmask: Any = Field(
        ..., description="Label image (Ny, Nx) int32, 0 = unused (bad pixels zeroed)."
    )
    labels: Any = Field(
        ..., description="Bin labels (n_bins,) int64, sorted: order of every per-bin array."
    )
    q: Any = Field(
        ..., description="q per bin (n_bins,) float64, in q_unit (mean q of the bin's pixels)."
    )
    q_unit: str = Field(
        ..., description="'nm^-1', or '' when q is unknown (q then holds the labels)."
    )
    q_edges: Any = Field(
        None, description="q bin edges (n_q + 1,), nm^-1 (None for a given label image)."
    )
    chi: Any = Field(
        None, description="Azimuthal sector centre per bin (n_bins,), degrees, or None."
    )
    n_pixels: Any = Field(..., description="Unmasked pixels per bin (n_bins,) int64.")
    bad_pixels: Any = Field(..., description="Excluded pixels (Ny, Nx) bool.")
    parameters: dict = Field(..., description="Parameters recorded so far (provenance).")


class BuildQMask(XpcsTask, input_model=Inputs, output_model=Outputs):
    """Build the q-mask: label image or geometry (PONI or beam centre), sectors, masks."""

    def run(self):
        self.start_progress()
        i = self.inputs
        frames = i.frames
        shape = getattr(frames, "frame_shape", None)
        if shape is None:
            shape = getattr(frames, "shape", (None, None, None))[1:]
        if i.auto_mask and not hasattr(frames, "frame_shape"):
            from ..workflow.pipeline import open_source

            frames = open_source(frames)
        qb = build_qmask(
            shape,
            qmask=i.qmask,
            q_values=i.q_values,
            poni=i.poni,
            beam_center=i.beam_center,
            distance=i.distance,
            pixel_size=i.pixel_size,
            wavelength=i.wavelength,
            energy=i.energy,
            q_edges=i.q_edges,
            n_bins=i.n_bins,
            q_range=i.q_range,
            log_bins=i.log_bins,
            sectors=i.sectors,
            n_sectors=i.n_sectors,
            mask=i.mask,
            frames=frames,
            auto_mask=i.auto_mask,
            auto_mask_options=i.auto_mask_options,
            file_mask=i.file_mask,
        )
        self.outputs.qmask = qb.qmask
        self.outputs.labels = qb.labels
        self.outputs.q = qb.q
        self.outputs.q_unit = qb.q_unit
        self.outputs.q_edges = qb.q_edges
        self.outputs.chi = qb.chi
        self.outputs.n_pixels = qb.n_pixels
        self.outputs.bad_pixels = qb.bad_pixels
        self.outputs.parameters = self.record(
            "qmask",
            {
                "qmask": i.qmask,
                "q_values": i.q_values,
                "poni": i.poni,
                "beam_center": i.beam_center,
                "distance": i.distance,
                "pixel_size": i.pixel_size,
                "wavelength": i.wavelength,
                "energy": i.energy,
                "q_edges": qb.q_edges,
                "n_bins": i.n_bins,
                "q_range": i.q_range,
                "log_bins": i.log_bins,
                "n_sectors": i.n_sectors,
                "sectors": i.sectors,
                "mask": i.mask,
                "auto_mask": i.auto_mask,
                "auto_mask_options": i.auto_mask_options,
                "use_file_mask": i.file_mask,
                "n_bins_built": int(qb.labels.size),
                "n_pixels_binned": int(qb.n_pixels.sum()),
                **{k: v for k, v in qb.info.items()},
            },
        )
        self.report(1.0)
