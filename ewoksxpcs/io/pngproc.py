"""Figures drawn in a helper process, so that the PNG does not delay the result's commit.

Drawing the g2 PNG of 16 curves costs 0.3–0.4 s of CPU (matplotlib Agg), and importing
matplotlib about as much again. In a thread of the run's process both share the GIL with the
HDF5 writing, so they barely overlap it; in a helper process they do. :func:`start` spawns the
helper (``python -m ewoksxpcs.io.pngproc``) when a run begins (on a machine of fewer than 4
cores once the frames are being read: ``ewoksxpcs.app.cli._warm_up``): it imports matplotlib's
Agg machinery while the run reads and correlates, in its own process (the run's process never
imports matplotlib). :func:`submit` sends it a drawing call by name with its arguments
(pickled through a pipe) and returns a :class:`Pending` whose :meth:`Pending.result` is the
call's return value (PNG bytes): the caller writes the result file meanwhile, then commits both
(:func:`ewoksxpcs.io.save.commit`). The helper serves every run of its parent process, one call
at a time (a persistent worker draws without any start-up), ignores Ctrl-C (its parent handles
it) and ends when its parent does (end of file on its input), even after a SIGKILL of the
parent.

When the helper cannot be started or dies, the call runs in a thread of the caller's process
instead (the figures are the same; only their cost is on the critical path again).
``EWOKSXPCS_PNG_PROCESS=0`` asks for that thread from the start.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import pickle
import subprocess
import sys
import threading
from typing import Optional

__all__ = ["start", "submit", "stop", "Pending", "helper_pid"]

logger = logging.getLogger(__name__)

_lock = threading.Lock()  # one call at a time through the pipe
_proc: Optional[subprocess.Popen] = None


def _enabled() -> bool:
    return os.environ.get("EWOKSXPCS_PNG_PROCESS", "1").strip().lower() not in ("0", "no", "false")


def start(preload=()) -> bool:
    """Start the helper process if it is not running (it warms up in the background).

    Parameters
    ----------
    preload : sequence of str
        Modules the helper imports while it waits for its first call (the callers' drawing
        modules: this module knows none of them), or ``"module:function"``: a function it
        then calls without arguments (a warm-up drawing: the first figure of a process pays
        for loading fonts and encoders).

    Returns whether a helper is running.
    """
    global _proc
    if not _enabled():
        return False
    with _lock:
        if _proc is not None and _proc.poll() is None:
            return True
        try:
            env = dict(os.environ, MPLBACKEND="Agg")
            _proc = subprocess.Popen(
                [sys.executable, "-m", __name__, *preload], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, close_fds=True)
        except OSError as e:  # no process allowed: the thread fallback
            logger.info("no PNG helper process (%s): figures drawn in a thread", e)
            _proc = None
            return False
        return True


def helper_pid() -> Optional[int]:
    """Process id of the running helper, or None."""
    p = _proc
    return p.pid if p is not None and p.poll() is None else None


def stop() -> None:
    """End the helper process (it also ends by itself with this process)."""
    global _proc
    with _lock:
        p, _proc = _proc, None
    if p is None:
        return
    try:
        p.stdin.close()
        p.wait(timeout=5)
    except Exception:  # pragma: no cover - a stuck helper
        p.kill()


atexit.register(stop)


def _forget_after_fork() -> None:
    """In a forked child (a prefork job worker, a fork pool): the parent's helper and its pipe
    are not this process's; the next call starts a helper of its own."""
    global _proc, _lock
    _proc = None
    _lock = threading.Lock()  # the parent's may have been held by another thread at the fork


os.register_at_fork(after_in_child=_forget_after_fork)


def _resolve(name: str):
    module, _, qualname = name.partition(":")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


class _HelperUnavailable(Exception):
    pass


class Pending:
    """A drawing call in progress (in the helper process or a thread); :meth:`result` waits.

    Attributes
    ----------
    where : str
        "process" (the helper drew it) or "thread" (the fallback in this process).
    """

    def __init__(self, name: str, args: tuple, kwargs: dict, remote: bool = True):
        self._call = (name, args, kwargs)
        self._value = self._error = None
        self.where = "process" if remote else "thread"
        self._thread = threading.Thread(target=self._run, daemon=False, name="ewoksxpcs-png")
        self._thread.start()

    def _run(self):
        name, args, kwargs = self._call
        try:
            if self.where == "process":
                try:
                    self._value = self._remote(name, args, kwargs)
                    return
                except _HelperUnavailable:
                    self.where = "thread"
            self._value = _resolve(name)(*args, **kwargs)
        except BaseException as e:  # the call's own error (raised in the helper or here)
            self._error = e

    @staticmethod
    def _remote(name, args, kwargs):
        if not start():
            raise _HelperUnavailable()
        with _lock:
            p = _proc
            if p is None or p.poll() is not None:
                raise _HelperUnavailable()
            try:
                pickle.dump((name, args, kwargs), p.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                p.stdin.flush()
                status, value = pickle.load(p.stdout)
            except (OSError, EOFError, pickle.UnpicklingError) as e:
                logger.info("PNG helper process lost (%s): drawing in a thread", e)
                raise _HelperUnavailable() from None
        if status == "error":
            raise value
        return value

    def done(self) -> bool:
        """Whether the call has ended (then :meth:`result` does not wait)."""
        return not self._thread.is_alive()

    def result(self):
        """The call's return value (raises its error)."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def submit(name: str, *args, **kwargs) -> Pending:
    """Run ``name`` (``"module:function"``) with these arguments (picklable) in the helper.

    Returns at once; :meth:`Pending.result` gives the return value.
    """
    return Pending(name, args, kwargs, remote=_enabled())


def _serve(preload=()) -> None:  # pragma: no cover - runs in the helper process (tested through it)
    """The helper's loop: read a call, run it, write (status, value), until end of input;
    first the modules ``preload`` are imported."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent to handle
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # stray prints must not corrupt the pipe
    try:  # warm-up while the parent reads and correlates
        import numpy  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401

        for name in preload:
            if ":" in name:
                _resolve(name)()
            else:
                importlib.import_module(name)
    except Exception:  # the real call reports it
        pass
    while True:
        try:
            name, args, kwargs = pickle.load(stdin)
        except (EOFError, OSError):
            return
        try:
            reply = ("ok", _resolve(name)(*args, **kwargs))
        except Exception as e:
            reply = ("error", e)
        try:
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # an unpicklable error
            data = pickle.dumps(("error", RuntimeError(f"{type(e).__name__}: {e}")))
        try:
            stdout.write(data)
            stdout.flush()
        except OSError:  # the parent is gone
            return


if __name__ == "__main__":  # pragma: no cover
    _serve(sys.argv[1:])
