"""Figures of a result (matplotlib Agg; :func:`ewoksxpcs.io.save.save_figure` writes them as PNG):
what a scientist checks and publishes.

- g2 curves (:func:`draw_g2`): log τ; lags averaged over few pairs are not drawn (rule:
  :func:`drawn_lags`), so no curve ends on full-height error bars; a colour bar by q instead of
  a legend beyond 6 curves; the fitted model where the fit status is ``ok`` only.
- Γ(q) (:func:`gamma_figure`): log-log, bins of status ok with errors (others as open grey
  markers), the power law D·q^n and the diffusion law D₂·q².
- Stability (:func:`stability_figure`): mean intensity vs q per time segment (SAXS-like), the
  partial g2 of each segment for the middle bin, and the intensity vs time with the excluded
  frames marked.
- Two-time maps (:func:`twotime_figure`): C(q, t1, t2) of up to 4 bins; the colour scale is the
  1st–99th percentile of the off-diagonal entries (|T1 − T2| >= 2): the diagonal (shot noise)
  would otherwise swamp it, it is drawn masked.
"""

from __future__ import annotations

import numpy

__all__ = ["MIN_PAIRS", "MIN_PAIR_FRACTION", "drawn_lags", "draw_g2", "gamma_figure",
           "stability_figure", "twotime_figure", "twotime_colour_range", "display_map",
           "new_figure", "warm_up"]

#: A lag is drawn when it averages at least MIN_PAIRS pairs of (level) frames ...
MIN_PAIRS = 10
#: ... and at least this fraction of the frames kept (of its multi-tau level, or time bins).
MIN_PAIR_FRACTION = 0.1


def drawn_lags(result) -> numpy.ndarray:
    """(n_lags,) bool: lags averaged over enough pairs to be drawn (module docstring)."""
    from ..engine.badframes import pair_counts

    mode = getattr(result, "mode", "linear")
    lags = numpy.asarray(result.lags)
    if mode == "multitau":
        pairs = numpy.asarray(result.n_pairs)
        n_level = numpy.asarray(result.n_frames) >> numpy.asarray(result.level)
    elif mode == "twotime":
        n_level = numpy.full(lags.size, result.n_time_bins)
        pairs = n_level - numpy.rint(lags / max(result.time_bin, 1)).astype(numpy.int64)
    else:
        n = int(result.n_frames)
        excluded = result.info.get("excluded_frames")
        pairs = pair_counts(excluded, n, lags)
        kept = n if excluded is None else int((~numpy.asarray(excluded, bool)).sum())
        n_level = numpy.full(lags.size, kept)
    return (pairs >= MIN_PAIRS) & (pairs >= MIN_PAIR_FRACTION * n_level)


def new_figure(w=7.0, h=4.8, **kw):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110, **kw)
    FigureCanvasAgg(fig)
    return fig


def _plain_log_x(ax, axes=("x",)):
    # Plain tick labels: the default 10^n ones go through mathtext (slow on first use).
    from matplotlib.ticker import FuncFormatter, NullFormatter

    for name in axes:
        axis = getattr(ax, f"{name}axis")
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())


def warm_up() -> bytes:
    """Draw a small figure of the kinds of artists of the result's figures (log axes, error
    bars, legend, colour bar, the Greek and superscript glyphs) as PNG bytes: the first figure
    of a process loads the fonts, glyphs and PNG encoder (0.1-0.2 s), which the PNG helper
    process (:mod:`ewoksxpcs.io.pngproc`) does while the run correlates."""
    import io

    import matplotlib

    fig = new_figure(2.0, 1.5)
    ax = fig.add_subplot(1, 1, 1)
    x = numpy.geomspace(1e-3, 1.0, 8)
    ax.errorbar(x, 1 + 0.1 * numpy.exp(-x), yerr=0.01, fmt="o", ms=2, label="q = 1 nm⁻¹, χ = 0°")
    ax.set_xscale("log")
    _plain_log_x(ax)
    ax.set_xlabel("τ (s)")
    ax.set_ylabel("g2(q, τ) Γ")
    ax.set_title("warm-up", y=1.0)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, loc="upper right")
    fig.colorbar(matplotlib.cm.ScalarMappable(), ax=ax, label="q")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", pil_kwargs={"compress_level": 1})
    return buf.getvalue()


def _few_minor_ticks(axis):
    # Minor ticks of a log axis at 2 and 5 only: each tick is a set of artists, and making
    # them was a third of a figure's cost (8 per decade).
    from matplotlib.ticker import LogLocator

    axis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))


def _q_text(value, unit) -> str:
    return f"q = {value:.4g} {unit}" if unit else f"bin {value:g}"


