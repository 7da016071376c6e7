"""Imports of the stages after the correlation, started in a thread once frames are read.

The normalisation imports ``scipy.fft`` and the fit ``scipy.optimize`` (together 0.3–0.9 s);
imported when those stages start, they lengthen the run by that much. The correlation mostly
waits for the device, the disk or NumPy, which release the GIL, so the imports can run
meanwhile. They are started only once the first frames were read, so that reaching the first
frame read stays fast (``tests/test_cli.py`` checks that nothing heavy is imported before).

Other work of that kind (the PNG helper process of :mod:`ewoksxpcs.io.pngproc`, whose
matplotlib import would take CPU from the start of the run on a small machine) is handed to
:func:`after_first_read` by the front that knows it will be needed (``ewoksxpcs run``); it is
started by the same :func:`prefetch` call.

``EWOKSXPCS_PREFETCH=0`` in the environment turns the module imports off (each stage then
imports what it needs when it starts): the A/B of whether the import thread, which holds the
GIL while it runs Python code, slows the correlation more than it saves afterwards.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Callable, Sequence

from ..engine.lazy_imports import import_module

__all__ = ["AFTER_CORRELATION", "after_first_read", "prefetch"]

#: Modules the normalisation and the fit import.
AFTER_CORRELATION = ("scipy.fft", "scipy.optimize")

_started = set()
_lock = threading.Lock()
_deferred: list = []  # callables for the next prefetch() call


def after_first_read(work: Callable[[], None]) -> None:
    """Run ``work()`` (in the prefetch thread) when :func:`prefetch` is next called, i.e. once
    the frames are being read; errors are ignored (the step that needs the work does it)."""
    with _lock:
        _deferred.append(work)


def prefetch(modules: Sequence[str] = AFTER_CORRELATION) -> None:
    """Import ``modules`` in a background thread (once per process; errors are left for the
    real import to report)."""
    if os.environ.get("EWOKSXPCS_PREFETCH", "1") == "0":
        modules = ()
    with _lock:
        todo = [m for m in modules if m not in _started and m not in sys.modules]
        _started.update(todo)
        work = list(_deferred)
        _deferred.clear()
    if not todo and not work:
        return

    def imports():
        for job in work:
            try:
                job()
            except Exception:  # the stage that needs it does it again and reports
                pass
        for name in todo:
            try:
                import_module(name)  # the lock the stages' own imports of SciPy take
            except Exception:  # the stage that needs it reports it
                pass

    # Not a daemon thread: one stopped inside an extension's initialisation at exit aborts.
    threading.Thread(target=imports, daemon=False, name="ewoksxpcs-prefetch").start()
