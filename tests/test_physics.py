"""Physics: g2 of simulated Brownian motion, and calibration of the error bars.

Data: :class:`ewoksxpcs.tools.synthetic.SyntheticXPCS`, two annular q bins (≈ 530 and ≈ 920 pixels),
800 frames, mean 1 count per pixel per frame, contrast β = 0.3, relaxation rates Γ = 62.5 and
≈ 161 s⁻¹ at a 1 ms frame period, so the slow bin's g2 decays over 1/(2Γ) = 8 frames and the
series covers 100 of its correlation times. Known truth: g2(τ) = 1 + β·exp(−2Γτ) for τ ≥ 1 frame,
g2(0) = 1 + β + 1/μ.
"""

from __future__ import annotations

import numpy
import pytest

from ewoksxpcs import correlate
from ewoksxpcs.correlators import METHODS

synthetic = pytest.importorskip("ewoksxpcs.tools.synthetic")
curve_fit = pytest.importorskip("scipy.optimize").curve_fit

FRAME_PERIOD = 1e-3  # s
GAMMA_SLOW = 1 / (16 * FRAME_PERIOD)  # s⁻¹: g2 decays as exp(-2Γτ), over 8 frames
N_FRAMES = 800
CONTRAST = 0.3
MEAN_COUNTS = 1.0
N_REALIZATIONS = 16

#: The fastest CPU method available (the physics does not depend on it: test_correlate checks
#: that all methods agree).
METHOD = next(m for m in ("fft", "matmul", "reference") if m in METHODS)


def simulation(seed):
    spec = dict(shape=(48, 48), n_frames=N_FRAMES, n_bins=2, q_per_pixel=1e-3,
                q_range=(8e-3, 23e-3), frame_period=FRAME_PERIOD, mean_counts=MEAN_COUNTS,
                contrast=CONTRAST, seed=seed, n_threads=1)
    q_slow = synthetic.SyntheticXPCS(diffusion=1.0, **spec).q[0]
    return synthetic.SyntheticXPCS(diffusion=GAMMA_SLOW / q_slow**2, **spec)


def model(tau, beta, gamma):
    return 1.0 + beta * numpy.exp(-2.0 * gamma * tau)


@pytest.fixture(scope="module")
def realizations():
    """g2, g2_err (n_real, n_bins, Nt) of independent realizations, and the simulation."""
    g2, err = [], []
    for seed in range(N_REALIZATIONS):
        sim = simulation(seed)
        result = correlate(sim.frames(), sim.labels, method=METHOD)
        g2.append(result.g2)
        err.append(result.g2_err)
    return numpy.array(g2), numpy.array(err), result, sim


def test_well_sampled(realizations):
    _, _, result, sim = realizations
    assert (sim.n_pixels >= 500).all()
    assert N_FRAMES * FRAME_PERIOD * 2 * sim.gamma.min() >= 100  # correlation times covered
    numpy.testing.assert_array_equal(result.labels, [1, 2])
    numpy.testing.assert_array_equal(result.n_pixels, sim.n_pixels)
    numpy.testing.assert_allclose(sim.gamma[0], GAMMA_SLOW)


@pytest.mark.parametrize("realization", [0, 1, 2])
def test_fit_recovers_gamma_and_contrast(realizations, realization):
    g2, err, result, sim = realizations
    tau = result.lags * FRAME_PERIOD
    fit = slice(1, 100)  # lags >= 1: lag 0 carries the shot noise; ~12 decay times of the slow bin
    for row in range(2):
        (beta, gamma), _ = curve_fit(model, tau[fit], g2[realization, row, fit],
                                     p0=(0.1, 30.0), sigma=err[realization, row, fit],
                                     absolute_sigma=True)
        assert beta == pytest.approx(sim.contrast[row], rel=0.05)
        assert gamma == pytest.approx(sim.gamma[row], rel=0.05)


def test_zero_lag_shot_noise(realizations):
    g2, err, _, sim = realizations
    truth = sim.analytic_g2([0])[:, 0]  # 1 + β + 1/μ
    numpy.testing.assert_allclose(truth, 1 + CONTRAST + 1 / MEAN_COUNTS)
    # g2 = N·n2/s2 is a ratio of sums: at lag 0 with N independent pixels,
    # E[s2]/Nt = N²μ² + N·Var(I) with Var(I) = μ + βμ², so the estimator converges to
    # truth / (1 + (1/μ + β)/N) — a 0.1–0.3 % shift here, many standard errors over 16 runs.
    expected = truth / (1 + (1 / MEAN_COUNTS + CONTRAST) / sim.n_pixels)
    mean = g2[:, :, 0].mean(axis=0)
    sem = err[:, :, 0].mean(axis=0) / numpy.sqrt(N_REALIZATIONS)
    assert (numpy.abs(mean - expected) < 5 * sem).all(), (mean, expected, sem)
    assert (numpy.abs(mean - truth) > numpy.abs(mean - expected)).all()


