"""Multi-tau on OpenCL (PoCL CPU device in CI; ``-m gpu`` on a GPU) against the NumPy backend:
integer sums must be equal bit for bit."""

import numpy
import pytest

from conftest import require_opencl
from ewoksxpcs.engine.events import compact
from ewoksxpcs.engine.frames import IterableFrameSource
from ewoksxpcs.correlators import multitau


def _qmask(shape=(9, 11)):
    q = numpy.zeros(shape, dtype=int)
    q[:4] = 1
    q[4:] = 3
    q[0, :2] = 0
    q[-1, -3:] = 8
    return q


@pytest.fixture
def cpu():
    require_opencl("cpu")
    return "cpu"


@pytest.mark.parametrize("dtype", [numpy.uint8, numpy.int16, numpy.uint32, numpy.float32])
def test_dense_equals_numpy(rng, cpu, dtype):
    frames = rng.poisson(1.3, (157, 9, 11)).astype(dtype)
    if dtype == numpy.int16:
        frames -= 1  # negative values too
    q = _qmask()
    ref = multitau(frames, q, lags_per_level=4, method="numpy")
    r = multitau(frames, q, lags_per_level=4, method="opencl", device=cpu, chunk_frames=13)
    numpy.testing.assert_array_equal(r.n2, ref.n2)
    numpy.testing.assert_array_equal(r.sums.frame_sums, ref.sums.frame_sums)
    numpy.testing.assert_array_equal(r.lags, ref.lags)
    numpy.testing.assert_array_equal(r.g2, ref.g2)
    assert r.n2.dtype == ref.n2.dtype
    assert r.method == "opencl" and r.device != "cpu"


@pytest.mark.parametrize("m", [2, 8])
def test_streaming_and_normalisations(rng, cpu, m):
    frames = rng.poisson(0.8, (131, 9, 11)).astype(numpy.uint16)
    q = _qmask()
    ref = multitau(frames, q, lags_per_level=m, normalisation="symmetric", method="numpy")
    # chunks of the source not aligned with the device chunks, length unknown in advance
    chunks = [frames[:5], frames[5:64], frames[64:65], frames[65:]]
    r = multitau(IterableFrameSource(iter(chunks)), q, lags_per_level=m,
                 normalisation="symmetric", method="opencl", device=cpu, chunk_frames=7)
    numpy.testing.assert_array_equal(r.n2, ref.n2)
    numpy.testing.assert_allclose(r.g2, ref.g2, rtol=1e-12)
    numpy.testing.assert_allclose(r.g2_err, ref.g2_err, rtol=1e-12)


def test_events_equal_numpy(rng, cpu):
    frames = rng.poisson(0.2, (203, 9, 11)).astype(numpy.uint8)
    q = _qmask()
    bad = numpy.zeros(q.shape, bool)
    bad[0, 5] = True
    ev = compact(frames, bad_pixels=bad)
    ref = multitau(ev, q, lags_per_level=4, method="numpy", bad_pixels=bad)
    r = multitau(ev, q, lags_per_level=4, method="opencl", device=cpu, bad_pixels=bad)
    numpy.testing.assert_array_equal(r.n2, ref.n2)
    dense = multitau(frames, q, lags_per_level=4, method="numpy", bad_pixels=bad)
    numpy.testing.assert_array_equal(r.n2, dense.n2)
    # float events
    evf = compact(frames.astype(numpy.float32))
    rf = multitau(evf, q, lags_per_level=4, method="opencl", device=cpu)
    reff = multitau(frames.astype(numpy.float32), q, lags_per_level=4, method="numpy")
    numpy.testing.assert_allclose(rf.n2, reff.n2, rtol=1e-12)


def test_memory_budget(rng, cpu):
    frames = rng.poisson(1.0, (64, 9, 11)).astype(numpy.uint8)
    q = _qmask()
    with pytest.raises(ValueError, match="max_device_memory"):
        multitau(frames, q, method="opencl", device=cpu, max_device_memory=1000)
    # a budget that only fits a few frames per chunk still gives the same sums
    ref = multitau(frames, q, lags_per_level=4, method="numpy")
    r = multitau(frames, q, lags_per_level=4, method="opencl", device=cpu,
                 max_device_memory=25_000)
    numpy.testing.assert_array_equal(r.n2, ref.n2)
    plan = r.info["plan"]
    assert plan["chunk_frames"] < 64 and plan["device_bytes"] <= 25_000
    with pytest.raises(ValueError, match="max_device_memory"):
        multitau(frames, q, method="opencl", device=cpu, max_device_memory=-5)


