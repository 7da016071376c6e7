"""Binning: labels, pixel order, pixel groups (sub-bins), bad pixels, validation."""

from __future__ import annotations

import warnings

import numpy
import pytest

from ewoksxpcs.engine.qmask import (DEFAULT_GROUPS, Binning, as_binning, cached_binning,
                                   remember_binning)


def test_labels_sorted_and_non_contiguous():
    qmask = numpy.array([[9, 0, 1], [4, 9, -2], [1, 1, 0]])
    b = Binning(qmask)
    numpy.testing.assert_array_equal(b.labels, [1, 4, 9])
    assert b.labels.dtype == numpy.int64
    numpy.testing.assert_array_equal(b.n_pixels, [3, 1, 2])
    numpy.testing.assert_array_equal(b.bin_offsets, [0, 3, 4, 6])
    # Pixels sorted by bin, raster order inside a bin; 0 and negative labels unused.
    numpy.testing.assert_array_equal(b.pixel_index, [2, 6, 7, 3, 0, 4])
    assert b.n_bins == 3 and b.n_binned_pixels == 6 and b.shape == (3, 3)
    image = b.bin_image()
    numpy.testing.assert_array_equal(image.reshape(3, 3), [[2, -1, 0], [1, 2, -1], [0, 0, -1]])


def test_groups_contiguous_and_balanced():
    rng = numpy.random.default_rng(0)
    qmask = rng.integers(0, 4, size=(23, 31))
    b = Binning(qmask, n_groups=5)
    for i in range(b.n_bins):
        s0, s1 = b.bin_sub_offsets[i], b.bin_sub_offsets[i + 1]
        assert s1 - s0 == min(5, b.n_pixels[i])
        assert (b.sub_bin[s0:s1] == i).all()
        sizes = b.sub_n_pixels[s0:s1]
        assert sizes.sum() == b.n_pixels[i] and sizes.max() - sizes.min() <= 1
        # Each group is a run of the bin's pixels in raster order.
        pix = b.pixel_index[b.bin_offsets[i]:b.bin_offsets[i + 1]]
        assert (numpy.diff(pix) > 0).all()
    assert b.sub_offsets[0] == 0 and b.sub_offsets[-1] == b.n_binned_pixels
    assert b.n_sub == b.sub_bin.size == b.sub_offsets.size - 1


def test_sub_image_and_sum_sub_bins():
    rng = numpy.random.default_rng(1)
    qmask = rng.integers(0, 3, size=(9, 10))
    b = Binning(qmask, n_groups=3)
    sub = b.sub_image()
    values = rng.integers(0, 2**31, size=(4, 90)).astype(numpy.uint32)
    gathered = values[:, b.pixel_index]
    sums = b.sum_sub_bins(gathered)
    assert sums.dtype == numpy.int64 and sums.shape == (4, b.n_sub)
    for k in range(b.n_sub):
        expected = values[:, sub == k].astype(numpy.int64).sum(axis=1)
        assert numpy.array_equal(sums[:, k], expected)
    assert b.sum_sub_bins(gathered.astype(numpy.float32)).dtype == numpy.float64
    numpy.testing.assert_array_equal(b.sub_of_pixel(), sub[b.pixel_index])
    # Every sub-bin lies in one bin.
    bins = b.bin_image()
    for k in range(b.n_sub):
        assert set(bins[sub == k]) == {b.sub_bin[k]}


def test_small_bins_get_fewer_groups():
    qmask = numpy.zeros((4, 5), int)
    qmask[0, 0] = 1
    qmask[1, :3] = 2
    qmask[2:] = 3
    b = Binning(qmask)
    assert b.n_groups == DEFAULT_GROUPS
    numpy.testing.assert_array_equal(b.n_groups_per_bin, [1, 3, 10])
    numpy.testing.assert_array_equal(b.sub_n_pixels, [1] * 14)


def test_bad_pixels():
    qmask = numpy.ones((3, 4), int)
    qmask[0] = 2
    bad = numpy.zeros((3, 4), bool)
    bad[0, 1] = bad[2, 3] = True
    b = Binning(qmask, bad_pixels=bad)
    numpy.testing.assert_array_equal(b.n_pixels, [7, 3])
    assert 1 not in b.pixel_index and 11 not in b.pixel_index
    with pytest.raises(ValueError, match=r"bad-pixel mask shape \(3, 3\) differs from qmask shape \(3, 4\)"):
        Binning(qmask, bad_pixels=bad[:, :3])
    with pytest.raises(ValueError, match="no pixel in any bin: every binned pixel is masked as bad"):
        Binning(qmask, bad_pixels=numpy.ones((3, 4), bool))
    # A bin whose pixels are all bad disappears (default labels) or is empty (explicit labels).
    all_bad_2 = qmask == 2
    assert Binning(qmask, bad_pixels=all_bad_2).labels.tolist() == [1]
    with pytest.warns(RuntimeWarning, match=r"qmask bins \[2\] have no pixel"):
        b = Binning(qmask, labels=[1, 2], bad_pixels=all_bad_2)
    numpy.testing.assert_array_equal(b.n_pixels, [8, 0])