def _q_colours(q, n):
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    q = numpy.asarray(q, dtype=numpy.float64)
    lo, hi = (float(numpy.nanmin(q)), float(numpy.nanmax(q))) if n else (0.0, 1.0)
    norm = matplotlib.colors.Normalize(lo, hi if hi > lo else lo + 1)
    return [cmap(0.9 * norm(v)) for v in q], cmap, norm


def draw_g2(ax, tau, g2, err, q, q_unit="nm^-1", fit=None, chi=None, keep=None, fig=None):
    """Draw g2 curves into ``ax`` (see the module docstring); ``keep`` (n_lags,) bool."""
    import matplotlib

    tau = numpy.asarray(tau, dtype=numpy.float64)
    g2 = numpy.atleast_2d(numpy.asarray(g2, dtype=numpy.float64))
    err = numpy.atleast_2d(numpy.asarray(err, dtype=numpy.float64))
    ok = tau > 0 if keep is None else (tau > 0) & numpy.asarray(keep, dtype=bool)
    sel = numpy.flatnonzero(ok)
    if sel.size > 150:  # about 150 log-spaced delays keep it legible
        sel = sel[numpy.unique(numpy.geomspace(1, sel.size, 150).astype(numpy.int64) - 1)]
    n = g2.shape[0]
    colours, cmap, norm = _q_colours(q, n)
    unit = q_unit.replace("^-1", "⁻¹")
    curves = None if fit is None or not sel.size else fit.model_curves(
        numpy.geomspace(tau[sel].min(), tau[sel].max(), 200))
    # Beyond 6 curves the bars of every curve are one collection: errorbar() makes several
    # artists per curve, a third of the figure's cost (the legend then shows the markers).
    one_collection = n > 6
    bars, bar_colours = [], []
    for i in range(n):
        label = f"q = {q[i]:.4g} {unit}" if q_unit else f"bin {q[i]:g}"
        if chi is not None:
            label += f", χ = {chi[i]:.0f}°"
        e = numpy.where(numpy.isfinite(err[i][sel]), err[i][sel], 0.0)
        if one_collection:
            x, y = tau[sel], g2[i][sel]
            ax.plot(x, y, "o", ms=2.5, color=colours[i], label=label)
            bars.append(numpy.stack([numpy.stack([x, y - e], axis=-1),
                                     numpy.stack([x, y + e], axis=-1)], axis=1))
            bar_colours += [colours[i]] * x.size
        else:
            ax.errorbar(tau[sel], g2[i][sel], yerr=e, fmt="o", ms=2.5, lw=0.6, elinewidth=0.6,
                        color=colours[i], label=label)
        if curves is not None and numpy.isfinite(curves[i]).all():
            tt = numpy.geomspace(tau[sel].min(), tau[sel].max(), 200)
            ax.plot(tt, curves[i], "-", color=colours[i], lw=1.0)
    if bars:
        from matplotlib.collections import LineCollection

        ax.add_collection(LineCollection(numpy.concatenate(bars), colors=bar_colours,
                                         linewidths=0.6, zorder=1.9))  # under the markers
    vals = g2[:, sel][numpy.isfinite(g2[:, sel])]
    if vals.size:
        lo, hi = float(numpy.percentile(vals, 0.5)), float(numpy.percentile(vals, 99.5))
        pad = 0.1 * max(hi - lo, 1e-3)
        ax.set_ylim(lo - pad, hi + pad)
    if sel.size and not numpy.isfinite(ax.dataLim.x0):  # no finite g2: the lags still span x
        ax.set_xlim(tau[sel].min() / 1.2, tau[sel].max() * 1.2)
    ax.set_xscale("log")
    _plain_log_x(ax)
    if sel.size and tau[sel].max() > 1e3 * tau[sel].min():
        _few_minor_ticks(ax.xaxis)
    ax.set_ylabel("g2(q, τ)")
    ax.grid(True, which="both", alpha=0.3)
    if n > 6 and q_unit and fig is not None:
        sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
        fig.colorbar(sm, ax=ax, label=f"q ({unit})", fraction=0.05, pad=0.02)
    elif n > 6:
        # Many bins without q: the legend beside the axes (loc="best" tries every place
        # against every point: 0.1 s, and covers curves anyway).
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
                  ncols=1 + (n - 1) // 24)
    elif n:
        ax.legend(fontsize=7, loc="best", framealpha=0.6)