def test_max_levels(rng, cpu):
    frames = rng.poisson(1.0, (100, 9, 11)).astype(numpy.uint8)
    q = _qmask()
    ref = multitau(frames, q, lags_per_level=4, method="numpy", max_levels=2)
    r = multitau(frames, q, lags_per_level=4, method="opencl", device=cpu, max_levels=2)
    assert r.level.max() == 1
    numpy.testing.assert_array_equal(r.n2, ref.n2)


@pytest.mark.gpu
@pytest.mark.parametrize("normalisation", ["standard", "symmetric"])
def test_gpu_equals_numpy(rng, normalisation):
    require_opencl("gpu")
    frames = rng.poisson(0.05, (6000, 64, 96)).astype(numpy.uint8)
    q = numpy.zeros((64, 96), int)
    q[:, :] = 1 + (numpy.arange(96)[None, :] // 10)
    q[:3] = 0
    ref = multitau(frames, q, lags_per_level=8, normalisation=normalisation, method="numpy")
    r = multitau(frames, q, lags_per_level=8, normalisation=normalisation, method="opencl",
                 device="gpu", chunk_frames=1000)
    numpy.testing.assert_array_equal(r.n2, ref.n2)
    numpy.testing.assert_array_equal(r.sums.frame_sums, ref.sums.frame_sums)
    numpy.testing.assert_allclose(r.g2, ref.g2, rtol=1e-12)
    ev = multitau(compact(frames), q, lags_per_level=8, normalisation=normalisation,
                  method="opencl", device="gpu")
    numpy.testing.assert_array_equal(ev.n2, ref.n2)


def test_zero_kernel_path(rng, cpu, monkeypatch):
    """Buffers of 2^31 bytes or more are zeroed by a kernel (NVIDIA's fill hangs on them):
    force that path on small buffers."""
    from ewoksxpcs.opencl import device as opencl

    import pyopencl

    monkeypatch.setattr(opencl, "FILL_MAX_BYTES", 0)
    dev = opencl.get_device(cpu)
    queue = pyopencl.CommandQueue(dev.context)
    buf = opencl.device_buffer(dev, queue, 8 * 1000)
    pyopencl.enqueue_copy(queue, buf, numpy.full(1000, -1, numpy.int64))
    opencl.zero_buffer(dev, queue, buf)
    back = numpy.ones(1000, numpy.int64)
    pyopencl.enqueue_copy(queue, back, buf)
    assert not back.any()
    frames = rng.poisson(1.0, (70, 9, 11)).astype(numpy.uint8)
    q = _qmask()
    ref = multitau(frames, q, lags_per_level=4, method="numpy")
    r = multitau(frames, q, lags_per_level=4, method="opencl", device=cpu)
    numpy.testing.assert_array_equal(r.n2, ref.n2)
    ev = multitau(compact(frames), q, lags_per_level=4, method="opencl", device=cpu)
    numpy.testing.assert_array_equal(ev.n2, ref.n2)


def test_frames_in_pinned_memory_are_read_in_place(rng, cpu):
    """Frames already in page-locked memory go to the device without a staging copy, same n2."""
    from ewoksxpcs.opencl.device import get_device, pinned_empty

    frames = rng.poisson(1.1, (90, 9, 11)).astype(numpy.uint8)
    pinned = pinned_empty(get_device(cpu), frames.shape, frames.dtype)
    pinned[...] = frames
    q = _qmask()
    ref = multitau(frames, q, lags_per_level=4, method="numpy")
    chunks = [pinned[:20], pinned[20:21], pinned[21:]]  # views of the pinned stack
    r = multitau(IterableFrameSource(iter(chunks)), q, lags_per_level=4, method="opencl",
                 device=cpu, chunk_frames=8)
    numpy.testing.assert_array_equal(r.n2, ref.n2)
    numpy.testing.assert_array_equal(r.sums.frame_sums, ref.sums.frame_sums)
