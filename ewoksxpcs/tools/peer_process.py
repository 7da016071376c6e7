"""A benchmark peer in a process of its own, possibly another Python interpreter.

Some peers need another interpreter than ours (boost_corr's newer releases and PyTorch wheels
want Python >= 3.12), and a peer in our process shares its thread pools and allocator. A
:class:`RemotePeer` starts ``python -c ...`` (``python`` any interpreter with NumPy and the
peer's packages); the child imports this module from our source tree (nothing else of
ewoksxpcs unless the peer's function does), loads the inputs from ``.npy`` files before any
timing (the peer gets NumPy arrays in memory, as in-process peers do), and times each call
itself: wall time (``perf_counter``) and CPU time (``process_time``) of the child.

Protocol: one JSON line per call on the child's stdin (``{"fn": "module:function", "arrays":
{name: path}, "kwargs": {...}, "out": path}``), one JSON line back on its stdout (``{"wall",
"cpu"}`` or ``{"error"}``); the child's own prints go to its stderr. The result is saved to
``out`` (``.npy``, or ``.npz`` of ``arr_0 …`` for a tuple, None as NaN).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Dict, Optional

import numpy

__all__ = ["RemotePeer", "serve", "PEER_PYTHON_ENV"]

#: Environment variable naming the Python of the peers that run in another interpreter.
PEER_PYTHON_ENV = "EWOKSXPCS_PEER_PYTHON"
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class RemotePeer:
    """``module:function(**arrays, **kwargs)`` in a child process of ``python``.

    Parameters
    ----------
    python : str
        Interpreter of the child.
    function : str
        ``"package.module:function"``, importable from our source tree or the child's packages.
    arrays, small : dict of name -> ndarray
        Inputs of the timed calls and of the first, untimed call (written once to ``.npy``
        files of a temporary directory, loaded by the child before it times anything).
    kwargs : dict, optional
        JSON-serialisable keyword arguments.
    """

    def __init__(self, python: str, function: str, arrays: Dict[str, numpy.ndarray],
                 small: Dict[str, numpy.ndarray], kwargs: Optional[dict] = None):
        self.function = function
        self.kwargs = dict(kwargs or {})
        self._dir = tempfile.TemporaryDirectory(prefix="ewoksxpcs-peer-")
        self._paths = {}
        for tag, group in (("data", arrays), ("small", small)):
            self._paths[tag] = {}
            for name, a in group.items():
                path = os.path.join(self._dir.name, f"{tag}-{name}.npy")
                numpy.save(path, numpy.asarray(a))
                self._paths[tag][name] = path
        code = (f"import sys; sys.path.insert(0, {_ROOT!r}); "
                "from ewoksxpcs.tools.peer_process import serve; serve()")
        self._proc = subprocess.Popen([python, "-c", code], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True, cwd=self._dir.name)

    def call(self, which: str = "data"):
        """One call on the ``"data"`` or ``"small"`` inputs: (result, wall_s, cpu_s)."""
        out = os.path.join(self._dir.name, f"out-{which}")
        request = {"fn": self.function, "arrays": self._paths[which], "kwargs": self.kwargs,
                   "out": out}
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"peer process of {self.function} ended "
                               f"(exit status {self._proc.wait()})")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        if os.path.exists(out + ".npz"):
            with numpy.load(out + ".npz") as z:
                result = tuple(z[f"arr_{i}"] for i in range(len(z.files)))
        else:
            result = numpy.load(out + ".npy")
        return result, reply["wall"], reply["cpu"]

    def close(self) -> None:
        """End the child and remove the files."""
        if self._proc.poll() is None:
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._dir.cleanup()


def _resolve(spec: str):
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def serve() -> None:
    """The child's loop (see the module docstring)."""
    reply = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # the peer's prints go to stderr, not into the replies
    loaded: Dict[str, numpy.ndarray] = {}
    for line in sys.stdin:
        try:
            request = json.loads(line)
            arrays = {}
            for name, path in request["arrays"].items():
                if path not in loaded:
                    loaded[path] = numpy.load(path)
                arrays[name] = loaded[path]
            fn = _resolve(request["fn"])
            p, t = time.process_time(), time.perf_counter()
            result = fn(**arrays, **request["kwargs"])
            wall, cpu = time.perf_counter() - t, time.process_time() - p
            if isinstance(result, tuple):
                # None (e.g. a peak memory not measured on a CPU) saved as NaN
                numpy.savez(request["out"] + ".npz",
                            *[numpy.asarray(numpy.nan if r is None else r) for r in result])
            else:
                numpy.save(request["out"] + ".npy", numpy.asarray(result))
            answer = {"wall": wall, "cpu": cpu}
        except Exception as e:  # reported to the parent as the row's error
            answer = {"error": f"{type(e).__name__}: {e}"}
        reply.write(json.dumps(answer) + "\n")
        reply.flush()
