"""The PNG helper process (ewoksxpcs.io.pngproc): calls run in another process, errors come
back, a lost helper falls back to a thread, the helper ends with its parent; save_results
commits the result and its PNG together with the PNG drawn there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy
import pytest

from ewoksxpcs.io import pngproc


def test_call_runs_in_the_helper_process():
    pending = pngproc.submit("os:getpid")
    pid = pending.result()
    assert pending.where == "process"
    assert pid != os.getpid() and pid == pngproc.helper_pid()
    # The same helper serves the next call (a persistent worker pays no start-up).
    assert pngproc.submit("os:getpid").result() == pid


def test_error_of_the_call_is_raised_in_the_caller():
    with pytest.raises(ValueError, match="invalid literal"):
        pngproc.submit("builtins:int", "not a number").result()


def test_a_killed_helper_is_replaced():
    pid = pngproc.submit("os:getpid").result()
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    pending = pngproc.submit("os:getpid")
    new = pending.result()
    assert new != pid and new != os.getpid()


def test_helper_killed_during_a_call_falls_back_to_a_thread():
    pid = pngproc.submit("os:getpid").result()
    pending = pngproc.submit("time:sleep", 3)
    time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    assert pending.result() is None
    assert pending.where == "thread"


def test_no_process_asked(monkeypatch):
    monkeypatch.setenv("EWOKSXPCS_PNG_PROCESS", "0")
    pending = pngproc.submit("os:getpid")
    assert pending.result() == os.getpid() and pending.where == "thread"


_PARENT = """
import sys, time
from ewoksxpcs.io import pngproc
assert pngproc.start()
print(pngproc.helper_pid(), flush=True)
time.sleep(60)
"""


def test_helper_ends_when_its_parent_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], stdout=subprocess.PIPE, text=True)
    try:
        helper = int(parent.stdout.readline())
        os.kill(helper, 0)  # alive
    finally:
        parent.kill()
        parent.wait()
    for _ in range(100):  # end of file on its input: it exits (after its warm-up imports)
        try:
            os.kill(helper, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"helper process {helper} outlived its SIGKILLed parent")


def test_save_results_commits_the_png_drawn_in_the_helper(tmp_path):
    """16 curves of 2000 delays with their fits: the PNG (drawn in the helper) and the result
    are committed together with one commit id; the wait for the PNG is reported."""
    from PIL import Image

    from ewoksxpcs.engine.fit import fit_g2
    from ewoksxpcs.engine.result import CorrelationResult
    from ewoksxpcs.io.save import save_results

    rng = numpy.random.default_rng(1)
    n_q, n_tau = 16, 2000
    lags = numpy.arange(n_tau)
    tau = lags * 1e-3
    q = numpy.linspace(0.01, 0.05, n_q)
    g2 = 1 + 0.2 * numpy.exp(-2 * 2000 * q[:, None] * tau) + rng.normal(0, 0.01, (n_q, n_tau))
    err = numpy.full_like(g2, 0.01)
    result = CorrelationResult(g2=g2, g2_err=err, n2=numpy.ones_like(g2), s2=numpy.ones_like(g2),
                               lags=lags, labels=numpy.arange(1, n_q + 1),
                               n_pixels=numpy.full(n_q, 100), frame_sums=numpy.ones((4000, n_q)),
                               n_frames=4000)
    fit = fit_g2(tau, g2, err)
    out = save_results(tmp_path / "r.h5", result, q, tau, fit=fit, png=tmp_path / "r_g2.png")
    assert out["png_drawn_in"] == "process" and out["png_wait_s"] >= 0
    with h5py.File(tmp_path / "r.h5", "r") as f:
        commit = f.attrs["commit"]
    with Image.open(tmp_path / "r_g2.png") as im:
        assert im.text["ewoksxpcs commit"] == commit
    assert sorted(os.listdir(tmp_path)) == ["r.h5", "r_g2.png"]


def test_a_forked_child_gets_its_own_helper():
    """A child forked after the helper started (prefork job workers) does not share the
    parent's pipe: it starts a helper of its own, and the parent's keeps working."""
    parent_helper = pngproc.submit("os:getpid").result()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            got = pngproc.submit("os:getpid").result()
            ok = got not in (parent_helper, os.getpid()) and pngproc.helper_pid() == got
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    assert pngproc.submit("os:getpid").result() == parent_helper
