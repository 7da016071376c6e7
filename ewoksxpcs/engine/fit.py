"""Fits of g2 curves per q bin, and of the relaxation rate Γ(q) by a power law (scipy).

Models (τ in s, or in frames when the frame period is unknown; Γ in the inverse unit)::

    exp     g2 = baseline + β·exp(−2Γτ)
    kww     g2 = baseline + β·exp(−2(Γτ)^α)                   (stretched, KWW; 0.1 <= α <= 2)
    double  g2 = baseline + β·(f·exp(−2Γτ) + (1−f)·exp(−2Γ₂τ))   (0 <= f <= 1, Γ₂ >= Γ)

Γ is the relaxation rate of the field correlation (Brownian motion: Γ = D·q²), β the contrast.
Each curve is fitted by :func:`scipy.optimize.least_squares` (trust-region reflective, with
bounds) weighted by 1/g2_err where the error is finite and positive, starting from the best
single exponential over a log grid of Γ (weighted linear least squares for the baseline and β at
each Γ: no starting value to guess); KWW and double exponential try two starts, the best kept. τ = 0 is always excluded (shot noise). Errors: from
the Jacobian at the optimum, scaled by the reduced χ² when it exceeds 1; they treat the g2 points
as independent, whereas neighbouring delays share frames, so true uncertainties are larger.

Status per bin (:data:`STATUSES`): ``ok``; ``no decay in range`` (Γ·τ_max < 0.05, or a flat curve
above 1: the decay comes after the fitted delays); ``decays within the first lag`` (Γ·τ_min > 1:
g2 is down to e⁻² of the contrast at the first delay, so Γ and β rest on one point,
or a flat curve at 1: already at the baseline at the first delay; Γ and β are undetermined).
A curve is flat when the model does not beat a constant by Δχ² > 25 (χ² scaled by the reduced
χ² when above 1, or taken from the scatter without errors), and "at 1" when its weighted mean
is within 5 standard errors of 1 (the baseline of a normalised g2: decayed before the first
lag, or a decay below the noise — low counts give this status too);
``did not converge``; ``too few points`` (fewer than parameters + 1 usable delays). Only bins with
status ``ok`` are meaningful: the others keep their numbers for inspection, are drawn as no
curve and are left out of the power law.

Γ(q) = D·q^n (:func:`fit_power_law`): weighted linear least squares of log Γ on log q
(σ_logΓ = σ_Γ/Γ), D and n with standard errors (scaled by the reduced χ² when above 1); the
diffusion value D₂ for n fixed to 2 is given too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy

from .lazy_imports import import_module

__all__ = [
    "MODELS",
    "STATUSES",
    "G2Fit",
    "PowerLawFit",
    "fit_curve",
    "fit_g2",
    "fit_power_law",
]

#: status codes (index) and their meaning.
STATUSES = (
    "ok",
    "no decay in range",
    "decays within the first lag",
    "did not converge",
    "too few points",
)
OK, NO_DECAY, TOO_FAST, NOT_CONVERGED, TOO_FEW = range(5)


def _exp(tau, b, beta, gamma):
    return b + beta * numpy.exp(-2.0 * gamma * tau)


def _kww(tau, b, beta, gamma, alpha):
    return b + beta * numpy.exp(-2.0 * numpy.power(gamma * tau, alpha))


def _double(tau, b, beta, gamma, frac, ratio):
    return b + beta * (frac * numpy.exp(-2.0 * gamma * tau)
                       + (1.0 - frac) * numpy.exp(-2.0 * gamma * ratio * tau))


#: model name -> (function, parameter names, formula)
MODELS: Dict[str, tuple] = {
    "exp": (_exp, ("baseline", "beta", "gamma"), "baseline + beta*exp(-2*gamma*tau)"),
    "kww": (_kww, ("baseline", "beta", "gamma", "alpha"),
            "baseline + beta*exp(-2*(gamma*tau)**alpha)"),
    "double": (_double, ("baseline", "beta", "gamma", "fraction", "ratio"),
               "baseline + beta*(fraction*exp(-2*gamma*tau) + (1-fraction)*exp(-2*gamma*ratio*tau))"),
}


@dataclass
class G2Fit:
    """Fit results, one value per q bin.

    Attributes
    ----------
    model : str
        "exp", "kww" or "double" (:data:`MODELS`).
    params, errors : dict of str -> ndarray (n_bins,) float64
        Parameters of the model and their standard errors (NaN where not fitted).
    chi2_red : ndarray (n_bins,) float64
    status : ndarray (n_bins,) int8
        Index into :data:`STATUSES`.
    tau_range : (float, float)
    """

    model: str
    params: Dict[str, numpy.ndarray]
    errors: Dict[str, numpy.ndarray]
    chi2_red: numpy.ndarray
    status: numpy.ndarray
    tau_range: tuple = (None, None)
    formula: str = field(default="")

    # The single-exponential names (Γ, β and the baseline exist in every model).
    @property
    def baseline(self):
        return self.params["baseline"]

    @property
    def beta(self):
        return self.params["beta"]

    @property
    def gamma(self):
        return self.params["gamma"]

    @property
    def baseline_err(self):
        return self.errors["baseline"]

    @property
    def beta_err(self):
        return self.errors["beta"]

    @property
    def gamma_err(self):
        return self.errors["gamma"]

    @property
    def ok(self) -> numpy.ndarray:
        """(n_bins,) bool: bins whose fit is meaningful."""
        return self.status == OK

    @property
    def status_text(self):
        return [STATUSES[int(s)] for s in self.status]

    def model_curves(self, tau) -> numpy.ndarray:
        """Model curves (n_bins, n_tau) at ``tau`` (NaN rows where the status is not ok)."""
        func, names, _ = MODELS[self.model]
        tau = numpy.asarray(tau, dtype=numpy.float64)
        out = numpy.stack([
            func(tau, *[self.params[n][i] for n in names]) for i in range(self.status.size)
        ]) if self.status.size else numpy.zeros((0, tau.size))
        out[~self.ok] = numpy.nan
        return out

    model_values = model_curves

    def __repr__(self) -> str:
        return f"G2Fit(model={self.model!r}, n_bins={self.status.size}, ok={int(self.ok.sum())})"


def _bounds(model, t, y):
    span = max(float(numpy.nanmax(numpy.abs(y))), 1.0)
    g_lo, g_hi = 1e-3 / t.max(), 1e3 / t.min()
    lo = [-10 * span, 0.0, g_lo]
    hi = [10 * span, 10 * span, g_hi]
    if model == "kww":
        lo.append(0.1), hi.append(2.0)
    elif model == "double":
        lo += [0.0, 1.0]
        hi += [1.0, 1e4]
    return numpy.array(lo), numpy.array(hi)


def _grid_gamma(t, y, w, n: int = 60) -> float:
    """Γ of the best single exponential over a log grid (weighted linear least squares of
    baseline and β for each Γ, vectorised): the starting point of every model."""
    grid = numpy.geomspace(0.05 / t.max(), 5.0 / t.min(), n)
    e = numpy.exp(-2.0 * grid[:, None] * t[None, :])  # (n, n_t)
    sw, se, see = w.sum(), e @ w, (e * e) @ w
    sy, sey = (w * y).sum(), e @ (w * y)
    det = sw * see - se * se
    with numpy.errstate(invalid="ignore", divide="ignore"):
        b = (see * sy - se * sey) / det
        beta = (sw * sey - se * sy) / det
        chi = ((w * (y[None, :] - b[:, None] - beta[:, None] * e) ** 2).sum(axis=1))
    chi[~numpy.isfinite(chi) | (det <= 0)] = numpy.inf
    return float(grid[int(numpy.argmin(chi))])


def _starts(model, t, y, w):
    tail = y[-max(1, t.size // 5):]
    b0 = float(numpy.median(tail))
    beta0 = max(float(y[: max(1, t.size // 20)].mean()) - b0, 1e-3)
    g0 = _grid_gamma(t, y, w)
    if model == "exp":
        return [numpy.array([b0, beta0, g0])]
    if model == "kww":
        return [numpy.array([b0, beta0, g0, a]) for a in (1.0, 0.6)]
    return [numpy.array([b0, beta0, g, f, 10.0]) for g, f in ((g0 / 3, 0.5), (g0, 0.8))]


def fit_curve(tau, g2, g2_err=None, model: str = "exp", tau_min: Optional[float] = None,
              tau_max: Optional[float] = None):
    """Fit one g2 curve.

    Returns
    -------
    params, errors : ndarray (n_params,) float64
    chi2_red : float
    status : int
        Index into :data:`STATUSES`.
    """
    least_squares = import_module("scipy.optimize").least_squares

    if model not in MODELS:
        raise ValueError(f"unknown fit model {model!r}; valid: {', '.join(MODELS)}")
    func, names, _ = MODELS[model]
    npar = len(names)
    nan = numpy.full(npar, numpy.nan)
    tau = numpy.asarray(tau, dtype=numpy.float64)
    y = numpy.asarray(g2, dtype=numpy.float64)
    sel = (tau > 0) & numpy.isfinite(y)
    if tau_min is not None:
        sel &= tau >= tau_min
    if tau_max is not None:
        sel &= tau <= tau_max
    sigma = None
    if g2_err is not None:
        err = numpy.asarray(g2_err, dtype=numpy.float64)
        good = numpy.isfinite(err) & (err > 0)
        if good[sel].sum() > npar:
            sel &= good
            sigma = err[sel]
    t, y = tau[sel], y[sel]
    if t.size <= npar:
        return nan, nan.copy(), math.nan, TOO_FEW
    given_errors = sigma is not None
    if sigma is None:
        sigma = numpy.ones_like(t)
    lo, hi = _bounds(model, t, y)

    def resid(p):
        return (func(t, *p) - y) / sigma

    best = None
    for p0 in _starts(model, t, y, 1.0 / sigma**2):
        p0 = numpy.clip(p0, lo, hi)
        try:
            r = least_squares(resid, p0, bounds=(lo, hi), method="trf", x_scale="jac")
        except (ValueError, numpy.linalg.LinAlgError):
            continue
        if best is None or r.cost < best.cost:
            best = r
    if best is None or not numpy.all(numpy.isfinite(best.x)):
        return nan, nan.copy(), math.nan, NOT_CONVERGED
    p = best.x
    dof = max(t.size - npar, 1)
    chi2_red = 2.0 * best.cost / dof
    try:
        jac = best.jac
        cov = numpy.linalg.inv(jac.T @ jac) * max(chi2_red, 1.0)
        errs = numpy.sqrt(numpy.clip(numpy.diag(cov), 0, None))
    except numpy.linalg.LinAlgError:
        errs = nan.copy()
    gamma = p[2]
    # A decay at all? χ² of a constant against the model's (F-like test, 5σ): a flat curve is
    # at the baseline 1 of a normalised g2 (decayed before the first lag), or above it (the
    # decay comes after the last lag).
    w = 1.0 / sigma**2
    level = float((w * y).sum() / w.sum())
    chi2_const = float((w * (y - level) ** 2).sum())
    scale = max(chi2_red, 1.0) if given_errors else chi2_red
    flat = not (chi2_const - 2.0 * best.cost > 25.0 * scale)
    if flat:
        level_err = math.sqrt(max(chi2_const / max(t.size - 1, 1), 1.0 if given_errors else 0.0)
                              / w.sum())
        status = NO_DECAY if level - 1.0 > 5.0 * level_err else TOO_FAST
    elif gamma * t.min() > 1.0:  # the decay rests on the first lag alone
        status = TOO_FAST
    elif gamma * t.max() < 0.05:
        status = NO_DECAY
    elif best.status <= 0 or not numpy.all(numpy.isfinite(errs)):
        status = NOT_CONVERGED
    else:
        status = OK
    return p, errs, chi2_red, status


def fit_g2(tau, g2, g2_err=None, tau_min: Optional[float] = None,
           tau_max: Optional[float] = None, model: str = "exp") -> G2Fit:
    """Fit every q bin of g2 (n_bins, n_tau) by ``model`` (see the module docstring).

    Parameters
    ----------
    tau : ndarray (n_tau,)
        Delays (s, or frames); τ = 0 is excluded.
    g2, g2_err : ndarray (n_bins, n_tau)
    tau_min, tau_max : float, optional
        Range of τ used (default: all τ > 0 up to half the longest delay, where the estimate
        still averages over at least half of the frames).
    model : {"exp", "kww", "double"}
    """
    if model not in MODELS:
        raise ValueError(f"unknown fit model {model!r}; valid: {', '.join(MODELS)}")
    tau = numpy.asarray(tau, dtype=numpy.float64)
    g2 = numpy.atleast_2d(numpy.asarray(g2, dtype=numpy.float64))
    if g2.shape[-1] != tau.size:
        raise ValueError(f"g2 has {g2.shape[-1]} delays, tau has {tau.size}")
    if tau_max is None and tau.size:
        tau_max = 0.5 * float(tau.max())
    errs = None if g2_err is None else numpy.atleast_2d(numpy.asarray(g2_err, dtype=numpy.float64))
    names = MODELS[model][1]
    nb = g2.shape[0]
    params = {n: numpy.full(nb, numpy.nan) for n in names}
    perr = {n: numpy.full(nb, numpy.nan) for n in names}
    chi2 = numpy.full(nb, numpy.nan)
    status = numpy.full(nb, TOO_FEW, dtype=numpy.int8)
    for i in range(nb):
        p, e, c, s = fit_curve(tau, g2[i], None if errs is None else errs[i], model,
                               tau_min, tau_max)
        for j, n in enumerate(names):
            params[n][i], perr[n][i] = p[j], e[j]
        chi2[i], status[i] = c, s
    return G2Fit(model=model, params=params, errors=perr, chi2_red=chi2, status=status,
                 tau_range=(tau_min, tau_max), formula=MODELS[model][2])


@dataclass
class PowerLawFit:
    """Γ(q) = D·q^n fitted on the bins of status ok.

    Attributes
    ----------
    D, D_err : float
        Prefactor (τ-unit⁻¹·q-unit⁻ⁿ; nm²/s for n = 2 with q in nm⁻¹ and τ in s).
    n, n_err : float
        Exponent (2: diffusion).
    D2, D2_err : float
        D with n fixed to 2.
    chi2_red : float
    used : ndarray (n_bins,) bool
        Bins used.
    """

    D: float
    D_err: float
    n: float
    n_err: float
    D2: float
    D2_err: float
    chi2_red: float
    used: numpy.ndarray

    def gamma(self, q) -> numpy.ndarray:
        return self.D * numpy.power(numpy.asarray(q, dtype=numpy.float64), self.n)


def fit_power_law(q, gamma, gamma_err=None, use=None) -> PowerLawFit:
    """Fit Γ(q) = D·q^n (see the module docstring).

    Parameters
    ----------
    q, gamma, gamma_err : ndarray (n_bins,)
    use : ndarray (n_bins,) bool, optional
        Bins to use (e.g. ``G2Fit.ok``); non-finite or non-positive values are always left out.
    """
    q = numpy.asarray(q, dtype=numpy.float64)
    g = numpy.asarray(gamma, dtype=numpy.float64)
    e = numpy.ones_like(g) if gamma_err is None else numpy.asarray(gamma_err, dtype=numpy.float64)
    used = numpy.isfinite(q) & numpy.isfinite(g) & (q > 0) & (g > 0) & numpy.isfinite(e) & (e > 0)
    if use is not None:
        used &= numpy.asarray(use, dtype=bool)
    nan = PowerLawFit(*(math.nan,) * 7, used=used)
    if used.sum() < 2:
        return nan
    x, y = numpy.log(q[used]), numpy.log(g[used])
    s = e[used] / g[used]
    w = 1.0 / s**2
    A = numpy.stack([numpy.ones_like(x), x], axis=1)
    cov = numpy.linalg.inv(A.T @ (w[:, None] * A))
    coef = cov @ (A.T @ (w * y))
    dof = used.sum() - 2
    chi2 = float((w * (y - A @ coef) ** 2).sum()) / dof if dof > 0 else math.nan
    cov = cov * (max(chi2, 1.0) if dof > 0 else 1.0)
    lnD, n = coef
    D, D_err = math.exp(lnD), math.exp(lnD) * math.sqrt(cov[0, 0])
    # n fixed to 2: weighted mean of log Γ − 2 log q.
    var2 = 1.0 / w.sum()
    lnD2 = float((w * (y - 2.0 * x)).sum() * var2)
    r2 = y - 2.0 * x - lnD2
    chi2_2 = float((w * r2 * r2).sum()) / max(used.sum() - 1, 1)
    D2 = math.exp(lnD2)
    D2_err = D2 * math.sqrt(var2 * max(chi2_2, 1.0))
    return PowerLawFit(D, D_err, float(n), math.sqrt(cov[1, 1]), D2, D2_err, chi2, used)
