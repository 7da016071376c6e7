"""EventStack: CPU compaction, binning of events, HDF5 round trip."""

from __future__ import annotations

import os

import numpy
import pytest

from ewoksxpcs import Binning, EventStack, compact, correlate, load_events


def sparse_frames(rng, shape=(40, 6, 7), dtype=numpy.uint16, density=0.15, high=50):
    frames = rng.integers(1, high, size=shape)
    frames[rng.random(shape) >= density] = 0
    return frames.astype(dtype)


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "uint16", "int32", "uint32", "float32"])
@pytest.mark.parametrize("chunk_frames", [None, 1, 6])
def test_compact_round_trip(dtype, chunk_frames):
    rng = numpy.random.default_rng(1)
    frames = sparse_frames(rng, dtype=dtype)
    if dtype == "float32":
        frames = frames * numpy.float32(0.37)
    events = compact(frames, chunk_frames=chunk_frames)
    assert events.dtype == frames.dtype and events.values.dtype == frames.dtype
    assert events.times.dtype == numpy.uint32
    assert events.offsets.dtype == numpy.int64 and events.pixel_index.dtype == numpy.int64
    assert events.n_frames == 40 and events.frame_shape == (6, 7)
    assert events.n_events == numpy.count_nonzero(frames)
    assert numpy.array_equal(events.pixel_index, numpy.arange(42))  # every pixel kept
    assert (events.values != 0).all()
    # Pixel-major, times ascending within each pixel.
    for k in range(events.n_pixels):
        t = events.times[events.offsets[k]:events.offsets[k + 1]]
        assert (numpy.diff(t.astype(numpy.int64)) > 0).all()
    dense = events.to_dense()
    assert dense.dtype == frames.dtype
    assert numpy.array_equal(dense, frames)
    assert events.occupancy == pytest.approx(numpy.count_nonzero(frames) / frames.size)


def test_compact_iterable_and_progress():
    rng = numpy.random.default_rng(2)
    frames = sparse_frames(rng)
    calls = []
    events = compact(iter([frames[:13], frames[13:14], frames[14:]]),
                     progress=lambda done, total: calls.append((done, total)))
    assert numpy.array_equal(events.to_dense(), frames)
    assert calls == [(13, None), (14, None), (40, None)]
    calls.clear()
    compact(frames, chunk_frames=16, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(16, 40), (32, 40), (40, 40)]


def test_compact_more_than_65535_frames():
    events = compact(_long_frames(), chunk_frames=30_000)
    assert events.times.dtype == numpy.uint32
    assert events.times[events.offsets[1]:events.offsets[2]].tolist() == [0, 1, 65_535, 65_536, 69_999]
    assert events.times[-1] == 69_999 and events.values[-1] == 4095
    assert numpy.array_equal(events.to_dense(), _long_frames())


def _long_frames():
    frames = numpy.zeros((70_000, 1, 3), numpy.uint16)
    frames[[0, 1, 65_535, 65_536, 69_999], 0, 1] = [1, 2, 3, 4, 5]
    frames[69_999, 0, 2] = 4095
    return frames


def event_capable(case):
    return case.events or case.name == "fft"


def test_correlate_events_past_65535(method_case):
    # Lags past 65 535 frames stay apart from small ones (no 16-bit wrap of times or lags).
    events = compact(_long_frames())
    if not event_capable(method_case):
        with pytest.raises(TypeError, match="takes dense frames, not an EventStack"):
            correlate(events, numpy.ones((1, 3), int), **method_case.kwargs())
        return
    result = correlate(events, numpy.ones((1, 3), int), n_groups=1, **method_case.kwargs())
    expected = numpy.zeros(70_000, numpy.int64)
    expected[0] = 1 + 4 + 9 + 16 + 25 + 4095**2
    expected[1] = 1 * 2 + 3 * 4
    expected[[65_534, 65_535, 65_536]] = [2 * 3, 1 * 3 + 2 * 4, 1 * 4]
    expected[69_998 - 65_536 + 1] += 4 * 5  # 65 536 → 69 999
    expected[69_999 - 65_535] += 3 * 5
    expected[[69_998, 69_999]] += [2 * 5, 1 * 5]
    assert numpy.array_equal(result.n2[0], expected)


