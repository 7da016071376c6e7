"""Bad frames: the excluded-pair g2 equals the definition on the remaining pairs (exact integers)
in every mode, detection finds the injected frames and no others, and the fit recovers Γ."""

import numpy
import pytest
from conftest import require_opencl

from ewoksxpcs import correlate
from ewoksxpcs.engine.badframes import (
    DEFAULT_THRESHOLD,
    ExcludedFrameSource,
    bad_frame_mask,
    detect_bad_frames,
    exclude_events,
    find_bad_frames,
    format_frame_list,
    frame_bin_sums,
    pair_counts,
    parse_frame_list,
)
from ewoksxpcs.engine.events import compact
from ewoksxpcs.engine.fit import fit_g2
from ewoksxpcs.engine.frames import ArrayFrameSource
from ewoksxpcs.workflow.pipeline import correlate_sums, normalise_sums
from ewoksxpcs.tools.synthetic import SyntheticXPCS


@pytest.fixture(scope="module")
def corrupted():
    """Speckle with known g2 and injected bad frames: zeros, beam dips, spikes."""
    sim = SyntheticXPCS(shape=(24, 24), n_frames=300, mean_counts=2.0, contrast=0.3,
                        diffusion=2e6, n_bins=3, q_per_pixel=2e-4, seed=3, dtype="uint16")
    clean = sim.frames()
    frames = clean.copy()
    bad = {"zeros": [7, 150], "dips": list(range(60, 64)), "spikes": [201, 250]}
    frames[bad["zeros"]] = 0
    frames[bad["dips"]] //= 4  # beam dip: a quarter of the flux
    frames[201, 10, 12] += 3000  # cosmic ray / hot burst
    frames[250] += 20  # uniform light leak
    injected = sorted(sum(bad.values(), []))
    return sim, clean, frames, injected


def oracle_sums(frames, labels, good, lags):
    """n2, s2 (n_bins, n_lags) int64 summed over the pairs (t, t+τ) with both frames good."""
    x = frames.reshape(frames.shape[0], -1).astype(numpy.int64)
    bins = numpy.unique(labels[labels > 0])
    n2 = numpy.zeros((bins.size, len(lags)), numpy.int64)
    s2 = numpy.zeros_like(n2)
    for i, b in enumerate(bins):
        xb = x[:, labels.ravel() == b]
        S = xb.sum(axis=1)
        for j, tau in enumerate(lags):
            t = numpy.flatnonzero(good[: x.shape[0] - tau] & good[tau:])
            n2[i, j] = int(numpy.einsum("tp,tp->", xb[t], xb[t + tau]))
            s2[i, j] = int(S[t] @ S[t + tau])
    return n2, s2


def test_frame_lists():
    numpy.testing.assert_array_equal(parse_frame_list("10, 200-203,5"), [5, 10, 200, 201, 202, 203])
    assert format_frame_list([10, 200, 201, 202, 5]) == "5,10,200-202"
    assert parse_frame_list(format_frame_list([1, 2, 3, 9])).tolist() == [1, 2, 3, 9]
    for spec in ("3-1", "a", "1,-2"):
        with pytest.raises(ValueError):
            parse_frame_list(spec)
    # Scan indices of a frame range [100:200:2].
    mask = bad_frame_mask("102,103,150-153", 50, numpy.arange(100, 200, 2))
    numpy.testing.assert_array_equal(numpy.flatnonzero(mask), [1, 25, 26])
    with pytest.raises(ValueError, match="beyond the scan's last frame 9"):
        bad_frame_mask("12", 10)


@pytest.mark.parametrize("method", ["reference", "fft", "matmul", "opencl-events"])
def test_linear_equals_remaining_pairs(corrupted, method):
    sim, _, frames, injected = corrupted
    good = numpy.ones(frames.shape[0], bool)
    good[injected] = False
    r = correlate(frames, sim.labels, method=method, bad_frames=format_frame_list(injected))
    lags = [0, 1, 2, 5, 17, 100, 298]
    n2, s2 = oracle_sums(frames, sim.labels, good, lags)
    assert r.n2.dtype == numpy.int64 and r.s2.dtype == numpy.int64
    numpy.testing.assert_array_equal(r.n2[:, lags], n2)
    numpy.testing.assert_array_equal(r.s2[:, lags], s2)
    numpy.testing.assert_array_equal(r.g2[:, lags], r.n_pixels[:, None] * n2 / s2)
    # The input array is not modified.
    assert frames[250].min() >= 20


