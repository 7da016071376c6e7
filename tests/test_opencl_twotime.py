"""Two-time on OpenCL (PoCL CPU device in CI; ``-m gpu`` on a GPU) against the NumPy backend."""

import numpy
import pytest

from conftest import require_opencl
from ewoksxpcs.engine.events import compact
from ewoksxpcs.engine.frames import IterableFrameSource
from ewoksxpcs.correlators import twotime


def _qmask(shape=(12, 13)):
    q = numpy.zeros(shape, dtype=int)
    q[:5] = 1
    q[5:] = 3
    q[0, :2] = 0
    q[-1, -4:] = 6
    return q


@pytest.fixture
def cpu():
    require_opencl("cpu")
    return "cpu"


def _close(a, b):
    assert numpy.array_equal(numpy.isnan(a), numpy.isnan(b))
    numpy.testing.assert_allclose(a, b, rtol=2e-6, equal_nan=True)


@pytest.mark.parametrize("dtype", [numpy.uint8, numpy.int16, numpy.uint32, numpy.float32])
@pytest.mark.parametrize("b", [1, 4])
def test_dense_equals_numpy(rng, cpu, dtype, b):
    frames = rng.poisson(1.1, (143, 12, 13)).astype(dtype)
    q = _qmask()
    ref = twotime(frames, q, bins=[1, 6], time_bin=b, method="numpy")
    r = twotime(frames, q, bins=[1, 6], time_bin=b, method="opencl", device=cpu, chunk_frames=11)
    _close(r.C, ref.C)
    numpy.testing.assert_array_equal(r.frame_sums, ref.frame_sums)
    numpy.testing.assert_allclose(r.g2, ref.g2, rtol=2e-6)
    numpy.testing.assert_allclose(r.g2_err, ref.g2_err, rtol=1e-5)
    # g2 and the partial g2 from diagonal moments computed on the device (fp64 devices)
    numpy.testing.assert_allclose(r.partial_g2, ref.partial_g2, rtol=2e-6)
    numpy.testing.assert_allclose(r.partial_g2_err, ref.partial_g2_err, rtol=1e-5)
    numpy.testing.assert_array_equal(r.segment_edges, ref.segment_edges)
    assert r.time_bin == b and r.method == "opencl"


def test_events_equal_numpy(rng, cpu):
    frames = rng.poisson(0.3, (120, 12, 13)).astype(numpy.uint16)
    q = _qmask()
    ref = twotime(frames, q, time_bin=3, method="numpy")
    r = twotime(compact(frames), q, time_bin=3, method="opencl", device=cpu)
    _close(r.C, ref.C)
    numpy.testing.assert_array_equal(r.frame_sums, ref.frame_sums)


def test_budget_bands_and_passes(rng, cpu):
    frames = rng.poisson(1.0, (300, 12, 13)).astype(numpy.uint8)
    q = _qmask()
    ref = twotime(frames, q, method="numpy")
    r = twotime(frames, q, method="opencl", device=cpu, max_device_memory=195_000)
    assert r.info["passes"] > 1  # bins in groups, one pass over the frames each
    _close(r.C, ref.C)
    numpy.testing.assert_allclose(r.partial_g2, ref.partial_g2, rtol=2e-6)  # host moments
    # an explicit time_bin whose maps cannot fit: the clear error
    with pytest.raises(ValueError, match="max_device_memory"):
        twotime(frames, q, method="opencl", device=cpu, max_device_memory=20_000, time_bin=1)
    # a source read once cannot be read in several passes (explicit time_bin)
    src = IterableFrameSource(iter([frames[:100], frames[100:]]), n_frames=300)
    with pytest.raises(ValueError, match="read only once"):
        twotime(src, q, method="opencl", device=cpu, max_device_memory=195_000, time_bin=1)
    # with the default time binning it bins coarser, in one pass
    src = IterableFrameSource(iter([frames[:100], frames[100:]]), n_frames=300)
    r = twotime(src, q, method="opencl", device=cpu, max_device_memory=195_000)
    assert r.time_bin > 1 and r.info["passes"] == 1
    _close(r.C, twotime(frames, q, method="numpy", time_bin=r.time_bin).C)


