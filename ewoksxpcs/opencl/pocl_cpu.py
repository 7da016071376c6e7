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

LLVM 14 also names some CPUs it knows only in part: an AMD Zen 4 (family 25, with AVX-512) is
``znver3``, which has no AVX-512. PoCL then links its AVX-512 built-in library (chosen from the
CPU's flags) into kernels compiled for a CPU without AVX-512, and LLVM crashes compiling some
of them (the bitshuffle-LZ4 decoder of 64-bit elements: a segmentation fault at the first
launch, and a kernel cache entry left behind that later fails with INVALID_KERNEL_NAME). So a
CPU whose flags give ``x86-64-v4`` is also patched when LLVM's name for it is not one of
:data:`AVX512_CPUS` (:func:`llvm_cpu_name`).
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import os
import platform
import threading

__all__ = ["prepare_pocl", "host_cpu_level", "llvm_cpu_name", "AVX512_CPUS"]

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


#: LLVM 14's CPU names with AVX-512 (the others lack it).
AVX512_CPUS = frozenset((
    "knl", "knm", "skylake-avx512", "skx", "cascadelake", "cooperlake", "cannonlake",
    "icelake-client", "icelake-server", "tigerlake", "sapphirerapids", "rocketlake",
    "x86-64-v4"))


def llvm_cpu_name(current: str, host_level: str, choice: str = "") -> str | None:
    """The CPU name PoCL's LLVM should compile for, or None to keep ``current``.

    Parameters
    ----------
    current : str
        What PoCL's LLVM names this CPU (``"generic"``: unknown to it).
    host_level : str
        :func:`host_cpu_level` of this CPU.
    choice : str
        ``EWOKSXPCS_POCL_CPU`` (a name to use in any case), or "".
    """
    if choice:
        return choice
    if current in ("", "generic"):
        return host_level
    if host_level == "x86-64-v4" and current not in AVX512_CPUS:
        return host_level  # PoCL links its AVX-512 library: the CPU must have AVX-512
    return None


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
        name = llvm_cpu_name(current, host_cpu_level(), choice)
        if name is None:
            return None
        name = name.encode()
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
