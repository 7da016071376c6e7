"""OpenCL device selection, program cache and the 64-bit atomic helpers (ewoksxpcs.opencl.device)."""

from __future__ import annotations

import numpy
import pytest
from _opencl_checks import recording_compiles
from conftest import require_opencl

from ewoksxpcs.opencl import device as opencl
from ewoksxpcs.opencl.device import (
    OpenCLUnavailableError,
    build_program,
    get_device,
    list_devices,
)


@pytest.fixture
def cpu():
    require_opencl("cpu")
    return get_device("cpu")


def test_cpu_device_attributes(cpu):
    assert cpu.kind == "cpu"
    assert ": " in cpu.name  # "platform: device"
    assert cpu.global_mem > 0 and cpu.max_mem_alloc > 0 and cpu.local_mem > 0
    assert cpu.context.devices[0] == cpu.device
    assert cpu.queue.device == cpu.device
    assert isinstance(cpu.has_int64_atomics, bool) and isinstance(cpu.has_fp64, bool)
    p, d = (int(x) for x in cpu.spec.split(":"))
    assert get_device(f"{p}:{d}") is cpu  # same indices, same cached object
    assert get_device("cpu") is cpu


def test_default_device_prefers_gpu(cpu):
    best = get_device(None)
    kinds = {d["kind"] for d in list_devices()}
    assert best.kind == ("gpu" if "gpu" in kinds else "cpu")
    assert get_device("auto") is best


def test_list_devices(cpu):
    devices = list_devices()
    assert any(d["kind"] == "cpu" for d in devices)
    for d in devices:
        p, i = d["spec"].split(":")
        assert p.isdigit() and i.isdigit()
        assert d["name"] and d["global_mem"] > 0


def test_missing_device_is_a_clear_error(cpu):
    with pytest.raises(OpenCLUnavailableError, match=r"'7:7' does not exist; available: .*0:0"):
        get_device("7:7")
    assert issubclass(OpenCLUnavailableError, RuntimeError)


def test_malformed_specs():
    with pytest.raises(ValueError, match="invalid OpenCL device 'fastest'"):
        get_device("fastest")
    with pytest.raises(ValueError, match="invalid OpenCL device"):
        get_device("1:x")
    with pytest.raises(TypeError, match="device must be"):
        get_device(3.5)


def test_no_gpu_message(cpu):
    if "gpu" in {d["kind"] for d in list_devices()}:
        pytest.skip("a GPU is present")
    with pytest.raises(OpenCLUnavailableError, match="no OpenCL GPU device"):
        get_device("gpu")


def test_no_platform(monkeypatch):
    import silx.opencl.common

    monkeypatch.setattr(silx.opencl.common, "ocl", None)
    monkeypatch.setattr(opencl, "_SPECS", {})
    monkeypatch.setattr(opencl, "_DEVICES", {})
    with pytest.raises(OpenCLUnavailableError, match=r"no OpenCL platform found; install the 'pocl' extra"):
        get_device()
    assert list_devices() == []


def test_program_cache(cpu):
    defines = {"VAL_T": "uchar", "TS": 4, "MT": 16, "PC": 4, "MODE_INT32": 1}
    p1 = build_program(cpu, "dense.cl", defines)
    assert build_program(cpu, "dense.cl", dict(defines)) is p1
    p2 = build_program(cpu, "dense.cl", dict(defines, PC=16))
    assert p2 is not p1
    assert opencl.get_kernel(cpu, "dense.cl", "gram_diag", defines) is \
        opencl.get_kernel(cpu, "dense.cl", "gram_diag", defines)
    with pytest.raises(ValueError, match="no OpenCL kernel file 'nothing.cl'"):
        build_program(cpu, "nothing.cl")


