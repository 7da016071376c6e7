import os

import h5py
import numpy as np
import pytest

from ewoksxpcs.tools.synthetic import (
    ALLOWED_DTYPES,
    SyntheticData,
    SyntheticSpec,
    SyntheticXPCS,
    generate,
)

# several random-number blocks (block_pixels=100) so that threading matters
SMALL = dict(
    shape=(24, 32), n_frames=40, n_bins=4, mean_counts=0.5, seed=3, block_pixels=100
)


def _concat(chunks):
    return np.concatenate(list(chunks), axis=0)


def _bitshuffle_filter_ids(dset):
    plist = dset.id.get_create_plist()
    return [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]


# ---------------------------------------------------------------- geometry


def test_labels_and_q_default_geometry():
    sim = SyntheticXPCS(**SMALL)
    assert sim.labels.shape == (24, 32)
    assert sim.labels.dtype == np.int32
    # default q range reaches the farthest corner: every pixel labelled
    assert sim.labels.min() == 1 and sim.labels.max() == 4
    assert sim.q.shape == (4,) and sim.q.dtype == np.float64
    assert sim.gamma.shape == (4,) and sim.gamma.dtype == np.float64
    assert np.all(np.diff(sim.q) > 0)
    for b in range(1, 5):
        sel = sim.labels == b
        assert sim.n_pixels[b - 1] == sel.sum()
        assert sim.q[b - 1] == pytest.approx(sim.q_map[sel].mean())
        assert sim.q_edges[b - 1] <= sim.q[b - 1] <= sim.q_edges[b]
        assert sim.q_map[sel].min() >= sim.q_edges[b - 1]
        assert sim.q_map[sel].max() <= sim.q_edges[b]
    np.testing.assert_allclose(sim.gamma, sim.spec.diffusion * sim.q**2)
    # q proportional to the distance from the default beam centre
    y0, x0 = sim.spec.beam_center
    assert (y0, x0) == (11.5, 15.5)
    assert sim.q_map[0, 0] == pytest.approx(1e-4 * np.hypot(11.5, 15.5))


def test_labels_q_range_beam_center_and_mask():
    mask = np.zeros((24, 32), bool)
    mask[:, :4] = True
    sim = SyntheticXPCS(
        shape=(24, 32),
        n_bins=3,
        q_per_pixel=0.01,
        q_range=(0.05, 0.2),
        beam_center=(2.0, 30.0),
        mask=mask,
        n_frames=5,
    )
    yy, xx = np.mgrid[:24, :32]
    q = 0.01 * np.hypot(yy - 2.0, xx - 30.0)
    inside = (q >= 0.05) & (q <= 0.2) & ~mask
    np.testing.assert_array_equal(sim.labels > 0, inside)
    expected = np.clip(np.floor((q - 0.05) / 0.05).astype(int) + 1, 1, 3)
    np.testing.assert_array_equal(sim.labels[inside], expected[inside])
    frames = sim.frames()
    assert np.all(frames[:, ~inside] == 0)


def test_spec_object_and_overrides():
    spec = SyntheticSpec(**SMALL)
    sim = SyntheticXPCS(spec, seed=11, contrast=[0.1, 0.2, 0.3, 0.4])
    assert sim.spec.seed == 11
    np.testing.assert_array_equal(sim.contrast, [0.1, 0.2, 0.3, 0.4])
    np.testing.assert_array_equal(sim.mean_counts, [0.5] * 4)
    assert spec.seed == 3  # not modified
    assert sim.spec.exposure_time == sim.spec.frame_period


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(contrast=0.0),
        dict(contrast=1.5),
        dict(mean_counts=-1.0),
        dict(mean_counts=[0.1, 0.2]),
        dict(dtype="float64"),
        dict(frame_period=0.0),
        dict(diffusion=-1.0),
        dict(n_frames=0),
        dict(q_range=(0.2, 0.1)),
        dict(overflow="wrap"),
        dict(mask=np.zeros((3, 3), bool)),
    ],
)
def test_invalid_parameters(kwargs):
    with pytest.raises(ValueError):
        SyntheticXPCS(**{**SMALL, **kwargs})


# ---------------------------------------------------------------- frames


