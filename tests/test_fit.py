"""Fits: exp, KWW and double exponential recover known parameters; failed fits get a status;
Γ(q) = D·q^n from speckle with known D."""

import numpy
import pytest

from ewoksxpcs import correlate
from ewoksxpcs.engine.fit import MODELS, STATUSES, fit_curve, fit_g2, fit_power_law
from ewoksxpcs.tools.synthetic import SyntheticXPCS

TAU = numpy.geomspace(1e-3, 10.0, 80)


def noisy(model, params, sigma=0.002, seed=0):
    func = MODELS[model][0]
    y = func(TAU, *params)
    return y + numpy.random.default_rng(seed).normal(0.0, sigma, TAU.size), numpy.full(TAU.size, sigma)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kww_alpha(seed):
    y, e = noisy("kww", (1.0, 0.3, 5.0, 0.6), seed=seed)
    fit = fit_g2(TAU, y, e, model="kww", tau_max=TAU.max())
    assert fit.status_text == ["ok"]
    assert fit.params["alpha"][0] == pytest.approx(0.6, rel=0.05)
    assert fit.gamma[0] == pytest.approx(5.0, rel=0.05)
    assert 0.5 < fit.chi2_red[0] < 2.0
    # The KWW fit's α is within a few standard errors of the truth.
    assert abs(fit.params["alpha"][0] - 0.6) < 4 * fit.errors["alpha"][0]


def test_exp_and_double():
    y, e = noisy("exp", (1.0, 0.25, 3.0))
    p, err, chi2, status = fit_curve(TAU, y, e, "exp")
    assert STATUSES[status] == "ok" and p[2] == pytest.approx(3.0, rel=0.02)
    assert abs(p[2] - 3.0) < 4 * err[2]
    y, e = noisy("double", (1.0, 0.3, 1.0, 0.4, 30.0), sigma=0.001)
    fit = fit_g2(TAU, y, e, model="double", tau_max=TAU.max())
    assert fit.ok[0]
    assert fit.gamma[0] == pytest.approx(1.0, rel=0.05)
    assert fit.params["fraction"][0] == pytest.approx(0.4, abs=0.03)
    assert fit.params["gamma"][0] * fit.params["ratio"][0] == pytest.approx(30.0, rel=0.1)
    with pytest.raises(ValueError, match="unknown fit model"):
        fit_g2(TAU, y, e, model="gauss")


def test_statuses():
    fast, e = noisy("exp", (1.0, 0.3, 1e5))  # gone before the first lag
    flat, _ = noisy("exp", (1.0, 0.3, 1e-4), seed=1)  # no decay over the delays
    fit = fit_g2(TAU, numpy.stack([fast, flat]), numpy.stack([e, e]), tau_max=TAU.max())
    assert fit.status_text == ["decays within the first lag", "no decay in range"]
    assert not fit.ok.any()
    assert numpy.isnan(fit.model_curves(TAU)).all()  # never drawn as truth
    few = fit_g2(TAU[:4], fast[:4], e[:4])
    assert few.status_text == ["too few points"]


def test_simulate_defaults_flags_fast_bins():
    """``ewoksxpcs simulate``'s defaults: the outer bins decay within one frame; they are
    flagged instead of reported as β = 1e12."""
    # The q range of the defaults (256² pixels of 1e-3 nm⁻¹) on 64² pixels.
    sim = SyntheticXPCS(shape=(64, 64), n_frames=1000, mean_counts=0.5, contrast=0.2,
                        diffusion=1e5, q_per_pixel=4e-3, n_bins=10, seed=0)
    r = correlate(sim.frames(), sim.labels, method="fft")
    lags = r.lags * sim.spec.frame_period
    fit = fit_g2(lags, r.g2, r.g2_err)
    rate = sim.gamma * sim.spec.frame_period
    fast, slow = rate > 1.5, rate < 0.5
    assert fast.sum() >= 3 and slow.sum() >= 3
    assert (fit.status[fast] == STATUSES.index("decays within the first lag")).all()
    assert fit.ok[slow].all()
    numpy.testing.assert_allclose(fit.gamma[slow], sim.gamma[slow], rtol=0.15)


def test_power_law_recovers_d():
    sim = SyntheticXPCS(shape=(96, 96), n_frames=1500, mean_counts=1.0, contrast=0.3,
                        diffusion=2e6, q_per_pixel=2e-4, n_bins=8, seed=5,
                        q_range=(0.004, 0.012), dtype="uint16")
    r = correlate(sim.frames(), sim.labels, method="fft")
    lags = r.lags * sim.spec.frame_period
    fit = fit_g2(lags, r.g2, r.g2_err, tau_max=0.2)
    assert fit.ok.all()
    law = fit_power_law(sim.q, fit.gamma, fit.gamma_err, fit.ok)
    assert law.D2 == pytest.approx(2e6, rel=0.03)
    assert law.n == pytest.approx(2.0, abs=0.1)
    assert law.used.all() and numpy.isfinite([law.D_err, law.n_err, law.D2_err]).all()
    # Exact data: D and n exactly.
    q = numpy.linspace(0.01, 0.05, 6)
    exact = fit_power_law(q, 3e5 * q**1.7, 0.01 * 3e5 * q**1.7)
    assert exact.n == pytest.approx(1.7, rel=1e-9) and exact.D == pytest.approx(3e5, rel=1e-9)
    assert numpy.isnan(fit_power_law(q[:1], q[:1]).D)