def test_threads_asking_at_once_share_one_device_and_one_program(cpu, monkeypatch):
    """``ewoksxpcs run`` creates the device in a warm-up thread while its steps start: threads
    asking for it (and for one program) at once get one context and one program."""
    import threading
    import time

    monkeypatch.setattr(opencl, "_DEVICES", {})
    monkeypatch.setattr(opencl, "_SPECS", {})
    made = []
    real_init = opencl.OpenCLDevice.__init__

    def slow_init(self, *args):  # wide open for a race without the lock
        made.append(args)
        time.sleep(0.2)
        real_init(self, *args)

    monkeypatch.setattr(opencl.OpenCLDevice, "__init__", slow_init)
    barrier = threading.Barrier(6)
    got = []

    def ask():
        barrier.wait()
        dev = get_device("cpu")
        got.append((dev, build_program(dev, "scan.cl", {"WG": 4, "ITEMS": 4})))

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1 and len(got) == 6
    assert len({id(d) for d, _ in got}) == 1 and len({id(p) for _, p in got}) == 1
    assert got[0][0] is not cpu and get_device("cpu") is got[0][0]


_ATOMIC_TEST = """
__kernel void add(__global const ulong *v, const int n, __global ulong *out_g)
{
    __local ulong acc;
    const int i = get_global_id(0);
    if (get_local_id(0) == 0) acc = 0;
    barrier(CLK_LOCAL_MEM_FENCE);
    if (i < n) {
        atomic_add_u64_global((volatile __global ulong *)out_g, v[i]);
        atomic_add_u64_local((volatile __local ulong *)&acc, v[i]);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    if (get_local_id(0) == 0) atomic_add_u64_global((volatile __global ulong *)(out_g + 1), acc);
}
"""


@pytest.mark.parametrize("native", [True, False], ids=["int64-atomics", "carry-fallback"])
def test_atomic_add_u64(cpu, native, rng):
    """Exact 64-bit atomic sums, with carries between the 32-bit halves in the fallback."""
    import pyopencl

    if native and not cpu.has_int64_atomics:
        pytest.skip("no cl_khr_int64_base_atomics")
    source = opencl.kernel_source("common.cl") + _ATOMIC_TEST
    options = ["-DHAS_INT64_ATOMICS=1"] if native else []
    prog = pyopencl.Program(cpu.context, source).build(options=options)
    # Low words close to 2**32 so that many additions carry; wraps modulo 2**64 like int64.
    v = (rng.integers(2**32 - 1000, 2**32, 4096, dtype=numpy.uint64)
         + (rng.integers(0, 2**31, 4096, dtype=numpy.uint64) << numpy.uint64(32)))
    out = numpy.zeros(2, numpy.uint64)
    mf = pyopencl.mem_flags
    d_v = pyopencl.Buffer(cpu.context, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=v)
    d_out = pyopencl.Buffer(cpu.context, mf.READ_WRITE | mf.COPY_HOST_PTR, hostbuf=out)
    prog.add(cpu.queue, (4096,), (64,), d_v, numpy.int32(4096), d_out)
    pyopencl.enqueue_copy(cpu.queue, out, d_out)
    expected = numpy.uint64(0)
    with numpy.errstate(over="ignore"):
        expected = numpy.add.reduce(v, dtype=numpy.uint64)
    assert out[0] == expected and out[1] == expected


def test_pinned_empty(cpu):
    a = opencl.pinned_empty(cpu, (5, 7), numpy.uint16)
    assert a.shape == (5, 7) and a.dtype == numpy.uint16
    a[...] = 3
    assert int(a.sum()) == 105



def test_upload_pinned_from_pinned_and_pageable_arrays(cpu, rng):
    """Pinned sources go straight to the device, pageable ones through staging: same bytes."""
    import pyopencl

    pinned = opencl.pinned_empty(cpu, (3000,), numpy.uint32)
    pinned[:] = rng.integers(0, 2**32, 3000, dtype=numpy.uint32)
    pageable = rng.integers(0, 255, 5000).astype(numpy.uint8)
    assert opencl.is_pinned(pinned[10:20]) and not opencl.is_pinned(pageable)
    buf = opencl.device_buffer(cpu, cpu.queue, 4 * 3000 + 5000 + 8)
    seen = []
    opencl.upload_pinned(cpu, cpu.queue, [(buf, pinned[100:], 0), (buf, pageable, 4 * 3000)],
                         on_item=lambda i, e: seen.append(i))
    out = numpy.empty(4 * 3000 + 5000, numpy.uint8)
    pyopencl.enqueue_copy(cpu.queue, out, buf)
    assert seen == [0, 1]
    numpy.testing.assert_array_equal(out[: 4 * 2900].view(numpy.uint32), pinned[100:])
    numpy.testing.assert_array_equal(out[4 * 3000:], pageable)