def test_compact_bad_pixels():
    rng = numpy.random.default_rng(3)
    frames = sparse_frames(rng, density=0.5)
    bad = numpy.zeros((6, 7), bool)
    bad[2, 3] = bad[0, 0] = bad[5, 6] = True
    events = compact(frames, bad_pixels=bad)
    assert events.n_pixels == 39
    assert numpy.array_equal(events.pixel_index, numpy.flatnonzero(~bad.ravel()))
    expected = numpy.where(bad, 0, frames)
    assert numpy.array_equal(events.to_dense(), expected)
    assert events.n_events == numpy.count_nonzero(expected)
    with pytest.raises(ValueError, match=r"bad-pixel mask shape \(6, 6\) differs from the frame shape \(6, 7\)"):
        compact(frames, bad_pixels=bad[:, :6])


def test_compact_frame_sums():
    rng = numpy.random.default_rng(4)
    frames = sparse_frames(rng, density=0.5, dtype=numpy.uint32, high=2**20)
    qmask = rng.choice([0, 2, 5], size=(6, 7))
    bad = rng.random((6, 7)) < 0.2
    events = compact(frames, qmask=qmask, bad_pixels=bad)
    numpy.testing.assert_array_equal(events.labels, [2, 5])
    assert events.frame_sums.dtype == numpy.int64 and events.frame_sums.shape == (40, 2)
    for i, label in enumerate((2, 5)):
        sel = (qmask == label) & ~bad
        expected = frames[:, sel].astype(numpy.int64).sum(axis=1)
        assert numpy.array_equal(events.frame_sums[:, i], expected)


def test_compact_negative_and_bad_values():
    frames = numpy.zeros((5, 3, 4), numpy.int16)
    frames[2, 1, 3] = -4
    with pytest.raises(ValueError, match=r"non-negative counts; frame 2 has a negative value at pixel \(y=1, x=3\)"):
        compact(frames)
    f = numpy.zeros((5, 3, 4), numpy.float32)
    f[4, 0, 0] = numpy.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        compact(f)
    with pytest.raises(TypeError, match="unsupported frame dtype float64"):
        compact(numpy.zeros((5, 3, 4)))


def test_negative_events_rejected():
    frames = numpy.zeros((6, 3, 4), numpy.int16)
    frames[2, 1, 3] = 5
    frames[4, 2, 0] = 7
    events = compact(frames)
    events.values[1] = -7  # hand-made: the second event is at frame 4, pixel (2, 0)
    with pytest.raises(ValueError, match=r"non-negative counts; the EventStack has a negative value at frame 4, pixel \(y=2, x=0\)"):
        events.frame_sums_for(Binning(numpy.ones((3, 4), int)))


def test_frame_sums_for_binning():
    rng = numpy.random.default_rng(5)
    frames = sparse_frames(rng, density=0.4)
    events = compact(frames)
    binning = Binning(rng.choice([0, 1, 3], size=(6, 7)), n_groups=4)
    fs = events.frame_sums_for(binning)
    assert fs.dtype == numpy.int64 and fs.shape == (40, binning.n_sub)
    gathered = frames.reshape(40, -1)[:, binning.pixel_index]
    assert numpy.array_equal(fs, binning.sum_sub_bins(gathered))


def test_rebin_event_stack_equals_frames(method_case):
    # Events compacted once (no qmask) are re-binned later with any qmask: same result as frames.
    rng = numpy.random.default_rng(6)
    frames = sparse_frames(rng, shape=(35, 8, 9), density=0.3)
    if not event_capable(method_case):
        with pytest.raises(TypeError, match="takes dense frames, not an EventStack"):
            correlate(compact(frames), numpy.ones((8, 9), int), **method_case.kwargs())
        return
    bad = rng.random((8, 9)) < 0.1
    events = compact(frames, bad_pixels=bad, qmask=numpy.ones((8, 9), int))
    for labels in ((1, 2), (3, 7, 8)):
        qmask = numpy.where(bad, 0, rng.choice((0,) + labels, size=(8, 9)))
        binning = Binning(qmask, n_groups=3)
        sub = events.pixel_sub_bins(binning)
        assert sub.shape == (events.n_pixels,)
        assert numpy.array_equal(sub, binning.sub_image()[events.pixel_index])
        result = correlate(events, binning, **method_case.kwargs())
        ref = correlate(frames, binning, method="reference")
        assert numpy.array_equal(result.n2, ref.n2)
        assert numpy.array_equal(result.sums.n2, ref.sums.n2)
        assert numpy.array_equal(result.s2, ref.s2)
        numpy.testing.assert_allclose(result.g2, ref.g2, rtol=1e-12, equal_nan=True)
        numpy.testing.assert_allclose(result.g2_err, ref.g2_err, rtol=1e-9, equal_nan=True)


