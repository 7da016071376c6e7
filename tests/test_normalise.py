"""Normalisation: g2 = N·n2/s2 from the sums, exact s2, delete-one-group jackknife errors."""

from __future__ import annotations

import numpy
import pytest

from ewoksxpcs import Binning, CorrelationResult, CorrelationSums, correlate
from ewoksxpcs.engine.normalise import bin_sums, normalise


def frames_and_qmask(seed=0, shape=(30, 6, 8), labels=(1, 2)):
    rng = numpy.random.default_rng(seed)
    frames = rng.poisson(3.0, size=shape).astype(numpy.uint16)
    qmask = rng.choice((0,) + tuple(labels), size=shape[1:]).astype(numpy.int32)
    return frames, qmask


def definition(frames, pixel_mask):
    """g2, n2, s2 of the pixels in ``pixel_mask``, straight from the definition (int64)."""
    a = frames[:, pixel_mask].astype(numpy.int64)  # (Nt, N)
    nt, npix = a.shape
    S = a.sum(axis=1)
    n2 = numpy.array([(a[: nt - t] * a[t:]).sum() for t in range(nt)])
    s2 = numpy.array([(S[: nt - t] * S[t:]).sum() for t in range(nt)])
    with numpy.errstate(invalid="ignore", divide="ignore"):
        g2 = npix * n2 / s2
    return g2, n2, s2


def test_g2_from_definition():
    frames, qmask = frames_and_qmask()
    result = correlate(frames, qmask, method="reference")
    assert isinstance(result, CorrelationResult)
    for row, label in enumerate((1, 2)):
        g2, n2, s2 = definition(frames, qmask == label)
        assert result.n2[row].tolist() == n2.tolist()
        assert result.s2[row].tolist() == s2.tolist()
        assert result.s2.dtype == numpy.int64
        numpy.testing.assert_allclose(result.g2[row], g2, rtol=1e-14)
        assert result.n_pixels[row] == (qmask == label).sum()
        assert numpy.array_equal(result.frame_sums[:, row],
                                 frames[:, qmask == label].astype(numpy.int64).sum(axis=1))
    assert result.lags.dtype == numpy.int64 and result.lags.tolist() == list(range(30))
    assert result.n_frames == 30 and result.n_bins == 2
    numpy.testing.assert_allclose(result.mean_intensity,
                                  [frames[:, qmask == v].mean() for v in (1, 2)], rtol=1e-12)
    assert result.method == "reference" and result.device == "cpu"
    assert set(result.info["timings"]) == {"correlate_s", "normalise_s"}
    assert "n_bins=2" in repr(result)


def test_jackknife_is_delete_one_group():
    # σ² = (G-1)/G Σ_g (g2₋g − mean)², g2₋g computed from scratch without group g's pixels;
    # the error is at least the counting error of the pairs, √max(n2, E)/E with E = s2/N.
    frames, qmask = frames_and_qmask(seed=1, shape=(25, 7, 9))
    n_groups = 5
    binning = Binning(qmask, n_groups=n_groups)
    result = correlate(frames, binning, method="reference")
    sub = binning.sub_image().reshape(qmask.shape)
    for row in range(binning.n_bins):
        subs = range(binning.bin_sub_offsets[row], binning.bin_sub_offsets[row + 1])
        assert len(subs) == n_groups
        in_bin = qmask == binning.labels[row]
        loo = numpy.stack([definition(frames, in_bin & (sub != k))[0] for k in subs])
        jackknife = numpy.sqrt((n_groups - 1) / n_groups * ((loo - loo.mean(axis=0)) ** 2).sum(axis=0))
        _, n2, s2 = definition(frames, in_bin)
        pairs = s2 / in_bin.sum()
        counting = numpy.sqrt(numpy.maximum(n2, pairs)) / pairs
        numpy.testing.assert_allclose(result.expected_pairs[row], pairs, rtol=1e-14)
        numpy.testing.assert_allclose(result.g2_err[row], numpy.maximum(jackknife, counting),
                                      rtol=1e-10)
        assert (jackknife > counting).any() and (jackknife < counting).any()  # both rules seen
        assert (result.g2_err[row, :10] > 0).all()


