"""``ewoksxpcs.opencl.device.device_buffer`` / ``zero_buffer``: exact zeroing of any byte range, by
clEnqueueFillBuffer and by the ``kernels/fill.cl`` kernels (the path taken for fills of 2^31
bytes or more, which hang on NVIDIA: forced here on small buffers)."""

import numpy
import pytest

from conftest import require_opencl
from ewoksxpcs.opencl import device as opencl


@pytest.fixture
def queue():
    require_opencl("cpu")
    import pyopencl

    dev = opencl.get_device("cpu")
    return dev, pyopencl.CommandQueue(dev.context)


def _zeroed(dev, queue, size, offset, nbytes):
    """Bytes of a buffer of ``size`` bytes of 0xFF after zeroing [offset, offset + nbytes)."""
    import pyopencl

    buf = pyopencl.Buffer(dev.context, pyopencl.mem_flags.READ_WRITE, size)
    pyopencl.enqueue_copy(queue, buf, numpy.full(size, 0xFF, numpy.uint8))
    opencl.zero_buffer(dev, queue, buf, offset, nbytes)
    back = numpy.empty(size, numpy.uint8)
    pyopencl.enqueue_copy(queue, back, buf)
    return back


@pytest.mark.parametrize("kernel_path", [False, True])
@pytest.mark.parametrize("offset,nbytes", [(0, 4096), (0, 4093), (3, 4000), (5, 2), (13, 0),
                                           (8, 1000), (4095, 1)])
def test_zero_range_exact(queue, monkeypatch, kernel_path, offset, nbytes):
    dev, q = queue
    if kernel_path:
        monkeypatch.setattr(opencl, "FILL_MAX_BYTES", 0)
    back = _zeroed(dev, q, 4096, offset, nbytes)
    expected = numpy.full(4096, 0xFF, numpy.uint8)
    expected[offset: offset + nbytes] = 0
    numpy.testing.assert_array_equal(back, expected)


def test_large_range_covered_by_grid_stride(queue, monkeypatch):
    """More words than one launch has work-items: the grid-stride loop covers them all."""
    dev, q = queue
    monkeypatch.setattr(opencl, "FILL_MAX_BYTES", 0)
    monkeypatch.setattr(opencl, "_ZERO_GLOBAL", 256)
    back = _zeroed(dev, q, 8 * 5000 + 3, 1, 8 * 5000)
    assert back[0] == 0xFF and back[-2:].tolist() == [0xFF, 0xFF]
    assert not back[1:-2].any()


def test_device_buffer_rounds_and_zeroes(queue, monkeypatch):
    import pyopencl

    dev, q = queue
    for limit in (opencl.FILL_MAX_BYTES, 0):
        monkeypatch.setattr(opencl, "FILL_MAX_BYTES", limit)
        buf = opencl.device_buffer(dev, q, 13, zero=True)
        assert buf.size == 16
        back = numpy.ones(16, numpy.uint8)
        pyopencl.enqueue_copy(q, back, buf)
        assert not back.any()
    assert opencl.device_buffer(dev, q, 0).size == 8


def test_bad_ranges_raise(queue):
    dev, q = queue
    buf = opencl.device_buffer(dev, q, 64)
    with pytest.raises(ValueError, match="outside the buffer of 64 bytes"):
        opencl.zero_buffer(dev, q, buf, 60, 8)
    with pytest.raises(ValueError, match="outside the buffer"):
        opencl.zero_buffer(dev, q, buf, -1, 4)
    with pytest.raises(ValueError, match="nbytes must be >= 0"):
        opencl.device_buffer(dev, q, -5)
    assert opencl.zero_buffer(dev, q, buf, 64, 0) is None
