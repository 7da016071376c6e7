"""workflow/live.py, ``ewoksxpcs live`` and the LiveCorrelate task: snapshots while frames arrive
equal the offline result of the frames so far, and the final result equals the offline run on
the finished data bit for bit, in every mode; a scan published in a real Redis correlated live by
the command in another process; the writer killed mid-scan."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time

import h5py
import numpy
import pytest

import _live_writers as W
from redis_server import redis_stack_url  # noqa: F401  (session fixture: a real Redis + modules)

from ewoksxpcs.io.load import load_frames
from ewoksxpcs.workflow.live import LiveCorrelator, format_g2, run_live
from ewoksxpcs.workflow.pipeline import correlate_sums, normalise_sums

WRITER = os.path.join(os.path.dirname(__file__), "_live_writers.py")
MODES = {"multitau": {"lags_per_level": 4}, "linear": {}, "twotime": {"time_bin": 3}}


def offline(frames, mode, qmask=None, frame_period=None):
    """The offline result of ``frames`` (array or file URL): correlate_sums + normalise_sums."""
    qmask = W.qmask() if qmask is None else qmask
    if isinstance(frames, str):
        frames = load_frames(frames)
    out = correlate_sums(frames, qmask, mode=mode, mode_options=MODES[mode])
    return normalise_sums(out["sums"], out["binning"], frame_period=frame_period,
                          method=out["method"], device=out["device"], mode=mode,
                          mode_options=out["mode_options"])


def assert_identical(a: dict, b: dict):
    for key in ("g2", "g2_err", "tau", "labels", "n_pixels"):
        numpy.testing.assert_array_equal(a[key], b[key], err_msg=key, strict=True)
    ra, rb = a["result"], b["result"]
    for name in ("n2", "s2", "frame_sums", "C", "partial_g2", "partial_g2_err"):  # where the
        # mode has them: the sums behind g2, two-time's maps and the g2 of its age segments
        if getattr(ra, name, None) is not None:
            numpy.testing.assert_array_equal(getattr(ra, name), getattr(rb, name), err_msg=name)


def saved_g2(filename):
    with h5py.File(filename, "r") as f:
        g = f["entry/xpcs/g2"]
        return g["g2"][()], g["g2_errors"][()]


@pytest.fixture(scope="module")
def store(redis_stack_url):  # noqa: F811
    """The data store's URL without its database number (sources append /<scan key>)."""
    from blissdata.redis_engine.store import DataStore

    url = redis_stack_url.rsplit("/", 1)[0]
    DataStore(url, init_db=True)
    return url


@pytest.mark.parametrize("mode", sorted(MODES))
def test_snapshots_equal_offline_of_the_frames_so_far(mode):
    frames = W.frames(11, 150)
    live = LiveCorrelator(W.qmask(), frames.shape[1:], frames.dtype, mode=mode,
                          mode_options=MODES[mode])
    t = 0
    for n in (1, 9, 40, 3, 47, 50):  # uneven chunks: the sums do not depend on them
        live.feed(frames[t : t + n])
        t += n
        if t in (50, 150):
            snap = live.snapshot()
            assert snap["n_frames"] == t
            assert_identical(snap, offline(frames[:t], mode))
    assert snap is not live.snapshot()  # a snapshot does not stop the stream
    line = format_g2(snap)
    first_lag = 3 if mode == "twotime" else 1  # two-time: lags in time bins of 3 frames
    assert line.startswith(f"150 frames | g2 at τ={first_lag} ") and "bin 1: " in line and "bin 4: " in line
    with pytest.raises(ValueError, match="expected"):
        live.feed(frames[:2].astype(numpy.int32))


def test_snapshot_needs_two_frames():
    live = LiveCorrelator(W.qmask(), (24, 32), numpy.uint16)
    live.feed(W.frames(1, 1))
    with pytest.raises(ValueError, match="1 frame"):
        live.snapshot()