def gamma_figure(q, fit, power_law, q_unit="nm^-1", tau_unit="s"):
    """Γ(q) log-log with the power law (module docstring); a matplotlib Figure."""
    fig = new_figure(5.5, 4.2)
    fig.subplots_adjust(left=0.17, right=0.97, bottom=0.12, top=0.92)  # no tight_layout pass
    ax = fig.add_subplot(1, 1, 1)
    q = numpy.asarray(q, dtype=numpy.float64)
    ok = fit.ok & numpy.isfinite(fit.gamma) & (fit.gamma > 0) & (q > 0)
    ax.errorbar(q[ok], fit.gamma[ok], yerr=numpy.nan_to_num(fit.gamma_err[ok]), fmt="o",
                color="C0", ms=4, label="Γ (fit ok)")
    bad = ~fit.ok & numpy.isfinite(fit.gamma) & (fit.gamma > 0) & (q > 0)
    if bad.any():
        ax.plot(q[bad], fit.gamma[bad], "o", mfc="none", color="0.6", ms=4,
                label="fit not ok (not used)")
    if power_law is not None and numpy.isfinite(power_law.D) and ok.any():
        qq = numpy.geomspace(q[ok].min(), q[ok].max(), 50)
        ax.plot(qq, power_law.gamma(qq), "-", color="C1",
                label=f"D·qⁿ: n = {power_law.n:.3f} ± {power_law.n_err:.3f}")
        ax.plot(qq, power_law.D2 * qq**2, "--", color="C2", lw=0.8,
                label=f"n = 2: D = {power_law.D2:.4g} ± {power_law.D2_err:.2g}")
    if not (ok | bad).any():  # log axes of no positive value: matplotlib refuses to draw
        ax.text(0.5, 0.5, "no relaxation rate > 0 to draw", transform=ax.transAxes,
                ha="center", va="center")
    else:
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_log_x(ax, ("x", "y"))
    if ok.any() and q[ok].max() < 10 * q[ok].min():  # less than a decade: label the minor ticks
        from matplotlib.ticker import FuncFormatter

        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    elif (ok | bad).any():
        _few_minor_ticks(ax.xaxis)
    if (ok | bad).any():
        _few_minor_ticks(ax.yaxis)
    unit = q_unit.replace("^-1", "⁻¹")
    ax.set_xlabel(f"q ({unit})" if unit else "bin")
    ax.set_ylabel(f"Γ ({tau_unit}⁻¹)")
    # A fixed title height: its automatic placement measures every tick (a quarter of the
    # drawing time); no labels are drawn above the axes.
    ax.set_title(f"relaxation rate ({fit.model} fit)", y=1.0)
    ax.grid(True, which="both", alpha=0.3)
    if (ok | bad).any():
        # Γ grows with q: the upper left is free (loc="best" tries every place: 0.1 s).
        ax.legend(fontsize=7, loc="upper left")
    return fig


def stability_figure(segments, q, tau_unit="s", frame_period=None, intensity=None,
                     excluded=None, q_unit="nm^-1"):
    """Stability figure (module docstring); ``intensity`` (n_bins, Nt) vs time, optional."""
    import matplotlib

    fig = new_figure(11.0, 3.8)
    q = numpy.asarray(q, dtype=numpy.float64)
    unit = q_unit.replace("^-1", "⁻¹")
    cmap = matplotlib.colormaps["plasma"]
    ns = segments.n_segments
    unit = unit or ""
    qname = f"q ({unit})" if unit else "bin"
    ax = fig.add_subplot(1, 3, 1)
    for s in range(ns):
        ax.plot(q, segments.intensity[s], "o-", ms=3, lw=0.8, color=cmap(0.85 * s / max(ns - 1, 1)),
                label=f"segment {s + 1}")
    ax.set_xlabel(qname)
    ax.set_ylabel("counts / pixel / frame")
    ax.set_yscale("log")
    _plain_log_x(ax, ("y",))
    ax.set_title("mean intensity per segment")
    ax.legend(fontsize=6)
    ax = fig.add_subplot(1, 3, 2)
    i = segments.g2.shape[1] // 2
    lags = numpy.asarray(segments.lags, dtype=numpy.float64)
    tau = lags * (frame_period or 1.0)
    # The drawing rule of the g2 curves, for the shortest segment.
    sel = (tau > 0) & (lags <= (1 - MIN_PAIR_FRACTION) * numpy.diff(segments.edges).min())
    for s in range(ns):
        ax.errorbar(tau[sel], segments.g2[s, i, sel],
                    yerr=numpy.nan_to_num(segments.g2_err[s, i, sel]), fmt="o", ms=2, lw=0.5,
                    color=cmap(0.85 * s / max(ns - 1, 1)), label=f"segment {s + 1}")
    ax.set_xscale("log")
    _plain_log_x(ax)
    ax.set_xlabel(f"τ ({tau_unit})")
    ax.set_ylabel("partial g2")
    ax.set_title(_q_text(q[i], unit))
    ax = fig.add_subplot(1, 3, 3)
    if intensity is not None:
        inten = numpy.asarray(intensity, dtype=numpy.float64)
        t = numpy.arange(inten.shape[1]) * (frame_period or 1.0)
        total = numpy.nanmean(inten, axis=0)
        if excluded is not None and numpy.any(excluded):
            ex = numpy.flatnonzero(excluded)
            total[ex] = numpy.nan  # not drawn as dips: marked below the curve
            ax.plot(t[ex], numpy.full(ex.size, numpy.nanmin(total)), "|", color="C3", ms=8,
                    label=f"excluded frames ({ex.size})")
        ax.plot(t, total, "-", lw=0.6, color="C0", label="mean over bins")
        ax.legend(fontsize=6)
    ax.set_xlabel("time (s)" if frame_period else "time (frame)")
    ax.set_ylabel("counts / pixel / frame")
    ax.set_title("intensity vs time")
    return fig


