"""``ewoksxpcs benchmark``: the quick mode runs, prints a complete table and agrees with dynamix.

Only the content is checked (methods, devices, figures present, g2 agreement), never the
timings: speed belongs in the benchmark's output, not in assertions.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import sys

import numpy
import pytest

from ewoksxpcs.tools import benchmark
from ewoksxpcs.tools.benchmark import Case, make_events, run_benchmark
from ewoksxpcs.tools.benchmark_cli import main
from ewoksxpcs.correlators import METHODS


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One ``main(["--quick", ...])`` run: (exit status, printed table, JSON document)."""
    path = tmp_path_factory.mktemp("bench") / "rows.json"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["--quick", "--json", str(path)])
    with open(path) as f:
        doc = json.load(f)
    return status, out.getvalue(), doc


def test_quick_exit_status_and_machine(quick):
    status, text, doc = quick
    assert status == 0, text
    assert text.startswith("machine: ")
    assert "OpenCL devices:" in text and "versions: numpy" in text
    m = doc["machine"]
    assert m["cpu"] and m["cpu_count"] >= 1
    assert isinstance(m["opencl_devices"], list)


def test_quick_table_lists_every_method_per_case(quick):
    _, text, doc = quick
    rows = doc["rows"]
    for case in benchmark.QUICK_CASES:
        assert f"== {case}:" in text
        assert re.search(rf"== {case}:.*\n   auto picks: \S+ \(", text)
        names = [r["method"] for r in rows if r["case"] == case and not r["peer"]]
        assert names == list(METHODS)
    assert not [r for r in rows if r["note"].startswith("error")]


def test_quick_dense_rows_have_figures_and_agree(quick):
    _, text, doc = quick
    dense = [r for r in doc["rows"] if r["case"] == "dense-quick"]
    by_name = {r["method"]: r for r in dense}
    for name in ("reference", "matmul", "fft"):
        r = by_name[name]
        assert r["time_s"] > 0 and r["throughput"] > 0 and r["peak_mib"] >= 0
        assert r["unit"] == "px-frames/s"
        assert r["g2_rel_diff"] <= 1e-9, r  # our exact methods agree to rounding
        line = next(l for l in text.splitlines() if l.strip().startswith(name + " "))
        assert f"{r['time_s']:.3f}" in line
    assert by_name["reference"]["note"] == "g2 base"
    assert dense[0]["auto"] in METHODS


def test_quick_dynamix_peers_measured_and_consistent(quick):
    pytest.importorskip("dynamix")
    _, text, doc = quick
    rows = doc["rows"]
    dense_peer = next(r for r in rows if r["case"] == "dense-quick" and r["peer"])
    assert dense_peer["method"] == "dynamix MatMulCorrelator"
    assert dense_peer["time_s"] > 0
    assert dense_peer["agrees"] and dense_peer["g2_rel_diff"] < 1e-3
    ours = [r for r in rows if r["case"] == "dense-quick" and not r["peer"] and r["time_s"]]
    for r in ours:
        assert math.isclose(r["speed_vs_dynamix"],
                            r["throughput"] / dense_peer["throughput"], rel_tol=1e-9)
    assert "speed vs dynamix (throughput ratio ours/dynamix): " in text
    event_peer = next(r for r in rows if r["case"] == "events-quick" and r["peer"])
    if event_peer["time_s"] is None:
        assert "no OpenCL device" in event_peer["note"]
    else:
        assert event_peer["method"] == "dynamix EventCorrelator"
        assert event_peer["unit"] == "pairs/s"
        assert event_peer["agrees"], event_peer


def test_quick_events_case_skips_dense_methods(quick):
    _, _, doc = quick
    rows = {r["method"]: r for r in doc["rows"] if r["case"] == "events-quick" and not r["peer"]}
    assert rows["fft"]["time_s"] > 0  # the CPU method that reads EventStacks
    for name, cls in METHODS.items():
        if cls.input_kind == "dense" and name != "fft":
            assert rows[name]["time_s"] is None and "dense-only" in rows[name]["note"]


