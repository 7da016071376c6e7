"""Imports that another thread may be doing at the same time (SciPy, imported on first use).

The prefetch thread of :mod:`ewoksxpcs.workflow.prefetch` imports SciPy while the frames are
read. Two threads importing submodules of one package at once can meet in a cycle of CPython's
per-module import locks, which CPython breaks by handing one of them a partially initialised
module: "cannot import name 'PytestTester' from partially initialized module
'scipy._lib._testutils'" (seen in CI: the prefetch thread importing ``scipy.optimize`` while the
normalisation imported ``scipy.fft``). ewoksxpcs imports those packages through
:func:`import_module`, which holds one lock for it (re-entrant; a lookup once imported).
"""

from __future__ import annotations

import importlib
import threading

__all__ = ["import_module"]

_LOCK = threading.RLock()


def import_module(name: str):
    """:func:`importlib.import_module` under the lock that the prefetch thread holds."""
    with _LOCK:
        return importlib.import_module(name)
