"""NeXus result file (read back through silx's NXdata API), PNG, atomic writing, the g2 fit."""

from __future__ import annotations

import os

import h5py
import numpy
import pytest
from silx.io.nxdata import get_default

from ewoksxpcs import correlate
from ewoksxpcs.workflow.cancellation import CancelToken, Cancelled
from ewoksxpcs.engine.fit import fit_g2
from ewoksxpcs.workflow.pipeline import tau_axis
from ewoksxpcs.io.save import check_output, default_png, plot_g2, save_results
from ewoksxpcs.engine.twotime import TwoTimeResult


@pytest.fixture(scope="module")
def result():
    rng = numpy.random.default_rng(11)
    frames = rng.poisson(0.8, (40, 16, 16)).astype(numpy.uint16)
    labels = numpy.zeros((16, 16), dtype=numpy.int32)
    labels[:8] = 1
    labels[8:] = 2
    return correlate(frames, labels, method="reference"), labels, frames


def _save(path, result, **kw):
    res, labels, frames = result
    tau, unit = tau_axis(res.lags, 1e-3)
    defaults = dict(
        q=[0.01, 0.02],
        tau=tau,
        tau_unit=unit,
        qmask=labels,
        mean_image=frames.mean(axis=0),
        frame_period=1e-3,
        parameters={
            "load": {"url": "x.h5::/1.1", "start": 0, "stop": None},
            "correlate": {"method": "reference", "options": {"chunk_frames": 8}},
        },
    )
    defaults.update(kw)
    return save_results(str(path), res, **defaults)


