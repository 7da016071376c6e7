"""Fit of g2 curves by a single exponential: g2(τ) = baseline + β·exp(−2Γτ).

Γ is the relaxation rate of the field correlation (s⁻¹ when τ is in seconds; for Brownian
motion Γ = D·q²), β the contrast. The model is linear in (baseline, β) for a fixed Γ, so the fit
is a one-dimensional search over log Γ (grid, then golden-section refinement) of the weighted
linear least squares (variable projection): no starting values to guess, no local minimum in
(baseline, β). Weights are 1/g2_err² where the error is finite and positive.

τ = 0 is always excluded (it carries the shot-noise term, not the dynamics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy

__all__ = ["ExponentialFit", "fit_g2", "fit_exponential"]


@dataclass
class ExponentialFit:
    """Fit results, one value per q bin (NaN where the fit was impossible).

    Attributes
    ----------
    baseline, beta, gamma : ndarray (n_bins,) float64
        Baseline, contrast β, relaxation rate Γ (1/unit of τ).
    baseline_err, beta_err, gamma_err : ndarray (n_bins,) float64
        Standard errors (from the curvature; scaled by the reduced χ² when it exceeds 1).
        They treat the g2 points as independent; points of neighbouring delays are correlated
        (they share frames), so the true uncertainty of Γ is somewhat larger.
    chi2_red : ndarray (n_bins,) float64
        Reduced χ².
    tau_range : (float, float)
        τ range used.
    """

    baseline: numpy.ndarray
    beta: numpy.ndarray
    gamma: numpy.ndarray
    baseline_err: numpy.ndarray
    beta_err: numpy.ndarray
    gamma_err: numpy.ndarray
    chi2_red: numpy.ndarray
    tau_range: tuple

    def model(self, tau) -> numpy.ndarray:
        """Model curves (n_bins, n_tau) at ``tau``."""
        tau = numpy.asarray(tau, dtype=numpy.float64)
        return self.baseline[:, None] + self.beta[:, None] * numpy.exp(
            -2.0 * self.gamma[:, None] * tau[None, :]
        )


def _linear(tau, y, w, gamma):
    """Best (baseline, beta) and χ² for a fixed Γ."""
    e = numpy.exp(-2.0 * gamma * tau)
    sw, se, see = w.sum(), (w * e).sum(), (w * e * e).sum()
    sy, sey = (w * y).sum(), (w * e * y).sum()
    det = sw * see - se * se
    if det <= 0:
        return math.nan, math.nan, math.inf
    b = (see * sy - se * sey) / det
    beta = (sw * sey - se * sy) / det
    r = y - b - beta * e
    return b, beta, float((w * r * r).sum())


def fit_exponential(
    tau,
    g2,
    g2_err=None,
    tau_min: Optional[float] = None,
    tau_max: Optional[float] = None,
    n_grid: int = 200,
):
    """Fit one curve; returns (baseline, beta, gamma, errors (3,), reduced χ²)."""
    tau = numpy.asarray(tau, dtype=numpy.float64)
    y = numpy.asarray(g2, dtype=numpy.float64)
    sel = (tau > 0) & numpy.isfinite(y)
    if tau_min is not None:
        sel &= tau >= tau_min
    if tau_max is not None:
        sel &= tau <= tau_max
    if g2_err is not None:
        err = numpy.asarray(g2_err, dtype=numpy.float64)
        good = numpy.isfinite(err) & (err > 0)
        if good[sel].sum() >= 4:
            sel &= good
            w = 1.0 / err[sel] ** 2
        else:
            w = numpy.ones(int(sel.sum()))
    else:
        w = numpy.ones(int(sel.sum()))
    t, y = tau[sel], y[sel]
    nan = (math.nan,) * 3
    if t.size < 4:
        return nan + (numpy.full(3, math.nan), math.nan)
    # Γ from a tenth of the shortest to ten times the inverse of the longest delay.
    lo, hi = math.log(0.05 / t.max()), math.log(20.0 / t.min())
    grid = numpy.linspace(lo, hi, n_grid)
    chi = numpy.array([_linear(t, y, w, math.exp(g))[2] for g in grid])
    k = int(numpy.nanargmin(chi))
    a, b = grid[max(k - 1, 0)], grid[min(k + 1, n_grid - 1)]
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(60):  # golden section on log Γ
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        if _linear(t, y, w, math.exp(c))[2] < _linear(t, y, w, math.exp(d))[2]:
            b = d
        else:
            a = c
    gamma = math.exp(0.5 * (a + b))
    base, beta, chi2 = _linear(t, y, w, gamma)
    dof = max(t.size - 3, 1)
    chi2_red = chi2 / dof
    e = numpy.exp(-2.0 * gamma * t)
    jac = numpy.stack([numpy.ones_like(t), e, -2.0 * t * beta * e], axis=1)
    try:
        # Scaled by χ²_red when it exceeds 1 (scatter larger than the errors); never shrunk,
        # since the g2 points of neighbouring delays are correlated.
        cov = numpy.linalg.inv(jac.T @ (w[:, None] * jac)) * max(chi2_red, 1.0)
        errs = numpy.sqrt(numpy.clip(numpy.diag(cov), 0, None))
    except numpy.linalg.LinAlgError:
        errs = numpy.full(3, math.nan)
    return base, beta, gamma, errs, chi2_red


def fit_g2(
    tau, g2, g2_err=None, tau_min: Optional[float] = None, tau_max: Optional[float] = None
) -> ExponentialFit:
    """Fit every q bin of g2 (n_bins, n_tau) by baseline + β·exp(−2Γτ).

    Parameters
    ----------
    tau : ndarray (n_tau,)
        Delays (s, or frames); τ = 0 is excluded.
    g2, g2_err : ndarray (n_bins, n_tau)
    tau_min, tau_max : float, optional
        Range of τ used (default: all τ > 0 up to half the longest delay, where the estimate
        still averages over at least half of the frames).
    """
    tau = numpy.asarray(tau, dtype=numpy.float64)
    g2 = numpy.atleast_2d(numpy.asarray(g2, dtype=numpy.float64))
    if g2.shape[-1] != tau.size:
        raise ValueError(f"g2 has {g2.shape[-1]} delays, tau has {tau.size}")
    if tau_max is None and tau.size:
        tau_max = 0.5 * float(tau.max())
    errs = None if g2_err is None else numpy.atleast_2d(numpy.asarray(g2_err, dtype=numpy.float64))
    out = {
        k: numpy.full(g2.shape[0], numpy.nan)
        for k in ("baseline", "beta", "gamma", "baseline_err", "beta_err", "gamma_err", "chi2_red")
    }
    for i in range(g2.shape[0]):
        base, beta, gamma, e, chi2 = fit_exponential(
            tau, g2[i], None if errs is None else errs[i], tau_min, tau_max
        )
        out["baseline"][i], out["beta"][i], out["gamma"][i] = base, beta, gamma
        out["baseline_err"][i], out["beta_err"][i], out["gamma_err"][i] = e
        out["chi2_red"][i] = chi2
    return ExponentialFit(tau_range=(tau_min, tau_max), **out)
