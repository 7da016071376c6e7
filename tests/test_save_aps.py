"""APS 8-ID-I layout opened by xpcs-viewer's own loader classes (pyXpcsViewer from PyPI).

The ``test`` extra installs ``xpcs-viewer``; an import failure is an error, not a skip.
"""

from __future__ import annotations

import os

import h5py
import numpy
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pyxpcsviewer.core.file_io.hdf_reader import get as aps_get  # noqa: E402
from pyxpcsviewer.core.xpcs_file import XpcsFile  # noqa: E402

from _formatruns import make_runs, nexus_result as _nexus  # noqa: E402
from ewoksxpcs.app.cli import main  # noqa: E402

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return make_runs(tmp_path_factory.mktemp("aps"))


def _columns(r, n_q=4):
    """Our bins in the file's column order (q-major grid of n_q × 2 sectors, non-empty bins)."""
    labels = r["labels"]
    qi, si = (labels - 1) % n_q, (labels - 1) // n_q
    order = numpy.argsort(qi * 2 + si, kind="stable")
    return order[r["n_pixels"][order] > 0]


def test_multitau_with_sectors(runs):
    r = _nexus(runs["multitau"])
    aps = os.path.splitext(runs["multitau"])[0] + "_results.hdf"
    xf = XpcsFile(aps)
    assert xf.atype == ("Multitau",)
    cols = _columns(r)
    keep = r["lags"] > 0  # no τ = 0 row
    numpy.testing.assert_array_equal(xf.g2, r["g2"][cols][:, keep].T)  # (n_τ, n_q)
    raw_err = aps_get(aps, ["g2_err"], "alias")["g2_err"]  # before the viewer's correction
    numpy.testing.assert_array_equal(raw_err, r["g2_errors"][cols][:, keep].T)
    numpy.testing.assert_allclose(xf.t_el, r["lags"][keep] * r["frame_period"])
    # q in Å⁻¹: nominal centres of the 4 intervals; φ: the 2 sector centres.
    nominal = numpy.unique(r["q_nominal"])
    numpy.testing.assert_allclose(xf.qmap.dqlist, nominal / 10)
    numpy.testing.assert_allclose(xf.qmap.dplist, numpy.unique(r["chi"]))
    q_val, t_el, g2, err, labels = xf.get_g2_data()
    numpy.testing.assert_allclose(q_val, r["q_nominal"][cols] / 10)
    assert labels[0].startswith("qbin=1, q=")
    # The viewer's q-map: column + 1 of every pixel of a kept bin; mask 1 = good.
    lut = numpy.zeros(r["labels"].max() + 1, dtype=int)
    lut[r["labels"][cols]] = numpy.arange(1, cols.size + 1)
    numpy.testing.assert_array_equal(xf.qmap.dqmap, lut[r["qmask"]])
    assert xf.qmap.mask.sum() >= (r["qmask"] > 0).sum()
    # Beam centre and energy from the geometry (12.398 keV·Å / 1 Å).
    assert (xf.qmap.bcy, xf.qmap.bcx) == (12.0, 13.0)
    assert xf.qmap.X_energy == pytest.approx(12.398)
    # SAXS 1D: mean counts per pixel per frame of each bin, per sector (rows 1, 2) and their
    # mean (row 0), vs the 4 q intervals.
    with h5py.File(runs["multitau"], "r") as f:
        fs = f["entry/xpcs/sums/frame_sums"][()]
    mean = fs.sum(axis=0) / (r["n_pixels"] * fs.shape[0])
    numpy.testing.assert_allclose(xf.saxs_1d["Iq"][1:], mean.reshape(2, 4))
    assert xf.Int_t.shape == (2, 64)


def test_qmask_given_directly_geometry_unknown(runs):
    r = _nexus(runs["linear"])
    assert r["geometry"].startswith("unknown")
    aps = os.path.splitext(runs["linear"])[0] + "_results.hdf"
    xf = XpcsFile(aps)
    keep = r["lags"] > 0
    numpy.testing.assert_array_equal(xf.g2, r["g2"][:, keep].T)
    numpy.testing.assert_allclose(xf.tau, r["lags"][keep])
    assert xf.qmap.map_names == ["label", "phi"]
    numpy.testing.assert_array_equal(xf.qmap.dqlist, r["labels"])
    assert numpy.isnan(xf.qmap.X_energy) and numpy.isnan(xf.qmap.bcx)
    with h5py.File(aps, "r") as f:
        assert f["xpcs/qmap"].attrs["geometry"].startswith("unknown")
        assert f["xpcs/qmap"].attrs["hash"]


