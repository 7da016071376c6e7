"""Checks of the numeric options where they enter (correlators, :func:`correlate`, the pipeline,
frame sources), so that a wrong value is refused with its name instead of giving an empty or
wrong result (``chunk_frames=-5`` used to read no frame at all).
"""

from __future__ import annotations

from typing import Optional

import numpy

__all__ = ["POSITIVE_INT_OPTIONS", "positive_int", "check_options", "check_lags_per_level"]

#: Options that must be integers ≥ 1 when given, with their unit.
POSITIVE_INT_OPTIONS = {
    "chunk_frames": "frames",
    "n_groups": "pixel groups per bin",
    "time_bin": "frames",
    "max_frames": "frames",
    "n_segments": "segments",
    "max_levels": "levels",
    "max_device_memory": "bytes",
    "window_frames": "frames",
    "block_frames": "frames",
    "threads": "threads",
    "lag_tile": "lags",
    "work_group": "work-items",
    "task_pairs": "event pairs",
    "upload_chunks": "chunks",
    "row_block": "events per work-item",
}


def positive_int(value, name: str, unit: Optional[str] = None) -> Optional[int]:
    """``value`` as an int ≥ 1, or None when it is None.

    Raises
    ------
    ValueError
        A bool, a non-integer (2.5, "8") or a value below 1, naming the option.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, numpy.integer)) or value < 1:
        unit = POSITIVE_INT_OPTIONS.get(name, "") if unit is None else unit
        raise ValueError(f"option {name} must be an integer >= 1"
                         f"{f' ({unit})' if unit else ''}, got {value!r}")
    return int(value)


def check_lags_per_level(m) -> int:
    """Validate ``lags_per_level`` (even integer >= 2) and return it as int."""
    if isinstance(m, bool) or not isinstance(m, (int, numpy.integer)):
        raise TypeError(f"lags_per_level must be an even integer >= 2, not {type(m).__name__}")
    if m < 2 or m % 2:
        raise ValueError(f"lags_per_level must be an even integer >= 2, got {m}")
    return int(m)


def check_options(options: Optional[dict]) -> dict:
    """Check the known numeric options among ``options`` (others are left to their owners:
    ``max_memory`` ≥ 0 by :func:`ewoksxpcs.engine.pixel_series.check_max_memory`, 0 spilling at once).

    ``lags_per_level`` must be an even integer ≥ 2; the options of
    :data:`POSITIVE_INT_OPTIONS` integers ≥ 1. Returns ``options`` (a dict).
    """
    options = dict(options or {})
    for name, value in options.items():
        if name in POSITIVE_INT_OPTIONS:
            positive_int(value, name)
    if options.get("lags_per_level") is not None:
        check_lags_per_level(options["lags_per_level"])
    return options
