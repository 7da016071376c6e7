"""``ewoksxpcs benchmark --suite auto``: ``ewoksxpcs run`` with defaults against each method,
in subprocesses, on a bitshuffle-LZ4 scan; the table says what auto chose and its ratio."""

import pytest

from ewoksxpcs.tools import benchmark_auto


@pytest.mark.slow
def test_auto_suite_times_every_method_and_auto(monkeypatch, tmp_path):
    monkeypatch.setattr(benchmark_auto, "AUTO_CASES", (("tiny", (24, 24), 60, 0.05),))
    lines = []
    rows = benchmark_auto.run_auto_suite(workdir=str(tmp_path), rounds=1,
                                         methods=("fft", "cpu-events"), on_step=lines.append)
    (row,) = rows
    assert set(row["times"]) == {"fft", "cpu-events"}
    assert all(t > 0 for t in row["times"].values()) and row["auto"] > 0
    assert row["auto_method"] in row["estimates"]  # read back from the result file
    assert row["auto_reason"].startswith("linear, ") and "cost model 'cpu'" in row["auto_reason"]
    assert row["ratio"] >= 1.0 and row["best"] in ("fft", "cpu-events")
    table = benchmark_auto.format_rows(rows)
    assert f"chose {row['auto_method']}; auto ÷ best" in table
    assert any(line.startswith("case tiny: 24x24x60") for line in lines)
