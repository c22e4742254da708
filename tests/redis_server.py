"""Start a real, throwaway ``redis-server`` for tests (no persistence, a free loopback port).

Use :func:`running_redis` as a context manager, or make a fixture in any test module with
``redis_server = redis_server_fixture()``. Tests skip only when the ``redis-server``
binary is missing (CI installs it with apt); a server that fails to start is an error.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from smesh.ports import free_port

__all__ = ["RedisServer", "ping", "redis_server_fixture", "running_redis"]


@dataclass
class RedisServer:
    """A running ``redis-server`` child process."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited in 5 s; safe to call twice."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def ping(port: int, timeout: float = 0.5) -> bool:
    """Whether a Redis server on ``port`` answers PING (raw RESP: no client library)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def running_redis(timeout: float = 10.0) -> Iterator[RedisServer]:
    """Start ``redis-server`` on a free port, wait for PING, yield it, stop it on exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    with tempfile.TemporaryDirectory(prefix="smesh-redis-") as workdir:
        log = Path(workdir) / "redis.log"
        port = free_port()
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", workdir, "--logfile", str(log)]
        server = RedisServer(subprocess.Popen(argv, stdin=subprocess.DEVNULL), port, log)
        try:
            deadline = time.monotonic() + timeout
            while not ping(port):
                if server.process.poll() is not None or time.monotonic() > deadline:
                    text = log.read_text() if log.exists() else ""
                    raise RuntimeError(f"redis-server on port {port} did not start:\n{text}")
                time.sleep(0.02)
            yield server
        finally:
            server.stop()


def redis_server_fixture(
    name: str = "redis_server", scope: Any = "function"
) -> Callable[[], Iterator[RedisServer]]:
    """A pytest fixture called ``name`` that yields a fresh :class:`RedisServer` per ``scope``.

    Assign it in a test module: ``redis_server = redis_server_fixture(scope="module")``.
    """

    @pytest.fixture(name=name, scope=scope)
    def redis_server() -> Iterator[RedisServer]:
        with running_redis() as server:
            yield server

    return redis_server