def test_default_time_bin_fits_the_budget(rng, cpu):
    """Two-time with defaults whose full map exceeds the budget bins automatically and equals
    the NumPy reference at that binning; the reason is recorded."""
    frames = rng.poisson(0.5, (400, 12, 13)).astype(numpy.uint16)
    q = _qmask()
    r = twotime(frames, q, method="opencl", device=cpu, max_device_memory=20_000)
    assert r.time_bin > 1  # the full 400 x 400 map (640 kB per bin) does not fit 20 kB
    assert "do not fit max_device_memory=20000" in r.info["time_bin_reason"]
    ref = twotime(frames, q, method="numpy", time_bin=r.time_bin)
    _close(r.C, ref.C)
    numpy.testing.assert_array_equal(r.frame_sums, ref.frame_sums)
    numpy.testing.assert_allclose(r.g2, ref.g2, rtol=2e-6)
    src = IterableFrameSource(iter([frames[:100], frames[100:]]))
    with pytest.raises(ValueError, match="number of frames"):
        twotime(src, q, method="opencl", device=cpu)


@pytest.mark.gpu
def test_gpu_equals_numpy(rng):
    require_opencl("gpu")
    frames = rng.poisson(0.05, (3000, 64, 96)).astype(numpy.uint8)
    q = numpy.zeros((64, 96), int)
    q[:, :] = 1 + (numpy.arange(96)[None, :] // 10)
    ref = twotime(frames, q, bins=[1, 5, 10], time_bin=2, method="numpy")
    r = twotime(frames, q, bins=[1, 5, 10], time_bin=2, method="opencl", device="gpu",
                chunk_frames=500)
    _close(r.C, ref.C)
    r1 = twotime(frames, q, bins=[2], method="opencl", device="gpu")
    ref1 = twotime(frames, q, bins=[2], method="numpy")
    _close(r1.C, ref1.C)
    ev = twotime(compact(frames), q, bins=[1, 5, 10], time_bin=2, method="opencl", device="gpu")
    _close(ev.C, ref.C)


@pytest.mark.gpu
@pytest.mark.parametrize("feed", ["pageable", "pinned", "pinned-gather"])
def test_gpu_one_ring_from_each_feed(rng, feed, monkeypatch):
    """One ring of a 512x1024 detector (as the GPU suite's one-bin case): gathered by the host
    from pageable frames, rectangles read in place from pinned ones (or gathered): the same
    maps as NumPy."""
    from ewoksxpcs.opencl import frame_boxes
    from ewoksxpcs.opencl.device import get_device, pinned_empty
    from ewoksxpcs.tools.benchmark import _beamstop_labels

    require_opencl("gpu")
    monkeypatch.delenv("EWOKSXPCS_BOX_UPLOAD", raising=False)
    monkeypatch.setattr(frame_boxes, "BOX_UPLOAD", "gather" if feed == "pinned-gather" else "rect")
    labels = _beamstop_labels((512, 1024), 10)
    frames = rng.poisson(0.05, (400, 512, 1024)).astype(numpy.uint8)
    data = frames
    if feed != "pageable":
        data = pinned_empty(get_device("gpu"), frames.shape, frames.dtype)
        data[...] = frames
    ref = twotime(frames, labels, bins=[5], time_bin=4, method="numpy")
    r = twotime(data, labels, bins=[5], time_bin=4, method="opencl", device="gpu",
                chunk_frames=96)
    _close(r.C, ref.C)
    numpy.testing.assert_array_equal(r.frame_sums, ref.frame_sums)
    moved = r.info["frames_moved"]
    assert ("gathered" in moved) == (feed != "pinned") and "whole" not in moved


def test_zero_kernel_path(rng, cpu, monkeypatch):
    """X of 2^31 bytes or more is zeroed by a kernel (NVIDIA's fill hangs on it): force it."""
    from ewoksxpcs.opencl import device as opencl

    monkeypatch.setattr(opencl, "FILL_MAX_BYTES", 0)
    frames = rng.poisson(1.0, (90, 12, 13)).astype(numpy.uint8)
    q = _qmask()
    ref = twotime(frames, q, time_bin=3, method="numpy")
    r = twotime(frames, q, time_bin=3, method="opencl", device=cpu)
    _close(r.C, ref.C)
    r = twotime(compact(frames), q, time_bin=3, method="opencl", device=cpu)
    _close(r.C, ref.C)


@pytest.mark.parametrize("events", [False, True])
@pytest.mark.parametrize("bright", [False, True])
def test_narrow_binned_x(rng, cpu, bright, events):
    """Time-binned uint16 sums tried in uint8 (fewer passes) when the budget is tight; a sum
    above 255 is flagged and the frames (or events) are binned again with uint32: exact either
    way."""
    frames = rng.poisson(1.0, (400, 12, 13)).astype(numpy.uint16)
    if bright:
        frames[7, 3, 4] = 200  # frames 4..7 of a pixel of bin 1 sum to > 255
        frames[5, 3, 4] = 100
    q = _qmask()
    ref = twotime(frames, q, time_bin=4, method="numpy")
    if events:  # binned into uint8 first as on GPUs with tensor cores (forced here)
        from ewoksxpcs.correlators.opencl_twotime import OpenCLTwoTime

        corr = OpenCLTwoTime(q, device=cpu, time_bin=4)
        corr._narrow_first = True
        r = corr.correlate(compact(frames))
    else:
        budget = 110_000  # X in uint32 needs 2 passes, in uint8 one
        r = twotime(frames, q, time_bin=4, method="opencl", device=cpu, max_device_memory=budget)
        assert r.info["passes"] == (2 if bright else 1)
    _close(r.C, ref.C)
    numpy.testing.assert_array_equal(r.frame_sums, ref.frame_sums)
    assert r.info["x_dtype"] == ("uint32" if bright else "uint8")


@pytest.mark.parametrize("how", ["rect", "gather"])
@pytest.mark.parametrize("bins", [[1, 6], [1], [3]])
def test_frames_in_pinned_memory_are_read_in_place(rng, cpu, bins, how, monkeypatch):
    """Pinned frames are read where they lie; with bins [1] or [3] only rectangles bounding
    their pixels cross the bus (rectangular copies), or, with "gather", the frames go through
    a staging buffer as pageable ones do (in these small frames: whole; the pixels gathered in
    test_pageable_frames_cross_as_the_bins_pixels)."""
    from ewoksxpcs.opencl import frame_boxes
    from ewoksxpcs.opencl.device import get_device, pinned_empty

    monkeypatch.setattr(frame_boxes, "CPU_BOX_UPLOAD", how)
    monkeypatch.delenv("EWOKSXPCS_BOX_UPLOAD", raising=False)

    frames = rng.poisson(1.1, (77, 12, 13)).astype(numpy.uint8)
    pinned = pinned_empty(get_device(cpu), frames.shape, frames.dtype)
    pinned[...] = frames
    q = _qmask()
    ref = twotime(frames, q, bins=bins, time_bin=3, method="numpy")
    r = twotime(pinned, q, bins=bins, time_bin=3, method="opencl", device=cpu, chunk_frames=10)
    _close(r.C, ref.C)
    numpy.testing.assert_array_equal(r.frame_sums, ref.frame_sums)


def _ring_qmask(shape=(64, 96)):
    y, x = numpy.indices(shape)
    r = numpy.hypot(y - 70, x - 48)  # rings about a centre below the frame, as in SAXS
    return numpy.digitize(r, [0, 20, 30, 40, 50, 60, 200])


@pytest.mark.parametrize("gather", ["boxes", "runs"])
@pytest.mark.parametrize("pinned", [False, True])
def test_pageable_frames_cross_as_the_bins_pixels(rng, cpu, pinned, gather, monkeypatch):
    """Frames in pageable memory (and pinned ones on a CPU device, by default) are gathered
    into the staging buffer as the rectangles without padding or run by run of pixels: only
    those cross; the same maps."""
    import functools

    from ewoksxpcs.correlators import opencl_twotime
    from ewoksxpcs.opencl.device import get_device, pinned_empty

    monkeypatch.setattr(opencl_twotime, "frame_layout",
                        functools.partial(opencl_twotime.frame_layout, gather=gather))
    monkeypatch.delenv("EWOKSXPCS_BOX_UPLOAD", raising=False)
    q = _ring_qmask()
    frames = rng.poisson(0.7, (90,) + q.shape).astype(numpy.uint16)
    data = frames
    if pinned:
        data = pinned_empty(get_device(cpu), frames.shape, frames.dtype)
        data[...] = frames
    ref = twotime(frames, q, bins=[3], time_bin=4, method="numpy")
    r = twotime(data, q, bins=[3], time_bin=4, method="opencl", device=cpu, chunk_frames=25)
    _close(r.C, ref.C)
    numpy.testing.assert_array_equal(r.frame_sums, ref.frame_sums)
    n_px = int((q == 3).sum())
    moved = r.info["frames_moved"]
    if gather == "runs":
        assert f"runs of {n_px} pixels, gathered, " in moved
    else:
        assert "rectangles of" in moved and "pixels, gathered, " in moved
    assert moved.endswith(", 25 frames a copy")


@pytest.mark.parametrize("share", [0.4, 1.0])
def test_pinned_frames_shared_between_rectangles_and_gather(rng, cpu, share, monkeypatch):
    """gather_share: that share of each chunk of pinned frames is gathered by the host, the
    rest read in place as rectangles; time bins straddle the two parts: the same maps."""
    from ewoksxpcs.opencl import frame_boxes
    from ewoksxpcs.opencl.device import get_device, pinned_empty

    monkeypatch.setattr(frame_boxes, "CPU_BOX_UPLOAD", "rect")  # as on GPUs
    monkeypatch.setattr(frame_boxes, "CALL_COST_BYTES", 0)  # small frames and chunks:
    monkeypatch.setattr(frame_boxes, "RUN_COST_BYTES", 1)  # gathered all the same
    monkeypatch.delenv("EWOKSXPCS_BOX_UPLOAD", raising=False)
    q = _ring_qmask()
    frames = rng.poisson(0.9, (83,) + q.shape).astype(numpy.uint8)
    pinned = pinned_empty(get_device(cpu), frames.shape, frames.dtype)
    pinned[...] = frames
    ref = twotime(frames, q, bins=[3], time_bin=3, method="numpy")
    r = twotime(pinned, q, bins=[3], time_bin=3, method="opencl", device=cpu, chunk_frames=20,
                gather_share=share)
    _close(r.C, ref.C)
    numpy.testing.assert_array_equal(r.frame_sums, ref.frame_sums)
    moved = r.info["frames_moved"]
    assert "rectangles" in moved and ", gathered" in moved and f"share {share:g}" in moved
    for bad in (-0.1, 1.5, "half", True):
        with pytest.raises(ValueError, match="gather_share"):
            twotime(pinned, q, bins=[3], method="opencl", device=cpu, gather_share=bad)
    monkeypatch.setenv("EWOKSXPCS_GATHER_SHARE", str(share))  # the default's override
    r = twotime(pinned, q, bins=[3], time_bin=3, method="opencl", device=cpu, chunk_frames=20)
    assert r.info["frames_moved"] == moved
    for bad in ("half", "2"):
        monkeypatch.setenv("EWOKSXPCS_GATHER_SHARE", bad)
        with pytest.raises(ValueError, match="EWOKSXPCS_GATHER_SHARE|gather_share"):
            twotime(pinned, q, bins=[3], method="opencl", device=cpu)


def test_rectangles_of_a_pageable_chunk_after_a_pinned_one(rng, cpu, monkeypatch):
    """The layout is chosen on the first chunk (pinned: rectangles, as on GPUs); a later chunk
    in pageable memory crosses as the same rectangles, gathered with their padding."""
    from ewoksxpcs.opencl import frame_boxes
    from ewoksxpcs.opencl.device import get_device, pinned_empty

    monkeypatch.setattr(frame_boxes, "CPU_BOX_UPLOAD", "rect")
    monkeypatch.delenv("EWOKSXPCS_BOX_UPLOAD", raising=False)

    q = _ring_qmask()
    frames = rng.poisson(0.7, (60,) + q.shape).astype(numpy.uint8)
    first = pinned_empty(get_device(cpu), (30,) + q.shape, frames.dtype)
    first[...] = frames[:30]
    source = IterableFrameSource([first, frames[30:].copy()], n_frames=60)
    ref = twotime(frames, q, bins=[3], time_bin=2, method="numpy")
    r = twotime(source, q, bins=[3], time_bin=2, method="opencl", device=cpu, chunk_frames=30)
    _close(r.C, ref.C)
    numpy.testing.assert_array_equal(r.frame_sums, ref.frame_sums)
    assert "rectangles" in r.info["frames_moved"]


@pytest.mark.parametrize("events", [False, True])
def test_padded_layout_equals_numpy(rng, cpu, events):
    """X with each bin's columns padded by zero columns to a multiple of 64 (the layout of the
    tensor-core kernel, forced here on the CPU device): same maps, sums and g2."""
    from ewoksxpcs.correlators.opencl_twotime import MMA_PAD, OpenCLTwoTime

    frames = rng.poisson(0.8, (300, 12, 13)).astype(numpy.uint8)
    q = _qmask()
    ref = twotime(frames, q, time_bin=1, method="numpy")
    for budget in (None, 260_000):  # whole maps in one pass; bands in several passes
        corr = OpenCLTwoTime(q, device=cpu, time_bin=1, max_device_memory=budget)
        corr._pad = MMA_PAD
        r = corr.correlate(compact(frames) if events else frames)
        _close(r.C, ref.C)
        numpy.testing.assert_array_equal(r.frame_sums, ref.frame_sums)
        numpy.testing.assert_allclose(r.g2, ref.g2, rtol=2e-6)
        assert r.info["gram_kernel"] == "float"
        if budget is not None:
            assert r.info["passes"] > 1


def test_gram_option(cpu):
    from ewoksxpcs.correlators.opencl_twotime import OpenCLTwoTime

    with pytest.raises(ValueError, match="compute capability"):
        OpenCLTwoTime(_qmask(), device=cpu, gram="mma")
    with pytest.raises(ValueError, match="gram must be"):
        OpenCLTwoTime(_qmask(), device=cpu, gram="int4")


@pytest.mark.gpu
def test_gpu_tensor_core_gram(rng):
    """The tensor-core products (NVIDIA, compute capability >= 8) equal the NumPy maps: uint8
    frames, uint16 frames binned into uint8, events, bands, sums that could exceed 32 bits;
    binned counts above 255 fall back to the float kernel, still equal."""
    require_opencl("gpu")
    from ewoksxpcs.correlators.opencl_twotime import OpenCLTwoTime, tensor_core_capable
    from ewoksxpcs.opencl.device import get_device

    if not tensor_core_capable(get_device("gpu")):
        pytest.fail("the GPU of the device machine should run the tensor-core kernel")
    tc = "tensor cores (u8, exact int32 sums)"
    frames = rng.poisson(0.2, (1500, 64, 96)).astype(numpy.uint8)
    q = 1 + (numpy.arange(96)[None, :] // 10) + numpy.zeros((64, 1), int)
    for b, data in ((1, frames), (3, frames), (1, frames.astype(numpy.uint16))):
        ref = twotime(frames, q, bins=[1, 5, 10], time_bin=b, method="numpy")
        r = twotime(data, q, bins=[1, 5, 10], time_bin=b, method="opencl", device="gpu")
        _close(r.C, ref.C)
        numpy.testing.assert_array_equal(r.frame_sums, ref.frame_sums)
        assert r.info["gram_kernel"] == tc and r.info["x_dtype"] == "uint8"
    ref = twotime(frames, q, time_bin=2, method="numpy")
    r = twotime(compact(frames), q, time_bin=2, method="opencl", device="gpu")
    _close(r.C, ref.C)
    assert r.info["gram_kernel"] == tc
    r = twotime(frames, q, time_bin=2, method="opencl", device="gpu", max_device_memory=3_000_000)
    assert r.info["passes"] > 1
    _close(r.C, ref.C)
    # bright pixels: binned uint16 counts above 255 -> read again in uint16, float products
    bright = frames.astype(numpy.uint16)
    bright[10, 3, 4] = 300
    ref = twotime(bright, q, bins=[1], method="numpy")
    r = twotime(bright, q, bins=[1], method="opencl", device="gpu")
    _close(r.C, ref.C)
    assert r.info["gram_kernel"] == "float" and r.info["x_dtype"] == "uint16"
    # 255² x 192·192 pixels >= 2^31: exact int32 sums of 32768 pixels, added in float
    full = numpy.full((300, 192, 192), 255, numpy.uint8)
    full[::7] = 3
    full[::5, :7] = 0
    ones = numpy.ones((192, 192), int)
    ref = twotime(full, ones, method="numpy")
    r = twotime(full, ones, method="opencl", device="gpu")
    _close(r.C, ref.C)
    assert r.info["gram_kernel"] == ("tensor cores (u8, exact int32 sums of 32768 pixels, "
                                     "float total)")
    # gram="float" forces the float kernel
    r = OpenCLTwoTime(q, device="gpu", bins=[1], gram="float").correlate(frames)
    assert r.info["gram_kernel"] == "float"


def _centred_ring(shape=(24, 30)):
    y, x = numpy.indices(shape)
    r = numpy.hypot(y - 11.5, x - 14.5)
    return numpy.where((r > 5) & (r < 11), 1, 2)


@pytest.mark.parametrize("dtype, b", [(numpy.uint8, 1), (numpy.uint16, 3), (numpy.float32, 2)])
def test_map_strips_equal_the_map_after_the_fill(rng, cpu, dtype, b):
    """One bin's map computed in strips while page-locked frames stream (stream_maps) is the
    map computed after the fill, value for value, and the NumPy one; its g2 and row sums too.
    Pageable frames: no strips (the host gathering them paces the fill)."""
    from ewoksxpcs.correlators.opencl_twotime import OpenCLTwoTime
    from ewoksxpcs.opencl.device import get_device, pinned_empty

    frames = rng.poisson(0.4, (700, 24, 30)).astype(dtype)
    pinned = pinned_empty(get_device(cpu), frames.shape, frames.dtype)
    pinned[...] = frames
    q = _centred_ring()
    ref = twotime(frames, q, bins=[1], time_bin=b, method="numpy")
    got = {}
    for stream in (False, True):
        corr = OpenCLTwoTime(q, device=cpu, bins=[1], time_bin=b, chunk_frames=37,
                             stream_maps=stream)
        got[stream] = corr.correlate(pinned)
    assert "map_strips" not in corr.correlate(frames).info
    a, s = got[False], got[True]
    assert "map_strips" not in a.info
    assert s.info["map_strips"] == -(-(700 // b) // 64)  # strips of one 64-row tile (PoCL)
    numpy.testing.assert_array_equal(s.C, a.C)
    numpy.testing.assert_array_equal(s.frame_sums, a.frame_sums)
    numpy.testing.assert_array_equal(s.g2, a.g2)
    numpy.testing.assert_array_equal(s.partial_g2, a.partial_g2)
    _close(s.C, ref.C)
    numpy.testing.assert_array_equal(s.frame_sums, ref.frame_sums)


def test_map_strips_end_when_the_frames_fail(rng, cpu, monkeypatch):
    """A source that fails in the middle of the fill: the strips in flight end, the staging
    buffers are free again, and the next correlation streams its map."""
    from ewoksxpcs.correlators import opencl_twotime_strips
    from ewoksxpcs.correlators.opencl_twotime import OpenCLTwoTime
    from ewoksxpcs.opencl.device import get_device, pinned_empty, shared_staging

    closed = []
    close = opencl_twotime_strips.MapStrips.close
    monkeypatch.setattr(opencl_twotime_strips.MapStrips, "close",
                        lambda self: closed.append(self.count) or close(self))

    frames = pinned_empty(get_device(cpu), (400, 24, 30), numpy.uint8)
    frames[...] = rng.poisson(0.4, frames.shape)

    def failing():
        yield frames[:300]
        raise OSError("the detector file went away")

    corr = OpenCLTwoTime(_centred_ring(), device=cpu, bins=[1], chunk_frames=50, stream_maps=True)
    with pytest.raises(OSError, match="went away"):
        corr.correlate(IterableFrameSource(failing(), n_frames=400))
    assert len(closed) == 1 and closed[0] > 0  # strips had started
    lock = shared_staging(get_device(cpu))[1]
    assert lock.acquire(blocking=False)
    lock.release()
    r = corr.correlate(frames)
    assert r.info["map_strips"] > 1


def test_strip_rows():
    from ewoksxpcs.correlators.opencl_twotime_strips import strip_rows

    assert strip_rows(10_000, 128, 32 * 2**20) == 256  # ~1/32 of the map, tiles of 128
    assert strip_rows(1000, 64, 32 * 2**20) == 64  # at least a tile
    assert strip_rows(10_000, 128, 2**20) == 0  # a tile's rectangles exceed the buffer
    assert strip_rows(60_000, 128, 32 * 2**20) == 128  # limited by the staging buffer


@pytest.mark.gpu
def test_gpu_map_strips(rng):
    """On a GPU one bin's map is computed in strips while page-locked frames stream, by
    default, equal to the map computed after the fill: tensor cores, the float kernel (binned
    counts above 255), and counts too large for the speculative exact int32 products (the map
    is then redone with float totals)."""
    require_opencl("gpu")
    from ewoksxpcs.correlators.opencl_twotime import OpenCLTwoTime
    from ewoksxpcs.opencl.device import get_device, pinned_empty

    def pinned(a):
        p = pinned_empty(get_device("gpu"), a.shape, a.dtype)
        p[...] = a
        return p

    ring = _centred_ring((64, 96))
    frames = pinned(rng.poisson(0.2, (3000, 64, 96)).astype(numpy.uint8))
    bright = frames[:600].astype(numpy.uint16)
    bright[10, 20, 10] = 300  # in the ring: binned uint8 overflows, read again in uint16
    bright = pinned(bright)
    full = numpy.full((300, 192, 192), 255, numpy.uint8)
    full[::7] = 3
    full = pinned(full)
    cases = [(frames, ring, 1, "tensor cores (u8, exact int32 sums)", True),
             (bright, ring, 2, "float", True),
             (full, numpy.ones((192, 192), int), 1,
              "tensor cores (u8, exact int32 sums of 32768 pixels, float total)", False)]
    for data, q, b, kernel, streamed in cases:
        got = {stream: OpenCLTwoTime(q, device="gpu", bins=[1], time_bin=b,
                                     stream_maps=stream).correlate(data)
               for stream in (None, False)}
        s, a = got[None], got[False]
        assert s.info["gram_kernel"] == a.info["gram_kernel"] == kernel
        assert ("map_strips" in s.info) == streamed and "map_strips" not in a.info
        numpy.testing.assert_array_equal(s.C, a.C)
        numpy.testing.assert_array_equal(s.frame_sums, a.frame_sums)
        numpy.testing.assert_array_equal(s.partial_g2, a.partial_g2)
        ref = twotime(data, q, bins=[1], time_bin=b, method="numpy")
        _close(s.C, ref.C)