def test_multitau_and_twotime(corrupted):
    sim, _, frames, injected = corrupted
    good = numpy.ones(frames.shape[0], bool)
    good[injected] = False
    linear = correlate(frames, sim.labels, method="reference", bad_frames=injected)
    std = correlate(frames, sim.labels, mode="multitau", method="numpy", bad_frames=injected)
    numpy.testing.assert_array_equal(std.g2[:, :8], linear.g2[:, :8])  # level 0: linear sums
    # Symmetric: past/future means and the pair count of the remaining pairs (level 0).
    sym = correlate(frames, sim.labels, mode="multitau", method="numpy", bad_frames=injected,
                    normalisation="symmetric")
    x = frames.reshape(frames.shape[0], -1).astype(numpy.int64)
    for i, b in enumerate(sym.labels):
        S = x[:, sim.labels.ravel() == b].sum(axis=1)
        for tau in (1, 3, 7):
            t = numpy.flatnonzero(good[:-tau] & good[tau:])
            expected = sym.n_pixels[i] * t.size * linear.n2[i, tau] / (S[t].sum() * S[t + tau].sum())
            assert sym.g2[i, tau] == pytest.approx(expected, rel=1e-12)
    numpy.testing.assert_array_equal(sym.n_pairs[:8], pair_counts(~good, good.size, range(8)))
    # Two-time: rows and columns of the bad frames are NaN, the rest is the clean definition.
    tt = correlate(frames, sim.labels, mode="twotime", method="numpy", bad_frames=injected,
                   time_bin=1)
    assert numpy.isnan(tt.C[:, injected, :]).all() and numpy.isnan(tt.C[:, :, injected]).all()
    ref = correlate(numpy.where(good[:, None, None], frames, 0), sim.labels, mode="twotime",
                    method="numpy", time_bin=1)
    numpy.testing.assert_array_equal(tt.C, ref.C)
    assert numpy.isfinite(tt.g2[:, 1:200]).all()


