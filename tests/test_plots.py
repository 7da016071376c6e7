"""Figures: lags with too few pairs not drawn, fits only where ok, two-time colour scale from the
off-diagonal, the PNG set of a run."""

import numpy
import pytest

from ewoksxpcs import correlate
from ewoksxpcs.engine.fit import fit_g2, fit_power_law
from ewoksxpcs.io.plots import (
    MIN_PAIRS,
    draw_g2,
    drawn_lags,
    gamma_figure,
    new_figure,
    stability_figure,
    twotime_colour_range,
    twotime_figure,
)
from ewoksxpcs.io.save import plot_g2, save_figure, save_results
from ewoksxpcs.workflow.pipeline import correlate_sums, normalise_sums
from ewoksxpcs.workflow.segments import correlate_segments
from ewoksxpcs.tools.synthetic import SyntheticXPCS


@pytest.fixture(scope="module")
def data():
    sim = SyntheticXPCS(shape=(32, 32), n_frames=200, mean_counts=1.0, contrast=0.3,
                        diffusion=2e6, n_bins=8, q_per_pixel=2e-4, seed=1, dtype="uint16")
    return sim, sim.frames()


def test_drawn_lags(data):
    sim, frames = data
    r = correlate(frames, sim.labels, method="fft")
    keep = drawn_lags(r)
    assert keep[:181].all() and not keep[181:].any()  # at least 10 % of the 200 frames
    r = correlate(frames, sim.labels, method="fft", bad_frames="0-99")
    keep = drawn_lags(r)
    assert keep[:91].all() and not keep[91:].any()  # of the 100 remaining pairs at lag 0
    m = correlate(frames, sim.labels, mode="multitau", method="numpy")
    keep = drawn_lags(m)
    assert (m.n_pairs[keep] >= MIN_PAIRS).all() and (m.n_pairs[~keep] < 20).all()


def test_display_map_block_means_without_the_diagonal():
    from ewoksxpcs.io.plots import display_map

    rng = numpy.random.default_rng(3)
    C = rng.random((23, 23)).astype(numpy.float32)
    shown, k = display_map(C, max_side=10)
    assert k == 3 and shown.shape == (7, 7)  # k = ceil(23 / 10); 7 whole blocks, 2 bins dropped
    expected = numpy.empty((7, 7))
    for a in range(7):
        for b in range(7):
            block = C[3 * a: 3 * a + 3, 3 * b: 3 * b + 3].astype(numpy.float64)
            if a == b:
                block = block[~numpy.eye(3, dtype=bool)]
            expected[a, b] = block.mean()
    numpy.fill_diagonal(expected, numpy.nan)
    numpy.testing.assert_allclose(shown, expected, rtol=1e-12)
    small, k1 = display_map(C, max_side=23)
    assert k1 == 1 and numpy.isnan(numpy.diagonal(small)).all()
    numpy.testing.assert_array_equal(small[0, 1:], C[0, 1:])


def test_twotime_colour_range():
    rng = numpy.random.default_rng(0)
    C = 1.0 + 0.01 * rng.standard_normal((50, 50))
    numpy.fill_diagonal(C, 30.0)  # shot noise on the diagonal
    lo, hi = twotime_colour_range(C)
    assert 0.95 < lo < 1.0 < hi < 1.05
    assert twotime_colour_range(numpy.full((3, 3), numpy.nan)) == (None, None)


