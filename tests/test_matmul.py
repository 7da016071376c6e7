"""The ``matmul`` backend (BLAS time-block tiles) and the gathered stack it keeps.

Integer results must equal the ``reference`` oracle exactly (int64); the options that change the
computation path (time block size, worker threads, spill to a memmap, thin sub-bins, the
float32/float64/int64 tile precisions) are each exercised against it.
"""

from __future__ import annotations

import os

import numpy
import pytest

from ewoksxpcs import Binning, correlate, create_correlator
from ewoksxpcs.correlators import matmul as matmul_module
from ewoksxpcs.correlators.matmul import MatMulCorrelator, diagonal_sums
from ewoksxpcs.engine.pixel_series import GatheredStack

ALL_DTYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "float32")


def frames_of(rng, dtype, shape, hi=None):
    dtype = numpy.dtype(dtype)
    if dtype.kind == "f":
        return rng.gamma(0.7, 4.0, size=shape).astype(dtype)
    info = numpy.iinfo(dtype)
    hi = min(int(info.max), 2**20) if hi is None else hi
    lo = max(int(info.min), -(2**20))
    data = rng.integers(lo, hi, size=shape, endpoint=True)
    data[rng.random(shape) < 0.3] = 0
    return data.astype(dtype)


def assert_matches_reference(frames, qmask, n_groups=16, **options):
    ref = correlate(frames, qmask, method="reference", n_groups=n_groups)
    res = correlate(frames, qmask, method="matmul", n_groups=n_groups, **options)
    if ref.n2.dtype == numpy.int64:
        assert res.n2.dtype == numpy.int64
        assert numpy.array_equal(res.sums.n2, ref.sums.n2)
        assert numpy.array_equal(res.s2, ref.s2)
    else:
        numpy.testing.assert_allclose(res.sums.n2, ref.sums.n2, rtol=1e-12)
    numpy.testing.assert_allclose(res.g2, ref.g2, rtol=1e-6, equal_nan=True)
    numpy.testing.assert_allclose(res.g2_err, ref.g2_err, rtol=1e-6, equal_nan=True)
    assert res.method == "matmul"
    return res


# ---------------------------------------------------------------------- diagonal sums
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (5, 3), (7, 7), (1, 4), (4, 1)])
def test_diagonal_sums_equal_traces(shape, rng):
    c = rng.integers(-50, 50, size=shape).astype(numpy.int64)
    expected = [numpy.trace(c, offset=d) for d in range(-(shape[0] - 1), shape[1])]
    assert numpy.array_equal(diagonal_sums(c), expected)


def test_diagonal_sums_rejects_bad_shapes():
    with pytest.raises(ValueError, match="2-D"):
        diagonal_sums(numpy.zeros(4))
    with pytest.raises(ValueError, match="non-empty"):
        diagonal_sums(numpy.zeros((0, 3)))


# ---------------------------------------------------------------------- equal to the oracle
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("block_frames,threads", [(7, 1), (16, 2), (None, 2)])
def test_dtypes_equal_reference(dtype, block_frames, threads, rng):
    frames = frames_of(rng, dtype, (45, 9, 11))  # odd shape; 45 is no multiple of 7 or 16
    qmask = rng.choice([0, 2, 5, 11], size=(9, 11))
    assert_matches_reference(frames, qmask, block_frames=block_frames, threads=threads)


def test_thin_and_thick_sub_bins(rng):
    """One-pixel bins, bins under and over THIN_PIXELS, one group per bin."""
    frames = frames_of(rng, "uint16", (40, 6, 10), hi=4095)
    qmask = numpy.zeros((6, 10), dtype=int)
    qmask[0, 0] = 1  # one pixel
    qmask[1, :matmul_module.THIN_PIXELS] = 2  # thin: numpy.correlate path
    qmask[2:, :] = 3  # 40 pixels: BLAS tiles
    for n_groups in (1, 16):
        assert_matches_reference(frames, qmask, n_groups=n_groups, block_frames=9)


