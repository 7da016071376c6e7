"""Two-time correlation (NumPy backend) against direct transcriptions of the documented formulas
and scikit-beam's ``two_time_corr`` / ``one_time_from_two_time``."""

import numpy
import pytest

import ewoksxpcs
from ewoksxpcs.engine.events import compact
from ewoksxpcs.engine.frames import IterableFrameSource
from ewoksxpcs.engine.twotime import (
    TwoTimeResult,
    choose_time_bin,
    diagonal_means,
    partial_g2,
)
from ewoksxpcs.correlators import twotime


def _qmask(shape=(8, 9)):
    q = numpy.zeros(shape, dtype=int)
    q[:4] = 2
    q[4:] = 5
    q[0, 0] = 0
    q[-1, :3] = 7
    return q


def _frames(rng, n_frames, shape=(8, 9), lam=1.2, dtype=numpy.uint16):
    return rng.poisson(lam, (n_frames,) + shape).astype(dtype)


def _direct_C(frames, qmask, label, b):
    nt = frames.shape[0] // b
    x = frames[: nt * b].astype(float).reshape(nt, b, -1).sum(axis=1)
    a = x[:, (qmask == label).ravel()]
    S = a.sum(axis=1)
    with numpy.errstate(invalid="ignore", divide="ignore"):
        return a.shape[1] * (a @ a.T) / numpy.outer(S, S), S


