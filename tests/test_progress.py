"""Progress: one line per stage off a terminal, a tqdm bar on one; every stage moves."""

from __future__ import annotations

import io
import pickle
import re

import numpy
import pytest

from ewoksxpcs.workflow.pipeline import correlate_sums
from ewoksxpcs.workflow.progress import TerminalProgress


def test_lines_when_not_a_terminal(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    bar = TerminalProgress()  # a StringIO is no terminal
    bar.start("LoadFrames")
    for p in (10, 50, 100):
        bar.progress = p
    bar.start("Correlate")
    bar.progress = 40
    bar.start("SaveResults")  # Correlate cut short (an error in between)
    bar.progress = 100
    bar.close()  # nothing more: already closed at 100 %
    lines = err.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert re.fullmatch(r"LoadFrames: 100 % in \d+\.\d s", lines[0])
    assert re.fullmatch(r"Correlate: stopped at 40 % in \d+\.\d s", lines[1])
    assert lines[2].startswith("SaveResults: 100 % in ")
    assert "\r" not in err.getvalue()


def test_bar_on_a_terminal_with_rate_and_time_left(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    bar = TerminalProgress(terminal=True, min_interval=0)
    bar.start("Correlate")
    bar.progress = 50
    state = pickle.loads(pickle.dumps(bar))  # travels without its stream
    assert state._bar is None and state.task_name == "Correlate"
    bar.progress = 100
    text = err.getvalue()
    assert "Correlate" in text and "100%|" in text
    assert re.search(r"\d\d:\d\d<\d\d:\d\d", text)  # elapsed < time left
    assert "%/s" in text or "s/%" in text  # the rate


@pytest.mark.parametrize("as_events", [False, True])
def test_fft_moves_after_the_frames_are_read(rng, as_events):
    """``fft`` spends most of its time after reading the frames (the transforms) or, on events,
    without any frame stream: the progress moves through that phase, monotonically."""
    from ewoksxpcs import compact

    frames = rng.poisson(0.3, size=(64, 8, 8)).astype(numpy.uint8)
    qmask = numpy.ones((8, 8), int)
    data = compact(frames) if as_events else frames
    seen = []
    correlate_sums(data, qmask, method="fft", options={"pixel_block": 4, "threads": 1},
                   progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0
    read_end = 0.95 * (1 - 0.7)  # frames streamed up to there; fft's compute_share is 0.7
    inside = [f for f in seen if (0.0 if as_events else read_end) < f < 0.95]
    assert len(inside) >= 8  # 64 pixels in blocks of 4: 16 reports


def test_twotime_numpy_moves_during_the_products(rng):
    frames = rng.poisson(0.5, size=(40, 6, 6)).astype(numpy.uint8)
    seen = []
    qmask = 1 + (numpy.arange(36) % 3).reshape(6, 6)  # 3 bins: 3 blocks of products
    correlate_sums(frames, qmask, method="numpy", mode="twotime", progress=seen.append)
    assert seen == sorted(seen)
    assert [f for f in seen if 0.95 * 0.5 < f < 0.95]


@pytest.mark.parametrize("as_events", [False, True])
def test_cpu_events_moves_during_the_pairs(rng, as_events):
    """``cpu-events``: the compaction moves with the frames read, the pairs after it by batches
    of tasks; same sums as without progress."""
    from ewoksxpcs import compact

    frames = rng.poisson(0.4, size=(300, 16, 16)).astype(numpy.uint8)
    qmask = 1 + (numpy.arange(256) % 3).reshape(16, 16)
    data = compact(frames) if as_events else frames
    seen = []
    with_progress = correlate_sums(data, qmask, method="cpu-events", options={"chunk_frames": 30},
                                   progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0
    read_end = 0.0 if as_events else 0.95 * (1 - 0.3)  # compute_share 0.3
    if not as_events:
        assert len([f for f in seen if 0 < f < read_end]) >= 5  # 10 chunks read and compacted
    pairs = [f for f in seen if read_end < f < 0.95]
    assert len(pairs) >= 3  # 16 tasks per thread, reported by batches of 2 per thread
    plain = correlate_sums(data, qmask, method="cpu-events")
    numpy.testing.assert_array_equal(with_progress["sums"].n2, plain["sums"].n2)
    numpy.testing.assert_array_equal(with_progress["sums"].frame_sums, plain["sums"].frame_sums)


def test_opencl_compaction_moves_by_batches_on_a_cpu_device(tmp_path, monkeypatch):
    """``opencl-events`` on a CPU device from a bitshuffle-LZ4 file: raw chunks decoded and
    compacted by batches of CPU_BATCH_BYTES (not the GPU's 2 GiB), each a step of the bar."""
    from conftest import require_opencl

    from ewoksxpcs.io.load import load_frames
    from ewoksxpcs.opencl import compact as opencl_compact
    from ewoksxpcs.tools.benchmark_memory import write_scan

    require_opencl("cpu")
    scan = write_scan(str(tmp_path / "s.h5"), 200, (16, 16), 0.3)
    monkeypatch.setattr(opencl_compact, "CPU_BATCH_BYTES", 20 * 16 * 16)  # 20 frames (uint8)
    seen = []
    out = correlate_sums(load_frames(f"{scan}::/data"), numpy.ones((16, 16), int),
                         method="opencl-events", device="cpu", progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert len([f for f in seen if 0 < f < 0.5]) >= 5  # 10 batches of the compaction
    ref = correlate_sums(load_frames(f"{scan}::/data"), numpy.ones((16, 16), int),
                         method="reference")
    numpy.testing.assert_array_equal(out["sums"].n2, ref["sums"].n2)


def _reports_after_reading(monkeypatch, correlator_class):
    """(every report, the reports made once the frames are read: in ``_finish``)."""
    seen, after = [], []
    finishing = []
    real = correlator_class._finish

    def finish(self, *args, **kwargs):
        finishing.append(True)
        try:
            return real(self, *args, **kwargs)
        finally:
            finishing.clear()

    monkeypatch.setattr(correlator_class, "_finish", finish)

    def report(f):
        seen.append(f)
        if finishing:
            after.append(f)

    return seen, after, report


@pytest.mark.parametrize("as_events", [False, True])
def test_opencl_events_moves_during_the_kernels(rng, monkeypatch, as_events):
    """``opencl-events`` after the compaction: the correlation kernels report as they complete
    (checkpoints), not only the compaction; same sums as without progress."""
    from conftest import require_opencl

    from ewoksxpcs import compact
    from ewoksxpcs.correlators.opencl_events import OpenCLEventCorrelator

    from ewoksxpcs.correlators import opencl_events

    require_opencl("cpu")
    # Launches of one work-group at least: this small case has too few tasks to fill 8 per
    # compute unit and still move the bar in steps.
    monkeypatch.setattr(opencl_events, "LAUNCH_FILL", 1)
    frames = rng.poisson(0.4, size=(300, 16, 16)).astype(numpy.uint8)
    qmask = 1 + (numpy.arange(256) % 3).reshape(16, 16)
    data = compact(frames) if as_events else frames
    seen, after, report = _reports_after_reading(monkeypatch, OpenCLEventCorrelator)
    out = correlate_sums(data, qmask, method="opencl-events", device="cpu", progress=report)
    assert seen == sorted(seen) and seen[-1] == 1.0
    lo = 0.0 if as_events else 0.5  # after the compaction
    assert len([f for f in after if lo < f < 0.96]) >= 5, after
    ref = correlate_sums(data, qmask, method="reference")
    numpy.testing.assert_array_equal(out["sums"].n2, ref["sums"].n2)
    numpy.testing.assert_array_equal(out["sums"].frame_sums, ref["sums"].frame_sums)


def test_opencl_dense_on_a_cpu_device_moves_after_the_last_frame(rng, monkeypatch):
    """``opencl-dense`` on a CPU device runs most of its queued kernels after the last frame is
    read: that phase moves the progress (checkpoints), from 0.095 (compute_share 0.9) on."""
    from conftest import require_opencl

    from ewoksxpcs.correlators.opencl_dense import OpenCLDenseCorrelator

    require_opencl("cpu")
    frames = rng.poisson(0.4, size=(640, 8, 8)).astype(numpy.uint8)
    qmask = 1 + (numpy.arange(64) % 2).reshape(8, 8)
    seen, after, report = _reports_after_reading(monkeypatch, OpenCLDenseCorrelator)
    out = correlate_sums(frames, qmask, method="opencl-dense", device="cpu",
                         options={"window_frames": 64, "chunk_frames": 64}, progress=report)
    assert seen == sorted(seen) and seen[-1] == 1.0
    read_end = 0.95 * (1 - 0.9)
    reading = [f for f in seen if f not in after and f < 1.0]
    assert reading and max(reading) <= read_end + 1e-12  # the frames streamed up to there
    assert len([f for f in after if read_end < f < 0.96]) >= 5, after
    ref = correlate_sums(frames, qmask, method="reference")
    numpy.testing.assert_array_equal(out["sums"].n2, ref["sums"].n2)