def test_tile_precisions(rng, monkeypatch):
    """float32, float64 and int64 tiles are each chosen (and exact) for their value ranges."""
    used = []
    real = matmul_module._operand

    def spy(scratch, role, block, task, dtype):
        used.append(numpy.dtype(dtype).name)
        return real(scratch, role, block, task, dtype)

    monkeypatch.setattr(matmul_module, "_operand", spy)
    qmask = numpy.ones((3, 8), dtype=int)
    cases = [("uint8", 20, "float32"), ("uint16", 60000, "float64"), ("int32", 2**23, "int64")]
    for dtype, hi, expected in cases:
        used.clear()
        frames = frames_of(rng, dtype, (30, 3, 8), hi=hi)
        assert_matches_reference(frames, qmask, n_groups=1, block_frames=8)
        assert expected in used, (dtype, set(used))


def test_one_pixel_empty_and_non_contiguous_bins(rng):
    frames = frames_of(rng, "uint8", (31, 5, 7))
    qmask = numpy.zeros((5, 7), dtype=int)
    qmask[0, 0] = 9
    qmask[2:, 3:] = 4
    qmask[4, 0] = 2
    with pytest.warns(RuntimeWarning, match="no pixel"):
        binning = Binning(qmask, labels=[2, 4, 7, 9])
    ref = correlate(frames, binning, method="reference")
    res = correlate(frames, binning, method="matmul", block_frames=4)
    assert numpy.array_equal(res.labels, [2, 4, 7, 9])
    assert numpy.array_equal(res.n2, ref.n2)
    assert numpy.isnan(res.g2[2]).all()  # the empty bin
    numpy.testing.assert_allclose(res.g2, ref.g2, rtol=1e-6, equal_nan=True)


def test_all_zero_frames(rng):
    frames = numpy.zeros((12, 4, 5), dtype=numpy.uint16)
    res = correlate(frames, numpy.ones((4, 5), int), method="matmul", block_frames=5)
    assert res.n2.dtype == numpy.int64 and not res.n2.any()
    assert numpy.isnan(res.g2).all()


@pytest.mark.parametrize("n_frames", [1, 2])
def test_short_series(n_frames, rng):
    frames = frames_of(rng, "int16", (n_frames, 7, 13))
    res = assert_matches_reference(frames, rng.integers(0, 3, size=(7, 13)) + 1)
    assert res.n2.shape[1] == n_frames


def test_chunks_of_inconsistent_sizes(rng):
    """Generator chunks (sizes 1, 5, 2, 11, ...) re-cut into time blocks of 4 frames."""
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
    for block_frames in (4, 100):
        res = correlate(chunks(), qmask, method="matmul", block_frames=block_frames)
        assert res.n_frames == 53
        assert numpy.array_equal(res.sums.n2, ref.sums.n2)


def test_large_counts_many_frames_thin_detector():
    """Counts up to 4095 over 70 000 frames: n2 > 2**32, exact against big-integer products."""
    rng = numpy.random.default_rng(7)
    nt = 70_000
    frames = numpy.empty((nt, 1, 2), dtype=numpy.uint16)
    frames[:, 0, 0] = 4095 - numpy.minimum(rng.poisson(2.0, nt), 4095)
    frames[:, 0, 1] = rng.integers(0, 4096, nt)
    sums = create_correlator(numpy.array([[1, 2]]), "matmul").compute_sums(frames)
    expected = numpy.stack([exact_autocorrelation(frames[:, 0, p]) for p in range(2)])
    assert sums.n2[0, 0] > 2**32
    assert numpy.array_equal(sums.n2, expected)


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


def test_exact_autocorrelation_oracle(rng):
    a = rng.integers(0, 1000, 50)
    expected = [int(numpy.dot(a[: 50 - k].astype(object), a[k:].astype(object))) for k in range(50)]
    assert exact_autocorrelation(a).tolist() == expected