def test_run_live_growing_file_final_equals_offline(tmp_path):
    scan = str(tmp_path / "scan.h5")
    writer = subprocess.Popen([sys.executable, WRITER, "hdf5", json.dumps(
        dict(filename=scan, seed=12, n=400, chunk=20, period=0.04))])
    try:
        from ewoksxpcs.io.live import GrowingHDF5Source

        source = GrowingHDF5Source(f"{scan}::/1.1", quiet_timeout=10, wait_timeout=20)
        lines, snaps = [], []
        output = str(tmp_path / "result.h5")
        final = run_live(source, W.qmask(), output, every=0.2, mode="multitau",
                         mode_options=MODES["multitau"], report=lines.append,
                         on_snapshot=snaps.append)
    finally:
        writer.wait(30)
    assert final["n_frames"] == 400 and final["ended_early"] == ""
    assert final["updates"] >= 1 and len(snaps) == final["updates"] + 1
    assert [s["n_frames"] for s in snaps] == sorted(s["n_frames"] for s in snaps)
    assert lines[0].startswith("live ") and lines[-1].startswith("final  400 frames")
    ref = offline(f"{scan}::/1.1", "multitau", frame_period=0.01)
    assert_identical(final, ref)
    g2, err = saved_g2(output)
    numpy.testing.assert_array_equal(g2, ref["g2"])
    numpy.testing.assert_array_equal(err, ref["g2_err"])
    assert os.path.getsize(final["png"]) > 0
    # Drawn by the PNG helper process, the final one after the final result file
    from ewoksxpcs.io import pngproc

    assert pngproc.helper_pid() is not None
    assert os.stat(final["png"]).st_mtime_ns >= os.stat(output).st_mtime_ns
    assert 0 <= final["latency_s"] < 30
    # The result exists: a new run refuses to replace it without overwrite.
    with pytest.raises(FileExistsError):
        run_live(load_frames(f"{scan}::/1.1"), W.qmask(), output)


def test_cli_live_on_a_bliss_scan_in_redis(tmp_path, store, mode="linear"):
    key_file = str(tmp_path / "key")
    writer = subprocess.Popen([sys.executable, WRITER, "bliss", json.dumps(
        dict(url=store, seed=13, n=300, chunk=20, period=0.03, key_file=key_file))])
    try:
        key = W.wait_key(key_file)
        numpy.save(tmp_path / "qmask.npy", W.qmask())
        output = str(tmp_path / "result.h5")
        options = ["--time-bin", "3"] if mode == "twotime" else []
        cli = subprocess.run(
            [sys.executable, "-m", "ewoksxpcs", "live", f"{store}/{key}", "--qmask",
             str(tmp_path / "qmask.npy"), "-o", output, "--every", "300ms", "--mode", mode,
             "--quiet-timeout", "10s", "--no-plot", *options],
            capture_output=True, text=True, timeout=120)
    finally:
        writer.wait(30)
    assert cli.returncode == 0, cli.stderr
    lines = cli.stdout.splitlines()
    first_lag = "0.03s" if mode == "twotime" else "0.01s"  # two-time: time bins of 3 frames
    assert lines[-2].startswith(f"final  300 frames | g2 at τ={first_lag} ")
    assert lines[-1].startswith(f"result: {output} (300 frames, written ")
    ref = offline(W.frames(13, 300), mode, frame_period=0.01)
    g2, err = saved_g2(output)
    numpy.testing.assert_array_equal(g2, ref["g2"])
    numpy.testing.assert_array_equal(err, ref["g2_err"])


def test_cli_live_writer_killed(tmp_path, store):
    key_file = str(tmp_path / "key")
    writer = subprocess.Popen([sys.executable, WRITER, "bliss", json.dumps(
        dict(url=store, seed=14, n=300, chunk=20, period=0.02, key_file=key_file, stop_at=140))])
    numpy.save(tmp_path / "qmask.npy", W.qmask())
    output = str(tmp_path / "result.h5")
    try:
        key = W.wait_key(key_file)
        cli = subprocess.Popen(
            [sys.executable, "-m", "ewoksxpcs", "live", f"{store}/{key}", "--qmask",
             str(tmp_path / "qmask.npy"), "-o", output, "--every", "0", "--quiet-timeout",
             "1.5s", "--lags-per-level", "4", "--no-plot"], stdout=subprocess.PIPE, text=True)
        from blissdata.redis_engine.store import DataStore

        stream = DataStore(store).load_scan(key).streams["eiger:image"]
        deadline = time.monotonic() + 30
        while len(stream) < 140:  # the writer has published 140 frames and stops there
            assert time.monotonic() < deadline
            time.sleep(0.05)
        writer.kill()  # mid-scan: the scan never ends, its stream is never sealed
        out, _ = cli.communicate(timeout=60)
    finally:
        if writer.poll() is None:
            writer.kill()
        writer.wait()
    assert cli.returncode == 0
    assert "scan ended early at frame 140: no new frame for 1.5 s" in out
    ref = offline(W.frames(14, 300)[:140], "multitau", frame_period=0.01)
    g2, _ = saved_g2(output)
    numpy.testing.assert_array_equal(g2, ref["g2"])