def test_constant_frames():
    # Constant frames: g2 = 1 at every lag, exactly, with no scatter between groups.
    frames = numpy.full((40, 5, 6), 7, numpy.uint8)
    qmask = numpy.ones((5, 6), int)
    qmask[0] = 2
    result = correlate(frames, qmask, method="reference")
    assert (result.g2 == 1.0).all()
    # No scatter: the error is the counting error of the pairs alone, 1/√E (n2 = E).
    numpy.testing.assert_allclose(result.g2_err, 1 / numpy.sqrt(result.expected_pairs),
                                  rtol=1e-12)
    assert result.n2[0].tolist() == [24 * 49 * (40 - t) for t in range(40)]
    floats = correlate(frames.astype(numpy.float32), qmask, method="reference")
    assert (floats.g2 == 1.0).all() and (floats.g2_err == 0.0).all()  # no counting floor


def test_gain_invariance():
    # g2 does not depend on the detector gain: frames ×3 give the same g2 and jackknife error
    # (float frames: integer ones would be read as 3× the photons, with a smaller counting error).
    frames, qmask = frames_and_qmask(seed=2)
    frames = frames.astype(numpy.float32)
    a = correlate(frames, qmask, method="reference")
    b = correlate(frames * numpy.float32(3), qmask, method="reference")
    numpy.testing.assert_allclose(b.n2, 9 * a.n2, rtol=1e-14)
    numpy.testing.assert_allclose(b.s2, 9 * a.s2, rtol=1e-14)
    numpy.testing.assert_allclose(b.g2, a.g2, rtol=1e-13)
    numpy.testing.assert_allclose(b.g2_err, a.g2_err, rtol=1e-9)


def test_sums_are_additive_over_pixels():
    frames, qmask = frames_and_qmask(seed=3)
    binning = Binning(qmask, n_groups=4)
    rng = numpy.random.default_rng(3)
    part = rng.random(qmask.shape) < 0.5
    a = correlate(frames * part, binning, method="reference").sums
    b = correlate(frames * ~part, binning, method="reference").sums
    whole = correlate(frames, binning, method="reference")
    total = a + b
    assert numpy.array_equal(total.n2, whole.sums.n2)
    assert numpy.array_equal(total.frame_sums, whole.sums.frame_sums)
    again = normalise(total, binning, method="sum")
    assert numpy.array_equal(again.n2, whole.n2) and numpy.array_equal(again.s2, whole.s2)
    numpy.testing.assert_allclose(again.g2_err, whole.g2_err, rtol=1e-12)
    assert again.method == "sum"
    with pytest.raises(ValueError, match="cannot add correlation sums of different shapes"):
        a + CorrelationSums(a.n2[:, :3], a.frame_sums[:3], a.lags[:3])


def test_bin_sums():
    frames, qmask = frames_and_qmask(seed=4)
    binning = Binning(qmask, n_groups=3)
    sums = correlate(frames, binning, method="reference").sums
    assert sums.n2.shape == (binning.n_sub, 30) and sums.frame_sums.shape == (30, binning.n_sub)
    assert sums.n_frames == 30
    n2, fs = bin_sums(sums, binning)
    for row in range(binning.n_bins):
        s0, s1 = binning.bin_sub_offsets[row], binning.bin_sub_offsets[row + 1]
        assert numpy.array_equal(n2[row], sums.n2[s0:s1].sum(axis=0))
        assert numpy.array_equal(fs[:, row], sums.frame_sums[:, s0:s1].sum(axis=1))


