"""``ewoksxpcs benchmark --suite e2e`` at ``--scale 0.01`` on whatever device auto finds (PoCL
in CI): every mode runs with defaults only, cold, warm and through a persistent worker, and the
stage times and floors are reported (a bound on completion, not a timing)."""

import math

import pytest

from conftest import require_opencl
from ewoksxpcs.tools.benchmark_e2e import MODES, run_e2e, table


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    require_opencl("cpu")
    lines = []
    out = run_e2e(workdir=str(tmp_path_factory.mktemp("e2e")), scale=0.01, counts=(0.01,),
                  processes=1, drop_caches=False, on_step=lines.append)
    return out, lines


def test_every_mode_cold_warm_worker(e2e):
    out, _ = e2e
    assert out["frames"] == 100 and out["shape"] == [216, 206]
    assert [r["mode"] for r in out["rows"]] == list(MODES)
    for r in out["rows"]:
        for key in ("cold_s", "warm_s", "worker_s"):
            assert r[key] is not None and r[key] > 0, (r["mode"], key)
        for name in ("cold", "warm"):
            s = r[f"{name}_stages"]
            assert s["method"] and s["device"] and "cost model" in s["auto_reason"]
            assert s["compact_s"] >= 0 and s["correlate_s"] > 0
            assert math.isclose(s["rest_s"] + s["compact_s"] + s["correlate_s"], r[f"{name}_s"])
            f = r[f"{name}_floors"]
            assert f["read_s"] > 0 and f["data_vs_floor"] > 0
        assert r["cache_dropped"] is False


def test_floors_and_table(e2e):
    out, lines = e2e
    w = out["floors"]["warm"]
    assert w["read_Bps"] > 0 and w["h2d_Bps"] > 0 and w["device_copy_Bps"] > 0
    text = table(out)
    assert lines[-1] == text
    for mode in MODES:
        assert f"\n{mode}" in text
    assert "floors: read" in text and "x_floor" in text
    worker = text.split("through one persistent worker process")[1]
    for mode in MODES:  # one row per scan and mode, as an ewoksjob worker runs them
        assert f"\n  {mode}" in worker
    assert out["check"]["rings"] == 8


def test_a_scan_of_the_work_directory_is_reused_or_refused(tmp_path):
    """A second run in the same work directory (an A/B of two versions) reuses the scan the
    first wrote when it has the same frames, shape and counts, and refuses another one."""
    from ewoksxpcs.tools.benchmark_e2e import _existing_scan
    from ewoksxpcs.tools.synthetic_eiger import write_eiger_scan

    directory = str(tmp_path / "scan_0.01")
    assert _existing_scan(directory, 20, (64, 72), 0.01) is None
    master = write_eiger_scan(directory, n_frames=20, shape=(64, 72), counts=0.01, processes=1,
                              frames_per_file=10)
    assert _existing_scan(directory, 20, (64, 72), 0.01) == master
    for n, shape, counts in ((40, (64, 72), 0.01), (20, (64, 64), 0.01), (20, (64, 72), 0.1)):
        with pytest.raises(ValueError, match="holds another scan"):
            _existing_scan(directory, n, shape, counts)