def test_nxdata_default_plot_is_g2(result, tmp_path):
    res = result[0]
    written = _save(tmp_path / "result.h5", result, png=str(tmp_path / "g2.png"))
    assert {k: written[k] for k in ("filename", "png")} == {
        "filename": str(tmp_path / "result.h5"), "png": str(tmp_path / "g2.png")}
    assert written["png_drawn_in"] in ("process", "thread") and written["png_wait_s"] >= 0
    with h5py.File(tmp_path / "result.h5", "r") as f:
        nxdata = get_default(f)  # root → entry → xpcs → g2
        assert nxdata is not None and nxdata.group.name == "/entry/xpcs/g2"
        assert nxdata.signal_dataset_name == "g2"
        assert nxdata.interpretation == "spectrum" and nxdata.is_curve
        assert nxdata.axes_dataset_names == ["q", "tau"]
        numpy.testing.assert_array_equal(nxdata.signal[()], res.g2)
        numpy.testing.assert_array_equal(nxdata.errors[()], res.g2_err)
        q, tau = nxdata.axes
        assert q.attrs["units"] == "nm^-1" and tau.attrs["units"] == "s"
        numpy.testing.assert_allclose(tau[()], res.lags * 1e-3)
        proc = f["entry/xpcs"]
        assert proc.attrs["NX_class"] == "NXprocess"
        assert proc["program"][()] == b"ewoksxpcs" and proc["method"][()] == b"reference"
        assert proc["parameters/correlate/options/chunk_frames"][()] == 8
        assert proc["parameters/load/stop"][()] == b"None"
        # Exact sums, label image, mean image, intensity vs time, pixels per bin.
        numpy.testing.assert_array_equal(proc["sums/n2"][()], res.n2)
        assert proc["sums/n2"].dtype == numpy.int64
        # Expected photon pairs beside g2, every lag (g2 is NaN where fewer than 10).
        pairs = proc["g2/expected_pairs"][()]
        numpy.testing.assert_array_equal(pairs, res.expected_pairs)
        numpy.testing.assert_allclose(pairs, res.s2 / 128.0, rtol=1e-15)
        assert (numpy.isnan(res.g2) == (pairs < 10)).all()
        numpy.testing.assert_array_equal(proc["qmask/labels"][()], result[1])
        numpy.testing.assert_allclose(proc["mean_image/mean_image"][()], result[2].mean(axis=0))
        assert proc["intensity/intensity"].shape == (2, 40)
        assert get_default(proc["intensity"]).axes_dataset_names == ["q", "time"]
        assert proc["pixels_per_bin/n_pixels"][()].tolist() == [128, 128]
    with open(tmp_path / "g2.png", "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_never_overwrites(result, tmp_path):
    target = tmp_path / "result.h5"
    target.write_bytes(b"previous")
    with pytest.raises(FileExistsError, match="exists .*use overwrite"):
        _save(target, result)
    assert target.read_bytes() == b"previous"
    _save(target, result, overwrite=True)
    with h5py.File(target, "r") as f:
        assert "entry/xpcs/g2" in f
    # An existing PNG blocks the whole save, before anything is written.
    png = tmp_path / "other_g2.png"
    png.write_bytes(b"x")
    with pytest.raises(FileExistsError):
        _save(tmp_path / "other.h5", result, png=str(png))
    assert not (tmp_path / "other.h5").exists()
    assert default_png("/a/b/result.h5") == "/a/b/result_g2.png"


def test_failure_or_cancel_leaves_nothing(result, tmp_path, monkeypatch):
    import ewoksxpcs.io.save as save

    def boom(*args, **kw):
        raise RuntimeError("disk full")

    monkeypatch.setattr(save, "_write_value", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        _save(tmp_path / "result.h5", result)
    monkeypatch.undo()
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        _save(tmp_path / "result.h5", result, cancel_token=token)
    assert os.listdir(tmp_path) == []  # no result, no temporary file


def test_output_checks(tmp_path):
    with pytest.raises(ValueError, match="output directory .* does not exist"):
        check_output(tmp_path / "nodir" / "r.h5")
    with pytest.raises(PermissionError, match="output directory '/proc' is not writable"):
        check_output("/proc/result.h5")
    with pytest.raises(ValueError, match="is a directory"):
        check_output(tmp_path)
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(PermissionError, match="not writable"):
                check_output(ro / "r.h5")
        finally:
            ro.chmod(0o700)
    assert check_output(tmp_path / "r.h5") == str(tmp_path / "r.h5")
    assert os.listdir(tmp_path) == []  # the probe file is gone


def test_fit_recovers_exponential():
    tau = numpy.arange(200) * 1e-3
    gamma = numpy.array([5.0, 40.0, 300.0])
    g2 = 1.0 + numpy.array([0.3, 0.2, 0.1])[:, None] * numpy.exp(-2 * gamma[:, None] * tau)
    g2[:, 0] += 5.0  # τ = 0 (shot noise) must be ignored
    fit = fit_g2(tau, g2, numpy.full_like(g2, 0.01))
    numpy.testing.assert_allclose(fit.gamma, gamma, rtol=1e-6)
    numpy.testing.assert_allclose(fit.beta, [0.3, 0.2, 0.1], rtol=1e-6)
    numpy.testing.assert_allclose(fit.baseline, 1.0, rtol=1e-8)
    assert fit.tau_range == (None, pytest.approx(0.0995))
    # Noisy curves: within a few standard errors.
    rng = numpy.random.default_rng(2)
    noisy = g2 + rng.normal(0, 0.005, g2.shape)
    fit = fit_g2(tau, noisy, numpy.full_like(g2, 0.005))
    assert numpy.all(numpy.abs(fit.gamma - gamma) < 5 * fit.gamma_err)
    assert numpy.all(fit.chi2_red < 2)


def test_plot_without_fit(tmp_path):
    tau = numpy.arange(1000) * 1e-3
    g2 = 1 + 0.2 * numpy.exp(-tau[None, :] * numpy.array([[10.0], [100.0]]))
    name = plot_g2(str(tmp_path / "p.png"), tau, g2, numpy.full_like(g2, numpy.nan), [1.0, 2.0])
    assert os.path.getsize(name) > 1000
    with pytest.raises(FileExistsError):
        plot_g2(str(tmp_path / "p.png"), tau, g2, g2, [1.0, 2.0])


def test_multitau_and_twotime_results(result, tmp_path):
    """Results of the other modes, saved straight from the library: their NXdata layout."""
    from silx.io.nxdata import NXdata

    from ewoksxpcs.correlators import multitau
    from ewoksxpcs.correlators import twotime

    res, labels, frames = result
    mt = multitau(frames, labels, lags_per_level=4, method="numpy", frame_period=1e-3)
    tau, unit = tau_axis(mt.lags, 1e-3)
    written = save_results(
        str(tmp_path / "mt.h5"), mt, [0.01, 0.02], tau, png=str(tmp_path / "mt.png")
    )
    assert written["png"] == str(tmp_path / "mt.png")
    with h5py.File(tmp_path / "mt.h5", "r") as f:
        nxdata = get_default(f)
        assert "multi-tau" in nxdata.title and nxdata.axes_dataset_names == ["q", "tau"]
        numpy.testing.assert_array_equal(nxdata.signal[()], mt.g2)
        numpy.testing.assert_allclose(
            nxdata.axes[1][()], numpy.array([0, 1, 2, 3, 4, 6, 8, 12, 16, 24]) * 1e-3
        )
        # Level 0 of the standard normalisation: the linear g2.
        numpy.testing.assert_array_equal(nxdata.signal[:, :4], res.g2[:, :4])
        assert f["entry/xpcs/mode"][()] == b"multitau"
        numpy.testing.assert_array_equal(f["entry/xpcs/g2/n_pairs"][()], mt.n_pairs)
        numpy.testing.assert_array_equal(f["entry/xpcs/g2/expected_pairs"][()], mt.expected_pairs)

    tt = twotime(frames, labels, time_bin=4, method="numpy", frame_period=1e-3)
    tau, unit = tau_axis(tt.lags, 1e-3)
    save_results(str(tmp_path / "tt.h5"), tt, [0.01, 0.02], tau, frame_period=1e-3)
    with h5py.File(tmp_path / "tt.h5", "r") as f:
        assert get_default(f).group.name == "/entry/xpcs/g2"
        maps = NXdata(f["entry/xpcs/twotime/maps"])
        assert maps.signal.shape == (2, 10, 10) and maps.interpretation == "image"
        numpy.testing.assert_array_equal(TwoTimeResult.read_maps(maps.group), tt.C)
        partial = NXdata(f["entry/xpcs/twotime/partial_g2"])
        assert partial.is_valid and partial.signal.shape == tt.partial_g2.shape
        numpy.testing.assert_allclose(f["entry/xpcs/intensity/time"][()], tt.times * 1e-3)


def test_large_twotime_maps_flushed_to_disk_map_by_map(result, tmp_path, monkeypatch):
    """Maps beyond FLUSH_MAPS_BYTES: fdatasync in the background after the maps are written,
    the file the same."""
    from ewoksxpcs.correlators import twotime
    from ewoksxpcs.io import save

    res, labels, frames = result
    tt = twotime(frames, labels, time_bin=2, method="numpy", frame_period=1e-3)
    tau, _ = tau_axis(tt.lags, 1e-3)
    synced = []
    real = os.fdatasync
    monkeypatch.setattr(save.os, "fdatasync", lambda fd: (synced.append(fd), real(fd)))
    for limit, name in ((tt.C.nbytes, "small.h5"), (tt.C.nbytes - 1, "big.h5")):
        monkeypatch.setattr(save, "FLUSH_MAPS_BYTES", limit)
        before = len(synced)
        save_results(str(tmp_path / name), tt, [0.01, 0.02], tau, frame_period=1e-3)
        assert (len(synced) > before) == (name == "big.h5")
        with h5py.File(tmp_path / name, "r") as f:
            numpy.testing.assert_array_equal(
                TwoTimeResult.read_maps(f["entry/xpcs/twotime/maps"]), tt.C)


def test_pending_files_are_invisible_until_committed_together(tmp_path, monkeypatch):
    from ewoksxpcs.io import save

    a, b = save.PendingFile(tmp_path / "a.png"), save.PendingFile(tmp_path / "b.h5")
    a.write(b"png")
    b.write(b"h5")
    assert os.listdir(tmp_path) == []  # unnamed while written
    assert save.commit([a, b]) == [str(tmp_path / "a.png"), str(tmp_path / "b.h5")]
    assert sorted(os.listdir(tmp_path)) == ["a.png", "b.h5"]
    # Without overwrite, a target that appeared meanwhile is not replaced, and the pair is not
    # half committed: the file placed before it is removed again.
    c, d = save.PendingFile(tmp_path / "c.png"), save.PendingFile(tmp_path / "d.h5")
    (tmp_path / "d.h5").write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        save.commit([c, d])
    assert sorted(os.listdir(tmp_path)) == ["a.png", "b.h5", "d.h5"]
    assert (tmp_path / "d.h5").read_bytes() == b"someone else's"
    # Where unnamed files cannot be linked, the content is copied to a named temporary.
    monkeypatch.setattr(save, "_link_fd", lambda fd, name: (_ for _ in ()).throw(OSError(18, "x")))
    e = save.PendingFile(tmp_path / "a.png", overwrite=True)
    e.write(b"new png")
    save.commit([e])
    assert (tmp_path / "a.png").read_bytes() == b"new png"
    assert sorted(os.listdir(tmp_path)) == ["a.png", "b.h5", "d.h5"]


@pytest.mark.parametrize("shape, dtype", [((2162, 2068), "float64"), ((301, 7), "int32"),
                                          ((5, 70000), "uint16"), ((0, 4), "float64")])
def test_gzip_image_is_a_plain_gzip_dataset(tmp_path, shape, dtype):
    """Chunks compressed in threads (the last one padded) read back exactly through h5py, as a
    gzip dataset any HDF5 reader decodes."""
    from ewoksxpcs.io import save

    rng = numpy.random.default_rng(3)
    data = (rng.poisson(0.3, shape) * 7).astype(dtype)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        save.gzip_image(f, "image", data)
    with h5py.File(tmp_path / "a.h5", "r") as f:
        d = f["image"]
        assert d.dtype == data.dtype and d.shape == data.shape
        assert numpy.array_equal(d[()], data)
        if data.size:
            assert d.compression == "gzip" and d.chunks[1] == shape[1]
            assert d.chunks[0] < shape[0] or shape[0] * shape[1] * data.itemsize <= 1 << 20
