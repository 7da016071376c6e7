"""ESRF ID02 layout opened by xpcsutilities' own reader class (from PyPI, the ``test`` extra)."""

from __future__ import annotations

import os

import numpy
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from xpcsutilities.tools.result_file import XPCSResultFile  # noqa: E402

from _formatruns import make_runs, nexus_result  # noqa: E402
from ewoksxpcs.io.save_id02 import lag_age  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return make_runs(tmp_path_factory.mktemp("id02"))


def _id02(output):
    return os.path.splitext(output)[0] + "_id02.h5"


@pytest.mark.parametrize("mode", ["multitau", "linear"])
def test_correlations(runs, mode):
    r = nexus_result(runs[mode])
    keep = r["lags"] > 0
    with XPCSResultFile(_id02(runs[mode])) as fd:
        assert fd.analysis_keys == [mode]
        lag, cf, err = fd.get_correlations(mode)
        numpy.testing.assert_allclose(lag, r["lags"][keep] * r["frame_period"])
        numpy.testing.assert_array_equal(cf, r["g2"][:, keep])  # (n_q, n_τ)
        numpy.testing.assert_array_equal(err, r["g2_errors"][:, keep])
        q = fd.get_q_values(mode)
        roi = fd.get_roi_masks(mode)
        qmask = fd.get_qmask(mode)
        pattern = fd.get_2D_pattern(fd.default_2D_pattern)
        assert fd.title == "XPCS g2"
        headers = fd.headers
    if mode == "multitau":
        numpy.testing.assert_allclose(q, r["q"])  # nm⁻¹, mean q of each bin
        assert "wavelength" in headers["geometry"]
    else:
        assert headers["geometry"].startswith("unknown")
        assert headers["q_unit"].startswith("unknown")
    for i, label in enumerate(r["labels"]):
        numpy.testing.assert_array_equal(roi[i], r["qmask"] == label)
    numpy.testing.assert_array_equal(qmask > 0, r["qmask"] > 0)
    assert pattern.shape == r["qmask"].shape


def test_twotime(runs):
    r = nexus_result(runs["twotime"])
    full = r["C"].copy()
    n = full.shape[-1]
    full[:, numpy.arange(n), numpy.arange(n)] = r["C_diagonal"]
    with XPCSResultFile(_id02(runs["twotime"])) as fd:
        ttcf, lag, age = fd.get_ttcf("twotime", 1)
        cfs, _, _ = fd.get_ttcfs("twotime")
    numpy.testing.assert_allclose(lag, numpy.arange(n) * 2 * r["frame_period"])
    assert age.size == n
    # ttcf[age, lag] = C(t, t + k) at age index t + k // 2.
    for k in (0, 1, 4):
        t = numpy.arange(n - k)
        numpy.testing.assert_array_equal(ttcf[t + k // 2, k], full[1, t, t + k])
    numpy.testing.assert_array_equal(cfs, lag_age(full))
