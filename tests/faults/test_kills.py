"""Kills of ``ewoksxpcs run`` at each stage: the output directory then holds the complete old
pair (result + PNG, untouched), the complete new pair, or nothing new — never a partial file,
a temporary, or a result without its plot."""

import os
import shutil
import signal
import subprocess
import sys

import h5py
import pytest
from PIL import Image

from _scandata import make_scans

KILL_AT = os.path.join(os.path.dirname(__file__), "_kill_at.py")


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    urls, qmask, _ = make_scans(tmp_path_factory.mktemp("raw"), 1, n_frames=80)
    return urls[0], qmask


def _argv(scan, out, *extra):
    url, qmask = scan
    return ["run", url, "--qmask", qmask, "-o", str(out / "result.h5"), "--method", "matmul",
            "-q", *extra]


def _run(argv, stage=None, sig="KILL"):
    cmd = [sys.executable, KILL_AT, stage, sig, *argv] if stage else \
        [sys.executable, "-m", "ewoksxpcs", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _state(directory):
    """{name: (inode, mtime_ns, size)} of every entry, hidden ones included."""
    return {e.name: (e.stat().st_ino, e.stat().st_mtime_ns, e.stat().st_size)
            for e in os.scandir(directory)}


def pair_commit(directory):
    """The commit id shared by result.h5 and result_g2.png (asserting they match)."""
    with h5py.File(directory / "result.h5", "r") as f:
        commit = f.attrs["commit"]
        assert f["entry/xpcs/g2/g2"].shape[0] > 0
        assert f["entry/xpcs/plot"][()].decode() == str(directory / "result_g2.png")
    with Image.open(directory / "result_g2.png") as im:
        im.load()
        assert im.text["ewoksxpcs commit"] == commit, "result and PNG of different runs"
    return commit


@pytest.fixture(scope="module")
def baseline(scan, tmp_path_factory):
    out = tmp_path_factory.mktemp("baseline")
    run = _run(_argv(scan, out))
    assert run.returncode == 0, run.stderr
    names = set(os.listdir(out))  # the result, its g2 PNG and the other figures (Γ(q), ...)
    assert {"result.h5", "result_g2.png"} <= names and all(n.startswith("result") for n in names)
    return out


@pytest.fixture
def old_pair(baseline, tmp_path):
    """A completed earlier run's pair in a fresh directory: (directory, commit id, state)."""
    out = tmp_path / "out"
    shutil.copytree(baseline, out)
    # The PNG names its result by path: rename the reference along with the copy.
    with h5py.File(out / "result.h5", "a") as f:
        del f["entry/xpcs/plot"]
        f["entry/xpcs/plot"] = str(out / "result_g2.png")
    return out, pair_commit(out), _state(out)


STAGES = ["load", "compaction", "correlation", "writing", "png", "commit"]


@pytest.mark.parametrize("stage", STAGES)
def test_sigkill_keeps_the_old_pair(scan, old_pair, stage):
    out, commit, before = old_pair
    extra = ["--overwrite"] + (["--events-file", str(out / "events.h5")]
                               if stage == "compaction" else [])
    run = _run(_argv(scan, out, *extra), stage, "KILL")
    assert run.returncode == -signal.SIGKILL, run.stderr
    assert _state(out) == before, "the old pair was touched or something was left"
    assert pair_commit(out) == commit


@pytest.mark.parametrize("stage", ["png", "commit"])
def test_sigkill_of_a_first_run_leaves_nothing(scan, tmp_path, stage):
    out = tmp_path / "fresh"
    out.mkdir()
    run = _run(_argv(scan, out), stage, "KILL")
    assert run.returncode == -signal.SIGKILL, run.stderr
    assert os.listdir(out) == []


@pytest.mark.parametrize("stage", ["writing", "png", "commit"])
def test_sigterm_removes_temporaries_and_keeps_the_old_pair(scan, old_pair, stage):
    out, commit, before = old_pair
    run = _run(_argv(scan, out, "--overwrite"), stage, "TERM")
    assert run.returncode == 128 + signal.SIGTERM, run.stderr
    assert run.stderr.strip().splitlines()[-1] == "ewoksxpcs: terminated"
    assert _state(out) == before
    assert pair_commit(out) == commit


def test_sigterm_during_the_renames_completes_the_new_pair(scan, old_pair):
    """SIGTERM after the PNG's rename waits until the result is renamed too."""
    out, commit, before = old_pair
    run = _run(_argv(scan, out, "--overwrite"), "rename", "TERM")
    assert run.returncode == 128 + signal.SIGTERM, run.stderr
    assert sorted(os.listdir(out)) == sorted(before)
    assert pair_commit(out) != commit  # the new pair, complete


# ------------------------------------------------------------------------ pool processes
_BUSY_CHILD = """
import multiprocessing, sys, time

def busy():
    from ewoksxpcs.workflow.orphan import exit_with_parent
    assert exit_with_parent()
    print("watching", flush=True)
    time.sleep(120)  # a long task

if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=busy)
    child.start()
    print(child.pid, flush=True)
    child.join()
"""


def _wait_gone(pid, timeout):
    import psutil

    try:
        psutil.Process(pid).wait(timeout=timeout)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        os.kill(pid, signal.SIGKILL)
        raise AssertionError(f"process {pid} outlived its killed parent by {timeout} s")


def test_pool_process_exits_with_its_killed_parent(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(_BUSY_CHILD)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        child_pid = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == "watching"
    finally:
        parent.kill()
        parent.wait()
    _wait_gone(child_pid, timeout=10)


def _cmdline(process) -> list:
    """Command line of a process; [] for one that ended meanwhile (short-lived children such
    as PoCL's linker, or a zombie not reaped yet)."""
    import psutil

    try:
        return process.cmdline()
    except (psutil.ZombieProcess, psutil.NoSuchProcess):
        return []


def test_ppf_worker_does_not_outlive_a_killed_run(scan, tmp_path):
    import time

    import psutil

    out = tmp_path / "ppf"
    out.mkdir()
    main = subprocess.Popen([sys.executable, "-m", "ewoksxpcs", *_argv(scan, out),
                             "--engine", "ppf"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    workers = []
    try:
        t0 = time.monotonic()
        while not workers and time.monotonic() - t0 < 120 and main.poll() is None:
            workers = [p for p in psutil.Process(main.pid).children(recursive=True)
                       if "multiprocessing" in " ".join(_cmdline(p))]
            time.sleep(0.1)
        assert workers, "no ppf pool process seen"
        time.sleep(2)  # the worker imports and starts the tasks
    finally:
        main.kill()
        main.wait()
    for worker in workers:
        _wait_gone(worker.pid, timeout=15)
    assert [n for n in os.listdir(out) if n.startswith(".")] == []
