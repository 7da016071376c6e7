"""Facility-wide reprocessing: scan lists, resumability, summary and exit code, dask and local pool."""

import json
import os

import pytest

from _scandata import check_result, make_scans
from ewoksxpcs.app.reprocess import main, read_scans, reprocess
from ewoksxpcs.app.scan_job import ScanJob, load_workflow, read_record, workflow_inputs


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    return make_scans(tmp_path_factory.mktemp("raw"), 4)


def _write_yaml(path, urls, qmask, overrides=None):
    import yaml

    rows = [{"input": u, "name": f"scan{i}"} for i, u in enumerate(urls)]
    for i, extra in (overrides or {}).items():
        rows[i].update(extra)
    with open(path, "w") as f:
        yaml.safe_dump({"defaults": {"qmask": qmask, "method": "matmul"}, "scans": rows}, f)
    return str(path)


def test_scan_lists(scans, tmp_path):
    urls, qmask, _ = scans
    raw = os.path.dirname(urls[0].partition("::")[0])
    jobs = read_scans([os.path.join(raw, "scan_*.h5::/1.1")], parameters={"qmask": qmask},
                      output_dir=tmp_path)
    assert [j.input for j in jobs] == sorted(urls)
    assert [os.path.basename(j.output) for j in jobs] == [f"scan_{i}_1.1.h5" for i in range(4)]
    csv_file = tmp_path / "scans.csv"
    csv_file.write_text(f"input,output,method,stop\n{urls[0]},{tmp_path}/a.h5,fft,40\n{urls[1]},,,\n")
    jobs = read_scans([str(csv_file)], parameters={"qmask": qmask}, output_dir=tmp_path / "o")
    assert jobs[0].parameters == {"qmask": qmask, "input": urls[0], "output": f"{tmp_path}/a.h5",
                                  "method": "fft", "stop": 40}
    assert jobs[1].parameters["output"].startswith(str(tmp_path / "o"))
    assert "method" not in jobs[1].parameters
    with pytest.raises(ValueError, match="no file matches"):
        read_scans([str(tmp_path / "none_*.h5")], output_dir=tmp_path)
    with pytest.raises(ValueError, match="output-dir"):
        read_scans([urls[0]])
    with pytest.raises(ValueError, match="same output"):
        read_scans([urls[0], urls[0]], output_dir=tmp_path)
    graph = load_workflow()
    with pytest.raises(ValueError, match="'methd' is not an input"):
        workflow_inputs(graph, {"input": urls[0], "methd": "fft"})


def test_reprocess_on_dask_cluster_resumable(scans, tmp_path):
    import distributed

    urls, qmask, labels = scans
    out = tmp_path / "out"
    scan_list = _write_yaml(tmp_path / "scans.yml", urls, qmask, {2: {"method": "fft"}, 3: {"stop": 40}})
    bad = {"input": urls[0].replace("::/1.1", "::/9.1"), "output": str(out / "bad.h5"), "qmask": qmask}
    jobs = read_scans([scan_list], output_dir=out)
    jobs_bad = jobs + [ScanJob("missing-entry", bad)]
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        worker_pids = set(client.run(os.getpid).values())
        assert len(worker_pids) == 2
        report = reprocess(jobs_bad, executor="dask", scheduler=client)
        status = {o.name: o.status for o in report.outcomes}
        assert status == {"scan0": "done", "scan1": "done", "scan2": "done", "scan3": "done",
                          "missing-entry": "failed"}
        assert report.exit_code == 1
        assert "9.1" in report.outcomes[-1].message
        assert not os.path.exists(bad["output"]) and read_record(bad["output"]) is None
        # Every workflow ran on a dask worker process.
        assert {o.info["pid"] for o in report.outcomes[:4]} <= worker_pids
        for job in jobs:
            p = job.parameters
            check_result(job.output, p["input"], labels, p.get("method"), stop=p.get("stop"))
        table = report.table()
        assert "missing-entry" in table and "4 done" in table and "1 failed" in table
        mtimes = [os.stat(j.output).st_mtime_ns for j in jobs]

        # Second run: nothing changed → everything skipped, files untouched.
        report = reprocess(read_scans([scan_list], output_dir=out), executor="dask", scheduler=client)
        assert [o.status for o in report.outcomes] == ["skipped"] * 4
        assert report.exit_code == 0
        assert [os.stat(j.output).st_mtime_ns for j in jobs] == mtimes

        # One scan's parameters change → only that one is redone (overwritten).
        scan_list = _write_yaml(tmp_path / "scans.yml", urls, qmask,
                                {2: {"method": "reference"}, 3: {"stop": 40}})
        report = reprocess(read_scans([scan_list], output_dir=out), executor="dask", scheduler=client)
        assert [o.status for o in report.outcomes] == ["skipped", "skipped", "redone", "skipped"]
        check_result(jobs[2].output, urls[2], labels, "reference")
        assert read_record(jobs[2].output)["parameters"]["method"] == "reference"
        assert os.stat(jobs[0].output).st_mtime_ns == mtimes[0]

        # Through ewoksdask: the tasks of the workflow are scheduled on the same cluster.
        job = read_scans([urls[1]], parameters={"qmask": qmask, "method": "fft"}, output_dir=tmp_path / "ed")
        report = reprocess(job, executor="dask", scheduler=client, engine="dask")
        assert [o.status for o in report.outcomes] == ["done"]
        check_result(job[0].output, urls[1], labels, "fft")


