"""OpenCL compaction gives the same EventStack as the NumPy one, array for array."""

from __future__ import annotations

import itertools

import numpy
import pytest
from conftest import require_opencl

from ewoksxpcs import Binning, compact
from ewoksxpcs.opencl.compact import compact_opencl
from ewoksxpcs.engine.frames import IterableFrameSource

DTYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "float32")


@pytest.fixture(params=["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
def device(request):
    require_opencl(request.param)
    return request.param


def frames_of(rng, dtype, shape, rate=0.3):
    dtype = numpy.dtype(dtype)
    data = rng.poisson(rate, shape)
    if dtype.kind == "f":
        data = data * rng.gamma(2.0, 0.7, shape)
    else:
        data.reshape(-1)[::37] *= min(int(numpy.iinfo(dtype).max), 2**20) // 4
    return data.astype(dtype)


def assert_same(a, b):
    assert a == b  # EventStack equality: every array, shape, dtype, frame sums and labels
    assert a.values.dtype == b.values.dtype and a.times.dtype == b.times.dtype
    if a.frame_sums is not None:
        assert a.frame_sums.dtype == b.frame_sums.dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_same_as_numpy(device, rng, dtype):
    frames = frames_of(rng, dtype, (53, 7, 13))
    q = numpy.zeros((7, 13), dtype=numpy.int32)
    q[:, :6] = 4
    q[2:, 6:] = 1
    bad = numpy.zeros((7, 13), dtype=bool)
    bad[3, 2:5] = True
    for kw in ({}, {"qmask": q}, {"qmask": q, "bad_pixels": bad, "chunk_frames": 10},
               {"bad_pixels": bad, "chunk_frames": 1}):
        assert_same(compact_opencl(frames, device=device, **kw), compact(frames, **kw))


def test_float_frame_sums_bitwise(device, rng):
    """float32 bin sums add in NumPy's order: identical doubles, not merely close."""
    frames = (rng.random((40, 16, 16)) * 1000).astype(numpy.float32)
    frames[rng.random(frames.shape) < 0.5] = 0
    q = numpy.ones((16, 16), dtype=numpy.int32)
    a = compact_opencl(frames, qmask=q, device=device)
    b = compact(frames, qmask=q)
    assert a.frame_sums.dtype == numpy.float64
    assert numpy.array_equal(a.frame_sums, b.frame_sums)


def test_iterable_chunks_and_progress(device, rng):
    frames = frames_of(rng, "uint16", (47, 5, 6))
    cuts = [0, 1, 20, 21, 47]
    seen = []
    source = IterableFrameSource(frames[a:b] for a, b in itertools.pairwise(cuts))
    ev = compact_opencl(source, qmask=Binning(numpy.ones((5, 6), int)), device=device,
                        progress=lambda done, total: seen.append(done))
    assert seen == cuts[1:]
    assert_same(ev, compact(frames, qmask=Binning(numpy.ones((5, 6), int))))
    assert numpy.array_equal(ev.to_dense(), frames)


def test_all_zero_and_single_frame(device):
    zeros = numpy.zeros((6, 3, 4), dtype=numpy.uint8)
    ev = compact_opencl(zeros, qmask=numpy.ones((3, 4), int), device=device)
    assert ev.n_events == 0 and ev.n_frames == 6
    assert_same(ev, compact(zeros, qmask=numpy.ones((3, 4), int)))
    one = numpy.arange(12, dtype=numpy.int32).reshape(1, 3, 4)
    assert_same(compact_opencl(one, device=device), compact(one))


def test_negative_value_rejected(device, rng):
    frames = frames_of(rng, "int8", (30, 4, 5))
    frames[17, 1, 4] = -3
    with pytest.raises(ValueError, match=r"non-negative counts; frame 17 .*\(y=1, x=4\)"):
        compact_opencl(frames, chunk_frames=8, device=device)


def test_mask_shape_errors(rng):
    require_opencl("cpu")
    frames = frames_of(rng, "uint8", (5, 4, 5))
    with pytest.raises(ValueError, match="bad-pixel mask shape"):
        compact_opencl(frames, bad_pixels=numpy.zeros((5, 4), bool), device="cpu")
    with pytest.raises(ValueError, match="qmask shape"):
        compact_opencl(frames, qmask=numpy.ones((5, 5), int), device="cpu")


@pytest.mark.parametrize("budget", [1, "mid"])
@pytest.mark.parametrize("reiterable", [True, False])
def test_events_beyond_the_budget(device, rng, budget, reiterable):
    """A device memory budget too small for the events (from the first batch, or after some):
    a source that can be read again is compacted again in pixel ranges on the device; a
    one-shot iterable spills to the host. Both give the same stack."""
    frames = frames_of(rng, "uint16", (60, 9, 11), rate=1.5)
    q = numpy.ones((9, 11), dtype=numpy.int32)
    expected = compact(frames, qmask=q)
    if budget == "mid":
        # Fixed buffers, one 10-frame batch, and room for about 2 batches' events (x2: merge).
        n_kept = 99
        fixed = 16 * n_kept + 16 * (n_kept + 1) + 10 * 99 * 2
        budget = fixed + 2 * 6 * (expected.n_events // 3)
    source = frames if reiterable else IterableFrameSource(iter(numpy.array_split(frames, 6)))
    profile = {}
    got = compact_opencl(source, qmask=q, device=device, chunk_frames=10,
                         max_device_memory=budget, profile=profile)
    assert_same(got, expected)
    assert got.resident is None
    numpy.testing.assert_array_equal(
        got.pixel_sums, frames.reshape(60, -1).sum(axis=0, dtype=numpy.int64))
    if reiterable:
        assert profile["range_passes"] >= 2
    else:
        assert "range_passes" not in profile


def test_raw_chunks_in_pixel_ranges(device, rng, tmp_path):
    """Compressed chunks, events beyond the budget: decompressed again for every range."""
    from ewoksxpcs.io.load import load_frames

    frames = rng.poisson(0.8, (70, 12, 10)).astype(numpy.uint16)
    source = load_frames(_bslz4_file(tmp_path, frames) + "::/data")
    profile = {}
    got = compact_opencl(source, device=device, decode="device", chunk_frames=16,
                         max_device_memory=4000, profile=profile)
    assert profile["range_passes"] >= 3
    assert_same(got, compact(frames))


def test_bad_decode_option(rng):
    with pytest.raises(ValueError, match="decode"):
        compact_opencl(numpy.zeros((2, 3, 3), numpy.uint8), device="cpu", decode="gpu")


def test_decode_device_needs_raw_chunks(device):
    with pytest.raises(ValueError, match="cannot decompress"):
        compact_opencl(numpy.zeros((2, 3, 3), numpy.uint16), device=device, decode="device")


def _bslz4_file(tmp_path, frames, chunk_frames=1):
    import h5py
    import hdf5plugin

    filename = str(tmp_path / "scan.h5")
    with h5py.File(filename, "w") as f:
        f.create_dataset("data", data=frames, chunks=(chunk_frames,) + frames.shape[1:],
                         **hdf5plugin.Bitshuffle(cname="lz4"))
    return filename


@pytest.mark.parametrize("chunk_frames,selection", [
    (1, {}), (1, {"start": 7, "stop": 119, "step": 3}), (2, {"start": 3, "stop": 100})])
def test_raw_chunks_decompressed_on_the_device(device, rng, tmp_path, chunk_frames, selection):
    """bitshuffle-LZ4 chunks read raw and decompressed on the device: the same stack as NumPy
    compaction of the frames h5py reads (bad pixels, bin sums, selections, batches)."""
    from ewoksxpcs.io.load import load_frames

    frames = rng.poisson(0.2, (131, 23, 37)).astype(numpy.uint16)
    frames[:, 4, :] = 65535  # a detector gap
    frames.reshape(-1)[::101] = 40000
    source = load_frames(_bslz4_file(tmp_path, frames, chunk_frames) + "::/data", **selection)
    bad = numpy.zeros((23, 37), dtype=bool)
    bad[4] = True
    q = (numpy.arange(23 * 37).reshape(23, 37) % 4).astype(numpy.int32)
    profile = {}
    got = compact_opencl(source, bad_pixels=bad, qmask=q, device=device, decode="device",
                         chunk_frames=20, profile=profile)
    assert profile["path"].startswith("raw chunks") and profile["decode_s"] > 0
    assert_same(got, compact(source, bad_pixels=bad, qmask=q))


def test_corrupted_chunk_names_the_file(device, rng, tmp_path):
    import h5py

    from ewoksxpcs.io.load import load_frames

    frames = rng.poisson(0.3, (12, 16, 16)).astype(numpy.uint16)
    filename = _bslz4_file(tmp_path, frames)
    with h5py.File(filename, "r") as f:
        offset = f["data"].id.get_chunk_info(5).byte_offset
    with open(filename, "r+b") as f:
        f.seek(offset + 12)
        f.write(b"\xff\xff\xff\x7f")  # block size far beyond the chunk
    source = load_frames(filename + "::/data")
    with pytest.raises(ValueError, match="scan.h5.*frame 5 "):
        compact_opencl(source, device=device, decode="device", chunk_frames=4)


def test_raw_chunks_with_bad_frames(device, rng, tmp_path):
    """Bad frames of a compressed scan: zeroed on the device after decompression, the same
    events as the NumPy compaction of the zeroed frames (frame range in scan indices)."""
    from ewoksxpcs.engine.badframes import exclude_frames
    from ewoksxpcs.io.load import load_frames

    frames = rng.poisson(0.5, (90, 12, 10)).astype(numpy.uint16)
    source = exclude_frames(load_frames(_bslz4_file(tmp_path, frames) + "::/data", start=5,
                                        stop=85), "5,20-24,84")
    profile = {}
    got = compact_opencl(source, device=device, decode="device", chunk_frames=16, profile=profile)
    assert profile["path"].startswith("raw chunks")
    zeroed = frames[5:85].copy()
    zeroed[[0, 15, 16, 17, 18, 19, 79]] = 0
    assert_same(got, compact(zeroed))
    # Beyond the budget: compacted again in pixel ranges, zeroed again.
    got = compact_opencl(source, device=device, decode="device", chunk_frames=16,
                         max_device_memory=4000, profile=profile)
    assert profile["range_passes"] >= 2
    assert_same(got, compact(zeroed))
