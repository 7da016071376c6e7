"""Concurrent reprocessing never mixes scans: 6 scans on a dask LocalCluster of 2 workers,
workflows through ewoksdask on the shared scheduler (``--executor dask --engine dask``), each
result checked against a single-process correlation of its own scan."""

import os

import distributed
import pytest

from _scandata import check_result, make_scans
from ewoksxpcs.app.reprocess import read_scans, reprocess
from ewoksxpcs.app.scan_job import ScanJob, read_record


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    return make_scans(tmp_path_factory.mktemp("raw"), 6, n_frames=80)


@pytest.mark.parametrize("engine", ["dask", None])
def test_six_scans_on_two_workers(scans, tmp_path, engine):
    urls, qmask, labels = scans
    jobs = read_scans(urls, parameters={"qmask": qmask, "method": "matmul"},
                      output_dir=tmp_path / "out")
    # A scan whose file does not exist must fail, not be "done" with another scan's data.
    missing = {"input": str(tmp_path / "nothing.h5::/1.1"), "qmask": qmask, "method": "matmul",
               "output": str(tmp_path / "out" / "missing.h5")}
    jobs.append(ScanJob("missing", missing))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        report = reprocess(jobs, executor="dask", scheduler=client, engine=engine)
    status = [o.status for o in report.outcomes]
    assert status == ["done"] * 6 + ["failed"], report.table()
    assert not os.path.exists(missing["output"]) and read_record(missing["output"]) is None
    for job in jobs[:6]:
        check_result(job.output, job.input, labels, "matmul")