@pytest.mark.parametrize("dtype", ALLOWED_DTYPES)
def test_frames_shape_dtype(dtype):
    sim = SyntheticXPCS(**SMALL, dtype=dtype, q_range=(0.0005, 0.0015))
    frames = sim.frames()
    assert frames.shape == (40, 24, 32)
    assert frames.dtype == np.dtype(dtype)
    assert np.all(frames >= 0)
    assert np.all(frames == np.round(frames))
    assert np.all(frames[:, sim.labels == 0] == 0)
    assert frames[:, sim.labels > 0].sum() > 0
    chunks = list(sim.iter_chunks(16))
    assert [c.shape[0] for c in chunks] == [16, 16, 8]
    assert all(c.dtype == np.dtype(dtype) and c.shape[1:] == (24, 32) for c in chunks)


def test_deterministic_and_independent_of_chunks_and_threads():
    sim = SyntheticXPCS(**SMALL)
    assert len(sim._make_blocks()) > 2
    ref = sim.frames()
    assert ref.sum() > 0
    np.testing.assert_array_equal(_concat(sim.iter_chunks(7)), ref)
    np.testing.assert_array_equal(_concat(sim.iter_chunks(1)), ref)
    np.testing.assert_array_equal(_concat(sim.iter_chunks(1000)), ref)
    np.testing.assert_array_equal(SyntheticXPCS(**SMALL, n_threads=1).frames(), ref)
    np.testing.assert_array_equal(SyntheticXPCS(**SMALL, n_threads=3).frames(), ref)
    # same seed, new object: same frames; other seed: different frames
    np.testing.assert_array_equal(SyntheticXPCS(**SMALL).frames(), ref)
    other = SyntheticXPCS(**{**SMALL, "seed": 4}).frames()
    assert not np.array_equal(other, ref)


def test_generate():
    result = generate(**SMALL)
    assert isinstance(result, SyntheticData)
    frames, labels, q, g2 = result
    sim = SyntheticXPCS(**SMALL)
    np.testing.assert_array_equal(frames, sim.frames())
    np.testing.assert_array_equal(labels, sim.labels)
    np.testing.assert_array_equal(q, sim.q)
    np.testing.assert_array_equal(g2([0, 1, 5]), sim.analytic_g2([0, 1, 5]))


def test_overflow_clip_and_raise():
    kw = dict(shape=(8, 8), n_frames=3, n_bins=1, mean_counts=400.0, seed=1)
    clipped = SyntheticXPCS(**kw).frames()
    assert clipped.dtype == np.uint8
    assert clipped.max() == 255
    wide = SyntheticXPCS(**kw, dtype="uint16").frames()
    assert wide.max() > 255
    np.testing.assert_array_equal(clipped, np.minimum(wide, 255))
    with pytest.raises(OverflowError):
        SyntheticXPCS(**kw, overflow="raise").frames()


# ---------------------------------------------------------------- physics


def test_analytic_g2():
    sim = SyntheticXPCS(**{**SMALL, "contrast": [0.1, 0.2, 0.3, 0.4]})
    lags = np.array([0, 1, 3, 10**7])
    g2 = sim.analytic_g2(lags)
    assert g2.shape == (4, 4) and g2.dtype == np.float64
    np.testing.assert_allclose(g2[:, 0], 1 + sim.contrast + 1 / sim.mean_counts)
    dt = sim.spec.frame_period
    np.testing.assert_allclose(
        g2[:, 2], 1 + sim.contrast * np.exp(-2 * sim.gamma * 3 * dt)
    )
    np.testing.assert_allclose(g2[:, 3], 1.0)
    no_shot = sim.analytic_g2(lags, shot_noise=False)
    np.testing.assert_allclose(no_shot[:, 0], 1 + sim.contrast)
    np.testing.assert_array_equal(no_shot[:, 1:], g2[:, 1:])
    with pytest.raises(ValueError):
        sim.analytic_g2([-1])


def _g2_numpy(frames, labels, lags):
    """Reference multi-pixel g2: N_q sum_t,p I(t)I(t+tau) / sum_t S(t)S(t+tau)."""
    nbins = labels.max()
    out = np.empty((nbins, len(lags)))
    for b in range(1, nbins + 1):
        x = frames[:, labels == b].astype(np.float64)
        s = x.sum(axis=1)
        npix = x.shape[1]
        for j, tau in enumerate(lags):
            n2 = np.einsum("tp,tp->", x[: x.shape[0] - tau], x[tau:])
            s2 = np.dot(s[: s.size - tau], s[tau:])
            out[b - 1, j] = npix * n2 / s2
    return out