@pytest.mark.parametrize("b", [1, 3])
def test_against_direct_formula(rng, b):
    frames = _frames(rng, 71)
    q = _qmask()
    r = twotime(frames, q, bins=[5, 2], time_bin=b, method="numpy")
    assert isinstance(r, TwoTimeResult)
    assert r.labels.tolist() == [2, 5]  # sorted, as every result
    assert r.C.dtype == numpy.float32 and r.C.shape == (2, 71 // b, 71 // b)
    assert r.time_bin == b and r.n_frames == 71
    for j, lab in enumerate((2, 5)):
        C, S = _direct_C(frames, q, lab, b)
        numpy.testing.assert_allclose(r.C[j], C, rtol=2e-7)
        numpy.testing.assert_array_equal(r.frame_sums[:, j], S)
        numpy.testing.assert_array_equal(r.C[j], r.C[j].T)
    numpy.testing.assert_allclose(r.times, numpy.arange(71 // b) * b + (b - 1) / 2)
    numpy.testing.assert_array_equal(r.g2_lags, numpy.arange(71 // b) * b)


def test_zero_intensity_gives_nan(rng):
    frames = _frames(rng, 20)
    q = _qmask()
    frames[:, q == 7] += 1  # photons in every frame …
    frames[4][q == 7] = 0  # … but frame 4
    r = twotime(frames, q, bins=[7], method="numpy")
    assert numpy.isnan(r.C[0, 4]).all() and numpy.isnan(r.C[0, :, 4]).all()
    assert numpy.isfinite(numpy.delete(numpy.delete(r.C[0], 4, 0), 4, 1)).all()
    # g2 from the map skips the NaN entries
    d = numpy.diagonal(r.C[0], 1).astype(float)
    assert r.g2[0, 1] == pytest.approx(numpy.nanmean(d), rel=1e-12)


def test_bad_bins_and_options(rng):
    frames = _frames(rng, 20)
    with pytest.raises(ValueError, match=r"\[3\] are not qmask labels"):
        twotime(frames, _qmask(), bins=[2, 3], method="numpy")
    with pytest.raises(ValueError, match="time_bin"):
        twotime(frames, _qmask(), time_bin=0, method="numpy")
    with pytest.raises(ValueError, match="n_segments"):
        twotime(frames, _qmask(), n_segments=0, method="numpy")
    with pytest.raises(ValueError, match="two-time method"):
        twotime(frames, _qmask(), method="fast")


def test_choose_time_bin():
    assert choose_time_bin(100_000, None, 10_000) == 10
    assert choose_time_bin(100_001, None, 10_000) == 11
    assert choose_time_bin(5, None, 10) == 1
    assert choose_time_bin(None, None, 10) == 1
    assert choose_time_bin(100, 7, 10) == 7
    for n, mx in ((99_999, 1000), (12345, 77), (10, 3)):
        b = choose_time_bin(n, None, mx)
        assert n // b <= mx and n // (b - 1 if b > 1 else 1) >= (mx if b > 1 else 0)


def test_auto_time_bin_bounds_the_map(rng):
    frames = _frames(rng, 95)
    q = _qmask()
    r = twotime(frames, q, bins=[2], method="numpy", max_frames=20)
    assert r.time_bin == 5 and r.C.shape == (1, 19, 19)
    C, _ = _direct_C(frames, q, 2, 5)
    numpy.testing.assert_allclose(r.C[0], C, rtol=2e-7)
    # unknown length: frames are kept, then re-binned to fit max_frames
    chunks = [frames[:30], frames[30:]]
    r2 = twotime(IterableFrameSource(iter(chunks)), q, bins=[2], method="numpy", max_frames=20)
    assert r2.C.shape[-1] <= 20
    C2, _ = _direct_C(frames, q, 2, r2.time_bin)
    numpy.testing.assert_allclose(r2.C[0], C2, rtol=2e-7)


def test_g2_and_partial_g2(rng):
    frames = _frames(rng, 60)
    q = _qmask()
    r = twotime(frames, q, method="numpy", time_bin=2, n_segments=3)
    C = r.C.astype(float)
    n = C.shape[-1]
    for tau in (0, 1, 7, n - 1):
        d = numpy.diagonal(C, tau, axis1=1, axis2=2)
        numpy.testing.assert_allclose(r.g2[:, tau], d.mean(axis=1), rtol=1e-12)
        if d.shape[1] > 1:
            numpy.testing.assert_allclose(
                r.g2_err[:, tau], d.std(axis=1, ddof=1) / numpy.sqrt(d.shape[1]), rtol=1e-9)
    assert numpy.isnan(r.g2_err[:, n - 1]).all()  # a single entry: no error
    edges = (numpy.arange(4) * n) // 3
    numpy.testing.assert_array_equal(r.segment_edges, edges * 2)
    for s in range(3):
        a, b = edges[s], edges[s + 1]
        for tau in range(b - a):
            d = numpy.diagonal(C[:, a:b, a:b], tau, axis1=1, axis2=2)
            numpy.testing.assert_allclose(r.partial_g2[:, s, tau], d.mean(axis=1), rtol=1e-12)
        assert numpy.isnan(r.partial_g2[:, s, b - a:]).all()
    numpy.testing.assert_array_equal(r.partial_lags, numpy.arange(r.partial_g2.shape[-1]) * 2)
    g, e, lags, ed = partial_g2(r.C, 1, 2)
    numpy.testing.assert_allclose(g[:, 0], r.g2)


def test_diagonal_means_ignores_nan():
    C = numpy.arange(16, dtype=float).reshape(1, 4, 4)
    C[0, 0, 1] = numpy.nan
    mean, err = diagonal_means(C)
    assert mean[0, 1] == pytest.approx((6 + 11) / 2)
    assert mean[0, 3] == 3 and numpy.isnan(err[0, 3])


def test_against_scikit_beam(rng):
    skbeam = pytest.importorskip("skbeam.core.correlation")
    frames = _frames(rng, 40, lam=2.0)
    q = _qmask()
    r = twotime(frames, q, method="numpy")
    res = skbeam.two_time_corr(q, frames.astype(float), 40, 40, 1)
    numpy.testing.assert_allclose(r.C, res.g2, rtol=1e-6)
    g2 = skbeam.one_time_from_two_time(res.g2)
    numpy.testing.assert_allclose(r.g2, g2, rtol=1e-6)


@pytest.mark.parametrize("dtype", [numpy.uint8, numpy.int32, numpy.float32])
def test_events_equal_dense(rng, dtype):
    frames = _frames(rng, 50, lam=0.4, dtype=dtype)
    q = _qmask()
    dense = twotime(frames, q, time_bin=3, method="numpy")
    ev = twotime(compact(frames), q, time_bin=3, method="numpy")
    numpy.testing.assert_array_equal(ev.C, dense.C)
    numpy.testing.assert_array_equal(ev.frame_sums, dense.frame_sums)


def test_correlate_mode_twotime(rng):
    frames = _frames(rng, 30)
    q = _qmask()
    r = ewoksxpcs.correlate(frames, q, mode="twotime", method="numpy", twotime_bins=[5],
                            time_bin=2)
    assert isinstance(r, TwoTimeResult)
    assert r.labels.tolist() == [5] and r.C.shape == (1, 15, 15)


def test_write_nexus(rng, tmp_path):
    h5py = pytest.importorskip("h5py")
    frames = _frames(rng, 30)
    r = twotime(frames, _qmask(), bins=[2, 5], time_bin=2, method="numpy")
    with h5py.File(tmp_path / "r.h5", "w") as f:
        r.write_nexus(f)
    with h5py.File(tmp_path / "r.h5", "r") as f:
        m = f["twotime/maps"]
        assert m.attrs["NX_class"] == "NXdata" and m.attrs["signal"] == "C"
        assert m["C"].attrs["interpretation"] == "image"  # silx view: an image per bin
        numpy.testing.assert_array_equal(TwoTimeResult.read_maps(m), r.C)
        # Displayed map: the diagonal (shot noise, far above the rest) is NaN so the automatic
        # colour scale spans the off-diagonal correlation; the diagonal is stored apart.
        shown, diag = m["C"][()], numpy.arange(r.C.shape[-1])
        assert numpy.isnan(shown[:, diag, diag]).all()
        numpy.testing.assert_array_equal(m["C_diagonal"][()], r.C[:, diag, diag])
        assert numpy.nanmax(shown) < numpy.nanmax(r.C[:, diag, diag])
        numpy.testing.assert_array_equal(f["twotime/g2/g2"][()], r.g2)
        assert f["twotime/partial_g2/g2"].shape == r.partial_g2.shape
        assert f["twotime/time_bin"][()] == 2


def test_write_nexus_uncompressed_maps_read_back_equal(rng, tmp_path, monkeypatch):
    """compress=False (live updates) and "auto" above GZIP_MAPS_MAX_BYTES: the same maps,
    stored without gzip; True and "auto" below it: gzip."""
    import dataclasses

    from ewoksxpcs.engine import twotime as twotime_module

    h5py = pytest.importorskip("h5py")
    r = twotime(_frames(rng, 30), _qmask(), bins=[2, 5], time_bin=2, method="numpy")
    # Maps above the gzip threshold (2**20 values), of rounded values as Poisson data give.
    big = dataclasses.replace(r, C=(rng.integers(0, 8, (2, 1030, 1030)) / 4).astype("f4"))
    sizes = {}
    cases = [(True, None, "gzip"), (False, None, None),
             ("auto", big.C.nbytes, "gzip"), ("auto", big.C.nbytes - 1, None)]
    for i, (compress, limit, expected) in enumerate(cases):
        if limit is not None:
            monkeypatch.setattr(twotime_module, "GZIP_MAPS_MAX_BYTES", limit)
        name = tmp_path / f"r{i}.h5"
        with h5py.File(name, "w") as f:
            big.write_nexus(f, compress=compress)
        with h5py.File(name, "r") as f:
            m = f["twotime/maps"]
            assert m["C"].compression == expected, compress
            numpy.testing.assert_array_equal(TwoTimeResult.read_maps(m), big.C, strict=True)
        sizes[expected] = name.stat().st_size
    assert sizes[None] > 2 * sizes["gzip"]
    with h5py.File(tmp_path / "bad.h5", "w") as f, pytest.raises(ValueError, match="compress"):
        big.write_nexus(f, compress="yes")


def test_auto_never_uses_an_opencl_cpu_device():
    # OpenCL on a CPU device is many times slower than NumPy for two-time and multi-tau:
    # "auto" with a CPU device (named or by kind) runs NumPy.
    from ewoksxpcs.correlators.modes import create_multitau, create_twotime
    from ewoksxpcs.engine.multitau import NumpyMultiTau
    from ewoksxpcs.engine.twotime import NumpyTwoTime

    q = numpy.ones((4, 5), int)
    specs = ["cpu", None]
    try:
        from ewoksxpcs.opencl.device import list_devices

        specs += [d["spec"] for d in list_devices() if d["kind"] == "cpu"]
    except Exception:  # no OpenCL platform: the named-device case is not there to test
        pass
    frames = numpy.ones((8, 4, 5), dtype=numpy.uint8)
    for device in specs:
        assert isinstance(create_twotime(q, method="auto", device=device), NumpyTwoTime), device
        assert isinstance(create_twotime(q, method="auto", device=device, data=frames),
                          NumpyTwoTime), device
        assert isinstance(create_multitau(q, method="auto", device=device), NumpyMultiTau), device


@pytest.mark.parametrize("density", [0.02, 0.5])
def test_gram_exact_sparse_and_dense(density, rng, monkeypatch):
    # Sparse integer frames: pairs of non-zero values tile by tile (tiles of 16 here, so the
    # 50 time bins span several, partial ones included); dense ones: BLAS syrk. Both exact.
    from ewoksxpcs.engine import twotime as engine_twotime

    monkeypatch.setattr(engine_twotime, "GRAM_TILE", 16)
    x = (rng.random((50, 300)) < density) * rng.integers(1, 200, (50, 300))
    for dtype in (numpy.uint8, numpy.int32):
        G = engine_twotime.gram(x.astype(dtype))
        exact = x.astype(numpy.int64) @ x.T.astype(numpy.int64)
        assert numpy.array_equal(G, numpy.triu(exact))
        assert (G.dtype == numpy.int64) == (density < engine_twotime.GRAM_EVENTS_DENSITY)
    # Values whose squares summed over a time bin pass 2**31: int64 tiles, still exact.
    big = x.astype(numpy.int64) * 2**12
    G = engine_twotime.gram(big)
    assert numpy.array_equal(G, numpy.triu(big @ big.T))


def test_unbinned_integer_frames_keep_their_type():
    # time_bin 1: no wider copy of every frame; binning further later sums in a wider type.
    from ewoksxpcs.engine.twotime import TwoTimeStream, binned_dtype

    assert binned_dtype(numpy.uint8, 1) == numpy.uint8
    assert binned_dtype(numpy.uint8, 2) == numpy.int32
    s = TwoTimeStream(numpy.arange(6), None, max_frames=4, dtype=numpy.uint8)
    frames = numpy.full((8, 2, 3), 200, dtype=numpy.uint8)
    s.feed(frames[:5])
    s.feed(frames[5:])
    x, b, n = s.binned()
    assert (b, n) == (2, 8) and x.shape == (4, 6)
    assert numpy.all(x == 400)