def test_run_benchmark_custom_case_without_peers():
    case = Case("tiny", "dense", (9, 10), 30, 1.0, n_bins=3)
    out = io.StringIO()
    rows = run_benchmark(methods=["matmul", "fft"], sizes=[case], repeat=2, peers=False,
                         file=out)
    assert [r["method"] for r in rows] == ["matmul", "fft"]
    assert all(r["time_s"] > 0 and r["speed_vs_dynamix"] is None for r in rows)
    assert rows[1]["g2_rel_diff"] <= 1e-9
    assert "== tiny: 9x10x30 uint8 dense" in out.getvalue()
    assert run_benchmark(methods=["fft"], sizes=[case], peers=False, file=False)


def test_photon_pairs_counted_over_binned_pixels():
    case = Case("ev", "events", (6, 7), 50, 0.3, n_bins=2)
    events, labels = make_events(case)
    from ewoksxpcs import Binning

    binning = Binning(labels)
    work, unit = benchmark._work(case, events, binning)
    k = numpy.diff(events.offsets)[binning.pixel_index]
    assert unit == "pairs/s" and work == float((k * (k + 1) // 2).sum())
    dense = events.to_dense()
    assert numpy.array_equal((dense > 0).sum(axis=0).ravel(), numpy.diff(events.offsets))
    assert dense.sum() > 0 and events.n_frames == 50


@pytest.mark.parametrize("argv,message", [(["--cases", "nope"], "unknown benchmark case"),
                                          (["--methods", "nope"], "unknown method"),
                                          (["--repeat", "0"], "repeat")])
def test_bad_arguments(argv, message, capsys):
    assert main(argv + ["--no-peers"]) == 2
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------------- --suite gpu
from ewoksxpcs.tools import benchmark_gpu  # noqa: E402

GPU_CASES = ["multitau", "multitau-eiger4m", "twotime-10bins", "twotime-1bin-100k",
             "events-0.01", "events-0.1"]


@pytest.fixture(scope="module")
def gpu_smoke(tmp_path_factory):
    """``--suite gpu`` at a tiny scale on the OpenCL CPU device (PoCL): status, table, JSON."""
    from conftest import require_opencl

    require_opencl("cpu")
    path = tmp_path_factory.mktemp("bench_gpu") / "gpu.json"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["--suite", "gpu", "--scale", "0.003", "--device", "cpu",
                       "--json", str(path)])
    with open(path) as f:
        doc = json.load(f)
    return status, out.getvalue(), doc


def test_gpu_suite_table_rows_and_figures(gpu_smoke):
    status, text, doc = gpu_smoke
    assert status == 0, text
    assert doc["suite"] == "gpu" and doc["scale"] == 0.003 and doc["machine"]["cpu"]
    rows = doc["rows"]
    assert [r["case"] for r in rows] == [c for c in GPU_CASES
                                         for _ in range(3 if c.startswith("events") else 2)]
    # Each side fed both ways (dense); events: both pageable, both pinned, ours on the device
    # against dynamix's kernels alone.
    assert [r["feed"] for r in rows] == ["pinned", "pageable"] * 4 + [
        "pageable", "pinned", "device-resident"] * 2
    assert [r["peer_feed"] for r in rows] == ["pinned", "pageable"] * 4 + [
        "pageable", "pinned", "kernels"] * 2
    header = next(line for line in text.splitlines() if line.startswith("case "))
    for column in ("feed", "ours_s", "peer_s", "ratio", "target", "floor_s", "x_floor",
                   "ours_MiB", "peer_MiB"):
        assert column in header
    assert "host->device pinned" in text and "device copy" in text
    for r in rows:
        assert r["ours_s"] > 0 and r["ours_throughput"] > 0, r
        assert "error" not in r["note"], r
        assert r["ours_mem_mib"] > 0 or r["feed"] == "device-resident", r
        assert "Portable Computing Language" in r["ours_device"]
        # The floor: the bytes that must move at the measured rate, and ours as a multiple of it.
        assert r["floor_bytes"] > 0 and r["floor_s"] == pytest.approx(
            r["floor_bytes"] / r["floor_rate"])
        assert r["x_floor"] == pytest.approx(r["ours_s"] / r["floor_s"])
        line = next(l for l in text.splitlines()
                    if l.startswith(r["case"] + " ") and f" {r['feed']}" in l)
        assert f"{r['ours_s']:.3f}" in line
        if r["peer_s"] is None:  # peers missing (no torch/CUDA here) is reported, not an error
            assert "peer not" in r["note"], r
        else:
            assert r["ratio"] == pytest.approx(r["peer_s"] / r["ours_s"])
            assert r["meets_target"] == (r["ratio"] >= r["target"])
    assert [r["target"] for r in rows[:8:2]] + [r["target"] for r in rows[8:]] == [
        2.0, 2.0, 2.0, 3.0] + [10.0] * 6
    assert "time_bin 10" in rows[6]["data"] and "1 bin(s)" in rows[6]["data"]


def test_gpu_suite_events_exact_against_dynamix(gpu_smoke):
    pytest.importorskip("dynamix")
    _, _, doc = gpu_smoke
    for r in doc["rows"][8:]:  # the event rows, every feed
        assert r["peer"] == "dynamix EventCorrelator" and r["peer_s"] > 0, r
        assert r["exact"] is True, r  # our int64 n2 equals dynamix's integer sums
        assert r["agreement"].startswith("n2 == dynamix int32 sums")
        if math.isnan(r["g2_rel_diff"]):
            # At this tiny scale the 0.01-count case has fewer than 10 expected photon pairs at
            # every lag: our g2 is undefined there (engine.normalise); n2 is still compared.
            assert "0.01" in r["case"], r
            continue
        assert r["g2_rel_diff"] < 1e-5  # dynamix normalises in float32
        assert r["unit"] == "pairs/s"


@pytest.mark.gpu
def test_gpu_suite_torch_peers_agree():
    """boost_corr and the PyTorch two-time agree with ours (GPU machine: torch, CUDA, boost_corr)."""
    import torch  # noqa: F401  (present on the GPU machine; a missing one fails the gpu run)
    import boost_corr  # noqa: F401

    rows = benchmark_gpu.run_gpu_suite(scale=0.003, device="gpu", torch_device="cuda",
                                       cases=["multitau", "twotime-1bin-100k"], file=False)
    assert [r["feed"] for r in rows] == ["pinned", "pageable"] * 2
    for r in rows:  # both feeds of both sides give the same numbers
        assert r["peer_s"] > 0 and r["g2_rel_diff"] < 1e-4, r


def test_pool_frames_cycle_through_the_pool():
    pool = numpy.arange(5 * 2 * 3, dtype=numpy.uint8).reshape(5, 2, 3)
    source = benchmark_gpu.pool_frames(pool, 12)
    assert source.n_frames == 12 and source.frame_shape == (2, 3)
    for chunk_frames in (None, 2, 4, 7):
        chunks = list(source.iter_chunks(chunk_frames))
        assert all(numpy.shares_memory(c, pool) for c in chunks)  # views: pinned stays pinned
        numpy.testing.assert_array_equal(numpy.concatenate(chunks), pool[numpy.arange(12) % 5])
    assert numpy.array_equal(benchmark_gpu.pool_slice(pool, 6, 3), pool[1:4])
    with pytest.raises(ValueError, match="crosses the end"):
        benchmark_gpu.pool_slice(pool, 3, 3)


def test_dense_poisson_counts():
    frames = benchmark_gpu.dense_poisson((20, 30), 500, 0.3, seed=5)
    assert frames.shape == (500, 20, 30) and frames.dtype == numpy.uint8
    assert abs(frames.mean() - 0.3) < 0.01 and abs(frames.var() - 0.3) < 0.015  # Poisson
    assert (frames >= 2).any()  # multiplicities add up
    again = benchmark_gpu.dense_poisson((20, 30), 500, 0.3, seed=5)
    assert numpy.array_equal(frames, again)


def test_poisson_events_counts():
    ev = benchmark_gpu.poisson_events((12, 10), 400, 0.2, seed=4, chunk_pixels=50)
    dense = ev.to_dense()
    assert dense.shape == (400, 12, 10) and ev.n_pixels == 120
    assert abs(dense.mean() - 0.2) < 0.01 and abs(dense.var() - 0.2) < 0.015
    assert (ev.values >= 1).all() and (ev.values >= 2).any()
    for p in range(ev.n_pixels):  # times strictly ascending within a pixel
        t = ev.times[ev.offsets[p]: ev.offsets[p + 1]].astype(numpy.int64)
        assert (numpy.diff(t) > 0).all() and (t < 400).all()


def test_opencl_memory_tracker():
    from conftest import require_opencl

    require_opencl("cpu")
    import pyopencl

    from ewoksxpcs.opencl.device import get_device

    ctx = get_device("cpu").context
    mf = pyopencl.mem_flags
    original = pyopencl.Buffer
    with benchmark_gpu.opencl_memory() as mem:
        a = pyopencl.Buffer(ctx, mf.READ_WRITE, 1000)
        b = pyopencl.Buffer(ctx, mf.READ_WRITE, 3000)
        b.release()
        c = pyopencl.Buffer(ctx, mf.READ_WRITE, 500)
        pinned = pyopencl.Buffer(ctx, mf.READ_WRITE | mf.ALLOC_HOST_PTR, 10**6)
    assert mem.peak == 4000  # a + b alive together; c after b's release; pinned not counted
    assert pyopencl.Buffer is original
    del a, c, pinned


def test_opencl_memory_tracker_counts_pooled_buffers():
    """Buffers of a device's pool count as the bytes it hands out beyond what it handed out
    when the block began, reused or made; host memory registrations not at all."""
    from conftest import require_opencl

    require_opencl("cpu")
    import numpy
    import pyopencl

    from ewoksxpcs.opencl import pools
    from ewoksxpcs.opencl.device import get_device

    dev = get_device("cpu")
    kept = pools.pooled_buffer(dev, dev.queue, 8192)  # handed out before: not counted
    reused = pools.pooled_buffer(dev, dev.queue, 1 << 20)
    del reused  # held by the pool: handed out again inside the block
    host = numpy.zeros(1 << 16, numpy.uint8)
    with benchmark_gpu.opencl_memory() as mem:
        a = pools.pooled_buffer(dev, dev.queue, 1 << 20)
        b = pools.pooled_buffer(dev, dev.queue, 1 << 16)
        plain = pyopencl.Buffer(dev.context, pyopencl.mem_flags.READ_WRITE, 1000)
        registered = pyopencl.Buffer(
            dev.context, pyopencl.mem_flags.READ_WRITE | pyopencl.mem_flags.USE_HOST_PTR,
            hostbuf=host)
    assert (1 << 20) + (1 << 16) + 1000 <= mem.peak < (1 << 20) + (1 << 16) + 1000 + (1 << 17)
    assert not pools.ALLOCATION_HOOKS  # the hook removed
    del a, b, plain, registered, kept


def test_boost_bin_g2_is_symmetric_normalisation():
    # Two bins (columns 0-1 and 2-4), one lag: g2 = N·ΣG2 / (ΣIP·ΣIF).
    G2 = numpy.zeros((1, 3, 5), numpy.float32)
    G2[0, 0] = [1, 2, 3, 4, 5]
    G2[0, 1] = [1, 1, 2, 2, 2]
    G2[0, 2] = [2, 2, 1, 1, 1]
    g2 = benchmark_gpu.boost_bin_g2(G2, numpy.array([0, 2, 5]))
    numpy.testing.assert_allclose(g2, [[2 * 3 / (2 * 4)], [3 * 12 / (6 * 3)]])


def test_gpu_cases_sizes_and_bad_arguments(capsys):
    full = {c.name: c for c in benchmark_gpu.gpu_cases(1.0)}
    assert full["multitau"].shape == (512, 1024) and full["multitau"].n_frames == 100_000
    assert full["events-0.1"].shape == (1024, 1024) and full["events-0.1"].n_frames == 10_000
    assert full["twotime-10bins"].n_frames == 10_000 and full["twotime-10bins"].n_bins == 10
    assert full["twotime-1bin-100k"].max_frames == 10_000
    eiger = full["multitau-eiger4m"]
    assert eiger.shape == (2162, 2068) and eiger.n_frames == 10_000 and eiger.dtype == "uint16"
    with pytest.raises(ValueError, match="scale"):
        benchmark_gpu.gpu_cases(0)
    assert main(["--suite", "gpu", "--scale", "2", "--device", "cpu"]) == 2
    assert "scale must be in (0, 1]" in capsys.readouterr().err
    assert main(["--suite", "gpu", "--cases", "nope", "--device", "cpu"]) == 2
    assert "unknown GPU benchmark case" in capsys.readouterr().err


# ---------------------------------------------------------------------- suite cpu
@pytest.fixture(scope="module")
def cpu_smoke():
    """The cpu suite at its smallest (64 frames), with the peers installed here."""
    from ewoksxpcs.tools.benchmark_cpu import run_cpu_suite

    out = io.StringIO()
    rows = run_cpu_suite(scale=0.001, repeat=1, file=out, xpcscorr_dask=False)
    return rows, out.getvalue()


def test_cpu_suite_cases_tools_and_feeds(cpu_smoke):
    rows, text = cpu_smoke
    assert text.startswith("machine: ") and "load average" in text
    assert [c for c in dict.fromkeys(r["case"] for r in rows)] == \
        ["dense", "sparse-0.01", "sparse-0.1", "multitau", "twotime"]
    tools = {(r["case"], r["tool"].split()[0]) for r in rows}
    for case in ("dense", "sparse-0.01", "sparse-0.1"):
        assert {(case, "dynamix"), (case, "xpcs-correlator")} <= tools
    assert {("multitau", "boost_corr"), ("multitau", "scikit-beam"), ("twotime", "boost_corr")} \
        <= tools
    for r in rows:
        assert r["feed"] and f"{r['tool']:<58}" in text and r["feed"] in text
        if r["side"] == "ours" and not r["note"].startswith("skipped"):
            assert r["wall_s"] > 0 and r["cpu_s"] >= 0, r
        if r["side"] == "peer":
            # measured, or said to be missing (boost_corr and torch are not in the test extra)
            assert (r["wall_s"] or 0) > 0 or r["note"].startswith("not installed (pip install"), r
            assert r["wall_s"] is None or r["ratio_vs_ours"] > 0


def test_cpu_suite_agreement(cpu_smoke):
    rows, _ = cpu_smoke
    for r in rows:
        if r["side"] == "ours" and r["agreement"] != "-":
            assert r["agreement"] == "n2 equal", r  # our other methods: the same exact sums
        if r["side"] == "peer" and r["wall_s"] and r["agreement"].startswith(("g2", "map")):
            assert float(r["agreement"].split()[-1]) < 1e-4, r  # float32 peers
    events = [r for r in rows if r["case"] == "sparse-0.01" and r["side"] == "peer" and r["wall_s"]]
    assert any(r["agreement"].startswith("g2 rel") for r in events)


def test_cpu_suite_boost_corr_in_a_peer_python():
    # --peer-python: the boost_corr peers run in a process of that interpreter (here ours).
    from ewoksxpcs.tools.benchmark_cpu import run_cpu_suite

    out = io.StringIO()
    rows = run_cpu_suite(scale=0.001, repeat=1, cases=["twotime"], file=out,
                         peer_python=sys.executable)
    (peer,) = [r for r in rows if r["tool"].startswith("boost_corr")]
    assert f"own process ({sys.executable})" in peer["feed"]
    assert f"boost_corr peers in their own process of {sys.executable}" in out.getvalue()
    assert (peer["wall_s"] and peer["agreement"].startswith("map rel")) or \
        peer["note"].startswith("not installed in"), peer


def test_cpu_suite_bad_arguments():
    from ewoksxpcs.tools.benchmark_cpu import cpu_cases, run_cpu_suite

    with pytest.raises(ValueError, match="scale must be in"):
        cpu_cases(0)
    with pytest.raises(ValueError, match="unknown case"):
        run_cpu_suite(scale=0.001, cases=["nope"], file=io.StringIO())
    assert [c.n_frames for c in cpu_cases(1.0)] == [10_000, 10_000, 10_000, 20_000, 5_000]