def test_scalar_arguments_typed_from_the_program(cpu):
    """Kernels' scalar argument types come from the program's argument info (PyOpenCL then
    packs them itself): NumPy and Python scalars land as the kernel declares them; a scalar of a
    typedef'd type leaves the kernel untyped, still launchable."""
    import pyopencl

    src = """
    typedef long my_t;
    __kernel void typed(__global long *out, const int a, const ulong b, const double c,
                        __local int *scratch) { scratch[0] = a; out[0] = scratch[0] + (long)b
                        + (long)c; }
    __kernel void untyped(__global long *out, const my_t a) { out[0] = a; }
    """
    program = pyopencl.Program(cpu.context, src).build(options=["-cl-kernel-arg-info"])
    typed, untyped = pyopencl.Kernel(program, "typed"), pyopencl.Kernel(program, "untyped")
    assert opencl._type_scalar_args(typed) and not opencl._type_scalar_args(untyped)
    out = numpy.zeros(1, numpy.int64)
    buf = pyopencl.Buffer(cpu.context, pyopencl.mem_flags.READ_WRITE, 8)
    typed(cpu.queue, (1,), (1,), buf, numpy.int64(-5), 7, numpy.float32(2.0),
          pyopencl.LocalMemory(4))
    pyopencl.enqueue_copy(cpu.queue, out, buf)
    assert out[0] == 4
    untyped(cpu.queue, (1,), (1,), buf, numpy.int64(2**40))
    pyopencl.enqueue_copy(cpu.queue, out, buf)
    assert out[0] == 2**40
    # get_kernel's kernels are typed: plain Python ints are packed as the kernel's ulong
    kernel = opencl.get_kernel(cpu, "fill.cl", "zero_words")
    words = numpy.full(4, 7, numpy.uint64)
    wbuf = pyopencl.Buffer(cpu.context, pyopencl.mem_flags.COPY_HOST_PTR, hostbuf=words)
    kernel(cpu.queue, (2,), None, wbuf, 1, 2)
    pyopencl.enqueue_copy(cpu.queue, words, wbuf)
    assert words.tolist() == [7, 0, 0, 7]


def test_staged_reads(cpu, rng, monkeypatch):
    """Reads through the staging ring (several at once, copied out by threads), beyond the ring
    or larger than a staging buffer straight into the destination: the same bytes; the ring
    is held until the reads are closed."""
    import pyopencl

    monkeypatch.setattr(opencl, "STAGING_BYTES", 4096)
    monkeypatch.setattr(opencl, "STAGING_COUNT", 2)
    monkeypatch.setattr(opencl, "DOWNLOAD_PINNED_BYTES", 0)
    monkeypatch.setattr(opencl, "THREADED_READ_BYTES", 64)
    monkeypatch.setattr(cpu, "_staging", None, raising=False)
    mf = pyopencl.mem_flags
    arrays = [rng.integers(-2**62, 2**62, n) for n in (300, 511, 100, 1000)]  # 1000: > a buffer
    bufs = [pyopencl.Buffer(cpu.context, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=a)
            for a in arrays]
    backs = [numpy.full_like(a, -1) for a in arrays]  # prefault must not touch a taken one
    with opencl.StagedReads(cpu, cpu.queue, staged=True) as reads:
        takes = [reads.read(b, d) for b, d in zip(backs, bufs)]
        assert reads._used == 2  # the third goes straight, the ring being full
        assert not opencl.shared_staging(cpu)[1].acquire(blocking=False)
        takes[1].wait()
        reads.prefault()  # the pages of the first (untaken) one; not the taken second's
        for take in (takes[3], takes[2], takes[0]):
            take.wait()
    assert opencl.shared_staging(cpu)[1].acquire(blocking=False)
    opencl.shared_staging(cpu)[1].release()
    for a, b in zip(arrays, backs):
        numpy.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="C-contiguous"):
        with opencl.StagedReads(cpu, cpu.queue, staged=True) as reads:
            reads.read(numpy.zeros((4, 4))[:, :2], bufs[0])


