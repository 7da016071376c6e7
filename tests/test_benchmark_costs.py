"""``ewoksxpcs benchmark --suite costs``: every method of the machine's cost table is timed on
bitshuffle-LZ4 scans and its constants fitted (non-negative, one per feature of its entry)."""

from conftest import require_opencl
from ewoksxpcs.tools import benchmark_costs
from ewoksxpcs.correlators import costs


def test_costs_suite_times_and_fits_every_method(monkeypatch, tmp_path):
    require_opencl("cpu")
    monkeypatch.setattr(benchmark_costs, "COST_CASES",
                        (("tiny", (32, 32), 60, 0.05), ("tiny-dense", (24, 24), 80, 1.0)))
    lines = []
    out = benchmark_costs.run_costs(device="cpu", workdir=str(tmp_path), on_step=lines.append)
    assert out["machine"] == "cpu"
    timed = {(r["mode"], r["method"]) for r in out["rows"]}
    table = costs.COSTS["cpu"]
    assert timed == {(mode, m) for mode, methods in table.items() for m in methods}
    for mode, methods in table.items():
        for method, entry in methods.items():
            fitted = out["fitted"][mode][method]
            assert set(fitted) == set(entry) and all(v >= 0 for v in fitted.values())
    assert all(r["seconds"] > 0 for r in out["rows"])
    assert any(line.startswith("case tiny:") for line in lines)


def test_costs_suite_saves_every_timing_and_fits_what_it_has(monkeypatch, tmp_path):
    """A run cut short keeps its timings: ``on_row`` sees each one, and ``fit_costs`` fits
    the methods that have rows (the others are absent, keeping their constants)."""
    require_opencl("cpu")
    monkeypatch.setattr(benchmark_costs, "COST_CASES", (("tiny", (32, 32), 60, 0.05),))
    seen = []
    out = benchmark_costs.run_costs(device="cpu", workdir=str(tmp_path), on_step=lambda _: None,
                                    methods=["fft", "numpy"],
                                    on_row=lambda machine, rows: seen.append(len(rows)))
    assert seen == list(range(1, len(out["rows"]) + 1)) and seen
    assert {r["method"] for r in out["rows"]} == {"fft", "numpy"}
    partial = benchmark_costs.fit_costs("cpu", out["rows"][:1])
    first = out["rows"][0]
    assert list(partial) == [first["mode"]] and list(partial[first["mode"]]) == [first["method"]]