@pytest.mark.parametrize("s2_method", ["direct", "fft", "auto"])
def test_s2_methods_agree(s2_method):
    frames, qmask = frames_and_qmask(seed=5, shape=(1200, 3, 4))
    frames = frames.astype(numpy.uint32) * numpy.uint32(5000)  # large sums: exact int64 needed
    binning = Binning(qmask, n_groups=2)
    sums = correlate(frames, binning, method="reference").sums
    direct = normalise(sums, binning, s2_method="direct")
    other = normalise(sums, binning, s2_method=s2_method)
    assert other.s2.dtype == numpy.int64
    assert numpy.array_equal(other.s2, direct.s2)
    numpy.testing.assert_array_equal(other.g2_err, direct.g2_err)


def test_s2_beyond_int64_is_refused():
    # Frame sums of 2^31 over 4 frames: (max S)²·Nt = 2^64 ≥ 2^62, the exact range of s2.
    binning = Binning(numpy.ones((1, 2), int), n_groups=1)
    fs = numpy.full((4, 1), 2**31, numpy.int64)
    sums = CorrelationSums(n2=numpy.full((1, 4), 2**40, numpy.int64), frame_sums=fs,
                           lags=numpy.arange(4))
    with pytest.raises(ValueError, match=r"s2 of q bin 1 can reach 1\.845e\+19 .*int64 range"):
        normalise(sums, binning)
    # Just below the bound: exact int64.
    sums.frame_sums = numpy.full((4, 1), 2**29, numpy.int64)
    result = normalise(sums, binning)
    assert result.s2.dtype == numpy.int64
    assert result.s2[0].tolist() == [(4 - t) * 2**58 for t in range(4)]


def test_empty_and_single_pixel_bins():
    frames, _ = frames_and_qmask(seed=6, shape=(20, 4, 5))
    qmask = numpy.zeros((4, 5), int)
    qmask[0, 0] = 1
    qmask[2:] = 3
    with pytest.warns(RuntimeWarning, match="have no pixel"):
        binning = Binning(qmask, labels=[1, 2, 3])
    result = correlate(frames, binning, method="reference")
    assert result.s2.dtype == numpy.int64 and (result.s2[1] == 0).all()
    assert numpy.isnan(result.g2[1]).all()
    assert numpy.isnan(result.g2_err[:2]).all()  # one pixel or none: no error bar
    assert numpy.isfinite(result.g2_err[2, :5]).all()
    assert numpy.isfinite(result.g2[0]).all() or (frames[:, 0, 0] == 0).any()
    assert result.frame_sums.shape == (20, 3) and (result.frame_sums[:, 1] == 0).all()


def test_float_frames():
    frames, qmask = frames_and_qmask(seed=7)
    f = frames.astype(numpy.float32) * numpy.float32(0.25)
    result = correlate(f, qmask, method="reference")
    ref = correlate(frames, qmask, method="reference")
    assert result.n2.dtype == numpy.float64 and result.s2.dtype == numpy.float64
    numpy.testing.assert_allclose(result.n2, ref.n2 / 16, rtol=1e-14)
    numpy.testing.assert_allclose(result.g2, ref.g2, rtol=1e-12)
    # Same jackknife; the counts (ref) also have the counting-error floor, floats do not.
    counting = numpy.sqrt(numpy.maximum(ref.n2, ref.expected_pairs)) / ref.expected_pairs
    jackknife = ref.g2_err > counting * (1 + 1e-9)
    assert jackknife.any() and (~jackknife).any()
    numpy.testing.assert_allclose(result.g2_err[jackknife], ref.g2_err[jackknife], rtol=1e-8)
    assert (result.g2_err[~jackknife] <= ref.g2_err[~jackknife] * (1 + 1e-9)).all()