@pytest.mark.gpu
def test_gpu_device():
    require_opencl("gpu")
    dev = get_device("gpu")
    assert dev.kind == "gpu"
    assert get_device(None) is dev


def test_upload_chunk_reads_pinned_memory_in_place(cpu):
    import pyopencl

    from ewoksxpcs.opencl.device import StagingSlots, pinned_empty, upload_chunk

    staging = StagingSlots(cpu, (4, 6), numpy.uint16)
    pinned = pinned_empty(cpu, (3, 6), numpy.uint16)
    pinned[...] = numpy.arange(18).reshape(3, 6)
    plain = numpy.arange(100, 118, dtype=numpy.uint16).reshape(3, 6)
    for piece, expect_direct in ((pinned, True), (plain, False), (pinned[1:], True)):
        dst = pyopencl.Buffer(cpu.context, pyopencl.mem_flags.READ_WRITE, piece.nbytes)
        event, direct = upload_chunk(cpu.queue, dst, piece, staging, 1)
        event.wait()
        assert direct is expect_direct
        back = numpy.empty_like(piece)
        pyopencl.enqueue_copy(cpu.queue, back, dst)
        assert numpy.array_equal(back, piece)
    assert numpy.array_equal(staging[1][:3], plain)  # the plain piece went through slot 1


def test_different_programs_compile_at_the_same_time(cpu, monkeypatch):
    """Two programs asked for by two threads compile together (no lock over the whole build);
    a thread asking for a program in flight waits for that build instead of compiling it."""
    import threading
    import time

    compiled = recording_compiles(monkeypatch, cpu)
    real = opencl._compile
    running, overlap = [], []
    # Each build waits until two are in flight (a lock over the whole build would never let
    # the second start: the wait times out); no timing, so a busy machine cannot fail it.
    both = threading.Barrier(2, timeout=60)

    def slow(d, key):
        running.append(key)
        try:
            both.wait()
        except threading.BrokenBarrierError:
            pass
        time.sleep(0.05)  # a third asker, if any, arrives while these two are in flight
        overlap.append(len(running))
        try:
            return real(d, key)
        finally:
            running.remove(key)

    monkeypatch.setattr(opencl, "_compile", slow)
    keys = [("scan.cl", {"WG": 4, "ITEMS": 4}), ("scan.cl", {"WG": 8, "ITEMS": 4})] * 2
    got = [None] * len(keys)

    def ask(i):
        got[i] = build_program(cpu, *keys[i])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(keys))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(overlap) == 2  # both programs were compiling at once
    assert len(overlap) == len(compiled) == 2  # and each once
    assert got[0] is got[2] and got[1] is got[3] and got[0] is not got[1]


def test_background_builds_are_used_and_their_errors_wait_for_the_foreground(cpu, monkeypatch):
    compiled = recording_compiles(monkeypatch, cpu)
    programs = [("scan.cl", {"WG": 4, "ITEMS": 4}), ("scan.cl", {"WG": 8, "ITEMS": 4})]
    threads = opencl.build_in_background(cpu, programs)
    # Registered before the call returns: asked for at once, they are waited for, not rebuilt.
    got = [build_program(cpu, *p) for p in programs]
    for t in threads:
        t.join()
    assert [c[0] for c in compiled] == ["ewoksxpcs-build"] * 2
    assert [build_program(cpu, *p) for p in programs] == got
    assert opencl.build_in_background(cpu, programs) == []  # built: nothing to start
    # A failed background build raises nothing there; the step that needs it raises its error.
    for t in opencl.build_in_background(cpu, [("nothing.cl", None)]):
        t.join()
    with pytest.raises(ValueError, match="no OpenCL kernel file 'nothing.cl'"):
        build_program(cpu, "nothing.cl")
    assert cpu._building == {}
