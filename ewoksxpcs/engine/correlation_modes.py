"""The correlation modes: their names and the names of their options.

One list for the whole package: the registry of backends
(:mod:`ewoksxpcs.correlators.registry`, keyed by (mode, backend)) and the pipeline's table of
per-mode steps (:data:`ewoksxpcs.workflow.pipeline.MODES`) both take their modes from here.
Importing it loads no backend (the command line checks its options with it).
"""

from __future__ import annotations

from typing import Dict, Tuple

__all__ = ["MODES", "MODE_OPTIONS"]

#: Values of ``mode``: every lag, log-spaced lags, two-time maps.
MODES: Tuple[str, ...] = ("linear", "multitau", "twotime")

#: mode -> names of its options (the pipeline's ``mode_options``).
MODE_OPTIONS: Dict[str, Tuple[str, ...]] = {
    "linear": (),
    "multitau": ("lags_per_level", "normalisation"),
    "twotime": ("twotime_bins", "time_bin"),
}
