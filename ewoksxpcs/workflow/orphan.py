"""A worker process ends when the process that started it is gone.

Ewoks engines that run tasks in a pool of processes (``ppf``: a spawned process pool) leave the
pool process running when the main process is killed (SIGKILL, the out-of-memory killer): it
would finish its task — hours of correlation — for nobody. :func:`exit_with_parent` starts, once
per process and only in a ``multiprocessing`` child, a daemon thread that checks every
:data:`CHECK_INTERVAL_S` whether the parent is still the same process and otherwise kills its
own process. Its outputs are unnamed until committed (:mod:`ewoksxpcs.io.save`), so nothing is left.

(A polling thread rather than Linux's ``PR_SET_PDEATHSIG``: that signal fires when the parent
*thread* that started the process ends, which a pool may do while the parent lives.)
"""

from __future__ import annotations

import os
import signal
import threading

__all__ = ["exit_with_parent", "CHECK_INTERVAL_S"]

#: Seconds between two checks of the parent process.
CHECK_INTERVAL_S = 0.5

_started = False
_lock = threading.Lock()


def exit_with_parent() -> bool:
    """In a ``multiprocessing`` child, kill this process when its parent is gone.

    Returns whether the watch runs (False in a main process: nothing is done there).
    """
    global _started
    import multiprocessing

    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return False
    with _lock:
        if _started:
            return True
        _started = True
    parent_pid = parent.pid

    def watch():
        while True:
            if os.getppid() != parent_pid:  # re-parented: the parent died
                os.kill(os.getpid(), signal.SIGKILL)
            threading.Event().wait(CHECK_INTERVAL_S)

    threading.Thread(target=watch, daemon=True, name="ewoksxpcs-exit-with-parent").start()
    return True
