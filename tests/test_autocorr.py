"""Exact autocorrelation c[τ] = Σ_t a[t]·a[t+τ] (used for s2 and the jackknife)."""

from __future__ import annotations

import numpy
import pytest

from ewoksxpcs.engine.autocorr import DIRECT_MAX_FRAMES, autocorrelate


def direct_python(a):
    """Plain int64 dot products, one per lag (the definition)."""
    a = numpy.asarray(a, dtype=numpy.int64)
    n = a.shape[-1]
    return numpy.stack([(a[..., : n - t] * a[..., t:]).sum(axis=-1) for t in range(n)], axis=-1)


@pytest.mark.parametrize("method", ["fft", "direct", "auto"])
def test_small_exact(method):
    a = numpy.array([3, -1, 4, 1, -5, 9, 2, -6])
    c = autocorrelate(a, method=method)
    assert c.dtype == numpy.int64
    assert c.tolist() == direct_python(a).tolist()
    assert c[0] == int((a * a).sum()) and c[-1] == a[0] * a[-1]


def test_fft_exact_large_values_long_series():
    # Nt·max² just under 2^63: values < 2^20 on 5000 frames (the int64 limit of the contract).
    rng = numpy.random.default_rng(3)
    n = 5000
    a = rng.integers(0, 2**20, size=(3, n), dtype=numpy.int64)
    a[:, :50] = 2**20 - 1
    a[2] = 2**20 - 1  # a constant series: c[τ] = (Nt - τ)·v²
    assert n * int(a.max()) ** 2 < 2**63
    c = autocorrelate(a, method="fft")
    assert c.dtype == numpy.int64
    expected = direct_python(a)
    assert numpy.array_equal(c, expected)
    assert numpy.array_equal(c[2], (n - numpy.arange(n)) * (2**20 - 1) ** 2)
    # A plain float64 FFT is not exact here (this is what the bit pieces are for).
    nfft = 1 << (2 * n).bit_length()
    f = numpy.fft.rfft(a[0].astype(float), nfft)
    plain = numpy.fft.irfft(f * f.conj(), nfft)[:n]
    assert not numpy.array_equal(numpy.rint(plain).astype(numpy.int64), expected[0])


def test_fft_exact_signed():
    rng = numpy.random.default_rng(4)
    a = rng.integers(-(2**19), 2**19, size=(2, 3000), dtype=numpy.int64)
    a[0, ::7] = -(2**19)
    c = autocorrelate(a, method="fft")
    assert numpy.array_equal(c, direct_python(a))
    assert (c < 0).any()  # signed series do give negative lags


@pytest.mark.parametrize("dtype", [numpy.int8, numpy.uint8, numpy.int16, numpy.uint16,
                                   numpy.int32, numpy.uint32, numpy.int64, numpy.bool_])
def test_integer_inputs(dtype):
    rng = numpy.random.default_rng(5)
    info = numpy.iinfo(dtype) if dtype is not numpy.bool_ else None
    lo, hi = (0, 2) if info is None else (max(info.min, -(2**20)), min(info.max, 2**20))
    a = rng.integers(lo, hi, size=1500, endpoint=info is not None).astype(dtype)
    expected = direct_python(a.astype(numpy.int64))
    for method in ("direct", "fft", "auto"):
        c = autocorrelate(a, method=method)
        assert c.dtype == numpy.int64
        assert numpy.array_equal(c, expected), method


def test_auto_switches_at_direct_max():
    rng = numpy.random.default_rng(6)
    for n in (DIRECT_MAX_FRAMES, DIRECT_MAX_FRAMES + 1):
        a = rng.integers(0, 1000, size=n)
        assert numpy.array_equal(autocorrelate(a), direct_python(a))


def test_float_path():
    rng = numpy.random.default_rng(7)
    a = rng.normal(size=(4, 700)).astype(numpy.float32)
    ref = numpy.stack([numpy.correlate(x, x, mode="full")[x.size - 1:] for x in a.astype(float)])
    for method in ("direct", "fft"):
        c = autocorrelate(a, method=method)
        assert c.dtype == numpy.float64 and c.shape == a.shape
        numpy.testing.assert_allclose(c, ref, rtol=1e-9, atol=1e-9 * numpy.abs(ref).max())


@pytest.mark.parametrize("method", ["direct", "fft", "auto"])
def test_zero_and_one_frames(method):
    c = autocorrelate(numpy.zeros((3, 0), numpy.int32), method=method)
    assert c.shape == (3, 0) and c.dtype == numpy.int64
    c = autocorrelate(numpy.array([[7], [-3]], numpy.int16), method=method)
    assert c.tolist() == [[49], [9]] and c.dtype == numpy.int64
    c = autocorrelate(numpy.array([2.5], numpy.float32), method=method)
    assert c.tolist() == [6.25] and c.dtype == numpy.float64


def test_all_zero():
    c = autocorrelate(numpy.zeros((2, 2000), numpy.uint16), method="fft")
    assert c.dtype == numpy.int64 and not c.any()


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown autocorrelation method 'matmul'"):
        autocorrelate(numpy.arange(4), method="matmul")