def test_png_set(data, tmp_path):
    sim, frames = data
    r = correlate(frames, sim.labels, method="fft")
    tau = r.lags * 1e-3
    fit = fit_g2(tau, r.g2, r.g2_err)
    law = fit_power_law(sim.q, fit.gamma, fit.gamma_err, fit.ok)
    seg = correlate_segments(frames, r_binning(sim), 3, correlate_sums, normalise_sums, method="fft")
    out = save_results(str(tmp_path / "r.h5"), r, sim.q, tau, fit=fit, png=str(tmp_path / "r_g2.png"),
                       segments=seg, power_law=law, frame_period=1e-3)
    assert out["png"].endswith("r_g2.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "r.h5", "r_g2.png", "r_gamma.png", "r_stability.png"]
    # 8 curves: a colour bar by q instead of a legend; 3 curves: a legend.
    for n, legend in ((8, False), (3, True)):
        fig = new_figure()
        ax = fig.add_subplot(1, 1, 1)
        draw_g2(ax, tau, r.g2[:n], r.g2_err[:n], sim.q[:n], fit=fit, fig=fig)
        assert (ax.get_legend() is not None) == legend and len(fig.axes) == (1 if legend else 2)
    # Fits of status ok only: one line per ok bin besides the error bars.
    fit.status[0] = 3
    fig = new_figure()
    ax = fig.add_subplot(1, 1, 1)
    draw_g2(ax, tau, r.g2, r.g2_err, sim.q, fit=fit, fig=fig)
    assert len([ln for ln in ax.get_lines() if ln.get_linestyle() == "-"]) == fit.ok.sum()
    tt = correlate(frames, sim.labels, mode="twotime", method="numpy", twotime_bins=[3, 7])
    save_figure(twotime_figure(tt, sim.q[[2, 6]]), str(tmp_path / "tt.png"))
    save_figure(gamma_figure(sim.q, fit, law), str(tmp_path / "g.png"))
    save_figure(stability_figure(seg, sim.q, frame_period=1e-3), str(tmp_path / "s.png"))
    plot_g2(str(tmp_path / "g2.png"), tau, r.g2, r.g2_err, sim.q, fit=fit)
    for name in ("tt.png", "g.png", "s.png", "g2.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    # An existing figure of the set: refused before anything is written.
    (tmp_path / "q_stability.png").write_bytes(b"old")
    with pytest.raises(FileExistsError, match="q_stability.png"):
        save_results(str(tmp_path / "q.h5"), r, sim.q, tau, fit=fit, png=str(tmp_path / "q_g2.png"),
                     segments=seg, power_law=law)
    assert not (tmp_path / "q.h5").exists() and not (tmp_path / "q_g2.png").exists()
    with pytest.raises(FileExistsError, match="exists"):
        save_figure(gamma_figure(sim.q, fit, law), str(tmp_path / "g.png"))


def r_binning(sim):
    from ewoksxpcs.engine.qmask import Binning

    return Binning(sim.labels)


def test_gamma_figure_without_a_positive_rate(tmp_path):
    """No fit of status ok and no rate > 0 (short, noisy scans): the Γ(q) figure says so
    instead of failing on log axes, so that the run still writes its result and PNGs."""
    from ewoksxpcs.engine.fit import fit_g2

    tau = numpy.arange(1, 20) * 1e-3
    fit = fit_g2(tau, numpy.ones((3, tau.size)), numpy.full((3, tau.size), 0.1))
    fit.status[:] = 3
    fit.params["gamma"][:] = numpy.array([-1.0, 0.0, numpy.nan])
    fig = gamma_figure(numpy.array([0.01, 0.02, 0.03]), fit, None)
    save_figure(fig, str(tmp_path / "g.png"))
    assert (tmp_path / "g.png").stat().st_size > 1000
    assert fig.axes[0].get_yscale() == "linear"


@pytest.mark.parametrize("finite", [True, False])
def test_g2_figure_of_many_bins_without_q(tmp_path, finite):
    """16 bins given by their labels (no q unit): one collection of error bars, the legend
    beside the axes (all 16 entries), minor log ticks at 2 and 5 only over 3 decades; a
    short scan whose g2 is nowhere finite still gives its PNG (log τ axis over the lags)."""
    from matplotlib.collections import LineCollection

    from ewoksxpcs.io.save import g2_figure

    tau = numpy.geomspace(1e-3, 5.0, 40)
    g2 = 1.0 + 0.2 * numpy.exp(-tau[None, :] * numpy.arange(1, 17)[:, None])
    if not finite:
        g2[:] = numpy.nan
    fig = g2_figure(tau, g2, numpy.full_like(g2, 0.01), numpy.arange(1, 17), q_unit="")
    ax = fig.axes[0]
    legend = ax.get_legend()
    assert len(legend.get_texts()) == 16 and legend.get_bbox_to_anchor().x0 > ax.bbox.x1 - 1
    assert not ax.containers
    assert len([c for c in ax.collections if isinstance(c, LineCollection)]) == 1
    save_figure(fig, str(tmp_path / "g2.png"), tight=False)
    assert (tmp_path / "g2.png").stat().st_size > 1000
    lo, hi = ax.get_xlim()
    assert ax.get_xscale() == "log" and 0 < lo <= tau[1] and hi >= tau[-1]
    minor = ax.xaxis.get_minor_locator().tick_values(1e-3, 1.0)
    mantissa = numpy.round(minor / 10 ** numpy.floor(numpy.log10(minor)), 6)
    assert set(mantissa) <= {2.0, 5.0}


@pytest.mark.parametrize("n", [3, 12])
def test_g2_error_bars_of_every_curve(n):
    """Up to 6 curves (a legend): error-bar containers; more (a colour bar): the markers of each
    curve and one collection of every bar, in the curve's colour, ±err around each point."""
    from matplotlib.collections import LineCollection

    from ewoksxpcs.io.save import g2_figure

    tau = numpy.geomspace(1e-3, 1.0, 20)
    g2 = 1.0 + 0.2 * numpy.exp(-tau[None, :] * numpy.arange(1, n + 1)[:, None])
    err = numpy.full_like(g2, 0.01)
    err[0, 3] = numpy.nan  # drawn without a bar
    fig = g2_figure(tau, g2, err, numpy.arange(1, n + 1) * 0.01)
    ax = fig.axes[0]
    bars = [c for c in ax.collections if isinstance(c, LineCollection)]
    if n <= 6:
        assert len(ax.containers) == n
        return
    assert not ax.containers and len(bars) == 1
    segs = bars[0].get_segments()
    assert len(segs) == n * tau.size
    seg = segs[5 * tau.size + 7]  # curve 5, point 7
    numpy.testing.assert_allclose(seg[:, 0], tau[7])
    numpy.testing.assert_allclose(seg[:, 1], [g2[5, 7] - 0.01, g2[5, 7] + 0.01])
    assert numpy.ptp(segs[3][:, 1]) == 0  # no bar where the error is not finite
    markers = [line for line in ax.lines if line.get_marker() == "o"]
    assert len(markers) == n
    numpy.testing.assert_allclose(bars[0].get_colors()[5 * tau.size][:3],
                                  markers[5].get_color()[:3])