def test_twotime(runs):
    r = _nexus(runs["twotime"])
    aps = os.path.splitext(runs["twotime"])[0] + "_results.hdf"
    xf = XpcsFile(aps)
    assert xf.atype == ("Twotime",)
    # Bins 2, 4, 5 of 3 q × 2 sectors: (q1, φ0), (q0, φ1), (q1, φ1) → columns 4, 2, 5 in grid order.
    assert r["labels"].tolist() == [2, 4, 5]
    cols = _columns(r, n_q=3)
    assert cols.tolist() == [1, 0, 2]
    assert xf.c2_processed_bins.tolist() == [1, 2, 3]
    full = r["C"].copy()
    n = full.shape[-1]
    full[:, numpy.arange(n), numpy.arange(n)] = r["C_diagonal"]
    for sel, c in enumerate(cols):
        c2 = xf.get_twotime_c2(selection=sel, correct_diag=False)["c2_mat"]
        numpy.testing.assert_allclose(c2, full[c], rtol=1e-6)
    labels = xf.get_twotime_qbin_labels()
    assert labels[0].startswith("qbin=1, q=0.00") and "φ=90.0" in labels[0]
    keep = r["lags"] > 0
    numpy.testing.assert_array_equal(xf.c2_g2, r["g2"][cols][:, keep].T)
    assert xf.c2_t0 == pytest.approx(2 * r["frame_period"])


def test_pixel_level_G2(runs, tmp_path):
    """--pixel-g2: G2, IP, IF of every pixel at every delay, as the viewer reads them."""
    out = str(tmp_path / "pixel.hdf")
    assert main(["run", runs["scan"] + "::/1.1", "-o", out, "--format", "aps", "--pixel-g2",
                 "--mode", "multitau", "--qmask", runs["scan"] + "::/1.1/simulation/labels",
                 "-q", "--no-plot", "--no-fit"]) == 0
    with h5py.File(runs["scan"], "r") as f:
        frames = f["1.1/measurement/eiger"][()].astype(numpy.float64)
    xf = XpcsFile(out)
    assert xf.G2.shape == (xf.tau.size, 3) + frames.shape[1:]
    for i, tau in enumerate(xf.tau.astype(int)):
        a, b = frames[: frames.shape[0] - tau], frames[tau:]
        numpy.testing.assert_allclose(xf.get_G2_data("G2", i), (a * b).mean(axis=0), rtol=1e-6)
        numpy.testing.assert_allclose(xf.get_G2_data("IP", i), a.mean(axis=0), rtol=1e-6)
        numpy.testing.assert_allclose(xf.get_G2_data("IF", i), b.mean(axis=0), rtol=1e-6)


def test_partial_g2_stability(runs, tmp_path):
    """--segments: the segments' g2 in the viewer's g2-stability reader, on the full delays."""
    out = str(tmp_path / "seg.h5")
    assert main(["run", runs["scan"] + "::/1.1", "-o", out, "--format", "nexus", "--format",
                 "aps", "--segments", "4", "--qmask", runs["scan"] + "::/1.1/simulation/labels",
                 "-q", "--no-plot", "--no-fit"]) == 0
    r = _nexus(out)
    with h5py.File(out, "r") as f:
        pg = f["entry/xpcs/segments/partial_g2"]
        seg = {"g2": pg["g2"][()], "lags": numpy.rint(pg["tau"][()] / r["frame_period"])}
    xf = XpcsFile(out[:-3] + "_results.hdf")
    q, t_el, g2, err, qlabels, labels = xf.get_g2_stability_data()
    assert g2.shape == (4, xf.tau.size, r["labels"].size) and len(labels) == 4
    for k, tau in enumerate(xf.tau):
        hit = numpy.flatnonzero(seg["lags"] == tau)
        if hit.size:
            numpy.testing.assert_array_equal(g2[:, k, :], seg["g2"][:, :, hit[0]])
        else:
            assert numpy.isnan(g2[:, k, :]).all()


def test_large_twotime_maps_stored_plain(runs, tmp_path, monkeypatch):
    """Maps above GZIP_MAPS_MAX_BYTES: the c2 maps (and ID02's ttcf) without gzip, read the
    same by xpcs-viewer."""
    from ewoksxpcs.io import save_aps, save_id02
    from _formatruns import GEOMETRY

    monkeypatch.setattr(save_aps, "GZIP_MAPS_MAX_BYTES", 0)
    monkeypatch.setattr(save_id02, "GZIP_MAPS_MAX_BYTES", 0)
    output = str(tmp_path / "tt.h5")
    assert main(["run", runs["scan"] + "::/1.1", "-o", output, "-q", "--no-plot", "--no-fit",
                 "--format", "aps", "--format", "id02", "--mode", "twotime", "--time-bin", "2",
                 "--twotime-bins", "2", "4", "5", "--bins", "3", "--sectors", "2"]
                + GEOMETRY) == 0
    aps = str(tmp_path / "tt.h5")  # the first format takes the output name
    with h5py.File(aps, "r") as f:
        maps = f["xpcs/twotime/correlation_map"]
        assert all(maps[name].compression is None for name in maps)
    with h5py.File(os.path.splitext(runs["twotime"])[0] + "_results.hdf", "r") as f:
        assert f["xpcs/twotime/correlation_map/c2_00001"].compression == "gzip"
    ref = XpcsFile(os.path.splitext(runs["twotime"])[0] + "_results.hdf")
    xf = XpcsFile(aps)
    for sel in range(3):
        numpy.testing.assert_array_equal(
            xf.get_twotime_c2(selection=sel, correct_diag=False)["c2_mat"],
            ref.get_twotime_c2(selection=sel, correct_diag=False)["c2_mat"])
    with h5py.File(tmp_path / "tt_id02.h5", "r") as f:
        found = []
        f.visititems(lambda name, obj: found.append(obj) if name.endswith("ttcf") else None)
        assert found and all(d.compression is None for d in found)
