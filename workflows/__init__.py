"""Ewoks workflows of ewoksxpcs (installed as ``ewoksxpcs.workflows``).

- ``xpcs.json``: raw frames → NeXus result file (method ``auto``);
- ``xpcs_compact.json``: raw frames → events file + result;
- ``xpcs_events.json``: saved events file → result (re-binning without the raw frames);
- ``xpcs_rebin.json``: result saved with its events (or events file) → result on a new
  partition (:mod:`ewoksxpcs.io.rebin`).
"""

import os

__all__ = ["workflow_path", "WORKFLOWS"]

WORKFLOWS = ("xpcs", "xpcs_compact", "xpcs_events", "xpcs_rebin")


def workflow_path(name: str = "xpcs") -> str:
    """Absolute path of a workflow JSON file of this package."""
    if name not in WORKFLOWS:
        raise ValueError(f"unknown workflow {name!r}; available: {', '.join(WORKFLOWS)}")
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.json")