@pytest.mark.parametrize("kind", ["int", "float"])
def test_jackknife_paths_give_the_same_bits(kind, monkeypatch):
    """The NumPy jackknife and the fused numba one (large results) both give the bits of
    jackknife_error over g2₋g = (N_q − N_g)·(n2 − n2_g)/s2[S − S_g], bin by bin, with s2 rows
    strided (host FFTs) or contiguous (device); bins of several group counts, of one pixel and
    empty; the bin sums (numba for large int64 ones) too."""
    from ewoksxpcs.engine import normalise as module
    from ewoksxpcs.engine import normalise_numba  # loaded here: used by normalise from now on
    from ewoksxpcs.engine.normalise import expected_pairs, jackknife_error, s2_rows, undefined_lags

    assert module._numba_kernels() is normalise_numba

    rng = numpy.random.default_rng(8)
    qmask = rng.integers(1, 5, (9, 11))
    qmask[0, 0] = 6  # one pixel
    with pytest.warns(RuntimeWarning, match="have no pixel"):
        binning = Binning(qmask, labels=[1, 2, 3, 4, 5, 6], n_groups=7)
    binning_groups = set(binning.n_groups_per_bin.tolist())
    assert {0, 1, 7} <= binning_groups
    nt = 300
    if kind == "int":
        fs = rng.poisson(4.0, (nt, binning.n_sub)).astype(numpy.int64)
        n2 = rng.poisson(20.0, (binning.n_sub, nt)).astype(numpy.int64)
        n2[:, nt // 2:] //= 8  # zeros: undefined lags
    else:
        fs = rng.random((nt, binning.n_sub)) * 4
        n2 = rng.random((binning.n_sub, nt)) * 20
    sums = CorrelationSums(n2=n2, frame_sums=fs, lags=numpy.arange(nt))
    rows = s2_rows(fs, binning, sums.lags)
    n2_bins, _ = bin_sums(sums, binning)
    err = numpy.full((binning.n_bins, nt), numpy.nan)
    for i in range(binning.n_bins):
        s0, s1 = binning.bin_sub_offsets[i], binning.bin_sub_offsets[i + 1]
        if s1 - s0 > 1:
            npix = int(binning.n_pixels[i])
            n_g = binning.sub_n_pixels[s0:s1].astype(numpy.float64)
            loo = ((npix - n_g)[:, None] * (n2_bins[i].astype(numpy.float64)
                                             - n2[s0:s1].astype(numpy.float64))
                   / rows[i][1:].astype(numpy.float64))
            err[i] = jackknife_error(loo)
    ref = normalise(sums, binning, s2=rows)
    undefined_lags(ref.g2.copy(), err, n2_bins, expected_pairs(ref.s2, binning.n_pixels),
                   counts=kind == "int")
    assert numpy.isnan(err).any() and numpy.isfinite(err).any()
    monkeypatch.setattr(module, "NUMBA_LAGS", 11)  # several blocks, a partial last one
    for size in (0, 10**12):  # fused numba kernel, NumPy
        monkeypatch.setattr(module, "NUMBA_JACKKNIFE_SIZE", size)
        for s2 in (rows, [None if r is None else numpy.ascontiguousarray(r) for r in rows]):
            got = normalise(sums, binning, s2=s2)
            numpy.testing.assert_array_equal(got.g2_err, err)
            numpy.testing.assert_array_equal(got.g2, ref.g2)
            for key in ("n2", "frame_sums", "s2", "expected_pairs"):
                a, b = getattr(got, key), getattr(ref, key)
                assert a.dtype == b.dtype
                numpy.testing.assert_array_equal(a, b)


def test_numba_kernels_load_in_the_background():
    """warm_numba(): once per process, a thread loads the kernels; normalise never waits."""
    import threading

    from ewoksxpcs.engine import normalise as module

    module.warm_numba()
    module.warm_numba()  # no second thread
    loaders = [t for t in threading.enumerate() if t.name == "ewoksxpcs-numba-normalise"]
    assert len(loaders) <= 1
    for t in loaders:
        t.join(60)
    assert module._numba_kernels() is not None