def test_g2_statistics_match_analytic():
    from scipy.optimize import curve_fit

    beta, mu, dt = 0.3, 1.0, 1e-3
    sim = SyntheticXPCS(
        shape=(48, 48),
        n_frames=4000,
        n_bins=4,
        q_per_pixel=1e-4,
        q_range=(0.5e-3, 2.4e-3),
        diffusion=5.4e7,  # nm^2/s: Gamma*dt from ~0.03 to ~0.25
        frame_period=dt,
        mean_counts=mu,
        contrast=beta,
        seed=7,
    )
    assert np.all(sim.gamma * dt > 0.02) and np.all(sim.gamma * dt < 0.3)
    frames = sim.frames()
    lags = np.array([0, 1, 2, 3, 4, 6, 8, 11, 15, 20, 27, 36, 48, 60])
    g2 = _g2_numpy(frames, sim.labels, lags)
    expected = sim.analytic_g2(lags)

    # mean counts per pixel per frame
    for b in range(1, 5):
        assert frames[:, sim.labels == b].mean() == pytest.approx(mu, rel=0.03)
    # zero lag includes the shot-noise term 1/mu
    np.testing.assert_allclose(g2[:, 0], 1 + beta + 1 / mu, rtol=0.02)
    np.testing.assert_allclose(g2[:, 0], expected[:, 0], rtol=0.02)
    # whole curve within a small absolute tolerance
    assert np.max(np.abs(g2[:, 1:] - expected[:, 1:])) < 0.02

    # fit beta and Gamma per bin on tau >= 1
    def model(t, b, gam):
        return b * np.exp(-2 * gam * t)

    for b in range(4):
        sel = (lags > 0) & (expected[b] - 1 > 0.03)
        assert sel.sum() >= 4
        t = lags[sel] * dt
        (b_fit, g_fit), _ = curve_fit(
            model, t, g2[b, sel] - 1, p0=(0.2, sim.gamma[b] * 2)
        )
        assert b_fit == pytest.approx(beta, rel=0.1)
        assert g_fit == pytest.approx(sim.gamma[b], rel=0.1)


def test_per_bin_mean_counts_and_variance():
    # Var(n) = mu + beta mu**2 for Poisson counts of a mixed speckle intensity
    mus = np.array([0.01, 0.2, 1.0, 5.0])
    beta = 0.4
    sim = SyntheticXPCS(
        shape=(40, 40),
        n_frames=1500,
        n_bins=4,
        q_range=(0.0005, 0.0028),
        diffusion=1e9,  # fast: nearly independent frames
        mean_counts=mus,
        contrast=beta,
        dtype="uint16",
        seed=2,
    )
    np.testing.assert_array_equal(sim.mean_counts, mus)
    frames = sim.frames()
    g2 = sim.analytic_g2([0])
    for b in range(4):
        x = frames[:, sim.labels == b + 1].astype(np.float64)
        ncounts = mus[b] * x.size
        assert x.mean() == pytest.approx(mus[b], rel=5 / np.sqrt(ncounts) + 0.01)
        assert x.var() == pytest.approx(mus[b] + beta * mus[b] ** 2, rel=0.08)
        # g2(0) = <n^2>/<n>^2 = 1 + beta + 1/mu
        assert np.mean(x**2) / x.mean() ** 2 == pytest.approx(g2[b, 0], rel=0.08)
    assert frames.max() > 5  # the multi-photon path was exercised


# ---------------------------------------------------------------- HDF5


H5_SMALL = dict(shape=(12, 20), n_frames=9, n_bins=3, mean_counts=0.7, seed=5)


