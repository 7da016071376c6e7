"""Post-scan submission to an ewoksjob queue, with a real Celery worker process (SQLite broker)."""

import os
import signal
from concurrent.futures import ThreadPoolExecutor
import subprocess
import sys
import time

import numpy
import pytest

from _scandata import check_result, make_scans
from ewoksxpcs.tools.synthetic import SyntheticXPCS
from ewoksxpcs.app.submit import celery_app, job_state, main, submit_scan, wait_job


WAIT_S = 120  # upper bound of any wait: a stuck queue fails the test instead of hanging it


@pytest.fixture(scope="module")
def queue(tmp_path_factory):
    """A Celery configuration file and an ewoksjob worker (prefork pool, 2 processes)."""
    directory = tmp_path_factory.mktemp("celery")
    config = directory / "celeryconfig.py"
    config.write_text(
        f'broker_url = "sqla+sqlite:///{directory}/broker.db"\n'
        f'result_backend = "db+sqlite:///{directory}/results.db"\n'
        'result_serializer = "pickle"\n'
        'accept_content = ["application/json", "application/x-python-serialize"]\n'
        "task_track_started = True  # the STARTED state carries the pid of the pool process\n"
        "worker_prefetch_multiplier = 1\n"
        "worker_lost_wait = 1.0  # seconds before a killed pool process fails its job (default 10)\n"
    )
    env = dict(os.environ, EWOKS_CONFIG_URI=str(config))
    log = open(directory / "worker.log", "w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "ewoksjob", "worker", "--pool", "prefork", "--concurrency", "2",
         "-n", "xpcs-test@%h", "--without-gossip", "--without-mingle", "--without-heartbeat",
         "--loglevel", "INFO"],  # INFO: the "ready." line _wait_ready waits for
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(directory),
    )
    try:
        _wait_ready(worker, directory / "worker.log")
        yield str(config), worker
    finally:
        worker.send_signal(signal.SIGQUIT)  # cold shutdown: the pool processes exit with it
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()


def _wait_ready(worker, log_path, timeout=WAIT_S):
    """Wait until the worker has declared its queue and consumes (it logs "<name> ready.").

    The broker database starts empty, and kombu's SQLAlchemy transport creates its tables and
    the queue's row on first use, by a select then an insert guarded by a lock of its own
    process only: a first submission at the moment the worker declares its queue fails with
    an IntegrityError (UNIQUE constraint failed: kombu_queue.name) or "'NoneType' object has
    no attribute 'client'", or the worker stops with "Unrecoverable error: IntegrityError"
    and every later job stays PENDING. A warm test session submits about one second after
    the worker is started: just when it declares its queue.
    """
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if worker.poll() is not None:
            raise RuntimeError(f"the Celery worker exited ({worker.returncode}); see {log_path}")
        with open(log_path) as f:
            if " ready." in f.read():
                return
        time.sleep(0.05)
    raise RuntimeError(f"the Celery worker not ready after {timeout} s; see {log_path}")


def _wait_state(job_id, config, states, timeout=WAIT_S):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        state = job_state(job_id, config)
        if state in states:
            return state
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {state} after {timeout} s")


def test_twenty_scans_at_once(queue, tmp_path):
    config, worker = queue
    urls, qmask, labels = make_scans(tmp_path / "raw", 20)
    outputs = [str(tmp_path / "processed" / f"scan_{i}.h5") for i in range(20)]
    os.makedirs(tmp_path / "processed")
    # Submitted at once, from 20 threads (as 20 beamline processes would).
    with ThreadPoolExecutor(max_workers=20) as pool:
        job_ids = list(pool.map(
            lambda a: submit_scan(a[0], a[1], parameters={"qmask": qmask, "method": "matmul"}, config=config),
            zip(urls, outputs)))
    assert len(set(job_ids)) == 20
    for job_id in job_ids:
        wait_job(job_id, config, timeout=WAIT_S)
        assert job_state(job_id, config) == "SUCCESS"
    for url, out in zip(urls, outputs):
        check_result(out, url, labels, "matmul")
    assert worker.poll() is None