def test_cli_local_pool(scans, tmp_path, capsys):
    urls, qmask, labels = scans
    raw = os.path.dirname(urls[0].partition("::")[0])
    argv = [os.path.join(raw, "scan_[01].h5::/1.1"), "--output-dir", str(tmp_path), "--qmask", qmask,
            "--method", "matmul", "-p", "stop=30", "--executor", "local", "--workers", "2"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["scan", "status", "time_s", "output", "message"]
    assert lines[-1] == "2 scans: 2 done, 0 redone, 0 skipped, 0 failed"
    for url in urls[:2]:
        output = os.path.join(tmp_path, os.path.basename(url.partition("::")[0])[:-3] + "_1.1.h5")
        check_result(output, url, labels, "matmul", stop=30)
        record = json.load(open(output + ".params.json"))
        assert record["parameters"]["stop"] == 30
    # Again, through the console command's entry point: nothing to do.
    from ewoksxpcs.app.cli import main as cli_main

    assert cli_main(["reprocess"] + argv) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "2 scans: 0 done, 0 redone, 2 skipped, 0 failed"
    # Bad input: a one-line reason and exit code 2.
    assert main([str(tmp_path / "nothing_*.h5"), "-o", str(tmp_path)]) == 2
    assert "no file matches" in capsys.readouterr().err
    assert main([urls[0], "-o", str(tmp_path), "-p", "bogus=1"]) == 2
    assert "'bogus' is not an input" in capsys.readouterr().err


def test_skip_check_covers_file_content_and_path_spelling(scans, tmp_path, monkeypatch):
    """A changed q-mask or raw file under the same name is redone; the same files spelled
    relative or absolute are one scan."""
    import shutil

    import numpy

    urls, qmask, labels = scans
    monkeypatch.chdir(tmp_path)
    shutil.copy(qmask, tmp_path / "q.npy")
    shutil.copy(urls[0].partition("::")[0], tmp_path / "scan.h5")
    absolute = {"input": str(tmp_path / "scan.h5") + "::/1.1", "qmask": str(tmp_path / "q.npy"),
                "method": "matmul", "output": str(tmp_path / "r.h5")}
    relative = dict(absolute, input="scan.h5::/1.1", qmask="./q.npy")

    def run(params):
        report = reprocess([ScanJob("s", dict(params))], executor="local", max_workers=1)
        return report.outcomes[0].status

    assert run(absolute) == "done"
    assert run(relative) == "skipped"
    # Same size, same name, other labels (two bins swapped): redone.
    swapped = numpy.where(labels == 1, 2, numpy.where(labels == 2, 1, labels))
    numpy.save(tmp_path / "q.npy", swapped)
    assert run(relative) == "redone"
    check_result(str(tmp_path / "r.h5"), absolute["input"], swapped, "matmul")
    assert run(absolute) == "skipped"
    # The raw file rewritten (new mtime): redone.
    os.utime(tmp_path / "scan.h5")
    assert run(absolute) == "redone"


def test_output_that_is_an_input_fails_that_scan(scans, tmp_path):
    urls, qmask, _ = scans
    scan_file = urls[0].partition("::")[0]
    before = os.stat(scan_file).st_mtime_ns
    jobs = [ScanJob("self", {"input": urls[0], "qmask": qmask, "output": scan_file}),
            ScanJob("mask", {"input": urls[1], "qmask": qmask, "output": qmask})]
    report = reprocess(jobs, executor="local", max_workers=1)
    assert [o.status for o in report.outcomes] == ["failed", "failed"]
    assert all("is an input of this run" in o.message for o in report.outcomes)
    assert os.stat(scan_file).st_mtime_ns == before