def test_write_bliss_h5_layout_and_round_trip(tmp_path):
    sim = SyntheticXPCS(**H5_SMALL, frame_period=2e-3, exposure_time=1.5e-3)
    filename = str(tmp_path / "scan.h5")
    assert sim.write_bliss_h5(filename, chunk_frames=4) == filename
    assert os.listdir(tmp_path) == ["scan.h5"]
    # usual permissions (those of a file created with open())
    ref = tmp_path / "ref"
    ref.write_bytes(b"")
    assert os.stat(filename).st_mode & 0o777 == os.stat(ref).st_mode & 0o777
    ref.unlink()
    with h5py.File(filename, "r") as f:
        entry = f["1.1"]
        assert entry.attrs["NX_class"] == "NXentry"
        assert "synthetic" in entry["title"][()].decode()
        assert entry["start_time"][()] and entry["end_time"][()]
        assert entry["instrument"].attrs["NX_class"] == "NXinstrument"
        det = entry["instrument/eiger"]
        assert det.attrs["NX_class"] == "NXdetector"
        assert entry["measurement"].attrs["NX_class"] == "NXcollection"
        dset = entry["measurement/eiger"]
        assert dset == det["data"]  # hard link: same object
        assert dset.shape == (9, 12, 20)
        assert dset.dtype == np.uint8
        assert dset.chunks == (1, 12, 20)
        assert 32008 in _bitshuffle_filter_ids(dset)  # bitshuffle
        # bitshuffle with LZ4: cd_values[4] == 2 (BSHUF_H5_COMPRESS_LZ4)
        plist = dset.id.get_create_plist()
        idx = _bitshuffle_filter_ids(dset).index(32008)
        assert plist.get_filter(idx)[2][4] == 2
        np.testing.assert_array_equal(dset[()], sim.frames())
        acq = det["acquisition"]
        assert acq["count_time"][()] == pytest.approx(1.5e-3)
        assert acq["exposure_time"][()] == pytest.approx(1.5e-3)
        assert acq["frame_period"][()] == pytest.approx(2e-3)
        assert acq["latency_time"][()] == pytest.approx(0.5e-3)
        assert acq["count_time"].attrs["units"] == "s"
        assert acq["nb_frames"][()] == 9
        assert det["acq_parameters/acq_expo_time"][()] == pytest.approx(1.5e-3)
        truth = entry["simulation"]
        np.testing.assert_array_equal(truth["labels"][()], sim.labels)
        np.testing.assert_array_equal(truth["q"][()], sim.q)
        np.testing.assert_array_equal(truth["gamma"][()], sim.gamma)
        np.testing.assert_array_equal(truth["contrast"][()], sim.contrast)
        np.testing.assert_array_equal(truth["mean_counts"][()], sim.mean_counts)
        assert truth["frame_period"][()] == pytest.approx(2e-3)


def test_write_bliss_h5_names(tmp_path):
    sim = SyntheticXPCS(**H5_SMALL, dtype="uint16")
    filename = tmp_path / "other.h5"
    sim.write_bliss_h5(filename, detector="pilatus", scan="2.1")
    with h5py.File(filename, "r") as f:
        dset = f["2.1/measurement/pilatus"]
        assert dset.dtype == np.uint16
        np.testing.assert_array_equal(dset[()], sim.frames())
        assert "1.1" not in f


def test_write_bliss_h5_no_overwrite(tmp_path):
    filename = str(tmp_path / "scan.h5")
    SyntheticXPCS(**H5_SMALL).write_bliss_h5(filename)
    other = SyntheticXPCS(**{**H5_SMALL, "seed": 6})
    with pytest.raises(FileExistsError, match="scan.h5"):
        other.write_bliss_h5(filename)
    with h5py.File(filename, "r") as f:
        np.testing.assert_array_equal(
            f["1.1/measurement/eiger"][()], SyntheticXPCS(**H5_SMALL).frames()
        )
    other.write_bliss_h5(filename, overwrite=True)
    with h5py.File(filename, "r") as f:
        np.testing.assert_array_equal(f["1.1/measurement/eiger"][()], other.frames())
    assert os.listdir(tmp_path) == ["scan.h5"]


@pytest.mark.parametrize("existing", [False, True])
def test_write_bliss_h5_failure_leaves_no_partial_file(tmp_path, existing):
    filename = tmp_path / "scan.h5"
    if existing:
        filename.write_bytes(b"previous")
    sim = SyntheticXPCS(**H5_SMALL)
    good = sim.iter_chunks

    def failing(chunk_frames=64):
        it = good(2)
        yield next(it)
        raise RuntimeError("simulated failure")

    sim.iter_chunks = failing
    with pytest.raises(RuntimeError, match="simulated failure"):
        sim.write_bliss_h5(filename, overwrite=True)
    if existing:
        assert os.listdir(tmp_path) == ["scan.h5"]
        assert filename.read_bytes() == b"previous"
    else:
        assert os.listdir(tmp_path) == []