def test_g2_unbiased(realizations):
    # The mean over realizations follows the analytic g2 within its standard error.
    g2, err, result, sim = realizations
    lags = slice(1, N_FRAMES // 2)
    truth = sim.analytic_g2(result.lags)[:, lags]
    z = (g2[:, :, lags].mean(axis=0) - truth) / (err[:, :, lags].mean(axis=0) / numpy.sqrt(N_REALIZATIONS))
    assert abs(numpy.median(z)) < 0.5
    assert numpy.mean(numpy.abs(z) < 3) > 0.97


def test_error_bars_match_scatter(realizations):
    # The jackknife error of one realization predicts the spread between realizations.
    g2, err, _, _ = realizations
    lags = slice(1, N_FRAMES // 2)
    for row in range(2):
        scatter = g2[:, row, lags].std(axis=0, ddof=1)
        predicted = numpy.sqrt((err[:, row, lags] ** 2).mean(axis=0))
        ratio = numpy.median(predicted / scatter)
        assert 0.8 <= ratio <= 1.25, f"bin {row}: median g2_err/std = {ratio:.3f}"


def test_error_bars_as_z_scores(realizations):
    # (g2 − truth)/g2_err over all realizations and lags ≥ 1 has unit spread.
    g2, err, result, sim = realizations
    lags = slice(1, N_FRAMES // 2)
    truth = sim.analytic_g2(result.lags)[None, :, lags]
    z = (g2[:, :, lags] - truth) / err[:, :, lags]
    assert 0.8 <= z.std() <= 1.25, z.std()
    assert 0.6 <= numpy.mean(numpy.abs(z) < 1) <= 0.76  # 68 % within one error bar


# ---------------------------------------------------------------------------------------------
# Sparse data: the longest lags hold few photon pairs (E ≈ N·μ²·(Nt − τ)); g2 there is NaN
# below MIN_EXPECTED_PAIRS, and the error bars elsewhere cover the truth as at the other lags.
SPARSE_FRAMES = 1000
SPARSE_COUNTS = 0.05
LAST = 20


@pytest.fixture(scope="module")
def sparse_realizations():
    """z = (g2 − truth)/g2_err, g2, g2_err, n2 and expected pairs (n_real, n_bins, Nt)."""
    out = {k: [] for k in ("z", "g2", "err", "n2", "pairs")}
    for seed in range(N_REALIZATIONS):
        spec = dict(shape=(48, 48), n_frames=SPARSE_FRAMES, n_bins=2, q_per_pixel=1e-3,
                    q_range=(8e-3, 23e-3), frame_period=FRAME_PERIOD, mean_counts=SPARSE_COUNTS,
                    contrast=CONTRAST, seed=100 + seed, n_threads=1)
        q_slow = synthetic.SyntheticXPCS(diffusion=1.0, **spec).q[0]
        sim = synthetic.SyntheticXPCS(diffusion=GAMMA_SLOW / q_slow**2, **spec)
        result = correlate(sim.frames(), sim.labels, method="cpu-events" if "cpu-events" in METHODS else METHOD)
        with numpy.errstate(invalid="ignore", divide="ignore"):
            out["z"].append((result.g2 - sim.analytic_g2(result.lags)) / result.g2_err)
        out["g2"].append(result.g2)
        out["err"].append(result.g2_err)
        out["n2"].append(result.n2)
        out["pairs"].append(result.expected_pairs)
    return {k: numpy.array(v) for k, v in out.items()}


def test_sparse_long_lags_are_few_pairs(sparse_realizations):
    # The data do reach the regime of the rule: lags without any pair at the end.
    r = sparse_realizations
    assert r["pairs"][:, :, -LAST:].min() < 2 and (r["n2"][:, :, -LAST:] == 0).any()
    assert r["pairs"][:, :, 1:-LAST].min() > 20


def test_sparse_long_lags_undefined_never_zero(sparse_realizations):
    from ewoksxpcs.engine.normalise import MIN_EXPECTED_PAIRS

    r = sparse_realizations
    undefined = (r["n2"] == 0) | (r["pairs"] < MIN_EXPECTED_PAIRS)
    assert (numpy.isnan(r["g2"]) == undefined).all()
    assert (numpy.isnan(r["err"]) == undefined).all()
    assert not ((r["g2"] == 0) & (r["err"] == 0)).any()  # never 0 ± 0
    assert (r["err"][~undefined] > 0).all()


def test_sparse_long_lags_coverage(sparse_realizations):
    # |z| < 2 as often at the last LAST lags (where they are defined) as at the others.
    z = sparse_realizations["z"]
    last, rest = z[:, :, -LAST:], z[:, :, 1:-LAST]
    defined = numpy.isfinite(last)
    assert defined.sum() >= 100, defined.sum()  # enough defined lags to judge
    assert numpy.isfinite(rest).all()
    cover_last = numpy.mean(numpy.abs(last[defined]) < 2)
    cover_rest = numpy.mean(numpy.abs(rest) < 2)
    assert cover_last >= 0.93 and cover_rest >= 0.93, (cover_last, cover_rest)
    assert abs(cover_last - cover_rest) < 0.05, (cover_last, cover_rest)
