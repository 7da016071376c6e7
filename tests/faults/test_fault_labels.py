"""Label images (q-masks) that a cast would change are refused: labels outside the int32 range,
non-integer float labels; through the library and the command."""

from __future__ import annotations

import numpy
import pytest

from _faults import assert_cli_refuses, cli_output_args, small_scan  # noqa: F401 (fixture)
from ewoksxpcs import correlate
from ewoksxpcs.engine.qmask import Binning


def _labels(dtype, value):
    q = numpy.ones((6, 8), dtype=dtype)
    q[:, 4:] = 2
    q[2, 5] = value
    return q


BAD = [
    (numpy.int64, 2**31, r"pixel \(y=2, x=5\) holds 2147483648 \(int64\)"),
    (numpy.int64, 2**31 + 1, r"holds 2147483649"),  # merged with label 1 by an int32 cast
    (numpy.int64, -(2**31) - 1, r"holds -2147483649"),
    (numpy.uint64, 2**63 + 5, r"holds 9223372036854775813 \(uint64\)"),
    (numpy.uint32, 2**32 - 1, r"holds 4294967295 \(uint32\)"),
    (numpy.float64, 1e20, r"holds 1e\+20 \(float64\)"),
]


@pytest.mark.parametrize("dtype, value, expect", BAD)
def test_out_of_int32_range_refused(small_scan, dtype, value, expect):
    _, frames, _, _ = small_scan
    q = _labels(dtype, value)
    with pytest.raises(ValueError, match=r"qmask labels must fit int32 .*" + expect):
        Binning(q)
    with pytest.raises(ValueError, match=expect):
        correlate(frames, q, method="reference")


@pytest.mark.parametrize("value", [1.5, numpy.nan, numpy.inf])
def test_non_integer_labels_refused(small_scan, value):
    _, frames, _, _ = small_scan
    q = _labels(numpy.float64, value)
    with pytest.raises((TypeError, ValueError), match=r"pixel \(y=2, x=5\) holds"):
        correlate(frames, q, method="reference")


@pytest.mark.parametrize("dtype", [numpy.int64, numpy.uint64, numpy.float32])
def test_wide_dtypes_inside_the_range_accepted(small_scan, dtype):
    """The control: wide or float label images with int32 values give the int32 result."""
    _, frames, _, labels = small_scan
    q = labels.astype(dtype)
    q[0, 0] = 2**24 if dtype == numpy.float32 else 2**31 - 1
    ref = labels.copy()
    ref[0, 0] = int(q[0, 0])
    r = correlate(frames, q, method="reference")
    assert numpy.array_equal(r.n2, correlate(frames, ref, method="reference").n2)
    assert r.labels.tolist() == [1, 2, int(q[0, 0])]


def test_labels_argument_checked():
    with pytest.raises(ValueError, match=r"bin labels must fit int32 .*entry \(1,\) holds 4294967296"):
        Binning(numpy.ones((2, 2), int), labels=[1, 2**32])


@pytest.mark.parametrize("dtype, value, expect", BAD[:1] + BAD[3:4])
def test_cli_refuses_wide_labels(small_scan, tmp_path, capsys, dtype, value, expect):
    scan, _, _, _ = small_scan
    qmask = tmp_path / "wide.npy"
    numpy.save(qmask, _labels(dtype, value))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert_cli_refuses(["run", f"{scan}::/data", "--qmask", qmask, *cli_output_args(out_dir)],
                       expect, out_dir, capsys)