def test_explicit_labels():
    qmask = numpy.array([[1, 1, 3], [3, 3, 7]])
    with pytest.warns(RuntimeWarning, match=r"qmask bins \[2, 5\] have no pixel: their results are NaN"):
        b = Binning(qmask, labels=[5, 3, 1, 2, 3])
    numpy.testing.assert_array_equal(b.labels, [1, 2, 3, 5])
    numpy.testing.assert_array_equal(b.n_pixels, [2, 0, 3, 0])
    numpy.testing.assert_array_equal(b.n_groups_per_bin, [2, 0, 3, 0])
    numpy.testing.assert_array_equal(b.bin_sub_offsets, [0, 2, 2, 5, 5])
    assert 5 not in b.pixel_index  # label 7 is not asked for
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Binning(qmask)  # no empty bin, no warning
    with pytest.raises(ValueError, match=r"no pixel in any bin: none of the qmask labels \[4\]"):
        Binning(qmask, labels=[4])
    with pytest.raises(ValueError, match=r"bin labels must be positive; got \[0\]"):
        Binning(qmask, labels=[0, 1])


def test_qmask_dtypes():
    ref = Binning(numpy.array([[1, 2], [0, 2]], numpy.int32))
    for dtype in (numpy.uint8, numpy.int16, numpy.uint64, numpy.float32, numpy.float64):
        b = Binning(numpy.array([[1, 2], [0, 2]]).astype(dtype))  # integral floats are accepted
        numpy.testing.assert_array_equal(b.pixel_index, ref.pixel_index)
    with pytest.raises(TypeError, match=r"qmask must hold integer labels; pixel \(y=0, x=0\) holds 1.5 \(float64\)"):
        Binning(numpy.array([[1.5, 2], [0, 2]]))
    with pytest.raises(TypeError, match="qmask must hold integer labels; got dtype bool"):
        Binning(numpy.ones((2, 2), bool))
    with pytest.raises(TypeError, match="qmask must hold integer labels"):
        Binning(numpy.array([[numpy.nan, 1], [1, 1]]))


@pytest.mark.parametrize("shape", [(4,), (2, 3, 4), ()])
def test_qmask_not_2d(shape):
    with pytest.raises(ValueError, match="qmask must be a 2-D label image"):
        Binning(numpy.ones(shape, int))


def test_no_bin_and_bad_groups():
    with pytest.raises(ValueError, match="qmask has no bin"):
        Binning(numpy.zeros((3, 3), int))
    with pytest.raises(ValueError, match="qmask has no bin"):
        Binning(-numpy.ones((3, 3), int))
    with pytest.raises(ValueError, match="n_groups must be an integer >= 1.*got 0"):
        Binning(numpy.ones((3, 3), int), n_groups=0)


def test_check_frame_shape_and_as_binning():
    b = Binning(numpy.ones((3, 4), int))
    b.check_frame_shape((3, 4))
    with pytest.raises(ValueError, match=r"qmask shape \(3, 4\) differs from the frame shape \(4, 3\)"):
        b.check_frame_shape((4, 3))
    assert as_binning(b) is b
    assert as_binning(numpy.ones((3, 4), int), n_groups=2).n_sub == 2
    assert "n_bins=1" in repr(b)


@pytest.mark.parametrize("top", [9, 3000, 2**31 - 1])
def test_label_rows_and_present_labels_match_sorting(top):
    """The table path (labels up to 2^20) and the sorting path give numpy.unique's labels and
    the searchsorted rows, -1 for 0, negative and absent labels."""
    from ewoksxpcs.engine.qmask import label_rows, present_labels

    rng = numpy.random.default_rng(5)
    flat = rng.integers(-3, 12, 5000).astype(numpy.int64)
    flat[flat > 8] = top - rng.integers(0, 3, (flat > 8).sum())
    labels = present_labels(flat)
    assert numpy.array_equal(labels, numpy.unique(flat[flat > 0]))
    subset = labels[::2]
    rows = label_rows(flat, subset)
    expected = numpy.full(flat.size, -1)
    for i, v in enumerate(subset):
        expected[flat == v] = i
    assert numpy.array_equal(rows, expected)
    assert numpy.array_equal(label_rows(flat, subset[:0]), numpy.full(flat.size, -1))


def test_remembered_binning_only_for_the_same_image_and_arguments():
    qmask = numpy.array([[1, 1, 2], [0, 2, 2]], dtype=numpy.int32)
    binning = Binning(qmask)
    remember_binning(qmask, binning)
    assert not qmask.flags.writeable  # cannot go stale
    assert cached_binning(qmask) is binning
    assert cached_binning(qmask, labels=[2, 1], bad_pixels=qmask == 0) is binning
    assert cached_binning(qmask.copy()) is None  # another image
    assert cached_binning(qmask, labels=[1]) is None
    assert cached_binning(qmask, n_groups=DEFAULT_GROUPS + 1) is None
    assert cached_binning(qmask, bad_pixels=qmask == 2) is None  # masks binned pixels
