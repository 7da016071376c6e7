"""Pixel-block correlation on dask distributed workers merges to the single-process result."""

import os

import h5py
import numpy
import pytest

from ewoksxpcs import Binning, correlate
from ewoksxpcs.correlators import METHODS
from ewoksxpcs.app.distributed import (
    ArrayFrames,
    Hdf5Frames,
    block_sums,
    correlate_blocks,
    merge_block_sums,
    split_row_blocks,
)


def _ring_qmask(shape, n_bins=5):
    ny, nx = shape
    y, x = numpy.mgrid[:ny, :nx]
    r = numpy.hypot(y - ny / 3, x - nx / 2)
    q = (r / r.max() * n_bins).astype(numpy.int64) + 1
    q[q > n_bins] = 0
    q[::7, ::5] = 0  # holes, so bands cut through sub-bins unevenly
    return q


@pytest.fixture(scope="module")
def data():
    rng = numpy.random.default_rng(5)
    shape = (40, 33)
    # Speckle-like: a slowly varying intensity per pixel, Poisson counts.
    rate = rng.gamma(2.0, 1.0, size=(1,) + shape) * numpy.linspace(0.5, 2, 48)[:, None, None]
    frames = rng.poisson(rate).astype(numpy.uint16)
    return frames, _ring_qmask(shape)


def _assert_same(a, b):
    for name in ("n2", "s2", "g2", "g2_err", "frame_sums", "labels", "n_pixels", "lags"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        assert numpy.array_equal(x, y, equal_nan=x.dtype.kind == "f"), name
    assert numpy.array_equal(a.sums.n2, b.sums.n2)
    assert numpy.array_equal(a.sums.frame_sums, b.sums.frame_sums)


def test_blocks_partition_pixels_and_keep_sub_bins(data):
    frames, qmask = data
    binning = Binning(qmask, n_groups=4)
    blocks = split_row_blocks(binning, 5)
    assert len(blocks) >= 3
    nx = binning.shape[1]
    sub_image = binning.sub_image()
    seen = []
    for b in blocks:
        y0, _ = b.rows
        full = b.binning.pixel_index + y0 * nx
        seen.append(full)
        # Every pixel of the block sits in the sub-bin it had in the full binning.
        local_sub = b.binning.sub_of_pixel()
        assert numpy.array_equal(sub_image[full], b.sub_rows[local_sub])
        assert (b.binning.sub_n_pixels > 0).all()
    seen = numpy.concatenate(seen)
    assert numpy.array_equal(numpy.sort(seen), numpy.sort(binning.pixel_index))


def test_merge_in_process_equals_single(data):
    frames, qmask = data
    binning = Binning(qmask, n_groups=4)
    blocks = split_row_blocks(binning, 3)
    spec = ArrayFrames(frames)
    parts = [block_sums(spec.band(b.rows), b, "reference")[0] for b in blocks]
    merged = merge_block_sums(binning, blocks, parts)
    single = correlate(frames, binning, method="reference")
    assert numpy.array_equal(merged.n2, single.sums.n2)
    assert numpy.array_equal(merged.frame_sums, single.sums.frame_sums)
    with pytest.raises(ValueError, match="one partial sum per block"):
        merge_block_sums(binning, blocks, parts[:-1])


def test_bad_frames(data, tmp_path):
    """Bad frames (scan indices of the frame range) are excluded in every block."""
    frames, qmask = data
    binning = Binning(qmask, n_groups=4)
    split = correlate_blocks(ArrayFrames(frames), binning, n_blocks=3, method="reference",
                             bad_frames="3,10-12")
    single = correlate(frames, binning, method="reference", bad_frames="3,10-12")
    _assert_same(split, single)
    assert numpy.flatnonzero(split.info["excluded_frames"]).tolist() == [3, 10, 11, 12]
    filename = str(tmp_path / "scan.h5")
    with h5py.File(filename, "w") as f:
        f["data"] = frames
    split = correlate_blocks(Hdf5Frames(filename, "/data", start=2, step=2), binning,
                             n_blocks=2, method="reference", bad_frames="10-12")
    single = correlate(frames[2::2], binning, method="reference", bad_frames=[4, 5])
    _assert_same(split, single)


def test_bad_input(data, tmp_path):
    frames, qmask = data
    with pytest.raises(ValueError, match="n_blocks"):
        split_row_blocks(Binning(qmask), 0)
    with pytest.raises(ValueError, match="does not exist"):
        correlate_blocks(Hdf5Frames(str(tmp_path / "nope.h5"), "/x"), qmask, method="reference")
    with pytest.raises(ValueError, match="qmask shape"):
        correlate_blocks(frames, qmask[:-1], method="reference")
    with pytest.raises((ValueError, FileNotFoundError)):
        correlate_blocks(str(tmp_path / "nope.h5") + "::/1.1", qmask, method="reference")
    with pytest.raises(TypeError, match="frames must be"):
        correlate_blocks([1, 2, 3], qmask, method="reference")


def test_dask_local_cluster_bit_for_bit(data, tmp_path):
    import distributed

    frames, qmask = data
    filename = str(tmp_path / "frames.h5")
    with h5py.File(filename, "w") as f:
        f.create_dataset("/1.1/measurement/det", data=frames, chunks=(1,) + frames.shape[1:])
    methods = ["reference"]
    methods += [m for m in ("matmul", "fft") if m in METHODS]
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        for method in methods:
            single = correlate(frames, qmask, method=method, n_groups=4)
            split = correlate_blocks(Hdf5Frames(filename, "/1.1/measurement/det"), qmask,
                                     executor=client, n_blocks=4, method=method, n_groups=4,
                                     chunk_frames=10)
            _assert_same(split, single)
            assert split.method == method
            # The same through a URL resolved by ewoksxpcs.io.load (a scan entry, a frame range).
            by_url = correlate_blocks(f"{filename}::/1.1/measurement/det", qmask, executor=client,
                                      n_blocks=3, method=method, n_groups=4)
            _assert_same(by_url, single)
            blocks = split.info["blocks"]
            assert len(blocks) == 4
            assert sum(b["pixels"] for b in blocks) == single.n_pixels.sum()
            # The blocks ran in the worker processes, not here.
            workers = set(client.run(os.getpid).values())
            assert {b["pid"] for b in blocks} <= workers
        assert len(workers) == 2
        # A frame range read by the workers.
        single = correlate(frames[5:45], qmask, method="reference", n_groups=4)
        split = correlate_blocks(Hdf5Frames(filename, "/1.1/measurement/det", start=5, stop=45),
                                 qmask, executor=client, n_blocks=2, method="reference", n_groups=4)
        _assert_same(split, single)


def test_float32_frames_agree_within_rounding(data):
    frames, qmask = data
    frames = frames.astype(numpy.float32) * numpy.float32(0.5)
    single = correlate(frames, qmask, method="matmul" if "matmul" in METHODS else "reference")
    split = correlate_blocks(frames, qmask, n_blocks=3, method=single.method)
    assert split.n2.dtype == numpy.float64
    numpy.testing.assert_allclose(split.n2, single.n2, rtol=1e-12)
    numpy.testing.assert_allclose(split.g2, single.g2, rtol=1e-10)