def test_qmask_using_bad_pixel():
    rng = numpy.random.default_rng(7)
    frames = sparse_frames(rng)
    bad = numpy.zeros((6, 7), bool)
    bad[3, 4] = True
    events = compact(frames, bad_pixels=bad)
    qmask = numpy.ones((6, 7), int)
    with pytest.raises(ValueError, match=r"qmask bins use 1 pixel\(s\) that this EventStack does not hold .* \(y=3, x=4\)"):
        events.pixel_sub_bins(Binning(qmask))
    with pytest.raises(ValueError, match="does not hold"):
        events.frame_sums_for(Binning(qmask))
    with pytest.raises(ValueError, match=r"qmask shape \(6, 6\) differs from the frame shape \(6, 7\)"):
        events.pixel_sub_bins(Binning(numpy.ones((6, 6), int)))


def test_event_stack_validation():
    with pytest.raises(ValueError, match="offsets must have one more element than pixel_index"):
        EventStack([1], [0], [0, 1], [0, 1], (1, 2), 1)
    with pytest.raises(ValueError, match="disagree on the event count"):
        EventStack([1, 2], [0], [0, 1], [0], (1, 1), 1)
    with pytest.raises(ValueError, match="disagree on the event count"):
        EventStack([1], [0], [0, 2], [0], (1, 1), 1)


@pytest.mark.parametrize("dtype", ["uint8", "uint32", "int16", "float32"])
@pytest.mark.parametrize("with_sums", [False, True])
def test_hdf5_round_trip(tmp_path, dtype, with_sums):
    rng = numpy.random.default_rng(8)
    frames = sparse_frames(rng, shape=(300, 10, 11), dtype=dtype, density=0.2)
    qmask = rng.choice([0, 1, 4], size=(10, 11)) if with_sums else None
    events = compact(frames, qmask=qmask, bad_pixels=rng.random((10, 11)) < 0.05)
    assert events.n_events > 4096  # the compressed-dataset path
    filename = str(tmp_path / "events.h5")
    assert events.save(filename) == filename
    loaded = load_events(filename)
    assert loaded == events
    for name in ("values", "times", "offsets", "pixel_index", "frame_sums", "labels"):
        a, b = getattr(events, name), getattr(loaded, name)
        if a is None:
            assert b is None
        else:
            assert a.dtype == b.dtype, name
            assert numpy.array_equal(a, b), name
    assert loaded.dtype == events.dtype and loaded.frame_shape == (10, 11) and loaded.n_frames == 300
    assert numpy.array_equal(loaded.to_dense(), events.to_dense())
    # Another group in another file, and an empty stack.
    empty = compact(numpy.zeros((3, 2, 2), dtype))
    empty.save(tmp_path / "e.h5", path="scan/events")
    assert EventStack.load(tmp_path / "e.h5", path="scan/events") == empty


def test_hdf5_no_overwrite(tmp_path):
    rng = numpy.random.default_rng(9)
    a = compact(sparse_frames(rng))
    b = compact(sparse_frames(rng))
    filename = tmp_path / "events.h5"
    a.save(filename)
    with pytest.raises(FileExistsError, match="exists \\(use overwrite=True\\)"):
        b.save(filename)
    assert load_events(filename) == a  # untouched
    b.save(filename, overwrite=True)
    assert load_events(filename) == b


def test_hdf5_no_partial_file(tmp_path):
    rng = numpy.random.default_rng(10)
    events = compact(sparse_frames(rng), qmask=numpy.ones((6, 7), int))
    events.labels = object()  # cannot be written: the save fails after the file was opened
    filename = tmp_path / "events.h5"
    with pytest.raises(Exception):
        events.save(filename)
    assert os.listdir(tmp_path) == []
    # Failing while replacing an existing file leaves the old file intact.
    good = compact(sparse_frames(rng))
    good.save(filename)
    with pytest.raises(Exception):
        events.save(filename, overwrite=True)
    assert os.listdir(tmp_path) == ["events.h5"]
    assert load_events(filename) == good


def test_load_errors(tmp_path):
    h5py = pytest.importorskip("h5py")
    filename = tmp_path / "other.h5"
    with h5py.File(filename, "w") as f:
        f.create_group("events")
    with pytest.raises(ValueError, match="is not an ewoksxpcs events group"):
        load_events(filename)
    with pytest.raises(ValueError, match="has no events group 'nope'"):
        load_events(filename, path="nope")


