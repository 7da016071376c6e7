"""Contexts through the ICD loader without the GIL (ewoksxpcs.opencl.icd)."""

from __future__ import annotations

import sys
import threading

import numpy
import pytest
from conftest import require_opencl


def _run_kernel(context):
    """Double 1000 floats on ``context``'s device; the result."""
    import pyopencl

    queue = pyopencl.CommandQueue(context)
    program = pyopencl.Program(context, "__kernel void twice(__global float *a)"
                                        "{ a[get_global_id(0)] *= 2.0f; }").build()
    a = numpy.arange(1000, dtype=numpy.float32)
    buf = pyopencl.Buffer(context, pyopencl.mem_flags.READ_WRITE
                          | pyopencl.mem_flags.COPY_HOST_PTR, hostbuf=a)
    program.twice(queue, a.shape, None, buf)
    out = numpy.empty_like(a)
    pyopencl.enqueue_copy(queue, out, buf)
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the loader in /proc")
def test_context_made_through_the_loader_works():
    """On Linux the loader pyopencl mapped is found, the drivers started through it, and a
    context made there (no GIL held) runs kernels like pyopencl's own; the device of
    ``get_device`` has such a context."""
    require_opencl("cpu")
    import pyopencl

    from ewoksxpcs.opencl import icd
    from ewoksxpcs.opencl.device import get_device

    icd.start_driver()
    assert icd._loader() is not None
    device = pyopencl.get_platforms()[0].get_devices()[0]
    contexts = []
    threads = [threading.Thread(target=lambda: contexts.append(icd.create_context(device)))
               for _ in range(3)]  # from several threads at once
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(contexts) == 3 and all(isinstance(c, pyopencl.Context) for c in contexts)
    for c in contexts:
        assert c.devices == [device]
        numpy.testing.assert_array_equal(_run_kernel(c), 2 * numpy.arange(1000, dtype="f4"))
    dev = get_device("cpu")
    numpy.testing.assert_array_equal(_run_kernel(dev.context),
                                     2 * numpy.arange(1000, dtype="f4"))


def test_no_loader_leaves_it_to_pyopencl(monkeypatch):
    """Without a usable loader (another OS, a missing symbol) nothing is done here and the
    device gets its context from pyopencl."""
    require_opencl("cpu")
    import pyopencl

    from ewoksxpcs.opencl import device as opencl, icd

    monkeypatch.setattr(icd, "_lib", False)
    device = pyopencl.get_platforms()[0].get_devices()[0]
    assert icd.create_context(device) is None
    p, d = (int(x) for x in opencl.get_device("cpu").spec.split(":"))
    fresh = opencl.OpenCLDevice(p, d)  # (not cached)
    assert fresh.context.devices[0] == fresh.device
    numpy.testing.assert_array_equal(_run_kernel(fresh.context),
                                     2 * numpy.arange(1000, dtype="f4"))
