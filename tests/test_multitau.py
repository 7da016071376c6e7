"""Multi-tau g2 (NumPy backend) against direct NumPy transcriptions of the documented formulas,
the linear-lag result at level 0, and scikit-beam's ``multi_tau_auto_corr``."""

import numpy
import pytest

import ewoksxpcs
from ewoksxpcs.engine.events import compact
from ewoksxpcs.engine.frames import IterableFrameSource
from ewoksxpcs.engine.multitau import (
    MultiTauResult,
    level_frame_sums,
    multitau_lags,
)
from ewoksxpcs.correlators import multitau
from ewoksxpcs.engine.qmask import Binning


def _qmask(shape=(6, 7)):
    q = numpy.zeros(shape, dtype=int)
    q[: shape[0] // 2] = 1
    q[shape[0] // 2:] = 4
    q[0, 0] = 0  # an unbinned pixel
    q[-1, -2:] = 9  # a small bin (2 pixels: 2 groups)
    return q


def _frames(rng, n_frames, shape=(6, 7), lam=1.5, dtype=numpy.uint16):
    return rng.poisson(lam, (n_frames,) + shape).astype(dtype)


def _direct(frames, qmask, m, normalisation):
    """Direct transcription of the module docstring: level frames by reshape, sums per bin."""
    frames = numpy.asarray(frames, dtype=numpy.float64)
    nt = frames.shape[0]
    labels = numpy.unique(qmask[qmask > 0])
    lags, g2 = [], []
    level = 0
    while True:
        w = 1 << level
        n_l = nt // w
        ks = [k for k in (range(m) if level == 0 else range(m // 2, m)) if n_l - k >= 1]
        if not ks:
            break
        x = frames[: n_l * w].reshape(n_l, w, -1).sum(axis=1)
        row = []
        for lab in labels:
            a = x[:, (qmask == lab).ravel()]
            S = a.sum(axis=1)
            npix = a.shape[1]
            vals = []
            for k in ks:
                n2 = (a[: n_l - k] * a[k:]).sum()
                if normalisation == "standard":
                    vals.append(npix * n2 / (S[: n_l - k] * S[k:]).sum())
                else:
                    P = n_l - k
                    vals.append(npix * P * n2 / (S[: n_l - k].sum() * S[k:].sum()))
            row.append(vals)
        g2.append(numpy.array(row))
        lags.extend(k * w for k in ks)
        level += 1
    return numpy.array(lags, dtype=float), numpy.concatenate(g2, axis=1)


def test_lags_scheme():
    level, k = multitau_lags(4, 203)
    lags = k << level
    assert lags.tolist() == [0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128]
    # a lag is kept while it has a pair of level frames: n_L - k >= 1
    assert (((203 >> level) - k) >= 1).all()
    level, k = multitau_lags(8, 100, max_levels=2)
    assert (k << level).tolist() == list(range(8)) + [8, 10, 12, 14]
    level, k = multitau_lags(2, 9)
    assert (k << level).tolist() == [0, 1, 2, 4]  # level 3 has a single frame: no pair


@pytest.mark.parametrize("m", [1, 3, 0, -2])
def test_bad_lags_per_level(rng, m):
    with pytest.raises(ValueError, match="lags_per_level"):
        multitau(_frames(rng, 20), _qmask(), lags_per_level=m, method="numpy")


def test_bad_options(rng):
    frames = _frames(rng, 20)
    with pytest.raises(ValueError, match="normalisation"):
        multitau(frames, _qmask(), normalisation="per-pixel", method="numpy")
    with pytest.raises(ValueError, match="multi-tau method"):
        multitau(frames, _qmask(), method="bogus")
    with pytest.raises(ValueError, match="max_levels"):
        multitau(frames, _qmask(), max_levels=0, method="numpy")
    with pytest.raises(ValueError, match="runs on the CPU"):
        multitau(frames, _qmask(), method="numpy", device="gpu")
    with pytest.raises(TypeError):
        multitau(frames, _qmask(), method="numpy", not_an_option=1)


def test_level_frame_sums():
    s = numpy.arange(11)[:, None]
    assert level_frame_sums(s, 0).ravel().tolist() == list(range(11))
    assert level_frame_sums(s, 1).ravel().tolist() == [1, 5, 9, 13, 17]
    assert level_frame_sums(s, 2).ravel().tolist() == [6, 22]


@pytest.mark.parametrize("normalisation", ["standard", "symmetric"])
@pytest.mark.parametrize("m", [2, 4, 8])
def test_against_direct_formula(rng, normalisation, m):
    frames = _frames(rng, 157)
    q = _qmask()
    r = multitau(frames, q, lags_per_level=m, normalisation=normalisation, method="numpy")
    lags, g2 = _direct(frames, q, m, normalisation)
    assert isinstance(r, MultiTauResult)
    numpy.testing.assert_array_equal(r.lags, lags)
    numpy.testing.assert_allclose(r.g2, g2, rtol=1e-12)
    assert r.labels.tolist() == [1, 4, 9]
    assert r.normalisation == normalisation
    assert r.n2.dtype == numpy.int64
    # lag times of each level and the pairs averaged
    numpy.testing.assert_array_equal(r.lags, (r.sums.k << r.level).astype(float))
    numpy.testing.assert_array_equal(r.n_pairs, (157 >> r.level) - r.sums.k)
    numpy.testing.assert_allclose(r.g2, r.n_pixels[:, None] * r.n2 / r.d2, rtol=1e-12)


def test_level0_equals_linear_exactly(rng):
    frames = _frames(rng, 64, dtype=numpy.uint8)
    q = _qmask()
    lin = ewoksxpcs.correlate(frames, q, method="reference")
    for m in (4, 16):
        r = multitau(frames, q, lags_per_level=m, method="numpy")
        cols = r.level == 0
        numpy.testing.assert_array_equal(r.lags[cols], numpy.arange(m))
        numpy.testing.assert_array_equal(r.n2[:, cols], lin.n2[:, :m])
        numpy.testing.assert_array_equal(r.d2[:, cols], lin.s2[:, :m])
        numpy.testing.assert_array_equal(r.g2[:, cols], lin.g2[:, :m])
        # same formula on a subset of lags: equal up to the last bit of the float64 sums
        numpy.testing.assert_allclose(r.g2_err[:, cols], lin.g2_err[:, :m], rtol=1e-13)
        numpy.testing.assert_array_equal(r.frame_sums, lin.frame_sums)


def test_symmetric_jackknife_error(rng):
    """The symmetric error bars: delete-one-group jackknife recomputed by hand."""
    frames = _frames(rng, 80)
    q = _qmask()
    binning = Binning(q, n_groups=4)
    r = multitau(frames, binning, lags_per_level=4, normalisation="symmetric", method="numpy")
    i = 0  # bin 1
    s0, s1 = binning.bin_sub_offsets[i], binning.bin_sub_offsets[i + 1]
    groups = [binning.pixel_index[binning.sub_offsets[g]: binning.sub_offsets[g + 1]]
              for g in range(s0, s1)]
    flat = frames.reshape(frames.shape[0], -1).astype(float)
    for j, (lag, level) in enumerate(zip(r.lags, r.level)):
        w, k = 1 << int(level), int(lag) >> int(level)
        n_l = frames.shape[0] // w
        x = flat[: n_l * w].reshape(n_l, w, -1).sum(axis=1)
        loo = []
        for g in range(len(groups)):
            pix = numpy.concatenate([groups[h] for h in range(len(groups)) if h != g])
            a = x[:, pix]
            S = a.sum(axis=1)
            loo.append(pix.size * (n_l - k) * (a[: n_l - k] * a[k:]).sum()
                       / (S[: n_l - k].sum() * S[k:].sum()))
        loo = numpy.array(loo)
        G = loo.size
        expected = numpy.sqrt((G - 1) / G * ((loo - loo.mean()) ** 2).sum())
        # at least the counting error of the pairs, √max(n2, E)/E, E = d2/N = SP·SF/(P·N)
        a = x[:, numpy.concatenate(groups)]
        S = a.sum(axis=1)
        pairs = S[: n_l - k].sum() * S[k:].sum() / (n_l - k) / a.shape[1]
        assert r.expected_pairs[i, j] == pytest.approx(pairs, rel=1e-12)
        expected = max(expected, numpy.sqrt(max(r.n2[i, j], pairs)) / pairs)
        assert r.g2_err[i, j] == pytest.approx(expected, rel=1e-10)
    assert numpy.isfinite(r.g2_err[:2]).all()


def test_symmetric_equals_scikit_beam(rng):
    skbeam = pytest.importorskip("skbeam.core.correlation")
    frames = _frames(rng, 203, lam=2.0)
    q = _qmask()
    for m in (4, 8):
        r = multitau(frames, q, lags_per_level=m, normalisation="symmetric", method="numpy")
        n_levels = int(r.level.max()) + 1
        g2, lags = skbeam.multi_tau_auto_corr(n_levels, m, q, frames.astype(float))
        n = len(lags)
        numpy.testing.assert_array_equal(r.lags[:n], lags)
        numpy.testing.assert_allclose(r.g2[:, :n], g2.T, rtol=1e-12)
        # scikit-beam stops at its last full buffer; any lag of ours beyond it has few pairs
        assert n >= r.lags.size - m // 2


@pytest.mark.parametrize("dtype", [numpy.uint8, numpy.int16, numpy.uint32, numpy.float32])
def test_events_equal_dense(rng, dtype):
    frames = _frames(rng, 101, lam=0.3, dtype=dtype)
    q = _qmask()
    dense = multitau(frames, q, lags_per_level=4, method="numpy")
    ev = multitau(compact(frames), q, lags_per_level=4, method="numpy")
    numpy.testing.assert_array_equal(ev.n2, dense.n2)
    numpy.testing.assert_array_equal(ev.frame_sums, dense.frame_sums)
    numpy.testing.assert_array_equal(ev.g2, dense.g2)
    assert ev.n2.dtype == (numpy.float64 if dtype == numpy.float32 else numpy.int64)


def test_streaming_chunks_and_iterables(rng):
    frames = _frames(rng, 77)
    q = _qmask()
    ref = multitau(frames, q, lags_per_level=6, method="numpy")
    for chunk in (1, 5, 77):
        r = multitau(frames, q, lags_per_level=6, method="numpy", chunk_frames=chunk)
        numpy.testing.assert_array_equal(r.n2, ref.n2)
    chunks = [frames[:3], frames[3:40], frames[40:41], frames[41:]]
    r = multitau(IterableFrameSource(iter(chunks)), q, lags_per_level=6, method="numpy")
    numpy.testing.assert_array_equal(r.n2, ref.n2)
    numpy.testing.assert_array_equal(r.g2, ref.g2)


def test_bad_pixels_and_max_levels(rng):
    frames = _frames(rng, 90)
    q = _qmask()
    bad = numpy.zeros(q.shape, bool)
    bad[1, 1:4] = True
    r = multitau(frames, q, lags_per_level=4, method="numpy", bad_pixels=bad, max_levels=3)
    assert r.level.max() == 2
    q2 = numpy.where(bad, 0, q)
    _, g2 = _direct(frames, q2, 4, "standard")
    numpy.testing.assert_allclose(r.g2, g2[:, : r.lags.size], rtol=1e-12)
    assert r.n_pixels[0] == (q2 == 1).sum()


def test_float_frames(rng):
    frames = (rng.random((60, 6, 7)) * 3).astype(numpy.float32)
    q = _qmask()
    r = multitau(frames, q, lags_per_level=4, normalisation="symmetric", method="numpy")
    _, g2 = _direct(frames, q, 4, "symmetric")
    assert r.n2.dtype == numpy.float64
    numpy.testing.assert_allclose(r.g2, g2, rtol=1e-10)


def test_int64_overflow_refused():
    frames = numpy.full((8, 2, 2), 2**32 - 1, dtype=numpy.uint32)
    q = numpy.ones((2, 2), int)
    with pytest.raises(ValueError, match="multi-tau n2 can reach .* int64 range"):
        multitau(frames, q, lags_per_level=2, method="numpy")


def test_correlate_modes(rng):
    frames = _frames(rng, 50)
    q = _qmask()
    r = ewoksxpcs.correlate(frames, q, mode="multitau", method="numpy", lags_per_level=4,
                            normalisation="symmetric")
    assert isinstance(r, MultiTauResult) and r.normalisation == "symmetric"
    lin = ewoksxpcs.correlate(frames, q, mode="linear", method="reference")
    default = ewoksxpcs.correlate(frames, q, method="reference")
    numpy.testing.assert_array_equal(lin.g2, default.g2)
    with pytest.raises(ValueError, match="mode"):
        ewoksxpcs.correlate(frames, q, mode="threetime")


def test_physics_window_averaged_g2():
    """Synthetic Brownian data: multi-tau g2 matches the window-averaged analytic g2.

    For sums of w = 2^L frames at lag k (k >= 1, no overlap, no shot noise):
    g2 = 1 + β·(1/w²)·Σ_{i,j<w} exp(−2Γ·dt·|k·w + j − i|).
    """
    synthetic = pytest.importorskip("ewoksxpcs.tools.synthetic")
    sim = synthetic.SyntheticXPCS(shape=(48, 48), n_frames=2048, mean_counts=0.5,
                                  contrast=0.3, diffusion=2.0e7, frame_period=1e-3,
                                  n_bins=3, q_per_pixel=2e-4, seed=3)
    frames = sim.frames()
    r = multitau(frames, sim.labels, lags_per_level=8, method="numpy")
    beta = sim.contrast
    gdt = sim.gamma * sim.spec.frame_period  # Γ·dt per bin
    sel = r.lags >= 1
    pulls = []
    for i in range(r.n_bins):
        for j in numpy.flatnonzero(sel):
            w = 1 << int(r.level[j])
            k = int(r.lags[j]) // w
            d = numpy.abs(k * w + numpy.arange(w)[None, :] - numpy.arange(w)[:, None])
            expected = 1 + beta[i] * numpy.exp(-2 * gdt[i] * d).mean()
            pulls.append((r.g2[i, j] - expected) / r.g2_err[i, j])
    pulls = numpy.array(pulls)
    assert numpy.isfinite(pulls).all()
    assert numpy.abs(pulls).max() < 6
    assert 0.3 < pulls.std() < 2.5


def test_write_nexus(rng, tmp_path):
    h5py = pytest.importorskip("h5py")
    frames = _frames(rng, 40)
    r = multitau(frames, _qmask(), lags_per_level=4, method="numpy", frame_period=0.01)
    with h5py.File(tmp_path / "r.h5", "w") as f:
        r.write_nexus(f)
    with h5py.File(tmp_path / "r.h5", "r") as f:
        g = f["multitau"]
        assert g.attrs["NX_class"] == "NXdata" and g.attrs["signal"] == "g2"
        numpy.testing.assert_array_equal(g["g2"][()], r.g2)
        numpy.testing.assert_allclose(g["tau"][()], r.lags * 0.01)
        assert g["tau"].attrs["units"] == "s"
        numpy.testing.assert_array_equal(g["sums/n2"][()], r.n2)
        assert g["normalisation"][()].decode() == "standard"


@pytest.mark.parametrize("m", [2, 4, 8])
@pytest.mark.parametrize("lam", [0.05, 3.0])  # sparse (the kernel skips zeros) and dense
@pytest.mark.parametrize("max_levels", [None, 3])
def test_int_kernel_equals_numpy_accumulator(rng, m, lam, max_levels):
    """The numba kernel of integer frames gives the NumPy accumulator's sums exactly, whatever
    the chunking (odd chunks leave carries, long ones fill the rings)."""
    from ewoksxpcs.engine.multitau import IntMultiTauAccumulator, MultiTauAccumulator

    b = Binning(_qmask((9, 11)), n_groups=3)
    frames = rng.poisson(lam, (203, 9, 11)).astype(numpy.uint16)
    block = frames.reshape(203, -1)[:, b.pixel_index]
    ref = MultiTauAccumulator(b.sub_offsets, m, numpy.int64, max_levels)
    ref.feed(block)
    kernel = IntMultiTauAccumulator(b, m, max_levels)
    sums, t = [], 0
    for n in [1, 3, 1, 17, 2, 64, 5, 110]:
        sums.append(kernel.feed(block[t:t + n]))
        t += n
        if t == 21:  # a result in between: the stream goes on
            assert kernel.finish()[0].shape[0] == b.n_sub
    assert t == 203
    for got, want in zip(kernel.finish(), ref.finish()):
        numpy.testing.assert_array_equal(got, want)
    assert kernel.finish()[0].dtype == numpy.int64
    numpy.testing.assert_array_equal(numpy.concatenate(sums), b.sum_sub_bins(block))
    assert kernel.vmax == int(block.max())
