"""Jobs are not lost: 20 jobs through a real ewoksjob worker on a real Redis, with the shipped
configuration (:mod:`ewoksxpcs.app.jobconfig`); the worker's main process is SIGKILLed mid-run and
restarted, and every job ends SUCCESS with its result (none stuck STARTED or PENDING)."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from _scandata import check_result, make_scans
from redis_server import redis_url  # noqa: F401  (session fixture)
from ewoksxpcs.app import jobconfig
from ewoksxpcs.app.submit import job_state, submit_scan

#: Job limits of the test queue: short, so that the jobs of the killed worker come back soon.
TIME_LIMIT_S = 40
VISIBILITY_S = 45
WAIT_S = 150


def _worker(env, directory, name):
    log = open(os.path.join(directory, f"{name}.log"), "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "ewoksjob", "worker", "--pool", "prefork", "--concurrency", "2",
         "-n", f"{name}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=directory,
    )
    return process, log


def _stop(process):
    if process.poll() is None:
        process.send_signal(signal.SIGQUIT)  # cold shutdown
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _states(job_ids, config):
    return [job_state(j, config) for j in job_ids]


def test_worker_killed_mid_run_loses_no_job(redis_url, tmp_path):  # noqa: F811
    config = jobconfig.settings(redis_url, time_limit=TIME_LIMIT_S,
                                visibility_timeout=VISIBILITY_S, restore_interval=1)
    env = dict(os.environ, EWOKS_CONFIG_URI="ewoksxpcs.app.jobconfig", EWOKSXPCS_REDIS_URL=redis_url,
               EWOKSXPCS_JOB_TIME_LIMIT=str(TIME_LIMIT_S),
               EWOKSXPCS_VISIBILITY_TIMEOUT=str(VISIBILITY_S), EWOKSXPCS_RESTORE_INTERVAL="1")
    urls, qmask, labels = make_scans(tmp_path / "raw", 20, n_frames=300)
    os.makedirs(tmp_path / "processed")
    outputs = [str(tmp_path / "processed" / f"scan_{i}.h5") for i in range(20)]
    # overwrite: a job redelivered after its first run had committed the result redoes it.
    job_ids = [submit_scan(u, o, parameters={"qmask": qmask, "method": "matmul"}, config=config,
                           overwrite=True) for u, o in zip(urls, outputs)]
    first, log1 = _worker(env, str(tmp_path), "first")
    orphans = []
    second = log2 = None
    try:
        t0 = time.monotonic()
        while True:  # kill while jobs run, after some have finished
            states = _states(job_ids, config)
            if states.count("SUCCESS") >= 2 and "STARTED" in states:
                break
            assert time.monotonic() - t0 < WAIT_S, f"worker made no progress: {states}"
            assert first.poll() is None, "the worker exited"
            time.sleep(0.05)
        orphans = psutil.Process(first.pid).children(recursive=True)
        first.send_signal(signal.SIGKILL)
        first.wait()
        in_flight = [j for j, s in zip(job_ids, _states(job_ids, config)) if s == "STARTED"]
        assert in_flight and len(set(_states(job_ids, config))) > 1

        second, log2 = _worker(env, str(tmp_path), "second")
        t0 = time.monotonic()
        while True:
            states = _states(job_ids, config)
            if all(s in ("SUCCESS", "FAILURE") for s in states):
                break
            assert time.monotonic() - t0 < WAIT_S, f"jobs lost: {states}"
            time.sleep(0.2)
        assert states == ["SUCCESS"] * 20, states
        for url, out in zip(urls, outputs):
            check_result(out, url, labels, "matmul")
    finally:
        for p in [first] + ([second] if second else []):
            _stop(p)
        for child in orphans:  # pool processes of the killed worker
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        log1.close()
        if log2:
            log2.close()


def test_missing_redis_package_is_one_line(tmp_path):
    """Without the ``redis`` package the reason is named, not "'NoneType' object has no
    attribute 'Redis'"."""
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "redis.py").write_text("raise ImportError('No module named redis')\n")
    env = dict(os.environ, PYTHONPATH=str(fake))
    run = subprocess.run(
        [sys.executable, "-m", "ewoksxpcs", "submit", "scan.h5::/1.1", "-o", str(tmp_path / "o.h5"),
         "--config", "ewoksxpcs.app.jobconfig"],
        env=env, capture_output=True, text=True, cwd=str(tmp_path), timeout=120,
    )
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "install ewoksxpcs[job] for Redis" in lines[0], run.stderr