@pytest.mark.parametrize("device", ["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
def test_opencl_modes(corrupted, device):
    """Every OpenCL path with bad frames equals NumPy: linear (dense, events), multi-tau
    (symmetric: remaining-pair counts), two-time."""
    require_opencl(device)
    sim, _, frames, injected = corrupted
    ref = correlate(frames, sim.labels, method="reference", bad_frames=injected)
    for method in ("opencl-dense", "opencl-events"):
        r = correlate(frames, sim.labels, method=method, device=device, bad_frames=injected)
        numpy.testing.assert_array_equal(r.n2, ref.n2)
        numpy.testing.assert_array_equal(r.s2, ref.s2)
    for mode, opts in (("multitau", {"normalisation": "symmetric"}), ("twotime", {"time_bin": 1})):
        cpu = correlate(frames, sim.labels, mode=mode, method="numpy", bad_frames=injected, **opts)
        for method in ("opencl", "opencl-events"):  # frames streamed; events on the device
            dev = correlate(frames, sim.labels, mode=mode, method=method, device=device,
                            bad_frames=injected, **opts)
            numpy.testing.assert_allclose(dev.g2, cpu.g2, rtol=1e-6, equal_nan=True)
            assert numpy.array_equal(numpy.isnan(dev.g2), numpy.isnan(cpu.g2))


def test_events_and_sources(corrupted):
    sim, _, frames, injected = corrupted
    r = correlate(frames, sim.labels, method="reference", bad_frames=injected)
    events = compact(frames)
    mask = numpy.zeros(frames.shape[0], bool)
    mask[injected] = True
    e = correlate(events, sim.labels, method="fft", bad_frames=mask)
    numpy.testing.assert_array_equal(e.n2, r.n2)
    numpy.testing.assert_array_equal(e.s2, r.s2)
    kept = exclude_events(events, mask)
    assert not numpy.isin(kept.times, injected).any()
    # A frame range: indices are those of the original scan.
    src = ArrayFrameSource(frames, start=100, stop=260, step=2)
    wrapped = ExcludedFrameSource(src, bad_frame_mask(injected, src.n_frames, numpy.arange(100, 260, 2)))
    numpy.testing.assert_array_equal(numpy.flatnonzero(wrapped.mask), [(150 - 100) // 2, (250 - 100) // 2])
    # Every frame bad: refused.
    with pytest.raises(ValueError, match="every frame is a bad frame"):
        correlate(frames[:5], sim.labels, method="reference", bad_frames="0-4")


def test_auto_detection_finds_the_injected_frames(corrupted):
    sim, clean, frames, injected = corrupted
    assert find_bad_frames(frames, sim.labels).tolist() == injected
    assert find_bad_frames(clean, sim.labels).tolist() == []
    # The threshold is the documented one; the pipeline records what it found.
    sums = frame_bin_sums(frames, sim.labels)
    numpy.testing.assert_array_equal(numpy.flatnonzero(detect_bad_frames(sums, threshold=DEFAULT_THRESHOLD)), injected)
    out = correlate_sums(frames, sim.labels, method="reference", bad_frames="5", auto_bad_frames=True)
    assert out["bad_frames"]["given"].tolist() == [5]
    assert out["bad_frames"]["detected"].tolist() == injected
    res = normalise_sums(out["sums"], out["binning"])["result"]
    numpy.testing.assert_array_equal(numpy.flatnonzero(res.info["excluded_frames"]), sorted(injected + [5]))


def test_fit_recovers_gamma_only_with_the_bad_frames_excluded():
    """A 12-frame light leak (bright uniform frames, counted many times in the short lags) biases
    Γ; excluded, Γ is within 2 % of the truth."""
    sim = SyntheticXPCS(shape=(64, 64), n_frames=1000, mean_counts=1.0, contrast=0.3,
                        diffusion=4e6, n_bins=1, q_range=(0.004, 0.0045), q_per_pixel=1e-4,
                        seed=11, dtype="uint16", beam_center=(-40.0, 31.5))
    clean = sim.frames()
    frames = clean.copy()
    leak = numpy.arange(400, 412)
    frames[leak] += numpy.random.default_rng(0).poisson(8.0, frames[leak].shape).astype(numpy.uint16)
    frames[[100, 700]] = 0
    truth = sim.gamma[0] * sim.spec.frame_period  # per frame
    bad = find_bad_frames(frames, sim.labels)
    assert set(leak) | {100, 700} == set(bad.tolist())
    lags = numpy.arange(1000)
    fits = {}
    for name, kw in (("raw", {}), ("excluded", {"bad_frames": bad})):
        r = correlate(frames, sim.labels, method="fft", **kw)
        fits[name] = fit_g2(lags, r.g2, r.g2_err, tau_max=100).gamma[0] / truth - 1
    assert abs(fits["excluded"]) < 0.02
    assert abs(fits["raw"]) > 0.02


def test_cli(corrupted, tmp_path, capsys):
    """``ewoksxpcs run --bad-frames … --auto-bad-frames --fit kww``: what was excluded is saved."""
    import h5py

    from ewoksxpcs.app.cli import main

    sim, _, frames, injected = corrupted
    scan = str(tmp_path / "scan.h5")
    with h5py.File(scan, "w") as f:
        f["1.1/measurement/eiger"] = frames
        f["1.1/labels"] = sim.labels
    common = ["run", f"{scan}::/1.1/measurement/eiger", "--qmask", f"{scan}::/1.1/labels",
              "--frame-period", "1e-3", "-q"]
    out = str(tmp_path / "r.h5")
    assert main(common + ["-o", out, "--start", "2", "--bad-frames", "3,290-292",
                          "--auto-bad-frames", "--fit", "kww"]) == 0
    expected = correlate(frames[2:], sim.labels, method="reference",
                         bad_frames=numpy.array(sorted(set(injected) | {3, 290, 291, 292})) - 2)
    with h5py.File(out, "r") as f:
        p = f["entry/xpcs/parameters/correlate/bad_frames"]
        assert p["given"][()] == b"3,290-292"
        assert p["detected"][()].decode() == format_frame_list(injected)
        numpy.testing.assert_array_equal(f["entry/xpcs/sums/n2"][()], expected.n2)
        excluded = f["entry/xpcs/excluded_frames/excluded"][()]
        assert excluded.sum() == len(injected) + 4
        assert f["entry/xpcs/fit/model_name"][()] == b"kww" and "alpha" in f["entry/xpcs/fit"]
        assert f["entry/xpcs/fit/status"].shape == (3,)
    for argv in (["--bad-frames", "9-3"], ["--auto-bad-frames", "-1"], ["--fit", "exp", "--no-fit"]):
        bad = str(tmp_path / "bad.h5")
        assert main(common + ["-o", bad] + argv) in (1, 2)
        assert capsys.readouterr().err.count("\n") == 1
        assert not (tmp_path / "bad.h5").exists()


def test_saved_intensity_skips_excluded_frames(corrupted, tmp_path):
    import h5py

    from ewoksxpcs.io.save import save_results

    sim, _, frames, injected = corrupted
    r = correlate(frames, sim.labels, method="fft", bad_frames=injected)
    save_results(str(tmp_path / "r.h5"), r, sim.q, r.lags * 1e-3, frame_period=1e-3)
    with h5py.File(tmp_path / "r.h5", "r") as f:
        inten = f["entry/xpcs/intensity/intensity"][()]
        assert f["entry/xpcs/excluded_frames/indices"][()].tolist() == injected
    assert numpy.isnan(inten[:, injected]).all() and numpy.isfinite(numpy.delete(inten, injected, 1)).all()


def test_detection_pass_is_cancellable(corrupted):
    from ewoksxpcs.workflow.cancellation import CancelToken, Cancelled

    sim, _, frames, _ = corrupted
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled, match="bad-frame detection cancelled"):
        correlate_sums(frames, sim.labels, method="fft", auto_bad_frames=True, token=token)


def test_no_false_alarm_at_low_counts():
    """0.005 counts per pixel per frame: most bin sums are 0; nothing is flagged."""
    rng = numpy.random.default_rng(3)
    frames = rng.poisson(0.005, (2000, 16, 16)).astype(numpy.uint8)
    labels = numpy.repeat(numpy.arange(1, 5), 64).reshape(16, 16)
    assert find_bad_frames(frames, labels).size == 0
    frames[700] = 1  # a frame of ones: 256 counts where 1.3 are expected
    assert find_bad_frames(frames, labels).tolist() == [700]