def test_killed_worker_fails_leaves_nothing_and_resubmits(queue, tmp_path):
    config, worker = queue
    # A scan long enough (a few seconds with the reference method) to be killed while running.
    sim = SyntheticXPCS(shape=(32, 32), n_frames=600, mean_counts=0.3, n_bins=4, q_per_pixel=1e-3,
                        seed=3, n_threads=1)
    sim.write_bliss_h5(str(tmp_path / "slow.h5"))
    url = f"{tmp_path / 'slow.h5'}::/1.1"
    numpy.save(tmp_path / "qmask.npy", sim.labels)
    outdir = tmp_path / "processed"
    os.makedirs(outdir)
    output = str(outdir / "slow.h5")
    params = {"qmask": str(tmp_path / "qmask.npy"), "method": "reference"}

    job_id = submit_scan(url, output, parameters=params, config=config)
    _wait_state(job_id, config, {"STARTED"})
    info = celery_app(config).AsyncResult(job_id).info
    pid = info["pid"]
    assert pid != worker.pid  # the pool process running the job, not the worker's main process
    os.kill(pid, signal.SIGKILL)
    assert _wait_state(job_id, config, {"FAILURE", "SUCCESS"}) == "FAILURE"
    with pytest.raises(Exception, match="Worker exited prematurely|WorkerLost"):
        wait_job(job_id, config, timeout=WAIT_S)
    assert os.listdir(outdir) == []  # no result, no PNG, no temporary file

    # Resubmitted (the worker replaced its pool process), the same scan succeeds.
    job_id2 = submit_scan(url, output, parameters=params, config=config)
    assert job_id2 != job_id
    wait_job(job_id2, config, timeout=WAIT_S)
    check_result(output, url, sim.labels, "reference")
    assert worker.poll() is None


def test_cli_submit(queue, tmp_path, capsys):
    config, _ = queue
    urls, qmask, labels = make_scans(tmp_path / "raw", 1)
    output = str(tmp_path / "cli.h5")
    code = main([urls[0], "--output", output, "--qmask", qmask, "--method", "fft",
                 "--config", config, "--wait", str(WAIT_S)])
    assert code == 0
    job_id = capsys.readouterr().out.strip()
    assert job_state(job_id, config) == "SUCCESS"
    check_result(output, urls[0], labels, "fft")
    # Existing output without --overwrite: the job fails, exit code 1, the file is kept.
    mtime = os.stat(output).st_mtime_ns
    code = main([urls[0], "--output", output, "--qmask", qmask, "--config", config, "--wait", str(WAIT_S)])
    assert code == 1
    assert "exists" in capsys.readouterr().err
    assert os.stat(output).st_mtime_ns == mtime
    # Bad input is refused before anything is sent.
    assert main([urls[0], "--output", output, "-p", "nope=1", "--config", config]) == 2
    assert "'nope' is not an input" in capsys.readouterr().err
    assert main([urls[0], "--output", output, "--config", str(tmp_path / "none.py")]) == 2


def test_reprocess_on_ewoksjob_workers(queue, tmp_path):
    from ewoksxpcs.app.reprocess import read_scans, reprocess

    config, worker = queue
    urls, qmask, labels = make_scans(tmp_path / "raw", 2)
    jobs = read_scans(urls, parameters={"qmask": qmask, "method": "fft"}, output_dir=tmp_path / "out")
    report = reprocess(jobs, executor="ewoksjob", config=config, timeout=WAIT_S)
    assert [o.status for o in report.outcomes] == ["done", "done"]
    assert all(o.info["job_id"] for o in report.outcomes)
    for job in jobs:
        check_result(job.output, job.input, labels, "fft")
    report = reprocess(jobs, executor="ewoksjob", config=config, timeout=WAIT_S)
    assert [o.status for o in report.outcomes] == ["skipped", "skipped"]


def test_configuration_files_of_the_same_name(tmp_path):
    """Two ``celeryconfig.py`` of different directories in one process: each its own queue
    (ewoksjob imports a file as a module by its name: the second got the first's settings)."""
    urls = []
    for i in range(2):
        d = tmp_path / f"site{i}"
        d.mkdir()
        (d / "celeryconfig.py").write_text(
            "import os\n"
            f"BROKER_URL = 'sqla+sqlite:///{d}/broker.db'\n"
            f"celery = {{'result_backend': 'db+sqlite:///{d}/results.db'}}\n")
        app = celery_app(str(d / "celeryconfig.py"))
        assert app.conf.result_backend == f"db+sqlite:///{d}/results.db"
        urls.append(app.conf.broker_url)
    assert urls == [f"sqla+sqlite:///{tmp_path}/site{i}/broker.db" for i in range(2)]