def test_pixel_totals_and_mean_image_with_empty_pixels(rng):
    """Per-pixel sums of the events (segment sums), empty pixels anywhere included."""
    from ewoksxpcs.workflow.pipeline import mean_image_from_events, pixel_totals

    frames = rng.poisson(0.004, (200, 17, 19)).astype(numpy.uint16)
    frames[:, :, -1] = 0  # the last kept pixels have no event at all
    frames[:, 0, 0] = 0
    bad = numpy.zeros((17, 19), dtype=bool)
    bad[3, 3] = True
    events = compact(frames, bad_pixels=bad)
    assert (numpy.diff(events.offsets) == 0).sum() > 20
    expected = frames.reshape(200, -1).sum(axis=0, dtype=numpy.int64)
    numpy.testing.assert_array_equal(pixel_totals(events), expected[events.pixel_index])
    mean = mean_image_from_events(events)
    expected_mean = frames.mean(axis=0)
    expected_mean[bad] = 0
    numpy.testing.assert_allclose(mean, expected_mean, rtol=1e-12)


@pytest.mark.parametrize("block", [1, 7, 1000])
def test_compact_bounded_memory_same_events(rng, monkeypatch, tmp_path, block):
    """Events buffers spilled to unlinked temporary files (max_memory=0) and processed in
    small event blocks give exactly the events of a global stable sort by pixel, and the
    same per-frame bin sums, multi-tau and two-time sums."""
    import ewoksxpcs.engine.events as ev
    from ewoksxpcs.engine.multitau import multitau_n2_events
    from ewoksxpcs.engine.twotime import events_selection_dense

    monkeypatch.setenv("EWOKSXPCS_TMPDIR", str(tmp_path))
    frames = sparse_frames(rng, shape=(60, 5, 6), density=0.3)
    qmask = rng.integers(0, 4, size=(5, 6))
    bad = numpy.zeros((5, 6), bool)
    bad[1, 2] = True
    qmask[bad] = 0
    binning = Binning(qmask, n_groups=2)
    ref = compact(frames, bad_pixels=bad, qmask=qmask, chunk_frames=7)
    ref_fs = ref.frame_sums_for(binning)
    ref_mt = multitau_n2_events(ref, binning, 4)
    ref_tt = events_selection_dense(ref, binning.pixel_index, 3, numpy.int64)
    monkeypatch.setattr(ev, "EVENT_BLOCK", block)
    events = compact(frames, bad_pixels=bad, qmask=qmask, chunk_frames=7, max_memory=0)
    assert isinstance(events.values.base, numpy.memmap) or isinstance(events.values, numpy.memmap)
    assert not os.listdir(tmp_path)  # unlinked as soon as opened
    assert events == ref
    # The definition: nonzero values sorted by pixel, stably (frame order within a pixel).
    flat = frames.reshape(60, -1)
    t, p = numpy.nonzero(flat[:, ~bad.ravel()])
    order = numpy.argsort(p, kind="stable")
    assert numpy.array_equal(events.times, t[order])
    assert numpy.array_equal(events.values, flat[:, ~bad.ravel()][t, p][order])
    assert numpy.array_equal(events.frame_sums_for(binning), ref_fs)
    for a, b in zip(multitau_n2_events(events, binning, 4), ref_mt):
        assert numpy.array_equal(a, b)
    assert numpy.array_equal(
        events_selection_dense(events, binning.pixel_index, 3, numpy.int64), ref_tt)


def test_load_events_into_file_backed_arrays(rng, monkeypatch, tmp_path):
    """Past EWOKSXPCS_MAX_MEMORY, an events file is read into temporary files mapped in memory
    (not anonymous RAM), with the same events."""
    events = compact(sparse_frames(rng, shape=(50, 6, 7), density=0.4))
    events.save(str(tmp_path / "ev.h5"))
    monkeypatch.setenv("EWOKSXPCS_MAX_MEMORY", "16")
    monkeypatch.setenv("EWOKSXPCS_TMPDIR", str(tmp_path / "spill"))
    os.mkdir(tmp_path / "spill")
    back = load_events(str(tmp_path / "ev.h5"))
    assert back == events
    assert isinstance(back.times.base, numpy.memmap) or isinstance(back.times, numpy.memmap)
    assert not os.listdir(tmp_path / "spill")
