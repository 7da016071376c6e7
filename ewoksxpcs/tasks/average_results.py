"""Ewoks task :class:`AverageResults`: error-weighted g2 average over repeats (result files)."""

from __future__ import annotations

from typing import List

from ewokscore.model import BaseInputModel, BaseOutputModel
from pydantic import Field

from ..workflow.average import DEFAULT_THRESHOLD, average_files
from .base import XpcsTask

__all__ = ["AverageResults"]


class Inputs(BaseInputModel):
    filenames: List[str] = Field(..., description="Result files of the repeats (same processing).")
    output: str = Field(..., description="Result file of the average (NeXus HDF5).")
    threshold: float = Field(
        DEFAULT_THRESHOLD, gt=0, description="Rejection threshold k (robust standard deviations "
        "of the repeats' baselines and contrasts, ewoksxpcs.workflow.average).")
    overwrite: bool = Field(False, description="Replace an existing output file.")


class Outputs(BaseOutputModel):
    output: str = Field(..., description="Result file written (absolute path).")
    kept: List[str] = Field(..., description="Repeats averaged.")
    rejected: List[str] = Field(..., description="Repeats rejected.")


class AverageResults(XpcsTask, input_model=Inputs, output_model=Outputs):
    """Average g2 over repeats weighted by their errors; reject damaged repeats."""

    def run(self):
        self.start_progress()
        i = self.inputs
        out = average_files(i.filenames, i.output, i.threshold, i.overwrite)
        self.outputs.output, self.outputs.kept, self.outputs.rejected = (
            out["output"], out["kept"], out["rejected"])
        self.report(1.0)
