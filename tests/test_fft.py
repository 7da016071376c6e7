"""The ``fft`` backend: dense frames and EventStacks, pyFFTW and numpy.fft, exact integers.

Integer results must equal the ``reference`` oracle exactly (int64), including values large
enough that the float64 FFT alone would not round exactly (pixel grouping and bit pieces).
"""

from __future__ import annotations

import os

import numpy
import pytest

from ewoksxpcs import Binning, compact, correlate, create_correlator
from ewoksxpcs.correlators import fft as fft_module
from ewoksxpcs.correlators.fft import FFTCorrelator, fft_size

ALL_DTYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "float32")
LIBRARIES = ("pyfftw", "numpy")


def frames_of(rng, dtype, shape, hi=None, non_negative=False):
    dtype = numpy.dtype(dtype)
    if dtype.kind == "f":
        return rng.gamma(0.7, 4.0, size=shape).astype(dtype)
    info = numpy.iinfo(dtype)
    hi = min(int(info.max), 2**20) if hi is None else hi
    lo = 0 if non_negative else max(int(info.min), -(2**20))
    data = rng.integers(lo, hi, size=shape, endpoint=True)
    data[rng.random(shape) < 0.3] = 0
    return data.astype(dtype)


def check_same(res, ref):
    if ref.n2.dtype == numpy.int64:
        assert res.n2.dtype == numpy.int64
        assert numpy.array_equal(res.sums.n2, ref.sums.n2)
        assert numpy.array_equal(res.s2, ref.s2)
    else:
        assert res.n2.dtype == numpy.float64
        numpy.testing.assert_allclose(res.sums.n2, ref.sums.n2, rtol=1e-10,
                                      atol=1e-10 * numpy.abs(ref.sums.n2).max())
    numpy.testing.assert_allclose(res.g2, ref.g2, rtol=1e-6, equal_nan=True)
    numpy.testing.assert_allclose(res.g2_err, ref.g2_err, rtol=1e-6, equal_nan=True)


def assert_matches_reference(frames, qmask, n_groups=16, **options):
    ref = correlate(frames, qmask, method="reference", n_groups=n_groups)
    res = correlate(frames, qmask, method="fft", n_groups=n_groups, **options)
    check_same(res, ref)
    assert res.method == "fft"
    return res


# ---------------------------------------------------------------------- sizes
@pytest.mark.parametrize("n_frames", [1, 2, 3, 7, 100, 1000, 4097, 70_000])
def test_fft_size(n_frames):
    n = fft_size(n_frames)
    assert n >= 2 * n_frames - 1
    m = n
    for p in (2, 3, 5):
        while m % p == 0:
            m //= p
    assert m == 1, f"{n} is not 5-smooth"
    assert n < 2 * (2 * n_frames - 1) or n_frames == 1


# ---------------------------------------------------------------------- dense frames
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("pixel_block", [5, None])
def test_dtypes_equal_reference(dtype, library, pixel_block, rng):
    frames = frames_of(rng, dtype, (45, 9, 11))
    qmask = rng.choice([0, 2, 5, 11], size=(9, 11))
    assert_matches_reference(frames, qmask, fft_library=library, pixel_block=pixel_block)


def test_planner_and_threads(rng):
    frames = frames_of(rng, "uint16", (60, 5, 8))
    qmask = rng.integers(1, 4, size=(5, 8))
    a = assert_matches_reference(frames, qmask, fftw_planner="measure", threads=1)
    b = correlate(frames, qmask, method="fft", fftw_planner="estimate", threads=2)
    assert numpy.array_equal(a.n2, b.n2)


