"""The OpenCL driver's start-up and contexts through the ICD loader, without holding the GIL.

pyopencl holds the GIL while the driver starts (the first platform query: 0.22 s on the H200
host) and while it creates a context (0.13–0.30 s there with NVIDIA's compute cache, 1.2–1.5 s
without it): ``ewoksxpcs run`` creates the device in a warm-up thread, and those seconds
stopped its main thread (the q-mask step took 2.1 s instead of 0.3 s with the caches off;
``devrun`` probe of session 6: a thread's ``pyopencl.Context`` left the main thread without
the GIL for 1.52 s). The same calls made through :mod:`ctypes`, which releases the GIL around
a foreign call, leave the other threads running; pyopencl then wraps the context made here
(``Context.from_int_ptr``). The library is the ICD loader pyopencl itself loaded, so that
both see the same platforms and objects.

Everything here is best effort: None (or nothing done) when the loader cannot be found or a
call fails, and the caller goes through pyopencl as before.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from typing import Optional

__all__ = ["start_driver", "create_context"]

logger = logging.getLogger(__name__)

_CL_CONTEXT_PLATFORM = 0x1084
_lock = threading.Lock()
_lib = None  # the ICD loader (ctypes.CDLL), False when unusable
_started = False


def _loader():
    """The OpenCL ICD loader that pyopencl uses (ctypes), or None."""
    global _lib
    with _lock:
        if _lib is None:
            _lib = False
            try:
                import pyopencl._cl  # noqa: F401  (loads its ICD loader)

                path = None
                with open("/proc/self/maps") as maps:  # Linux: the library already mapped
                    for line in maps:
                        name = line.rsplit(None, 1)[-1] if "/" in line else ""
                        if "libOpenCL" in name.rsplit("/", 1)[-1]:
                            path = name
                            break
                if path is not None:
                    lib = ctypes.CDLL(path)
                    lib.clCreateContext.restype = ctypes.c_void_p
                    lib.clCreateContext.argtypes = [
                        ctypes.POINTER(ctypes.c_ssize_t), ctypes.c_uint,
                        ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p, ctypes.c_void_p,
                        ctypes.POINTER(ctypes.c_int32)]
                    lib.clGetPlatformIDs.argtypes = [
                        ctypes.c_uint, ctypes.POINTER(ctypes.c_void_p),
                        ctypes.POINTER(ctypes.c_uint)]
                    _lib = lib
            except Exception as e:  # no /proc, no pyopencl, no such symbol
                logger.debug("no ICD loader through ctypes: %s", e)
        return _lib or None


def start_driver() -> None:
    """Let the ICD loader and the drivers start (list the platforms) without the GIL; once
    per process. pyopencl's own first query then finds them started."""
    global _started
    if _started:
        return
    lib = _loader()
    _started = True
    if lib is None:
        return
    n = ctypes.c_uint(0)
    lib.clGetPlatformIDs(0, None, ctypes.byref(n))


def create_context(device) -> Optional[object]:
    """A ``pyopencl.Context`` of ``device`` (a ``pyopencl.Device``) created without the GIL,
    or None (the caller creates it through pyopencl)."""
    lib = _loader()
    if lib is None:
        return None
    import pyopencl

    try:
        props = (ctypes.c_ssize_t * 3)(_CL_CONTEXT_PLATFORM, device.platform.int_ptr, 0)
        devices = (ctypes.c_void_p * 1)(device.int_ptr)
        err = ctypes.c_int32(0)
        ptr = lib.clCreateContext(props, 1, devices, None, None, ctypes.byref(err))
        if err.value != 0 or not ptr:
            logger.debug("clCreateContext through ctypes: error %d", err.value)
            return None
        return pyopencl.Context.from_int_ptr(ptr, retain=False)  # ours handed to pyopencl
    except Exception as e:
        logger.debug("clCreateContext through ctypes: %s", e)
        return None
