"""``cpu-events`` (numba): exact n2 and frame sums across task boundaries, histogram flushes and
the int64 fallback; options. (The method matrix of test_correlate checks every dtype.)"""

from __future__ import annotations

import numpy
import pytest

from ewoksxpcs import Binning, correlate
from ewoksxpcs.correlators import cpu_events
from ewoksxpcs.correlators.cpu_events import n2_events_cpu, plan_pixel_tasks
from ewoksxpcs.engine.events import compact


def _reference(frames, qmask, **kw):
    return correlate(frames, qmask, method="reference", **kw)


def test_tasks_cut_sub_bins(rng, monkeypatch):
    # Many more tasks than sub-bins' boundaries: a task starts and ends inside sub-bins, and
    # sub-bins span several tasks (their first/last rows are added after the threads).
    monkeypatch.setattr(cpu_events, "TASKS_PER_THREAD", 40)
    frames = (rng.poisson(0.4, (300, 12, 15)) * rng.integers(1, 4, (300, 12, 15))).astype(numpy.uint8)
    qmask = rng.integers(0, 4, (12, 15))
    binning = Binning(qmask, n_groups=3)
    events = compact(frames)
    n2, fs = n2_events_cpu(events, binning, n_threads=2)
    cuts = plan_pixel_tasks(numpy.diff(events.offsets)[:binning.n_binned_pixels], 80)
    assert cuts.size == 81 and (numpy.diff(cuts) >= 0).all()
    ref = _reference(frames, binning)
    numpy.testing.assert_array_equal(n2, ref.sums.n2)
    numpy.testing.assert_array_equal(fs, ref.sums.frame_sums)
    assert n2.dtype == fs.dtype == numpy.int64


def test_uint32_histograms_flushed_exactly(rng):
    # Every pixel adds at most 254²·120·121/2 < 2³² (uint32 histograms), but a sub-bin's n2
    # at small lags passes 2³²: the flushes keep it exact.
    frames = rng.integers(150, 255, (120, 60, 60)).astype(numpy.uint8)
    qmask = numpy.ones((60, 60), int)
    result = correlate(compact(frames), qmask, method="cpu-events", n_threads=1, n_groups=2)
    ref = _reference(frames, qmask, n_groups=2)
    assert ref.sums.n2[:, :10].min() > 2**32
    numpy.testing.assert_array_equal(result.n2, ref.n2)


def test_uint16_histograms_flushed_exactly(rng, monkeypatch):
    # uint16 histograms (long lags; here from 0 lags on): a pixel adds up to 3·Σv at one lag
    # and a sub-bin far beyond 2¹⁶ at lag 0; with 20 000 frames, a pixel of Σv·3 ≥ 2¹⁶ needs
    # uint32 ones.
    monkeypatch.setattr(cpu_events, "U16_MIN_LAGS", 0)
    frames = rng.poisson(0.8, (400, 40, 40)).clip(0, 3).astype(numpy.uint8)
    qmask = rng.integers(0, 3, (40, 40))
    for n_threads in (1, 2):
        result = correlate(compact(frames), qmask, method="cpu-events", n_threads=n_threads,
                           n_groups=1)
        ref = _reference(frames, qmask, n_groups=1)
        assert ref.sums.n2[:, 0].min() > 2**16
        numpy.testing.assert_array_equal(result.n2, ref.n2)
        numpy.testing.assert_array_equal(result.sums.frame_sums, ref.sums.frame_sums)
    monkeypatch.setattr(cpu_events, "U16_MIN_LAGS", 10_000)
    frames = numpy.zeros((20_000, 1, 2), numpy.uint8)
    frames[::2, 0, 0] = 3
    frames[::7, 0, 1] = 1
    result = correlate(compact(frames), numpy.ones((1, 2), int), method="cpu-events")
    numpy.testing.assert_array_equal(result.n2, _reference(frames, numpy.ones((1, 2), int)).n2)


def test_bright_pixels_int64_histograms(rng):
    # A pixel whose products may exceed 2³²: int64 histograms, still exact.
    frames = (rng.poisson(0.3, (300, 6, 7)) * rng.integers(1, 60000, (300, 6, 7))).astype(numpy.uint16)
    qmask = rng.integers(0, 3, (6, 7))
    result = correlate(frames, qmask, method="cpu-events")
    numpy.testing.assert_array_equal(result.n2, _reference(frames, qmask).n2)


def test_values_not_one_with_long_pixels(rng):
    # The all-ones pairs four events at a time, then the corrections for v ≠ 1: pixels of
    # 1 … 9 events (every remainder of the unrolled loop), values 1 … 5 anywhere.
    frames = numpy.zeros((40, 3, 3), numpy.int32)
    for p in range(9):
        t = numpy.sort(rng.choice(40, p + 1, replace=False))
        frames[t, p // 3, p % 3] = rng.integers(1, 6, t.size)
    qmask = numpy.arange(9).reshape(3, 3) % 2 + 1
    result = correlate(frames, qmask, method="cpu-events", n_groups=1)
    numpy.testing.assert_array_equal(result.n2, _reference(frames, qmask, n_groups=1).n2)


def test_empty_and_options(rng):
    frames = numpy.zeros((20, 4, 5), numpy.uint8)
    result = correlate(frames, numpy.ones((4, 5), int), method="cpu-events")
    assert (result.n2 == 0).all() and numpy.isnan(result.g2).all()
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="option n_threads must be an integer >= 1"):
            correlate(frames, numpy.ones((4, 5), int), method="cpu-events", n_threads=bad)
    with pytest.raises(TypeError, match="unknown option"):
        correlate(frames, numpy.ones((4, 5), int), method="cpu-events", device_memory=1)
