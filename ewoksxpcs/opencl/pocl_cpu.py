"""Make the PoCL CPU device usable on processors newer than its LLVM (e.g. AMD Zen 5).

The PoCL shipped in pyopencl's wheels (PoCL 3.0, LLVM 14) asks LLVM for the host CPU's name to
compile kernels for it. LLVM 14 does not know CPUs released after it (AMD family 26, Zen 5:
``llvm::sys::getHostCPUName()`` answers ``"generic"``), and clang refuses ``-target-cpu
generic``: every kernel build then fails with "unknown target CPU 'generic'" (pocl issues
512, 1049). Newer PoCL reads ``POCL_LLVM_CPU_NAME``; this one has no such setting.

:func:`prepare_pocl` fixes that in the running process before PoCL initialises its devices:
it loads the wheel's ``libpocl`` (the ICD loader later finds the same library already
loaded), asks its exported ``pocl_get_llvm_cpu_name()`` what it would use and, if that is
``"generic"``, replaces the function's first instructions with a jump to ``strdup`` of the
name of the x86-64 micro-architecture level that the CPU's flags support (``x86-64-v4`` with
AVX-512, ``x86-64-v3`` with AVX2/FMA/BMI2, ``x86-64-v2`` with SSE4.2), which LLVM 14 knows.
``EWOKSXPCS_POCL_CPU`` names another CPU (``EWOKSXPCS_POCL_CPU=0`` turns this off). Nothing is
done on other platforms, other architectures, or when LLVM knows the CPU.
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import os
import platform
import threading

__all__ = ["prepare_pocl", "host_cpu_level"]

_DONE = False
_LOCK = threading.Lock()


def host_cpu_level(flags=None) -> str:
    """The x86-64 micro-architecture level of this CPU from /proc/cpuinfo's flags."""
    if flags is None:
        flags = set()
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("flags"):
                        flags = set(line.split(":", 1)[1].split())
                        break
        except OSError:
            pass
    if {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"} <= flags:
        return "x86-64-v4"
    if {"avx2", "fma", "bmi1", "bmi2", "movbe"} <= flags:
        return "x86-64-v3"
    if {"sse4_2", "popcnt", "ssse3"} <= flags:
        return "x86-64-v2"
    return "x86-64"


def _wheel_pocl():
    spec = importlib.util.find_spec("pyopencl")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        found = sorted(glob.glob(os.path.join(folder, ".libs", "libpocl*.so*")))
        if found:
            return found[0]
    return None


def prepare_pocl() -> str | None:
    """Patch the wheel's PoCL when its LLVM does not know this CPU (see the module docstring).

    Call before the first OpenCL platform query of the process. Returns the CPU name now used
    by PoCL, or None when nothing was done.
    """
    global _DONE
    with _LOCK:
        if _DONE:
            return None
        _DONE = True
        choice = os.environ.get("EWOKSXPCS_POCL_CPU", "")
        if choice == "0" or platform.system() != "Linux" or platform.machine() != "x86_64":
            return None
        path = _wheel_pocl()
        if path is None:
            return None
        try:
            lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            get_name = lib.pocl_get_llvm_cpu_name
        except (OSError, AttributeError):
            return None
        libc = ctypes.CDLL(None)
        get_name.restype = ctypes.c_void_p
        ptr = get_name()
        current = ctypes.string_at(ptr).decode() if ptr else ""
        libc.free(ctypes.c_void_p(ptr))
        if current not in ("", "generic") and not choice:
            return None
        name = (choice or host_cpu_level()).encode()
        libc.strdup.restype = ctypes.c_void_p
        libc.strdup.argtypes = (ctypes.c_char_p,)
        kept = libc.strdup(name)  # never freed: PoCL may ask again at any time
        strdup = ctypes.cast(libc.strdup, ctypes.c_void_p).value
        # movabs rdi, kept; movabs rax, strdup; jmp rax  (a tail call: strdup(kept))
        code = (b"\x48\xbf" + kept.to_bytes(8, "little")
                + b"\x48\xb8" + strdup.to_bytes(8, "little") + b"\xff\xe0")
        target = ctypes.cast(get_name, ctypes.c_void_p).value
        page = os.sysconf("SC_PAGE_SIZE")
        start = target & ~(page - 1)
        length = (target + len(code) - start + page - 1) // page * page
        mprotect = libc.mprotect
        mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        if mprotect(start, length, 7) != 0:  # PROT_READ | PROT_WRITE | PROT_EXEC
            return None
        ctypes.memmove(target, code, len(code))
        mprotect(start, length, 5)  # PROT_READ | PROT_EXEC
        return name.decode()