def test_one_pixel_empty_and_non_contiguous_bins(rng):
    frames = frames_of(rng, "uint8", (31, 5, 7))
    qmask = numpy.zeros((5, 7), dtype=int)
    qmask[0, 0] = 9
    qmask[2:, 3:] = 4
    qmask[4, 0] = 2
    with pytest.warns(RuntimeWarning, match="no pixel"):
        binning = Binning(qmask, labels=[2, 4, 7, 9])
    ref = correlate(frames, binning, method="reference")
    res = correlate(frames, binning, method="fft", pixel_block=3)
    assert numpy.array_equal(res.labels, [2, 4, 7, 9])
    assert numpy.array_equal(res.n2, ref.n2)
    assert numpy.isnan(res.g2[2]).all()
    numpy.testing.assert_allclose(res.g2, ref.g2, rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize("library", LIBRARIES)
def test_all_zero_frames(library):
    frames = numpy.zeros((12, 4, 5), dtype=numpy.uint16)
    res = correlate(frames, numpy.ones((4, 5), int), method="fft", fft_library=library)
    assert res.n2.dtype == numpy.int64 and not res.n2.any()
    assert numpy.isnan(res.g2).all()


@pytest.mark.parametrize("n_frames", [1, 2])
@pytest.mark.parametrize("library", LIBRARIES)
def test_short_series(n_frames, library, rng):
    frames = frames_of(rng, "int16", (n_frames, 7, 13))
    res = assert_matches_reference(frames, rng.integers(1, 4, size=(7, 13)), fft_library=library)
    assert res.n2.shape[1] == n_frames


def test_chunks_of_inconsistent_sizes(rng):
    frames = frames_of(rng, "uint32", (53, 6, 7))
    qmask = rng.integers(0, 4, size=(6, 7))
    qmask[0, 0] = 1
    sizes = [1, 5, 2, 11, 3, 17, 14]

    def chunks():
        t = 0
        for n in sizes:
            yield frames[t : t + n]
            t += n

    ref = correlate(frames, qmask, method="reference")
    res = correlate(chunks(), qmask, method="fft", pixel_block=4)
    assert res.n_frames == 53
    assert numpy.array_equal(res.sums.n2, ref.sums.n2)


# ---------------------------------------------------------------------- exactness, large values
def exact_autocorrelation(a) -> numpy.ndarray:
    """Σ_t a[t]·a[t+τ] for all τ, exactly, from one big-integer product (Kronecker substitution).

    Non-negative values with correlations below 2**64: the series and its reverse become the
    base-2**64 digits of two Python integers; digit Nt−1+τ of their product is c[τ].
    """
    a = numpy.asarray(a, dtype=numpy.uint64)
    n = a.size
    x = int.from_bytes(a.astype("<u8").tobytes(), "little")
    y = int.from_bytes(a[::-1].astype("<u8").tobytes(), "little")
    digits = numpy.frombuffer((x * y).to_bytes(16 * n, "little"), dtype="<u8")
    return digits[n - 1 : 2 * n - 1].astype(numpy.int64)


def test_large_counts_many_frames_bit_pieces(monkeypatch):
    """Counts near 4095 over 70 000 frames: Σa² > 2**40 per pixel, so values are split into
    bit pieces; n2 > 2**32 and exactly equal to big-integer products."""
    calls = []
    real = FFTCorrelator._pieces

    def spy(self, tr, series):
        out = real(self, tr, series)
        calls.append(len(out[0]))
        return out

    monkeypatch.setattr(FFTCorrelator, "_pieces", spy)
    rng = numpy.random.default_rng(7)
    nt = 70_000
    frames = numpy.empty((nt, 1, 2), dtype=numpy.uint16)
    frames[:, 0, 0] = 4095 - numpy.minimum(rng.poisson(2.0, nt), 4095)
    frames[:, 0, 1] = 4095 - numpy.minimum(rng.poisson(9.0, nt), 4095)
    expected = exact_autocorrelation(frames[:, 0, 0]) + exact_autocorrelation(frames[:, 0, 1])
    assert expected[0] > 2**40
    for library in LIBRARIES:
        sums = create_correlator(numpy.array([[1, 1]]), "fft", n_groups=1,
                                 fft_library=library).compute_sums(frames)
        assert numpy.array_equal(sums.n2[0], expected), library
    assert calls and min(calls) >= 2


def test_large_counts_pixel_groups(monkeypatch):
    """Σa² of a sub-bin above 2**40 (each pixel below): several rounding groups, still exact."""
    groups = []
    real = fft_module._groups

    def spy(weights, subs, limit):
        out = real(weights, subs, limit)
        groups.append(len(out[0]))
        return out

    monkeypatch.setattr(fft_module, "_groups", spy)
    rng = numpy.random.default_rng(3)
    nt = 30_000
    frames = rng.integers(2048, 4096, size=(nt, 1, 4)).astype(numpy.uint16)
    expected = sum(exact_autocorrelation(frames[:, 0, p]) for p in range(4))
    sums = create_correlator(numpy.ones((1, 4), int), "fft", n_groups=1,
                             pixel_block=4).compute_sums(frames)
    assert numpy.array_equal(sums.n2[0], expected)
    assert max(groups) >= 2


def test_groups_respect_the_limit(rng):
    weights = rng.random(200) * 0.9
    subs = numpy.repeat(numpy.arange(5), 40)
    starts, ends, gsub = fft_module._groups(weights, subs, 3.0)
    assert starts[0] == 0 and ends[-1] == 200 and numpy.array_equal(starts[1:], ends[:-1])
    for s, e, k in zip(starts, ends, gsub):
        assert weights[s:e].sum() < 3.0
        assert (subs[s:e] == k).all()


def test_int64_overflow_is_an_error():
    frames = numpy.full((8, 4, 4), 2**31 - 1, dtype=numpy.int32)
    with pytest.raises(ValueError, match="int64 range"):
        create_correlator(numpy.ones((4, 4), int), "fft").compute_sums(frames)


# ---------------------------------------------------------------------- events
@pytest.mark.parametrize("dtype", ("uint8", "uint16", "int32", "uint32", "float32"))
@pytest.mark.parametrize("library", LIBRARIES)
def test_event_stack_equals_dense(dtype, library, rng):
    frames = frames_of(rng, dtype, (41, 8, 9), non_negative=True)
    frames[:, 0, :] = 0  # pixels without events
    qmask = rng.choice([0, 3, 4, 8], size=(8, 9))
    ref = correlate(frames, qmask, method="reference")
    events = compact(frames)
    res = correlate(events, qmask, method="fft", fft_library=library, pixel_block=4)
    check_same(res, ref)


def test_event_stack_with_bad_pixels(rng):
    frames = frames_of(rng, "uint8", (30, 6, 6), non_negative=True)
    bad = numpy.zeros((6, 6), bool)
    bad[2, 3] = True
    qmask = rng.integers(1, 3, size=(6, 6))
    events = compact(frames, bad_pixels=bad)
    ref = correlate(frames, qmask, method="reference", bad_pixels=bad)
    res = correlate(events, qmask, method="fft", bad_pixels=bad)
    check_same(res, ref)
    with pytest.raises(ValueError, match="does not hold"):
        correlate(events, qmask, method="fft")


def test_empty_event_stack():
    frames = numpy.zeros((10, 3, 3), dtype=numpy.uint8)
    res = correlate(compact(frames), numpy.ones((3, 3), int), method="fft")
    assert res.n2.shape == (1, 10) and not res.n2.any()


# ---------------------------------------------------------------------- state, memory, errors
def test_two_calls_on_one_object_are_identical(rng):
    frames = frames_of(rng, "uint16", (33, 7, 13))
    qmask = rng.integers(1, 4, size=(7, 13))
    correlator = create_correlator(qmask, "fft", pixel_block=10)
    first = correlator.correlate(frames)
    second = correlator.correlate(frames)
    assert numpy.array_equal(first.n2, second.n2)
    events = correlator.correlate(compact(frames))
    assert numpy.array_equal(first.n2, events.n2)
    other = correlator.correlate(frames[:21])
    assert numpy.array_equal(other.n2, correlate(frames[:21], qmask, method="reference").n2)


def test_spill_to_memmap(rng, stack_spills, tmp_path):
    spilled = stack_spills
    frames = frames_of(rng, "uint16", (40, 6, 9))
    qmask = rng.integers(1, 4, size=(6, 9))
    assert_matches_reference(frames, qmask, max_memory=0, chunk_frames=7, pixel_block=8)
    assert spilled and all(spilled)
    assert not os.listdir(tmp_path), "temporary gathered stack not removed"


@pytest.mark.parametrize("option,value", [("fft_library", "cufft"), ("fftw_planner", "patient"),
                                          ("pixel_block", 0), ("threads", -1),
                                          ("max_memory", -5)])
def test_bad_options(option, value, rng):
    frames = frames_of(rng, "uint8", (5, 3, 3))
    with pytest.raises((ValueError, TypeError), match=option):
        correlate(frames, numpy.ones((3, 3), int), method="fft", **{option: value})


def test_device_not_allowed():
    with pytest.raises(ValueError, match="runs on the CPU"):
        FFTCorrelator(numpy.ones((3, 3), int), device="gpu")
