"""The device exclusive scan equals NumPy's cumulative sum."""

from __future__ import annotations

import numpy
import pytest
from conftest import require_opencl

from ewoksxpcs.opencl.device import device_buffer, get_device
from ewoksxpcs.opencl.prefix_sum import DeviceScan


@pytest.fixture(params=["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
def device(request):
    require_opencl(request.param)
    return get_device(request.param)


@pytest.mark.parametrize("on_device", [False, True])
@pytest.mark.parametrize("count_type", ["int", "long"])
@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 255, 4097, 70001, 1_100_000])
def test_scan_equals_cumsum(device, rng, n, count_type, on_device):
    """Both the host-stepped scan and the device-only one (group prefixes in one work-group:
    1.1 million counts are more groups than one pass of it)."""
    import pyopencl

    if count_type == "int":
        counts = rng.integers(0, 2**31 - 1, n).astype(numpy.int32)  # totals beyond 2^32
    else:
        counts = rng.integers(0, 2**40, n).astype(numpy.int64)  # counts beyond 2^32
    scan = DeviceScan(device, count_type)
    q = device.queue
    d_counts = device_buffer(device, q, counts.itemsize * n)
    if n:
        pyopencl.enqueue_copy(q, d_counts, counts)
    d_off = device_buffer(device, q, 8 * (n + 1))
    if on_device:
        scan.on_device(q, d_counts, n, d_off)
    else:
        total = scan(q, d_counts, n, d_off)
    off = numpy.empty(n + 1, numpy.int64)
    pyopencl.enqueue_copy(q, off, d_off)
    expected = numpy.concatenate([[0], numpy.cumsum(counts, dtype=numpy.int64)])
    if not on_device:
        assert total == int(expected[-1])
    numpy.testing.assert_array_equal(off, expected)


def test_scan_reuses_scratch_for_smaller_and_larger_inputs(device, rng):
    import pyopencl

    scan = DeviceScan(device)
    q = device.queue
    for n in (5000, 10, 20000):
        counts = rng.integers(0, 100, n).astype(numpy.int32)
        d_counts = device_buffer(device, q, 4 * n)
        pyopencl.enqueue_copy(q, d_counts, counts)
        d_off = device_buffer(device, q, 8 * (n + 1))
        scan(q, d_counts, n, d_off)
        off = numpy.empty(n + 1, numpy.int64)
        pyopencl.enqueue_copy(q, off, d_off)
        assert off[-1] == counts.sum() and (numpy.diff(off) == counts).all()


def test_scan_count_type_checked(device):
    with pytest.raises(ValueError, match="count_type"):
        DeviceScan(device, "short")
