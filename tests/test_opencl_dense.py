"""``opencl-dense`` equals the reference (exactly for integer frames), in every memory regime."""

from __future__ import annotations

import itertools

import numpy
import pytest
import _opencl_checks
from _opencl_checks import qmask_of
from conftest import require_opencl

import ewoksxpcs
from ewoksxpcs import Binning, correlate, create_correlator
from ewoksxpcs.engine.autocorr import autocorrelate
from ewoksxpcs.opencl.device import OpenCLUnavailableError

DTYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "float32")


@pytest.fixture(params=["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
def device(request):
    require_opencl(request.param)
    return request.param


def frames_of(rng, dtype, shape):
    dtype = numpy.dtype(dtype)
    if dtype.kind == "f":
        data = rng.gamma(0.7, 5.0, shape)
    else:
        info = numpy.iinfo(dtype)
        lo, hi = max(int(info.min), -(2**20)), min(int(info.max), 2**20)
        data = rng.integers(lo, hi, shape, endpoint=True)
        data.reshape(-1)[:: 17] = hi  # extremes: sign extension, narrow accumulators would show
        if lo < 0:
            data.reshape(-1)[5:: 23] = lo
    data = numpy.where(rng.random(shape) < 0.6, data, 0)
    return data.astype(dtype)


def check_equal(result, ref, dtype):
    _opencl_checks.check_equal(result, ref, dtype, "opencl-dense")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_frames", [1, 2, 150])
def test_equals_reference(device, rng, dtype, n_frames):
    frames = frames_of(rng, dtype, (n_frames, 7, 13))
    q = qmask_of((7, 13))
    ref = correlate(frames, q, method="reference")
    check_equal(correlate(frames, q, method="opencl-dense", device=device), ref, dtype)


@pytest.mark.parametrize("dtype", ["int16", "uint32", "float32"])
def test_windows_and_host_memory(device, rng, dtype):
    """Several windows, older ones re-uploaded from host memory (tiny device budget)."""
    frames = frames_of(rng, dtype, (300, 5, 11))
    q = qmask_of((5, 11))
    ref = correlate(frames, q, method="reference")
    for options in ({"window_frames": 64}, {"window_frames": 100, "max_device_memory": 1}):
        check_equal(correlate(frames, q, method="opencl-dense", device=device, **options),
                    ref, dtype)


def test_chunks_of_varying_size(device, rng):
    """An iterable of chunks (length unknown in advance: the diagonal buffer grows)."""
    frames = frames_of(rng, "uint16", (290, 6, 9))
    q = qmask_of((6, 9))
    ref = correlate(frames, q, method="reference")
    cuts = [0, 1, 3, 70, 71, 200, 290]
    chunks = (frames[a:b] for a, b in itertools.pairwise(cuts))
    check_equal(correlate(chunks, q, method="opencl-dense", device=device, window_frames=64),
                ref, "uint16")


def test_all_zero_frames(device):
    frames = numpy.zeros((20, 4, 5), dtype=numpy.uint8)
    q = qmask_of((4, 5))
    ref = correlate(frames, q, method="reference")
    res = correlate(frames, q, method="opencl-dense", device=device)
    assert not res.n2.any()
    check_equal(res, ref, "uint8")


def test_one_pixel_bins_and_groups(device, rng):
    frames = frames_of(rng, "int32", (90, 3, 4))
    q = numpy.arange(1, 13).reshape(3, 4)  # 12 bins of one pixel
    ref = correlate(frames, q, method="reference", n_groups=1)
    check_equal(correlate(frames, q, method="opencl-dense", device=device, n_groups=1), ref,
                "int32")


def test_two_calls_identical(device, rng):
    frames = frames_of(rng, "float32", (130, 7, 13))
    c = create_correlator(qmask_of((7, 13)), method="opencl-dense", device=device)
    a, b = c.correlate(frames), c.correlate(frames)
    assert numpy.array_equal(a.n2, b.n2)  # bit for bit, float32 included
    frames = frames_of(rng, "uint16", (130, 7, 13))
    a, b = c.correlate(frames), c.correlate(frames)
    assert numpy.array_equal(a.n2, b.n2)
    assert numpy.array_equal(a.n2, correlate(frames, qmask_of((7, 13)), method="reference").n2)


@pytest.mark.slow
def test_large_counts_exact(device, rng):
    """Values up to 4095 over 70 000 frames of a thin detector: n2 far above 2**32, exact."""
    nt = 70_000
    frames = rng.integers(0, 4096, (nt, 1, 3)).astype(numpy.uint16)
    frames[::7] = 4095
    q = numpy.ones((1, 3), dtype=numpy.int32)
    res = correlate(frames, q, method="opencl-dense", device=device)
    series = frames.reshape(nt, 3).T.astype(numpy.int64)
    expected = autocorrelate(series, method="fft").sum(axis=0)  # exact int64 (bit pieces)
    assert res.n2.max() > 2**32
    assert numpy.array_equal(res.n2[0], expected)
    # Constant frames: n2(τ) = N·c²·(Nt − τ) analytically.
    const = numpy.full((nt, 1, 3), 4095, dtype=numpy.uint16)
    res = correlate(const, q, method="opencl-dense", device=device, n_groups=1)
    assert numpy.array_equal(res.n2[0], 3 * 4095**2 * (nt - numpy.arange(nt, dtype=numpy.int64)))


def test_device_name_and_errors(rng):
    require_opencl("cpu")
    frames = frames_of(rng, "uint8", (10, 3, 4))
    q = numpy.ones((3, 4), dtype=numpy.int32)
    res = correlate(frames, q, method="opencl-dense", device="cpu")
    assert res.device == ewoksxpcs.opencl.device.get_device("cpu").name
    with pytest.raises(OpenCLUnavailableError, match="'7:7' does not exist"):
        correlate(frames, q, method="opencl-dense", device="7:7")
    with pytest.raises(ValueError, match="window_frames must be an integer >= 1"):
        create_correlator(q, method="opencl-dense", device="cpu", window_frames=0)
    with pytest.raises(TypeError, match="unknown option"):
        create_correlator(q, method="opencl-dense", device="cpu", tile=3)
    with pytest.raises(ValueError, match="qmask shape"):
        correlate(frames, numpy.ones((4, 4), dtype=numpy.int32), method="opencl-dense",
                  device="cpu")


def test_binning_with_bad_pixels(device, rng):
    frames = frames_of(rng, "uint16", (80, 6, 7))
    q = qmask_of((6, 7))
    bad = numpy.zeros((6, 7), dtype=bool)
    bad[2, :3] = True
    b = Binning(q, bad_pixels=bad, n_groups=3)
    ref = correlate(frames, b, method="reference")
    check_equal(correlate(frames, b, method="opencl-dense", device=device), ref, "uint16")
