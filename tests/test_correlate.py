"""Cross-method matrix: every registered method equals the ``reference`` oracle.

Integer data: n2 and s2 exactly equal (int64). float32 data: within 1e-6 relative. g2 and g2_err
within 1e-6 relative everywhere. Event methods get non-negative data.
"""

from __future__ import annotations

import math

import numpy
import pytest

import ewoksxpcs
from ewoksxpcs import Binning, compact, correlate, create_correlator
from ewoksxpcs.correlators import METHODS
from ewoksxpcs.engine.normalise import MIN_EXPECTED_PAIRS

INT_DTYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32")
ALL_DTYPES = INT_DTYPES + ("float32",)

#: 32-bit values are kept below 2**20 so that Nt·N·max² stays in int64 (the exactness contract);
#: that is still far beyond what float32 (24 bits) or a plain float64 FFT would get exactly.
BIG_32BIT = 2**20


# ---------------------------------------------------------------------- data
def make_frames(rng, dtype, shape, non_negative=False, density=0.7):
    """Random frames (Nt, Ny, Nx) covering the dtype's range (with zeros)."""
    dtype = numpy.dtype(dtype)
    if dtype.kind == "f":
        data = rng.gamma(0.8, 3.0, size=shape)
    else:
        info = numpy.iinfo(dtype)
        hi = min(int(info.max), BIG_32BIT)
        lo = max(int(info.min), -BIG_32BIT)
        if non_negative:
            lo = 0
        data = rng.integers(lo, hi, size=shape, endpoint=True)
        # The extremes of the type, where sign extension or a narrow accumulator would show.
        flat = data.reshape(-1)
        flat[rng.integers(0, flat.size, size=max(1, flat.size // 50))] = hi
        if lo < 0:
            flat[rng.integers(0, flat.size, size=max(1, flat.size // 50))] = lo
    data = numpy.where(rng.random(shape) < density, data, 0)
    return data.astype(dtype)


def make_qmask(rng, frame_shape, labels=(1, 4, 9), unused=0.2):
    qmask = rng.choice(numpy.asarray(labels), size=frame_shape).astype(numpy.int32)
    qmask[rng.random(frame_shape) < unused] = 0
    return qmask


def data_for(case, rng, dtype="uint16", shape=(40, 7, 13), **kw):
    return make_frames(rng, dtype, shape, non_negative=case.events, **kw)


# ---------------------------------------------------------------------- comparison
def assert_close(actual, expected, rtol=1e-6, what=""):
    actual = numpy.asarray(actual, dtype=numpy.float64)
    expected = numpy.asarray(expected, dtype=numpy.float64)
    assert actual.shape == expected.shape, what
    # Absolute floor relative to the largest magnitude: float sums of cancelling terms.
    scale = numpy.nanmax(numpy.abs(expected)) if numpy.isfinite(expected).any() else 0.0
    numpy.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * 1e-3 * scale,
                                  equal_nan=True, err_msg=what)


def assert_same_result(result, ref, exact):
    """``result`` equals the oracle ``ref``: exactly for integer sums, else within 1e-6."""
    assert result.n2.shape == ref.n2.shape
    numpy.testing.assert_array_equal(result.lags, ref.lags)
    numpy.testing.assert_array_equal(result.labels, ref.labels)
    numpy.testing.assert_array_equal(result.n_pixels, ref.n_pixels)
    assert result.n_frames == ref.n_frames
    if exact:
        assert result.n2.dtype == numpy.int64, result.n2.dtype
        assert numpy.array_equal(result.n2, ref.n2), "n2 differs from the reference"
        assert result.s2.dtype == ref.s2.dtype
        assert numpy.array_equal(result.s2, ref.s2), "s2 differs from the reference"
        assert numpy.array_equal(result.frame_sums, ref.frame_sums)
        assert numpy.array_equal(result.sums.n2, ref.sums.n2), "per-group n2 differs"
    else:
        assert_close(result.n2, ref.n2, what="n2")
        assert_close(result.s2, ref.s2, what="s2")
        assert_close(result.frame_sums, ref.frame_sums, what="frame sums")
    assert_close(result.g2, ref.g2, what="g2")
    assert_close(result.g2_err, ref.g2_err, what="g2_err")
    assert result.g2.dtype == numpy.float64 and result.g2_err.dtype == numpy.float64


def reference(frames, qmask, **kw):
    return correlate(frames, qmask, method="reference", **kw)


# ---------------------------------------------------------------------- the matrix
def test_methods_registered():
    # A backend module that stopped importing would silently shrink the matrix.
    expected = {"reference", "matmul", "fft", "opencl-dense", "opencl-events"}
    assert expected <= set(METHODS)
    assert ewoksxpcs.available_methods() == list(METHODS)
    assert list(METHODS)[0] == "reference"


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_dtypes(method_case, dtype, rng):
    frames = data_for(method_case, rng, dtype)
    qmask = make_qmask(rng, frames.shape[1:])
    result = correlate(frames, qmask, **method_case.kwargs())
    ref = reference(frames, qmask)
    assert result.method == method_case.name
    assert result.g2.shape == (3, 40)
    numpy.testing.assert_array_equal(result.labels, [1, 4, 9])
    assert_same_result(result, ref, exact=dtype != "float32")
    if dtype != "float32":
        # The oracle itself against a plain int64 transcription of the definition.
        binimg = qmask.ravel()
        a = frames.reshape(frames.shape[0], -1).astype(numpy.int64)
        for row, label in enumerate((1, 4, 9)):
            p = a[:, binimg == label]
            n2 = [int((p[: 40 - t] * p[t:]).sum()) for t in range(40)]
            assert ref.n2[row].tolist() == n2


def test_one_pixel_bins(method_case, rng):
    frames = data_for(method_case, rng, "uint8", shape=(30, 5, 6))
    qmask = numpy.zeros((5, 6), dtype=numpy.int32)
    qmask[0, 0], qmask[2, 3], qmask[4, 5] = 3, 5, 8
    qmask[1:3, :3] = 2
    result = correlate(frames, qmask, **method_case.kwargs())
    ref = reference(frames, qmask)
    assert_same_result(result, ref, exact=True)
    numpy.testing.assert_array_equal(result.n_pixels, [6, 1, 1, 1])
    assert numpy.isnan(result.g2_err[1:]).all()  # no error bar from a single pixel
    assert numpy.isfinite(result.g2_err[0, :10]).all()
    # One pixel: n2 = s2, so g2 = 1 wherever it is defined (s2 ≠ 0) and NaN elsewhere.
    a = frames[:, 0, 0].astype(numpy.int64)
    assert result.n2[1, 0] == int((a * a).sum())
    assert numpy.array_equal(result.n2[1:], result.s2[1:])
    lit = result.s2[1:] != 0
    assert (result.g2[1:][lit] == 1.0).all() and numpy.isnan(result.g2[1:][~lit]).all()


def test_empty_bin(method_case, rng):
    frames = data_for(method_case, rng, "uint16", shape=(25, 6, 7))
    qmask = make_qmask(rng, (6, 7), labels=(1, 3))
    with pytest.warns(RuntimeWarning, match=r"bins \[2\] have no pixel"):
        binning = Binning(qmask, labels=[1, 2, 3])
    result = correlate(frames, binning, **method_case.kwargs())
    ref = reference(frames, binning)
    assert_same_result(result, ref, exact=True)
    numpy.testing.assert_array_equal(result.labels, [1, 2, 3])
    assert result.n_pixels[1] == 0
    assert numpy.isnan(result.g2[1]).all() and numpy.isnan(result.g2_err[1]).all()
    assert (result.n2[1] == 0).all()
    assert numpy.isfinite(result.g2[[0, 2]]).all()


def test_non_contiguous_labels_order(method_case, rng):
    # Rows follow the sorted labels, whatever the order they appear in the image.
    frames = data_for(method_case, rng, "uint8", shape=(20, 4, 9))
    qmask = numpy.zeros((4, 9), dtype=numpy.int64)
    qmask[:, :3], qmask[:, 3:6], qmask[:, 6:] = 9, 1, 4
    result = correlate(frames, qmask, **method_case.kwargs())
    numpy.testing.assert_array_equal(result.labels, [1, 4, 9])
    for row, label in enumerate((1, 4, 9)):
        alone = correlate(frames, numpy.where(qmask == label, 7, 0), method="reference")
        assert numpy.array_equal(result.n2[row], alone.n2[0])
        assert_close(result.g2[row], alone.g2[0])


def test_all_zero_frames(method_case, rng):
    frames = numpy.zeros((12, 7, 13), dtype=numpy.uint16)
    qmask = make_qmask(rng, (7, 13))
    result = correlate(frames, qmask, **method_case.kwargs())
    ref = reference(frames, qmask)
    assert_same_result(result, ref, exact=True)
    assert (result.n2 == 0).all() and (result.s2 == 0).all()
    assert numpy.isnan(result.g2).all()  # 0/0: undefined, not 0 nor inf


@pytest.mark.parametrize("n_frames", [1, 2])
def test_short_series(method_case, n_frames, rng):
    frames = data_for(method_case, rng, "int16", shape=(n_frames, 7, 13), density=1.0)
    qmask = make_qmask(rng, (7, 13))
    result = correlate(frames, qmask, **method_case.kwargs())
    ref = reference(frames, qmask)
    assert_same_result(result, ref, exact=True)
    assert result.g2.shape == (3, n_frames)
    numpy.testing.assert_array_equal(result.lags, numpy.arange(n_frames))


@pytest.mark.parametrize("dtype", ["uint32", "float32"])
def test_iterable_of_chunks(method_case, dtype, rng):
    frames = data_for(method_case, rng, dtype, shape=(53, 7, 13))
    qmask = make_qmask(rng, (7, 13))
    sizes = [1, 5, 2, 17, 3, 1, 24]
    assert sum(sizes) == 53
    bounds = numpy.cumsum([0] + sizes)

    def chunks():
        for a, b in zip(bounds[:-1], bounds[1:]):
            yield frames[a:b]

    result = correlate(chunks(), qmask, **method_case.kwargs())
    ref = reference(frames, qmask)
    assert_same_result(result, ref, exact=dtype != "float32")
    # A list of chunks too, and the array cut in chunks by the driver when it takes the option.
    result = correlate(list(chunks()), qmask, **method_case.kwargs())
    assert_same_result(result, ref, exact=dtype != "float32")
    if "chunk_frames" in method_case.cls.option_names():
        for chunk_frames in (1, 7, 100):
            result = correlate(frames, qmask, chunk_frames=chunk_frames, **method_case.kwargs())
            assert_same_result(result, ref, exact=dtype != "float32")


def test_frame_source_range(method_case, rng):
    from ewoksxpcs.engine.frames import ArrayFrameSource

    frames = data_for(method_case, rng, "uint8", shape=(60, 7, 13))
    qmask = make_qmask(rng, (7, 13))
    source = ArrayFrameSource(frames, start=5, stop=47, step=2)
    result = correlate(source, qmask, **method_case.kwargs())
    ref = reference(frames[5:47:2], qmask)
    assert_same_result(result, ref, exact=True)


def test_repeat_call_same_object(method_case, rng):
    frames = data_for(method_case, rng, "uint16", shape=(33, 7, 13))
    qmask = make_qmask(rng, (7, 13))
    correlator = create_correlator(qmask, **method_case.kwargs())
    first = correlator.correlate(frames)
    second = correlator.correlate(frames)
    for name in ("n2", "s2", "g2", "g2_err", "frame_sums", "lags"):
        assert numpy.array_equal(getattr(first, name), getattr(second, name), equal_nan=True), name
    # And a different stack through the same object: no state leaks from the first call.
    other = data_for(method_case, rng, "uint16", shape=(21, 7, 13))
    assert_same_result(correlator.correlate(other), reference(other, qmask), exact=True)


def test_bad_pixels_option(method_case, rng):
    frames = data_for(method_case, rng, "uint8", shape=(30, 7, 13))
    qmask = make_qmask(rng, (7, 13))
    bad = rng.random((7, 13)) < 0.2
    result = correlate(frames, qmask, bad_pixels=bad, **method_case.kwargs())
    ref = reference(frames, numpy.where(bad, 0, qmask))
    assert_same_result(result, ref, exact=True)


def test_n_groups_option(method_case, rng):
    frames = data_for(method_case, rng, "uint8", shape=(30, 12, 13))
    qmask = make_qmask(rng, (12, 13))
    one = correlate(frames, qmask, n_groups=1, **method_case.kwargs())
    four = correlate(frames, qmask, n_groups=4, **method_case.kwargs())
    assert one.sums.n2.shape[0] == 3 and four.sums.n2.shape[0] == 12
    # Groups change the error bars only, never g2.
    assert numpy.array_equal(one.n2, four.n2)
    assert_close(one.g2, four.g2)
    assert numpy.isnan(one.g2_err).all() and numpy.isfinite(four.g2_err[:, :5]).all()
    assert_same_result(four, reference(frames, qmask, n_groups=4), exact=True)


# ---------------------------------------------------------------------- EventStack input
def event_capable(case) -> bool:
    return case.events or case.name == "fft"


def test_event_stack_input(method_case, rng):
    frames = make_frames(rng, "uint16", (45, 7, 13), non_negative=True, density=0.1)
    qmask = make_qmask(rng, (7, 13))
    events = compact(frames)
    if not event_capable(method_case):
        with pytest.raises(TypeError, match=f"method '{method_case.name}' takes dense frames, not an EventStack"):
            correlate(events, qmask, **method_case.kwargs())
        return
    result = correlate(events, qmask, **method_case.kwargs())
    assert_same_result(result, reference(frames, qmask), exact=True)
    # Events compacted with bad pixels dropped, correlated with a qmask avoiding them.
    bad = rng.random((7, 13)) < 0.3
    events = compact(frames, bad_pixels=bad)
    qmask2 = numpy.where(bad, 0, make_qmask(rng, (7, 13), labels=(2, 5)))
    result = correlate(events, qmask2, **method_case.kwargs())
    assert_same_result(result, reference(frames, qmask2), exact=True)


def refuses_event_stack(method_case, events, qmask) -> bool:
    """For a dense-only method, check it refuses an EventStack clearly (and return True)."""
    if event_capable(method_case):
        return False
    with pytest.raises(TypeError, match=f"method '{method_case.name}' takes dense frames, not an EventStack"):
        correlate(events, qmask, **method_case.kwargs())
    return True


def test_event_stack_float(method_case, rng):
    frames = make_frames(rng, "float32", (30, 7, 13), non_negative=True, density=0.2)
    qmask = make_qmask(rng, (7, 13))
    if refuses_event_stack(method_case, compact(frames), qmask):
        return
    result = correlate(compact(frames), qmask, **method_case.kwargs())
    assert_same_result(result, reference(frames, qmask), exact=False)


# ---------------------------------------------------------------------- large counts
def exact_autocorr(a, piece_bits=4):
    """Exact Σ_t a[t]·a[t+τ] of non-negative int64 series (P, Nt) via small-integer FFTs.

    Values are cut in pieces of ``piece_bits`` bits; each piece's cross-correlation is below
    Nt·(2^bits)² < 2^40, so float64 FFTs round to it exactly.
    """
    a = numpy.asarray(a, dtype=numpy.int64)
    n = a.shape[-1]
    assert n * (2**piece_bits) ** 2 < 2**40 and a.min() >= 0
    n_pieces = max(1, math.ceil(int(a.max()).bit_length() / piece_bits))
    mask = (1 << piece_bits) - 1
    nfft = 1 << (2 * n).bit_length()
    spectra = [numpy.fft.rfft(((a >> (piece_bits * i)) & mask).astype(float), nfft)
               for i in range(n_pieces)]
    out = numpy.zeros(a.shape, dtype=numpy.int64)
    for i in range(n_pieces):
        for j in range(n_pieces):
            c = numpy.fft.irfft(spectra[i].conj() * spectra[j], nfft)[..., :n]
            out += numpy.rint(c).astype(numpy.int64) << (piece_bits * (i + j))
    return out


def test_exact_autocorr_oracle(rng):
    # The oracle of the large-count test, against numpy.correlate on a part of the series.
    a = rng.integers(0, 4096, size=(2, 3000), dtype=numpy.int64)
    a[:, :5] = 4095
    c = exact_autocorr(a)
    for p in range(2):
        expected = numpy.correlate(a[p], a[p], mode="full")[a.shape[1] - 1:]
        assert numpy.array_equal(c[p], expected)


LARGE_FRAMES = 70_000
_LARGE = {}


def large_counts(occupancy, n_frames=LARGE_FRAMES):
    """Frames (n_frames, 1, 3) of values up to 4095 and their exact n2, s2 (cached)."""
    key = (occupancy, n_frames)
    if key not in _LARGE:
        rng = numpy.random.default_rng(7)
        frames = rng.integers(1, 4096, size=(LARGE_FRAMES, 1, 3), dtype=numpy.uint16)
        frames[-3:] = 4095
        frames[rng.random(frames.shape) >= occupancy] = 0
        frames = frames[:n_frames]
        series = frames.reshape(n_frames, 3).T.astype(numpy.int64)  # (3, Nt)
        n2 = exact_autocorr(series).sum(axis=0)
        s2 = exact_autocorr(series.sum(axis=0, keepdims=True))[0]
        assert n2[0] > 2**32 and s2[0] > 2**32  # beyond 32-bit accumulators
        _LARGE[key] = frames, n2, s2
    return _LARGE[key]


#: Methods whose work grows as Nt² whatever the pixel count: on a CPU they get a 20 000-frame
#: prefix of the series (still n2, s2 > 2^32) to stay within seconds; on a GPU the full series.
QUADRATIC = {"matmul": 20_000, "opencl-dense": 20_000, "reference": 3_000}


def test_large_counts(method_case):
    # Event methods work per pair of events of a pixel: they get sparse data (2 % occupancy).
    occupancy = 0.02 if method_case.events else 0.8
    n_frames = LARGE_FRAMES
    if method_case.device != "gpu" and method_case.name in QUADRATIC:
        n_frames = QUADRATIC[method_case.name]
    frames, n2, s2 = large_counts(occupancy, n_frames)
    qmask = numpy.ones((1, 3), dtype=numpy.int32)
    result = correlate(frames, qmask, **method_case.kwargs())
    assert result.n2.dtype == numpy.int64
    assert numpy.array_equal(result.n2[0], n2), "n2 is not exact"
    assert numpy.array_equal(result.s2[0], s2), "s2 is not exact"
    with numpy.errstate(invalid="ignore", divide="ignore"):
        g2 = 3 * n2.astype(float) / s2.astype(float)
    g2[(n2 == 0) | (s2 / 3 < MIN_EXPECTED_PAIRS)] = numpy.nan  # lags with too few photon pairs
    numpy.testing.assert_allclose(result.g2[0], g2, rtol=1e-12)
    if method_case.events or method_case.name == "fft":
        # The same through an EventStack (uint32 times past 65 535).
        result = correlate(compact(frames), qmask, **method_case.kwargs())
        assert numpy.array_equal(result.n2[0], n2), "n2 from events is not exact"


# ---------------------------------------------------------------------- against dynamix
def test_reference_equals_dynamix(rng):
    dense = pytest.importorskip("dynamix.correlator.dense")
    frames = rng.poisson(2.0, size=(50, 9, 11)).astype(numpy.uint8)
    qmask = make_qmask(rng, (9, 11), unused=0.1)
    result = correlate(frames, qmask, method="reference")
    for row, label in enumerate(result.labels):
        theirs = dense.py_dense_correlator(frames, (qmask == label).astype(numpy.int32))
        # dynamix computes in float32.
        numpy.testing.assert_allclose(result.g2[row], theirs, rtol=2e-5)


def test_methods_equal_dynamix(method_case, rng):
    dense = pytest.importorskip("dynamix.correlator.dense")
    frames = rng.poisson(1.5, size=(40, 8, 9)).astype(numpy.uint16)
    qmask = make_qmask(rng, (8, 9), labels=(2, 3), unused=0.1)
    result = correlate(frames, qmask, **method_case.kwargs())
    for row, label in enumerate(result.labels):
        theirs = dense.py_dense_correlator(frames, (qmask == label).astype(numpy.int32))
        numpy.testing.assert_allclose(result.g2[row], theirs, rtol=2e-5)


# ---------------------------------------------------------------------- auto
def test_auto_equals_reference(rng):
    frames = make_frames(rng, "uint8", (30, 7, 13), non_negative=True)
    qmask = make_qmask(rng, (7, 13))
    result = correlate(frames, qmask, method="auto", device="cpu")
    assert result.method in METHODS
    assert result.info.get("auto_reason")
    assert_same_result(result, reference(frames, qmask), exact=True)
    sparse = make_frames(rng, "uint8", (30, 7, 13), non_negative=True, density=0.01)
    result = correlate(sparse, qmask, method="auto", device="cpu")
    assert "sparse" in result.info["auto_reason"]
    assert_same_result(result, reference(sparse, qmask), exact=True)


# ---------------------------------------------------------------------- bad input
def test_error_qmask_shape(method_case, rng):
    frames = data_for(method_case, rng, shape=(10, 7, 13))
    with pytest.raises(ValueError, match=r"qmask shape \(7, 12\) differs from the frame shape"):
        correlate(frames, numpy.ones((7, 12), int), **method_case.kwargs())


def test_error_no_pixel(method_case, rng):
    frames = data_for(method_case, rng, shape=(10, 7, 13))
    with pytest.raises(ValueError, match="qmask has no bin"):
        correlate(frames, numpy.zeros((7, 13), int), **method_case.kwargs())
    with pytest.raises(ValueError, match="no pixel in any bin"):
        correlate(frames, numpy.ones((7, 13), int), bad_pixels=numpy.ones((7, 13), bool),
                  **method_case.kwargs())


@pytest.mark.parametrize("bad", [numpy.nan, numpy.inf, -numpy.inf])
def test_error_non_finite(method_case, bad, rng):
    frames = data_for(method_case, rng, "float32", shape=(10, 7, 13))
    frames[6, 2, 5] = bad
    with pytest.raises(ValueError, match=r"NaN or infinite values \(first at frame 6, pixel \(y=2, x=5\)\)"):
        correlate(frames, numpy.ones((7, 13), int), **method_case.kwargs())
    # Also when it arrives in a later chunk of an iterable.
    with pytest.raises(ValueError, match="NaN or infinite"):
        correlate(iter([frames[:4], frames[4:]]), numpy.ones((7, 13), int), **method_case.kwargs())


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "float32"])
def test_error_negative_events(method_case, dtype, rng):
    frames = make_frames(rng, dtype, (10, 7, 13), non_negative=True)
    frames[3, 4, 2] = -1
    if not method_case.events:  # dense methods take signed data, exactly
        qmask = numpy.ones((7, 13), int)
        assert_same_result(correlate(frames, qmask, **method_case.kwargs()),
                           reference(frames, qmask), exact=dtype != "float32")
        return
    with pytest.raises(ValueError, match=r"non-negative counts; frame 3 has a negative value at pixel \(y=4, x=2\)"):
        correlate(frames, numpy.ones((7, 13), int), **method_case.kwargs())


def test_error_negative_event_stack(method_case, rng):
    frames = make_frames(rng, "int16", (10, 7, 13), non_negative=True, density=0.5)
    events = compact(frames)
    if refuses_event_stack(method_case, events, numpy.ones((7, 13), int)):
        return
    events.values[5] = -3  # a hand-made EventStack with a negative count
    with pytest.raises(ValueError, match=rf"event methods need non-negative counts.*frame {int(events.times[5])}"):
        correlate(events, numpy.ones((7, 13), int), **method_case.kwargs())


@pytest.mark.parametrize("shape", [(7, 13), (2, 10, 7, 13), (50,)])
def test_error_not_3d(method_case, shape, rng):
    frames = numpy.ones(shape, dtype=numpy.uint8)
    with pytest.raises(ValueError, match=r"frames must be 3-D \(n_frames, Ny, Nx\)"):
        correlate(frames, numpy.ones((7, 13), int), **method_case.kwargs())
    if len(shape) > 1:
        with pytest.raises(ValueError, match="frames must be 3-D"):
            correlate(iter([frames]), numpy.ones((7, 13), int), **method_case.kwargs())


@pytest.mark.parametrize("dtype", ["float64", "int64", "uint64", "bool", "complex64", "float16"])
def test_error_unsupported_dtype(method_case, dtype):
    frames = numpy.ones((5, 7, 13), dtype=dtype)
    with pytest.raises(TypeError, match=f"unsupported frame dtype {dtype}: supported dtypes are int8"):
        correlate(frames, numpy.ones((7, 13), int), **method_case.kwargs())
    with pytest.raises(TypeError, match=f"unsupported frame dtype {dtype}"):
        correlate(iter([frames]), numpy.ones((7, 13), int), **method_case.kwargs())


def test_error_unknown_method():
    frames = numpy.ones((5, 7, 13), dtype=numpy.uint8)
    valid = ", ".join(["auto"] + list(METHODS))
    with pytest.raises(ValueError, match=f"unknown correlation method 'bogus'; valid methods: {valid}"):
        correlate(frames, numpy.ones((7, 13), int), method="bogus")


def test_error_inconsistent_chunks(method_case, rng):
    qmask = numpy.ones((7, 13), int)
    a = data_for(method_case, rng, "uint8", shape=(4, 7, 13))
    with pytest.raises(ValueError, match=r"inconsistent chunk shapes: chunk at frame 4 has frame shape \(7, 12\)"):
        correlate(iter([a, a[:, :, :12]]), qmask, **method_case.kwargs())
    with pytest.raises(TypeError, match="inconsistent chunk dtypes: chunk at frame 4 is uint16, expected uint8"):
        correlate(iter([a, a.astype(numpy.uint16)]), qmask, **method_case.kwargs())


def test_error_cpu_method_on_gpu(method_case):
    if method_case.uses_opencl:  # they take devices, and name a missing one
        with pytest.raises(RuntimeError, match="7:7"):
            create_correlator(numpy.ones((7, 13), int), method=method_case.name, device="7:7")
        return
    with pytest.raises(ValueError, match=f"method '{method_case.name}' runs on the CPU; device 'gpu' is not allowed"):
        create_correlator(numpy.ones((7, 13), int), method=method_case.name, device="gpu")


def test_error_unknown_option(method_case):
    with pytest.raises(TypeError, match=r"got unknown option\(s\) \['colour'\]; valid options"):
        create_correlator(numpy.ones((7, 13), int), colour="red", **method_case.kwargs())


@pytest.mark.parametrize("qmask", [
    numpy.full((7, 13), 1.5),
    numpy.ones((7, 13), dtype=bool),
    numpy.full((7, 13), "1"),
], ids=["float", "bool", "str"])
def test_error_qmask_not_integer(method_case, qmask):
    with pytest.raises(TypeError, match="qmask must hold integer labels"):
        correlate(numpy.ones((4, 7, 13), numpy.uint8), qmask, **method_case.kwargs())


def test_error_bad_frames_type(method_case):
    with pytest.raises(TypeError, match="frames must be a 3-D array, an iterable of 3-D chunks"):
        correlate(3.0, numpy.ones((7, 13), int), **method_case.kwargs())
