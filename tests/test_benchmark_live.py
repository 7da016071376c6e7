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
    profile = tmp_path / "live_profile.txt"
    assert main(["--suite", "live", "--scale", "0.002", "--rate", "400", "--counts", "0.5",
                 "--mode", "multitau", "linear", "--workdir", str(tmp_path),
                 "--json", str(out), "--profile", str(profile)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines()
             if "final result on disk" in line]
    assert [line.split()[0] for line in lines] == ["multitau", "linear"]
    assert all("kept up: " in line and "identical to offline" in line for line in lines)
    assert out.is_file()
    text = profile.read_text()  # the live loop profiled, each mode
    assert text.count("# live run, mode") == 2 and "run_live" in text


def test_live_benchmark_eiger_case_appends_precompressed_chunks(tmp_path):
    """The Eiger case: the writer appends the pool's bitshuffle-LZ4 chunks (one frame per
    chunk, cycled) to a growing file the live source follows; final result as offline."""
    import h5py
    import numpy

    from ewoksxpcs.io.hdf5chunks import chunk_layout
    from ewoksxpcs.tools.synthetic_eiger import eiger_gap_mask

    row = run_live_benchmark(n_frames=30, shape=(40, 38), rate=1000.0, counts=0.5,
                             mode="linear", every=0.05, chunk=5, n_bins=3, detector="eiger4m",
                             pool=8, workdir=str(tmp_path), report=None)
    assert row["identical"] is True and row["detector"] == "eiger4m"
    scan = str(tmp_path / "scan.h5")
    layout, why = chunk_layout(scan, "/1.1/measurement/det")
    assert why == "" and layout.codec == "bslz4" and layout.frames_per_chunk == 1
    assert layout.n_chunks == 30
    with h5py.File(scan, "r") as f:
        frames = f["1.1/measurement/det"][()]
        assert "end_time" in f["1.1"]
    numpy.testing.assert_array_equal(frames[8:16], frames[:8])  # the pool of 8, cycled
    assert (frames[:, eiger_gap_mask((40, 38))] == 65535).all()
    assert frames[:8].sum() > 0
    with pytest.raises(ValueError, match="detector"):
        run_live_benchmark(n_frames=4, shape=(16, 16), detector="eiger9m", report=None,
                           workdir=str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()
