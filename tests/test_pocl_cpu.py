"""The PoCL CPU device builds kernels on this machine, whatever its CPU (ewoksxpcs.opencl.pocl_cpu)."""

import numpy
import pytest

from ewoksxpcs.opencl.pocl_cpu import host_cpu_level, llvm_cpu_name


def test_host_cpu_level_from_flags():
    avx512 = {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", "avx2", "fma", "bmi1",
              "bmi2", "movbe", "sse4_2", "popcnt", "ssse3"}
    assert host_cpu_level(avx512) == "x86-64-v4"
    assert host_cpu_level(avx512 - {"avx512vl"}) == "x86-64-v3"
    assert host_cpu_level({"sse4_2", "popcnt", "ssse3"}) == "x86-64-v2"
    assert host_cpu_level(set()) == "x86-64"


def test_llvm_cpu_name():
    """Unknown CPUs get their level; an AVX-512 CPU that LLVM names without AVX-512 (a Zen 4 is
    "znver3" to LLVM 14) gets x86-64-v4, matching the AVX-512 library PoCL links; a name
    LLVM knows whole is kept; EWOKSXPCS_POCL_CPU wins."""
    assert llvm_cpu_name("generic", "x86-64-v3") == "x86-64-v3"
    assert llvm_cpu_name("", "x86-64-v4") == "x86-64-v4"
    assert llvm_cpu_name("znver3", "x86-64-v4") == "x86-64-v4"
    assert llvm_cpu_name("znver3", "x86-64-v3") is None
    assert llvm_cpu_name("skylake-avx512", "x86-64-v4") is None
    assert llvm_cpu_name("haswell", "x86-64-v3") is None
    assert llvm_cpu_name("znver3", "x86-64-v4", choice="x86-64-v3") == "x86-64-v3"


def test_pocl_builds_and_runs_a_kernel():
    from conftest import require_opencl

    require_opencl("cpu")
    import pyopencl

    from ewoksxpcs.opencl.device import get_device

    dev = get_device("cpu")
    program = pyopencl.Program(
        dev.context, "__kernel void f(__global long *a) { a[get_global_id(0)] = "
                     "3 * (long)get_global_id(0); }").build()
    out = numpy.zeros(100, numpy.int64)
    buf = pyopencl.Buffer(dev.context, pyopencl.mem_flags.READ_WRITE, out.nbytes)
    program.f(dev.queue, (100,), None, buf)
    pyopencl.enqueue_copy(dev.queue, out, buf)
    assert numpy.array_equal(out, 3 * numpy.arange(100))
