"""tools/benchmark_live.py: the latency benchmark runs end to end (writer process, live run,
offline check) on a tiny scan and reports its figures; speed itself is not asserted."""

from __future__ import annotations

import pytest

from ewoksxpcs.tools.benchmark_live import run_live_benchmark


@pytest.mark.parametrize("mode", ["multitau", "linear"])
def test_live_benchmark_smoke(tmp_path, mode):
    row = run_live_benchmark(n_frames=60, shape=(16, 20), rate=400.0, counts=0.5, mode=mode,
                             every=0.05, chunk=5, n_bins=3, workdir=str(tmp_path), report=None)
    assert row["identical"] is True
    assert row["n_frames"] == 60 and row["mode"] == mode
    for key in ("latency_s", "after_last_chunk_s", "writer_s", "live_cpu_s", "offline_s"):
        assert row[key] >= 0, key
    assert (tmp_path / "result.h5").is_file() and (tmp_path / "result_g2.png").is_file()


def test_live_benchmark_cli_prints_each_mode(tmp_path, capsys):
    from ewoksxpcs.tools.benchmark_cli import main

    out = tmp_path / "live.json"
    assert main(["--suite", "live", "--scale", "0.002", "--rate", "400", "--counts", "0.5",
                 "--mode", "multitau", "linear", "--workdir", str(tmp_path),
                 "--json", str(out)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines()
             if "final result on disk" in line]
    assert [line.split()[0] for line in lines] == ["multitau", "linear"]
    assert all("kept up: " in line and "identical to offline" in line for line in lines)
    assert out.is_file()
