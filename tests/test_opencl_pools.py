"""Device buffers and page-locked result memory kept from run to run (ewoksxpcs.opencl.pools)."""

import gc

import numpy
import pytest

from ewoksxpcs.opencl import device as opencl
from ewoksxpcs.opencl import pools

from conftest import require_opencl


@pytest.fixture
def cpu():
    require_opencl("cpu")
    return opencl.get_device("cpu")


def test_pooled_buffer_reused_and_zeroed(cpu):
    """A dropped buffer goes back to the pool and is handed out again (the same memory
    object); zero=True zeroes what the last user left; trim frees what is held."""
    import pyopencl

    pools.trim_buffer_pool(cpu, 0)
    buf = pools.pooled_buffer(cpu, cpu.queue, 1000)
    assert buf.size >= 1000
    pyopencl.enqueue_copy(cpu.queue, buf, numpy.arange(125, dtype=numpy.int64))
    handle = buf.int_ptr
    del buf
    assert pools.held_bytes(cpu) >= 1000
    again = pools.pooled_buffer(cpu, cpu.queue, 1000, zero=True)
    assert again.int_ptr == handle
    back = numpy.full(125, -1, dtype=numpy.int64)
    pyopencl.enqueue_copy(cpu.queue, back, again)
    assert not back.any()
    del again
    pools.trim_buffer_pool(cpu, 10**12)  # under the bound: kept
    assert pools.held_bytes(cpu) > 0
    pools.trim_buffer_pool(cpu, 0)
    assert pools.held_bytes(cpu) == 0
    with pytest.raises(ValueError, match="nbytes"):
        pools.pooled_buffer(cpu, cpu.queue, -1)


def test_host_pool_blocks_leased_and_reused(cpu, monkeypatch):
    """Result arrays on registered blocks: page-locked for the reads, a block back in the pool
    once no array (or view) refers to it, then handed out again; reads land in it; a full pool
    gives None."""
    import pyopencl

    pool = pools._HostPool(cpu)
    a = pool.empty((300, 70), numpy.int64)
    assert a.shape == (300, 70) and a.dtype == numpy.int64 and opencl.is_pinned(a)
    address = a.ctypes.data
    assert address % opencl.PAGE_BYTES == 0
    data = numpy.arange(a.size, dtype=numpy.int64).reshape(a.shape)
    d = pyopencl.Buffer(cpu.context, pyopencl.mem_flags.READ_ONLY
                        | pyopencl.mem_flags.COPY_HOST_PTR, hostbuf=data)
    with opencl.StagedReads(cpu, cpu.queue, staged=True) as reads:
        reads.read(a, d).wait()
        assert reads._used == 0  # page-locked: read straight, not through the ring
    numpy.testing.assert_array_equal(a, data)
    view = a[10:20]
    del a
    gc.collect()
    assert not pool._free  # the view holds the block
    numpy.testing.assert_array_equal(view, data[10:20])
    del view
    assert len(pool._free) == 1
    b = pool.empty((70, 300), numpy.int64)  # same size: the same block
    assert b.ctypes.data == address and len(pool._free) == 0
    c = pool.empty((10,), numpy.uint8)  # far smaller: a block of its own (one page)
    assert c.ctypes.data != address
    del c
    monkeypatch.setattr(pools, "HOST_POOL_BYTES", pool._total)
    assert pool.empty((300, 70), numpy.int64) is None  # the free page is too small to reuse;
    assert not pool._free  # it was unregistered to make room, still not enough
    del b
    assert pool.empty((300, 70), numpy.int64) is not None


def test_host_result_on_a_cpu_is_plain(cpu):
    """A CPU device has no bus: results are plain NumPy arrays."""
    a = pools.host_result(cpu, (1000, 1000), numpy.int64)
    assert a.shape == (1000, 1000) and not opencl.is_pinned(a)


@pytest.mark.gpu
def test_host_result_on_a_gpu():
    """On a GPU, a large result is page-locked (the device's pool), reads from the device fill
    it at once, and its block serves the next result of that size once it is dropped (a pool of
    its own here: the device's may hold other fitting blocks from earlier runs)."""
    import pyopencl

    require_opencl("gpu")
    dev = opencl.get_device("gpu")
    shape = (200, opencl.DOWNLOAD_PINNED_BYTES // 8 // 200 + 1)
    assert opencl.is_pinned(pools.host_result(dev, shape, numpy.int64))
    pool = pools._HostPool(dev)
    a = pool.empty(shape, numpy.int64)
    assert opencl.is_pinned(a)
    data = numpy.random.default_rng(1).integers(-2**62, 2**62, shape)
    d = pyopencl.Buffer(dev.context, pyopencl.mem_flags.READ_ONLY
                        | pyopencl.mem_flags.COPY_HOST_PTR, hostbuf=data)
    with opencl.StagedReads(dev, dev.side_queue("test-reads")) as reads:
        reads.read(a, d).wait()
    numpy.testing.assert_array_equal(a, data)
    address = a.ctypes.data
    del a
    assert pool.empty(shape, numpy.int64).ctypes.data == address
    assert not opencl.is_pinned(pools.host_result(dev, (10,), numpy.int64))  # small: plain