def test_cli_live_bad_input(tmp_path, capsys):
    from ewoksxpcs.app.cli import main

    numpy.save(tmp_path / "qmask.npy", W.qmask())
    scan = str(tmp_path / "scan.h5")
    W.write_hdf5(scan, seed=15, n=40, chunk=40, period=0.0)
    base = ["live", f"{scan}::/1.1", "--qmask", str(tmp_path / "qmask.npy")]
    assert main(base + ["-o", str(tmp_path / "r.h5"), "--time-bin", "2"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == ("ewoksxpcs: error: option 'time_bin' does not apply to mode "
                           "'multitau' (it is an option of mode 'twotime')")
    assert not os.path.exists(tmp_path / "r.h5")
    assert main(base + ["-o", str(tmp_path / "r.h5"), "--every", "soon"]) == 2
    assert "not a duration: 'soon'" in capsys.readouterr().err
    (tmp_path / "old.h5").write_bytes(b"keep")
    assert main(base + ["-o", str(tmp_path / "old.h5")]) == 1
    assert "exists (use overwrite" in capsys.readouterr().err
    assert (tmp_path / "old.h5").read_bytes() == b"keep"


def test_live_task(tmp_path):
    from ewokscore import execute_graph

    scan = str(tmp_path / "scan.h5")
    W.write_hdf5(scan, seed=16, n=120, chunk=30, period=0.0)
    output = str(tmp_path / "result.h5")
    graph = {"graph": {"id": "live"},
             "nodes": [{"id": "live", "task_type": "class",
                        "task_identifier": "ewoksxpcs.tasks.live_correlate.LiveCorrelate"}]}
    inputs = [{"id": "live", "name": k, "value": v} for k, v in dict(
        source=f"{scan}::/1.1", qmask=W.qmask(), output=output, mode="twotime",
        mode_options={"time_bin": 3}, plot=False).items()]
    result = execute_graph(graph, inputs=inputs)
    assert result["n_frames"] == 120 and result["ended_early"] == "" and result["png"] is None
    ref = offline(f"{scan}::/1.1", "twotime", frame_period=0.01)
    numpy.testing.assert_array_equal(saved_g2(output)[0], ref["g2"])
    from ewoksxpcs.engine.twotime import TwoTimeResult

    with h5py.File(output, "r") as f:  # the maps on disk too (written without gzip)
        numpy.testing.assert_array_equal(
            TwoTimeResult.read_maps(f["entry/xpcs/twotime/maps"]), ref["result"].C, strict=True)


@pytest.mark.parametrize("dtype", [numpy.uint8, numpy.int32, numpy.uint32])
def test_live_pairs_equal_every_offline_event_backend(dtype):
    """LivePairs' n2 and frame sums equal the reference and cpu-events exactly, whatever the
    chunking (segments merged as a binary counter), with a snapshot in between."""
    from ewoksxpcs.correlators import create_correlator
    from ewoksxpcs.engine.live_pairs import LivePairs
    from ewoksxpcs.engine.qmask import Binning

    frames = W.frames(21, 137).astype(dtype)
    frames[5, 3, 4] = 200  # a large value among the ones
    binning = Binning(W.qmask(), n_groups=4)
    live = LivePairs(binning, frames.dtype)
    t = 0
    for n in (1, 1, 2, 13, 7, 30, 1, 82):
        live.feed(frames[t:t + n])
        t += n
        if t == 17:
            mid = live.sums()
            ref = create_correlator(binning, method="reference").compute_sums(frames[:17])
            numpy.testing.assert_array_equal(mid.n2, ref.n2, strict=True)
    assert t == 137 and live.n_frames == 137
    got = live.sums()
    for method in ("reference", "cpu-events", "fft"):
        ref = create_correlator(binning, method=method).compute_sums(frames)
        numpy.testing.assert_array_equal(got.n2, ref.n2, strict=True)
        numpy.testing.assert_array_equal(got.frame_sums, ref.frame_sums, strict=True)
        numpy.testing.assert_array_equal(got.lags, ref.lags)


def test_live_pairs_float_frames_and_range():
    from ewoksxpcs.correlators import create_correlator
    from ewoksxpcs.engine.live_pairs import LivePairs
    from ewoksxpcs.engine.qmask import Binning

    frames = W.frames(22, 40).astype(numpy.float32) * numpy.float32(0.5)
    binning = Binning(W.qmask(), n_groups=2)
    live = LivePairs(binning, frames.dtype)
    live.feed(frames[:15])
    live.feed(frames[15:])
    ref = create_correlator(binning, method="reference").compute_sums(frames)
    assert live.sums().n2.dtype == numpy.float64
    numpy.testing.assert_allclose(live.sums().n2, ref.n2, rtol=1e-12)
    big = numpy.full((2, 24, 32), 2**40, dtype=numpy.int64)  # (Σ v)² past 2^62: refused
    with pytest.raises(ValueError, match="int64 range"):
        LivePairs(binning, big.dtype).feed(big)


@pytest.mark.parametrize("lam", [0.02, 2.0])  # offline: sparse (event pairs) and dense (BLAS)
def test_live_twotime_maps_by_blocks_equal_offline(lam):
    """Two-time: the maps' columns computed by blocks of new time bins (LiveGram) are the
    offline maps bit for bit, mid-scan and at the end."""
    from ewoksxpcs.engine.live_pairs import LiveGram

    rng = numpy.random.default_rng(7)
    frames = rng.poisson(lam, (96, 24, 32)).astype(numpy.uint16)
    options = {"time_bin": 2, "twotime_bins": [1, 3]}
    live = LiveCorrelator(W.qmask(), frames.shape[1:], frames.dtype, mode="twotime",
                          mode_options=options)
    assert isinstance(live.gram, LiveGram)
    for t in range(0, 96, 7):  # chunks of 7 frames: time bins of 2 complete across chunks
        live.feed(frames[t:t + 7])
        if t == 42:
            mid = live.snapshot()
            out = correlate_sums(frames[:49], W.qmask(), mode="twotime", mode_options=options)
            numpy.testing.assert_array_equal(mid["result"].C, out["sums"].C)
    assert live.gram.n_frames == 48
    numpy.testing.assert_array_equal(mid["result"].C, live.gram.maps()[:, :24, :24])  # kept
    final = live.snapshot()
    out = correlate_sums(frames, W.qmask(), mode="twotime", mode_options=options)
    ref = normalise_sums(out["sums"], out["binning"], mode="twotime",
                         mode_options=out["mode_options"])
    assert_identical(final, ref)


def test_live_twotime_g2_past_the_diagonal_blocks_equals_offline():
    """Two-time g2 summed along the diagonals as the columns come: past two blocks of
    DIAGONAL_BLOCK rows (the offline order of summation), in uneven chunks, every g2 (whole
    maps and age segments) bit for bit that of the offline maps."""
    from ewoksxpcs.engine.twotime import DIAGONAL_BLOCK

    n = 2 * DIAGONAL_BLOCK + 77
    frames = numpy.random.default_rng(3).poisson(0.3, (n, 6, 8)).astype(numpy.uint16)
    qmask = numpy.repeat(numpy.arange(1, 4), 16).reshape(6, 8)
    live = LiveCorrelator(qmask, frames.shape[1:], frames.dtype, mode="twotime")
    t = 0
    for k in range(10**6):
        step = 1 + (37 * k) % 90
        live.feed(frames[t:t + step])
        t += step
        if t >= n:
            break
    assert live.gram is not None and live.gram.n_frames == n
    final = live.snapshot()
    out = correlate_sums(frames, qmask, mode="twotime")
    ref = normalise_sums(out["sums"], out["binning"], mode="twotime",
                         mode_options=out["mode_options"])
    assert numpy.isnan(final["result"].C).any() and numpy.isfinite(final["g2"]).any()
    assert_identical(final, ref)


@pytest.mark.parametrize("mode", ["linear", "multitau"])
def test_run_live_correlates_while_an_update_is_written(tmp_path, mode):
    """An update (normalised sums, result file, PNG) runs in a thread of its own: while one is
    being written (here held up by its on_snapshot), the next chunks are correlated; the final
    result still equals the offline one bit for bit, and every update's snapshot is the result
    of the frames it announces."""
    import threading

    from ewoksxpcs.engine.frames import IterableFrameSource

    frames = W.frames(31, 400)
    pulled = []  # chunks taken from the source so far
    held = threading.Event()
    progressed = []

    def chunks():
        for t in range(0, 400, 20):
            if t >= 40:  # the rest once the first update is being written
                held.wait(30)
            pulled.append(t)
            yield frames[t:t + 20]

    def on_snapshot(snap):
        if not held.is_set():  # the first update: do the next chunks come meanwhile?
            held.set()
            at = len(pulled)
            deadline = time.monotonic() + 30
            while len(pulled) == at and time.monotonic() < deadline:
                time.sleep(0.01)
            progressed.append(len(pulled) > at)
        ref = offline(frames[: snap["n_frames"]], mode)
        numpy.testing.assert_array_equal(snap["g2"], ref["g2"], strict=True)

    output = str(tmp_path / "result.h5")
    final = run_live(IterableFrameSource(chunks()), W.qmask(), output, every=1e-6, mode=mode,
                     mode_options=MODES[mode], png=False, report=None,
                     on_snapshot=on_snapshot)
    assert progressed == [True]
    assert final["updates"] >= 1 and final["n_frames"] == 400
    assert_identical(final, offline(frames, mode))
    assert set(final["timings"]) >= {"wait_s", "feed_s", "capture_s"}
    assert os.listdir(tmp_path) == ["result.h5"]


def test_run_live_an_update_that_fails_stops_the_run(tmp_path):
    """An error in the update thread (here its on_snapshot; a full disk alike) is raised by
    run_live, not lost in the thread: the run stops, no final result is written over the last
    update, and no update thread is left running."""
    import threading

    from ewoksxpcs.engine.frames import IterableFrameSource

    frames = W.frames(32, 200)

    def on_snapshot(snap):
        raise RuntimeError("disk full (simulated)")

    output = str(tmp_path / "result.h5")
    with pytest.raises(RuntimeError, match="disk full"):
        run_live(IterableFrameSource(frames[t:t + 20] for t in range(0, 200, 20)), W.qmask(),
                 output, every=1e-6, png=False, report=None, on_snapshot=on_snapshot)
    with h5py.File(output, "r") as f:  # the update's file, not a final one
        assert not f["entry/xpcs/parameters/final"][()]
        assert f["entry/xpcs/parameters/n_frames"][()] < 200
    assert not any(t.name.startswith("ewoksxpcs-update") for t in threading.enumerate())


@pytest.mark.parametrize("budget", [None, 2 * 300 * 300 * 4])
def test_run_live_twotime_maps_written_while_the_scan_runs(tmp_path, monkeypatch, budget):
    """Two-time maps written to the final file stripe by stripe during the scan (600 time
    bins: four whole stripes of 128, the rest at the end), with updates in between; or, past the
    maps' budget mid-scan, that file dropped and the maps written at the end: either way the
    file's maps and g2 equal the offline ones, and nothing else is left in the directory."""
    import ewoksxpcs.workflow.live as live_module
    from ewoksxpcs.engine.frames import IterableFrameSource
    from ewoksxpcs.engine.twotime import TwoTimeResult

    if budget is not None:
        monkeypatch.setattr(live_module, "LIVE_GRAM_BYTES", budget)  # 2 maps of 300²
    monkeypatch.setattr(live_module, "LIVE_UPDATE_MAPS_BYTES", 0)  # updates without maps
    frames = numpy.random.default_rng(5).poisson(0.5, (600, 6, 8)).astype(numpy.uint16)
    qmask = numpy.repeat(numpy.arange(1, 3), 24).reshape(6, 8)
    source = IterableFrameSource(frames[t:t + 30] for t in range(0, 600, 30))
    output = str(tmp_path / "result.h5")
    snaps, updates = [], []

    def on_snapshot(snap):  # called once its file is written
        snaps.append(snap)
        with h5py.File(output, "r") as f:
            maps = f["entry/xpcs/twotime/maps"]
            updates.append(("C" in maps, maps.attrs["signal"], maps["C_diagonal"][()]))

    final = run_live(source, qmask, output, every=1e-6, mode="twotime", png=False,
                     report=None, on_snapshot=on_snapshot)
    assert len(snaps) >= 2 and final["n_frames"] == 600  # an update mid-scan, the final
    for snap, (has_c, signal, diagonal) in zip(snaps[:-1], updates):  # only the diagonal
        assert not has_c and signal == "C_diagonal"
        d = numpy.arange(snap["result"].C.shape[-1])
        numpy.testing.assert_array_equal(diagonal, snap["result"].C[:, d, d])
    assert updates[-1][:2] == (True, "C")
    out = correlate_sums(frames, qmask, mode="twotime")
    ref = normalise_sums(out["sums"], out["binning"], mode="twotime",
                         mode_options=out["mode_options"])
    assert_identical(final, ref)
    with h5py.File(output, "r") as f:
        assert "_live_maps" not in f
        maps = f["entry/xpcs/twotime/maps"]
        assert maps["C"].chunks == ((1, 128, 128) if budget is None else (1, 600, 600))
        numpy.testing.assert_array_equal(TwoTimeResult.read_maps(maps), ref["result"].C,
                                         strict=True)
        numpy.testing.assert_array_equal(f["entry/xpcs/twotime/g2/g2"][()],
                                         ref["result"].g2)
    assert os.listdir(tmp_path) == ["result.h5"]


@pytest.fixture(params=["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
def opencl_device(request):
    from conftest import require_opencl

    require_opencl(request.param)
    return request.param


@pytest.mark.parametrize("dtype", [numpy.uint16, numpy.int32])
def test_live_linear_on_opencl_equals_numpy(opencl_device, dtype):
    """Live linear sums with the events on the OpenCL device (PoCL's CPU device here, a GPU
    with -m gpu): n2 equal to the NumPy reference bit for bit, mid-scan and at the end."""
    from ewoksxpcs.correlators import create_correlator
    from ewoksxpcs.opencl.live_pairs import LivePairsOpenCL

    frames = W.frames(23, 130).astype(dtype)
    frames[3, 2, 2] = 3000 if dtype == numpy.uint16 else -5  # large and negative values
    live = LiveCorrelator(W.qmask(), frames.shape[1:], frames.dtype, mode="linear",
                          method="opencl-events", device=opencl_device)
    t = 0
    for n in (2, 1, 29, 64, 1, 33):  # 70 frames: past the first 64 lags of n2 on the device
        live.feed(frames[t:t + n])
        t += n
        if t == 32:
            mid = live.snapshot()
            ref = create_correlator(live.binning, method="reference").compute_sums(frames[:32])
            numpy.testing.assert_array_equal(mid["sums"].n2, ref.n2, strict=True)
    assert isinstance(live.stream, LivePairsOpenCL) and live.method == "opencl-events"
    final = live.snapshot()
    assert final["method"] == "opencl-events"
    ref = create_correlator(live.binning, method="reference").compute_sums(frames)
    numpy.testing.assert_array_equal(final["sums"].n2, ref.n2, strict=True)
    numpy.testing.assert_array_equal(final["sums"].frame_sums, ref.frame_sums, strict=True)
    assert_identical(final, offline(frames, "linear"))


def test_live_linear_auto_stays_on_the_cpu_without_gpu():
    """auto: the OpenCL path only where the cost model picks the events on a GPU (none here:
    PoCL's CPU device is not taken for live sums)."""
    from conftest import opencl_device_types

    if "gpu" in opencl_device_types():
        pytest.skip("a GPU is present")
    live = LiveCorrelator(W.qmask(), (24, 32), numpy.uint16, mode="linear")
    live.feed(W.frames(24, 5))
    assert live.method == "live-pairs"


def test_live_twotime_past_the_gram_budget_computes_the_maps_at_the_snapshot(monkeypatch):
    import ewoksxpcs.workflow.live as live_module

    monkeypatch.setattr(live_module, "LIVE_GRAM_BYTES", 2 * 20 * 20 * 4)  # 2 maps of 20²
    frames = W.frames(25, 50)
    options = {"time_bin": 2, "twotime_bins": [1, 3]}
    live = LiveCorrelator(W.qmask(), frames.shape[1:], frames.dtype, mode="twotime",
                          mode_options=options)
    live.feed(frames[:40])
    assert live.gram is not None and live.gram.n_frames == 20
    live.feed(frames[40:])  # 25 time bins: past the budget
    assert live.gram is None
    out = correlate_sums(frames, W.qmask(), mode="twotime", mode_options=options)
    numpy.testing.assert_array_equal(live.snapshot()["result"].C, out["sums"].C)


def raw_pieces(filename, path, sizes):
    """The frames of ``filename::path`` as RawChunks of ``sizes`` frames each (read raw)."""
    from ewoksxpcs.io.hdf5chunks import read_chunks, stored_frame_chunks
    from ewoksxpcs.io.live import RawChunks

    out, t = [], 0
    with h5py.File(filename, "r") as f:
        for n in sizes:
            layout, _ = stored_frame_chunks(f[path], t, t + n)
            assert layout.n_chunks == n
            out.append(RawChunks(layout, *read_chunks(layout, 0, n)))
            t += n
    return out


@pytest.mark.parametrize("codec", ["bslz4", "none"])
def test_live_linear_raw_chunks_decoded_on_the_device(opencl_device, codec, tmp_path):
    """Stored chunks (bitshuffle-LZ4 or unfiltered) decoded and compacted on the OpenCL device,
    a chunk of decoded frames between them: n2, frame sums and the mean image equal the offline
    ones, mid-scan and at the end."""
    import hdf5plugin

    from ewoksxpcs.correlators import create_correlator
    from ewoksxpcs.opencl.live_pairs import LiveDevicePairs

    frames = W.frames(31, 140)
    frames[5, 3, 4] = 60000  # large values: products past 2^32
    filename = str(tmp_path / "scan.h5")
    with h5py.File(filename, "w") as f:
        f.create_dataset("data", data=frames, chunks=(1, 24, 32),
                         **(hdf5plugin.Bitshuffle(cname="lz4") if codec == "bslz4" else {}))
    live = LiveCorrelator(W.qmask(), frames.shape[1:], frames.dtype, mode="linear",
                          method="opencl-events", device=opencl_device)
    pieces = raw_pieces(filename, "data", (1, 2, 29, 33, 5, 1))  # 71 frames: past 64 lags
    t = 0
    for piece in pieces:
        live.feed(piece)
        t += piece.n_frames
        if t == 32:
            mid = live.snapshot()
            ref = create_correlator(live.binning, method="reference").compute_sums(frames[:32])
            numpy.testing.assert_array_equal(mid["sums"].n2, ref.n2, strict=True)
            numpy.testing.assert_array_equal(mid["mean_image"],
                                             frames[:32].sum(axis=0, dtype=numpy.int64) / 32)
    live.feed(frames[t:t + 9])  # decoded frames (a chunk stored without its filter)
    for piece in raw_pieces(filename, "data", (t + 9, 60))[1:]:
        live.feed(piece)
    assert isinstance(live.stream, LiveDevicePairs) and live.method == "opencl-events"
    assert live.stream.paths == {"raw chunks decoded on the device", "frames uploaded"}
    final = live.snapshot()
    assert final["live_path"] == "raw chunks decoded on the device" and final["n_frames"] == 140
    numpy.testing.assert_array_equal(final["mean_image"],
                                     frames.sum(axis=0, dtype=numpy.int64) / 140)
    assert_identical(final, offline(frames, "linear"))
    wrong = dataclasses.replace(pieces[0].layout, dtype=numpy.dtype(numpy.uint32))
    with pytest.raises(ValueError, match="expected"):
        live.feed(dataclasses.replace(pieces[0], layout=wrong))


def test_run_live_growing_bslz4_file_decoded_on_the_device(tmp_path):
    """run_live on a growing bitshuffle-LZ4 file (one frame per chunk, one chunk stored
    without its filter) with the sums on an OpenCL device: the source hands on the stored
    chunks, the device decodes them; the final result equals the offline run bit for bit."""
    from conftest import require_opencl

    from ewoksxpcs.io.live import GrowingHDF5Source

    require_opencl("cpu")
    scan = str(tmp_path / "scan.h5")
    writer = subprocess.Popen([sys.executable, WRITER, "hdf5", json.dumps(
        dict(filename=scan, seed=14, n=300, chunk=20, period=0.03, codec="bslz4",
             unfiltered=[45]))])
    try:
        source = GrowingHDF5Source(f"{scan}::/1.1", quiet_timeout=10, wait_timeout=20)
        output = str(tmp_path / "result.h5")
        final = run_live(source, W.qmask(), output, every=0.2, mode="linear",
                         method="opencl-events", device="cpu", report=None, png=False)
    finally:
        writer.wait(30)
    assert final["n_frames"] == 300 and final["ended_early"] == ""
    assert final["live_path"] == "raw chunks decoded on the device"
    ref = offline(f"{scan}::/1.1", "linear", frame_period=0.01)
    assert_identical(final, ref)
    g2, err = saved_g2(output)
    numpy.testing.assert_array_equal(g2, ref["g2"])
    numpy.testing.assert_array_equal(err, ref["g2_err"])
    frames = W.frames(14, 300)
    numpy.testing.assert_array_equal(final["mean_image"],
                                     frames.sum(axis=0, dtype=numpy.int64) / 300)


def test_live_raw_chunks_only_where_the_sums_may_run_on_a_device(tmp_path):
    """accepts_raw: linear opencl-events and multi-tau opencl (or auto with a GPU) on frames of
    a dataset stored one frame per chunk; the CPU paths, two-time, signed frames in linear mode
    and auto without a GPU read decoded frames."""
    import hdf5plugin

    from conftest import opencl_device_types, require_opencl
    from ewoksxpcs.io.live import GrowingHDF5Source

    require_opencl("cpu")
    frames = W.frames(3, 10)
    filename = str(tmp_path / "scan.h5")
    with h5py.File(filename, "w") as f:
        f.create_dataset("1.1/measurement/det", data=frames, chunks=(1, 24, 32),
                         **hdf5plugin.Bitshuffle(cname="lz4"))
        f["1.1/end_time"] = "end"
    source = GrowingHDF5Source(f"{filename}::/1.1", quiet_timeout=5)

    def accepts(mode="linear", method="opencl-events", dtype=numpy.uint16):
        return LiveCorrelator(W.qmask(), (24, 32), dtype, mode=mode, method=method,
                              mode_options=MODES[mode]).accepts_raw(source)

    gpu = "gpu" in opencl_device_types()
    assert accepts()
    assert accepts(mode="multitau", method="opencl")  # its stream on the device
    assert accepts(mode="multitau", method="auto") == gpu
    assert not accepts(mode="multitau", method="numpy")
    assert not accepts(mode="twotime", method="auto")
    assert not accepts(dtype=numpy.int32)
    assert not accepts(method="live-pairs")
    assert accepts(method="auto") == gpu
    # Fed stored chunks anyway, a CPU path decodes them on the host: the same result.
    live = LiveCorrelator(W.qmask(), (24, 32), numpy.uint16, mode="multitau",
                          mode_options=MODES["multitau"])
    for piece in raw_pieces(filename, "1.1/measurement/det", (4, 6)):
        live.feed(piece)
    assert live.path == "raw chunks decoded on the host"
    assert_identical(live.snapshot(), offline(frames, "multitau"))


@pytest.mark.parametrize("codec", ["bslz4", "none"])
def test_live_multitau_on_opencl_from_raw_chunks_equals_offline(opencl_device, codec, tmp_path,
                                                               monkeypatch):
    """Live multi-tau on the OpenCL device (the offline OpenCL multi-tau's stream, unknown
    length): stored chunks decoded there, decoded frames uploaded, chunks split past the
    stream's launch size; the sums, g2 and mean image equal the offline ones, mid-scan and at
    the end."""
    import hdf5plugin

    import ewoksxpcs.workflow.live as live_module
    from ewoksxpcs.correlators.opencl_multitau import LiveOpenCLMultiTau

    monkeypatch.setattr(live_module, "MULTITAU_CHUNK_FRAMES", 16)  # launches of 16 frames
    frames = W.frames(37, 150)
    frames[7, 1, 1] = 65535
    filename = str(tmp_path / "scan.h5")
    with h5py.File(filename, "w") as f:
        f.create_dataset("data", data=frames, chunks=(1, 24, 32),
                         **(hdf5plugin.Bitshuffle(cname="lz4") if codec == "bslz4" else {}))
    live = LiveCorrelator(W.qmask(), frames.shape[1:], frames.dtype, mode="multitau",
                          method="opencl", device=opencl_device,
                          mode_options=MODES["multitau"])
    assert isinstance(live.stream, LiveOpenCLMultiTau) and live.stream.stream.chunk == 16
    t = 0
    for piece in raw_pieces(filename, "data", (1, 2, 37, 9, 1)):  # 50 frames
        live.feed(piece)
        t += piece.n_frames
        if t in (3, 50):
            snap = live.snapshot()
            assert snap["n_frames"] == t and snap["method"] == "opencl"
            assert_identical(snap, offline(frames[:t], "multitau"))
            numpy.testing.assert_array_equal(snap["mean_image"],
                                             frames[:t].sum(axis=0, dtype=numpy.int64) / t)
    live.feed(frames[50:83])  # decoded frames: uploaded
    for piece in raw_pieces(filename, "data", (83, 67))[1:]:
        live.feed(piece)
    final = live.snapshot()
    assert final["live_path"] == "raw chunks decoded on the device"
    assert live.stream.paths == {"raw chunks decoded on the device", "frames uploaded"}
    assert_identical(final, offline(frames, "multitau"))
    numpy.testing.assert_array_equal(final["mean_image"],
                                     frames.sum(axis=0, dtype=numpy.int64) / 150)


def test_run_live_multitau_growing_bslz4_file_on_the_device(tmp_path):
    """run_live, multi-tau with ``opencl``: the growing file's stored chunks decoded and
    correlated on the device; final result as offline."""
    from conftest import require_opencl

    from ewoksxpcs.io.live import GrowingHDF5Source

    require_opencl("cpu")
    scan = str(tmp_path / "scan.h5")
    writer = subprocess.Popen([sys.executable, WRITER, "hdf5", json.dumps(
        dict(filename=scan, seed=15, n=260, chunk=20, period=0.03, codec="bslz4"))])
    try:
        source = GrowingHDF5Source(f"{scan}::/1.1", quiet_timeout=10, wait_timeout=20)
        final = run_live(source, W.qmask(), str(tmp_path / "result.h5"), every=0.2,
                         mode="multitau", method="opencl", device="cpu",
                         mode_options=MODES["multitau"], report=None, png=False)
    finally:
        writer.wait(30)
    assert final["n_frames"] == 260 and final["live_path"] == "raw chunks decoded on the device"
    assert_identical(final, offline(f"{scan}::/1.1", "multitau", frame_period=0.01))
