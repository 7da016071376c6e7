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

import numpy
import pytest

from ewoksxpcs import benchmark
from ewoksxpcs.benchmark import Case, main, make_events, run_benchmark
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
