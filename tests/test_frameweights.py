"""Per-frame normalisation: a 30 % flux drift biases the symmetric multi-tau baseline; the monitor
(given, or a counter of the Bliss scan) recovers the true baseline."""

import h5py
import numpy
import pytest

from ewoksxpcs.app.cli import main
from ewoksxpcs.engine.frames import ArrayFrameSource
from ewoksxpcs.engine.frameweights import (
    FRAME_SUM,
    WeightedFrameSource,
    apply_normalisation,
    frame_weights,
    read_monitor,
)
from ewoksxpcs.io.load import HDF5FrameSource
from ewoksxpcs.workflow.pipeline import correlate_sums, normalise_sums
from ewoksxpcs.tools.synthetic import SyntheticXPCS

N = 2000


@pytest.fixture(scope="module")
def drift():
    """Speckle with known g2 (baseline 1) seen through a flux falling linearly by 30 %: the
    counts are thinned by F(t) (Poisson thinning keeps the statistics exact)."""
    sim = SyntheticXPCS(shape=(48, 48), n_frames=N, mean_counts=1.0, contrast=0.3,
                        diffusion=2e6, n_bins=2, q_range=(0.004, 0.008), q_per_pixel=2e-4,
                        seed=2, dtype="uint16")
    flux = numpy.linspace(1.0, 0.7, N)
    frames = numpy.random.default_rng(0).binomial(sim.frames(), flux[:, None, None])
    return sim, frames.astype(numpy.uint16), flux


def baseline(frames, labels, normalisation, **kw):
    c = correlate_sums(frames, labels, mode="multitau",
                       mode_options={"normalisation": normalisation}, **kw)
    r = normalise_sums(c["sums"], c["binning"], mode="multitau", mode_options=c["mode_options"])
    res = r["result"]
    sel = (res.lags > 200) & (res.lags < 1000)  # decayed: Γ·τ >= 10
    return res.g2[:, sel].mean(axis=1), res


def test_monitor_recovers_the_baseline(drift):
    sim, frames, flux = drift
    raw, _ = baseline(frames, sim.labels, "symmetric")
    assert (raw - 1 > 0.003).all()  # ⟨F²⟩/⟨F⟩² − 1 ≈ 0.5 %
    fixed, res = baseline(frames, sim.labels, "symmetric", normalise_by=flux * 1234.0)
    numpy.testing.assert_allclose(fixed, 1.0, atol=0.0015)
    assert res.n2.dtype == numpy.float64  # weighted frames: float sums
    # The standard normalisation (a ratio of sums over the same pairs) is drift-robust.
    std, _ = baseline(frames, sim.labels, "standard")
    numpy.testing.assert_allclose(std, 1.0, atol=0.0015)
    # Frame sums as the monitor: the same correction.
    by_sum, _ = baseline(frames, sim.labels, "symmetric", normalise_by=FRAME_SUM)
    numpy.testing.assert_allclose(by_sum, 1.0, atol=0.0015)


def test_weights():
    numpy.testing.assert_allclose(frame_weights([1.0, 2.0, 0.0, 4.0]), [7 / 3, 7 / 6, 0, 7 / 12])
    with pytest.raises(ValueError, match="zero or invalid on every frame"):
        frame_weights([0.0, -1.0])
    frames = numpy.arange(24, dtype=numpy.uint16).reshape(3, 2, 4)
    src = WeightedFrameSource(ArrayFrameSource(frames), [1.0, 0.5, 0.0])
    chunk = numpy.concatenate(list(src.iter_chunks(2)))
    assert chunk.dtype == numpy.float32
    numpy.testing.assert_array_equal(chunk, frames * numpy.array([1.0, 0.5, 0.0])[:, None, None])
    assert src.excluded.tolist() == [False, False, True]
    with pytest.raises(ValueError, match="2 monitor values for 3 frames"):
        apply_normalisation(frames, numpy.ones(2))


def test_bliss_counter_and_cli(drift, tmp_path, capsys):
    sim, frames, flux = drift
    scan = str(tmp_path / "scan.h5")
    with h5py.File(scan, "w") as f:
        f["1.1/instrument/eiger/data"] = frames[:600]
        f["1.1/measurement/eiger"] = h5py.SoftLink("/1.1/instrument/eiger/data")
        f["1.1/measurement/mon"] = flux * 1e5
        f["1.1/labels"] = sim.labels
    src = HDF5FrameSource(scan, "/1.1/measurement/eiger", start=10, stop=500, step=2)
    numpy.testing.assert_allclose(read_monitor(src, "mon"), flux[10:500:2] * 1e5)
    with pytest.raises(ValueError, match="no counter 'i0'"):
        read_monitor(src, "i0")
    out = str(tmp_path / "r.h5")
    argv = ["run", f"{scan}::/1.1/measurement/eiger", "--qmask", f"{scan}::/1.1/labels",
            "-o", out, "--mode", "multitau", "--normalisation", "symmetric", "--frame-period",
            "1e-3", "--normalise-by", "mon", "--no-plot", "-q"]
    assert main(argv) == 0
    expected, _ = baseline(frames[:600], sim.labels, "symmetric", normalise_by=flux[:600])
    with h5py.File(out, "r") as f:
        assert f["entry/xpcs/parameters/correlate/normalise_by"][()] == b"mon"
        g2 = f["entry/xpcs/g2/g2"][()]
        lags = f["entry/xpcs/g2/lags"][()]
    sel = (lags > 200) & (lags < 1000)
    numpy.testing.assert_allclose(g2[:, sel].mean(axis=1), expected, rtol=1e-9)
    bad = argv[:5] + [str(tmp_path / "x.h5")] + argv[6:-3] + ["i0", "--no-plot", "-q"]
    assert main(bad) == 1
    assert "no counter 'i0'" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()