def twotime_colour_range(C):
    """(vmin, vmax) of a two-time map (nT, nT): 1st and 99th percentiles of the finite entries
    with |T1 − T2| >= 2, (None, None) when there are none."""
    C = numpy.asarray(C, dtype=numpy.float64)
    idx = numpy.arange(C.shape[0])
    vals = C[(numpy.abs(idx[:, None] - idx[None, :]) >= 2) & numpy.isfinite(C)]
    if not vals.size:
        return None, None
    lo, hi = numpy.percentile(vals, [1, 99])
    return float(lo), float(hi)


#: Two-time maps larger than this many time bins per side are drawn block-averaged to it
#: (a 3.3-inch panel at 110 dpi shows ~360 pixels; maps of nT = 10 000 took seconds each
#: to draw whole).
MAX_DRAWN_SIDE = 512


def display_map(C_j, max_side: int = MAX_DRAWN_SIDE):
    """A two-time map reduced for drawing: blocks of k×k time bins averaged (k the smallest
    with ⌈nT/k⌉ <= ``max_side``; a last partial block dropped), the diagonal t1 = t2 (shot
    noise) left out of the averages and NaN in the result.

    Parameters
    ----------
    C_j : ndarray (nT, nT)
        One map.
    max_side : int
        Largest side of the result.

    Returns
    -------
    (ndarray (m, m) float64, int)
        The drawn map and k (1: the map itself, diagonal NaN).
    """
    n = C_j.shape[0]
    k = max(1, -(-n // max_side))
    m = n // k
    if k == 1:
        shown = numpy.array(C_j, dtype=numpy.float64)
    else:
        # Sums of k×k blocks (a view of the map: no copy), the diagonal blocks without their
        # k diagonal values.
        shown = C_j[: m * k, : m * k].reshape(m, k, m, k).sum(axis=(1, 3), dtype=numpy.float64)
        diag = numpy.diagonal(C_j)[: m * k].reshape(m, k).sum(axis=1, dtype=numpy.float64)
        counts = numpy.full((m, m), float(k * k))
        i = numpy.arange(m)
        shown[i, i] -= diag
        counts[i, i] -= k
        shown /= counts
    idx = numpy.arange(m)
    shown[idx, idx] = numpy.nan
    return shown, k


def twotime_figure(result, q, q_unit="nm^-1"):
    """Two-time maps of up to 4 bins, colour scale from the off-diagonal (module docstring);
    maps of more than :data:`MAX_DRAWN_SIDE` time bins drawn block-averaged (the title says
    so)."""
    C = result.C
    n = min(4, C.shape[0])
    picks = numpy.unique(numpy.linspace(0, C.shape[0] - 1, n).astype(int))
    fig = new_figure(3.3 * picks.size + 0.6, 3.4)
    t = numpy.asarray(result.times, dtype=numpy.float64) * (result.frame_period or 1.0)
    unit = q_unit.replace("^-1", "⁻¹")
    for j, i in enumerate(picks):
        ax = fig.add_subplot(1, picks.size, j + 1)
        shown, k = display_map(C[i])
        vmin, vmax = twotime_colour_range(shown)
        im = ax.imshow(shown, origin="lower", extent=(t[0], t[-1], t[0], t[-1]),
                       vmin=vmin, vmax=vmax, cmap="viridis", interpolation="nearest")
        title = _q_text(q[i], unit) + (f" (means of {k}x{k} bins)" if k > 1 else "")
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("t1 (s)" if result.frame_period else "t1 (frame)")
        if j == 0:
            ax.set_ylabel("t2 (s)" if result.frame_period else "t2 (frame)")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    return fig
