"""Sums beyond the int64 range are refused by every method (never wrapped to a negative n2),
and sums just inside it are exact: one shared bound check (:mod:`ewoksxpcs.engine.intrange`)."""

from __future__ import annotations

import numpy
import pytest

from _faults import assert_cli_refuses, cli_output_args
from ewoksxpcs import correlate
from ewoksxpcs.engine.events import EventStack, compact
from ewoksxpcs.engine.intrange import check_int64_bound

LINEAR = ["reference", "matmul", "fft", "opencl-dense", "opencl-events"]


def _device(method):
    # OpenCL methods on the CPU device (PoCL in CI, which refuses to start without it).
    return "cpu" if method.startswith("opencl") else None


def exact_n2(frames, labels) -> list:
    """n2 per bin and lag with Python integers (no overflow possible)."""
    out = []
    for lab in numpy.unique(labels[labels > 0]):
        cols = frames[:, labels == lab].astype(object)
        nt = frames.shape[0]
        out.append([int(sum((cols[: nt - t] * cols[t:]).ravel())) for t in range(nt)])
    return out


@pytest.mark.parametrize("method", LINEAR)
def test_uint32_overflow_refused(method):
    """uint32 frames near 2**32: n2 would wrap (g2 = -0.0 before); every method refuses."""
    frames = numpy.full((50, 4, 5), 2**32 - 1, numpy.uint32)
    frames[::3] = 7
    labels = numpy.ones((4, 5), numpy.int32)
    with pytest.raises(ValueError, match=r"[ns]2 of q bin 1 can reach .*int64 range.*float32"):
        correlate(frames, labels, method=method, device=_device(method))


@pytest.mark.parametrize("method", ["fft", "opencl-events"])  # the methods taking events
def test_events_overflow_refused(method):
    frames = numpy.full((30, 2, 3), 2**32 - 1, numpy.uint32)
    ev = compact(frames)
    # opencl-events takes s2 on the host while the device computes n2: either refuses first.
    with pytest.raises(ValueError, match=r"[ns]2 of q bin 1 can reach .*int64 range"):
        correlate(ev, numpy.ones((2, 3), int), method=method, device=_device(method))


@pytest.mark.parametrize("method", LINEAR)
def test_just_inside_the_range_is_exact(method):
    """Products of 2**58 (beyond int32 and float64's 2**53), Σ I² < 2**63 and
    (max S)²·Nt < 2**62: every method gives the exact n2."""
    rng = numpy.random.default_rng(5)
    frames = (2**29 - rng.integers(0, 1000, (3, 1, 2))).astype(numpy.uint32)
    labels = numpy.ones((1, 2), numpy.int32)
    r = correlate(frames, labels, method=method, device=_device(method), n_groups=1)
    assert r.n2.dtype == numpy.int64
    assert r.n2.tolist() == exact_n2(frames, labels)
    assert (r.g2 > 0).all()


def test_s2_refused_not_rounded():
    """A bin sum S with (max S)²·Nt ≥ 2**62: s2 refused (was float64 with a warning)."""
    frames = numpy.full((8, 4, 4), 2**26, numpy.uint32)  # n2 fits; S = 2**30 per frame
    with pytest.raises(ValueError, match=r"s2 of q bin 1 can reach .*\(max S\)²·Nt"):
        correlate(frames, numpy.ones((4, 4), int), method="reference")


@pytest.mark.parametrize("method", ["numpy", "opencl"])
@pytest.mark.parametrize("mode, n_frames, options, expect", [
    ("multitau", 64, {"lags_per_level": 4}, r"multi-tau n2 can reach .*int64 range"),
    ("twotime", 8, {"time_bin": 3_000_000_000},
     r"time bin of 3000000000 uint32 frames can reach .*int64 range"),
])
def test_modes_overflow_refused(method, mode, n_frames, options, expect):
    frames = numpy.full((n_frames, 2, 2), 2**32 - 1, numpy.uint32)
    device = _device("opencl") if method == "opencl" else None
    with pytest.raises(ValueError, match=expect):
        correlate(frames, numpy.ones((2, 2), int), mode=mode, method=method, device=device,
                  **options)


def test_bound_message_names_bin_bound_and_limit():
    from ewoksxpcs.engine.qmask import Binning

    b = Binning(numpy.array([[3, 3, 8, 8]]), n_groups=2)
    with pytest.raises(ValueError) as info:
        check_int64_bound([1.0, 2.0, 1e19, 3.0], b)
    msg = str(info.value)
    assert "n2 of q bin 8 can reach 1e+19" in msg and "9.223e+18" in msg
    check_int64_bound([1.0, 2.0, 9.2e18, 3.0], b)  # below: no error


def test_cli_refuses_overflowing_frames(tmp_path, capsys):
    import h5py

    frames = numpy.full((20, 4, 5), 2**32 - 1, numpy.uint32)
    scan = tmp_path / "big.h5"
    with h5py.File(scan, "w") as f:
        f["data"] = frames
    qmask = tmp_path / "q.npy"
    numpy.save(qmask, numpy.ones((4, 5), numpy.int32))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert_cli_refuses(["run", f"{scan}::/data", "--qmask", qmask, "--method", "reference",
                        *cli_output_args(out_dir)], r"n2 of q bin 1 can reach .*int64 range",
                       out_dir, capsys)


def test_handmade_events_sum_checked():
    """Events given as an EventStack (not compacted here) are bounded the same way."""
    n = 40
    ev = EventStack(numpy.full(n, 2**32 - 1, numpy.uint32), numpy.arange(n, dtype=numpy.uint32),
                    [0, n], [0], (1, 1), n)
    with pytest.raises(ValueError, match="int64 range"):
        correlate(ev, numpy.ones((1, 1), int), method="fft")


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["opencl-dense", "opencl-events"])
def test_gpu_refuses_and_stays_exact(method):
    """On a GPU (run with -m gpu): refusal beyond int64, exact n2 just inside it, also for
    events compacted on the device (resident)."""
    frames = numpy.full((50, 4, 5), 2**32 - 1, numpy.uint32)
    labels = numpy.ones((4, 5), numpy.int32)
    with pytest.raises(ValueError, match=r"[ns]2 of q bin 1 can reach .*int64 range"):
        correlate(frames, labels, method=method, device="gpu")
    rng = numpy.random.default_rng(5)
    small = (2**29 - rng.integers(0, 1000, (3, 1, 2))).astype(numpy.uint32)
    r = correlate(small, numpy.ones((1, 2), numpy.int32), method=method, device="gpu",
                  n_groups=1)
    assert r.n2.tolist() == exact_n2(small, numpy.ones((1, 2), numpy.int32))
