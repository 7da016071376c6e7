"""The scan opened ahead of the workflow: first reads while the workflow machinery starts.

``ewoksxpcs run`` spends its first half second importing ewokscore and building the graph
before the LoadFrames step opens the scan. :func:`open_source_ahead` opens it first
(as ``ewoksxpcs.workflow.pipeline.open_source`` would, with the step's arguments), then runs the
given follow-ups on it in a thread while ewokscore is imported: the readahead of its stored
chunks (:mod:`ewoksxpcs.io.readahead`) and the samples ``auto`` will decide from
(:func:`ewoksxpcs.correlators.auto.read_samples`), so that the disk works from the start.
The next ``open_source`` call of this process with the same arguments takes that source
(:func:`take`) instead of opening the scan again; when opening ahead failed, the step opens
it itself and reports the error as usual.

This module imports nothing heavy itself (the front imports it before NumPy).
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Optional, Sequence

__all__ = ["open_source_ahead", "take", "discard", "source_key"]

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_opened: dict = {}  # source_key -> the source opened ahead


def source_key(url, start=0, stop=None, step=1, frame_period=None, detector=None):
    """The arguments of ``open_source`` as a key, or None when ``url`` is not a file name or
    URL string (arrays and iterables are not opened ahead)."""
    if not isinstance(url, str):
        return None
    return (url, int(start or 0), None if stop is None else int(stop), int(step or 1),
            None if frame_period is None else float(frame_period), detector or None)


def open_source_ahead(url, start=0, stop=None, step=1, frame_period=None, detector=None,
                      then: Sequence[Callable] = ()):
    """Open the frames of ``url`` now (arguments as for ``open_source``) and keep them for
    the step that opens them; then call each ``then(source)`` in a thread (errors ignored:
    the steps redo the work and report).

    Opened in the calling thread: the imports it needs (NumPy, h5py, the filters) hold the
    GIL, so a thread beside ewokscore's import would only share it and reach the file later.

    Returns the source, or None when ``url`` is not a string or cannot be opened (the step
    then reports why).
    """
    key = source_key(url, start, stop, step, frame_period, detector)
    if key is None:
        return None
    try:
        from ..io.load import load_frames  # what open_source does with a URL

        source = load_frames(url, start=start, stop=stop, step=step, frame_period=frame_period,
                             detector=detector)
    except Exception:  # the step opens it again and reports the error
        logger.debug("%r not opened ahead", url, exc_info=True)
        return None
    with _lock:
        _opened[key] = source

    def work():
        for job in then:
            try:
                job(source)
            except Exception:
                logger.debug("work ahead on %r failed", source, exc_info=True)

    if then:
        # Not a daemon: a thread stopped inside h5py at exit may abort the process.
        threading.Thread(target=work, daemon=False, name="ewoksxpcs-open-ahead").start()
    return source


def take(key):
    """The source opened ahead for ``key`` (:func:`source_key`), or None; handed out once."""
    if key is None:
        return None
    with _lock:
        return _opened.pop(key, None)


def discard() -> None:
    """Forget the sources opened ahead and not taken (e.g. when the run failed before its
    first step): a later run of this process opens its scan afresh."""
    with _lock:
        _opened.clear()