# ---------------------------------------------------------------------- state, memory, errors
def test_two_calls_on_one_object_are_identical(rng):
    frames = frames_of(rng, "uint16", (33, 7, 13))
    qmask = rng.integers(0, 3, size=(7, 13)) + 1
    correlator = create_correlator(qmask, "matmul", block_frames=8)
    first = correlator.correlate(frames)
    second = correlator.correlate(frames)
    assert numpy.array_equal(first.n2, second.n2)
    assert numpy.array_equal(first.g2, second.g2, equal_nan=True)
    other = correlator.correlate(frames[:21])
    assert numpy.array_equal(other.n2, correlate(frames[:21], qmask, method="reference").n2)


def test_spill_to_memmap(rng, stack_spills, tmp_path):
    """max_memory=0: the gathered stack lives in an unlinked temporary file of the spill
    directory (EWOKSXPCS_TMPDIR), nothing left behind."""
    spilled = stack_spills
    frames = frames_of(rng, "uint16", (40, 6, 9))
    qmask = rng.integers(0, 3, size=(6, 9)) + 1
    assert_matches_reference(frames, qmask, max_memory=0, block_frames=6)
    assert spilled and all(spilled)
    # A limit of ~2 blocks: Nt is known, so the stack goes to the file from the start.
    spilled.clear()
    assert_matches_reference(frames, qmask, max_memory=2 * 6 * 54 * 2, block_frames=6)
    assert spilled and all(spilled)
    assert not os.listdir(tmp_path), "temporary gathered stack not removed"


def test_int64_overflow_is_an_error(rng):
    frames = numpy.full((8, 4, 4), 2**31 - 1, dtype=numpy.int32)
    with pytest.raises(ValueError, match="int64 range"):
        create_correlator(numpy.ones((4, 4), int), "matmul").compute_sums(frames)


@pytest.mark.parametrize("option,value", [("block_frames", 0), ("block_frames", 2.5),
                                          ("threads", 0), ("max_memory", -1)])
def test_bad_options(option, value, rng):
    frames = frames_of(rng, "uint8", (5, 3, 3))
    with pytest.raises((ValueError, TypeError), match=option):
        correlate(frames, numpy.ones((3, 3), int), method="matmul", **{option: value})


def test_unknown_option_named():
    with pytest.raises(TypeError, match="pixel_block"):
        MatMulCorrelator(numpy.ones((3, 3), int), pixel_block=3)


# ---------------------------------------------------------------------- the gathered stack
def test_gathered_stack_ram_and_file(rng, tmp_path):
    data = rng.integers(0, 200, size=(23, 10)).astype(numpy.uint8)
    for limit, n_frames in ((10**9, None), (0, None), (50, None), (50, 23), (10**9, 23)):
        with GatheredStack(10, numpy.uint8, max_memory=limit, tmpdir=str(tmp_path),
                           n_frames=n_frames) as stack:
            for t0, t1 in ((0, 4), (4, 5), (5, 23)):
                stack.append(data[t0:t1])
            assert stack.n_frames == 23 and stack.n_blocks == 3
            assert stack.spilled == (limit < data.nbytes)
            assert numpy.array_equal(stack.block(2), data[5:23])
            assert numpy.array_equal(stack.columns(3, 8), data[:, 3:8])
            assert numpy.array_equal(stack.block_sizes(), [4, 1, 18])
            # The temporary file is unlinked as soon as it is opened.
            assert not os.listdir(tmp_path)


def test_gathered_stack_validates(rng):
    stack = GatheredStack(4, numpy.uint16, max_memory=100)
    with pytest.raises(ValueError, match="shape"):
        stack.append(numpy.zeros((2, 5), numpy.uint16))
    with pytest.raises(TypeError, match="dtype"):
        stack.append(numpy.zeros((2, 4), numpy.uint8))
    with pytest.raises(IndexError):
        stack.block(0)
    with pytest.raises(TypeError, match="max_memory"):
        GatheredStack(4, numpy.uint16, max_memory="1GB")
