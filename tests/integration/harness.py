"""Real processes for integration tests: simulators, xds, Envoy — free ports, clean stops."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from smesh.envoy_process import EnvoyProcess, render_bootstrap
from smesh.ports import free_port, wait_http

_BASE_IDS = itertools.count((os.getpid() % 5000) * 10 + 1)


def http_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback)
        return json.loads(response.read())


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> float:
    """Seconds until ``predicate()`` held; AssertionError on timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout}s")


@dataclass
class Simulator:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def start_simulator(log_dir: Path, *args: str) -> Simulator:
    port = free_port()
    log = (log_dir / f"sim-{port}.log").open("ab")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "smesh.sim",
            "--port",
            str(port),
            "--ttft",
            "0",
            "--itl",
            "0",
            *args,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    wait_http(f"http://127.0.0.1:{port}/health", timeout=20)
    return Simulator(port, process)


@dataclass
class Xds:
    """``smesh xds`` as a child process, restartable on the same ports."""

    config: Path
    log_path: Path
    port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    extra_args: tuple[str, ...] = ()

    def start(self) -> Xds:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "smesh.cli",
                "--log-level",
                "INFO",
                "xds",
                "--config",
                str(self.config),
                "--port",
                str(self.port),
                "--admin-port",
                str(self.admin_port),
                "--state-dir",
                str(self.log_path.parent / f"xds-state-{self.port}"),
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_http(f"http://127.0.0.1:{self.admin_port}/healthz", timeout=20)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(10)

    def status(self) -> Any:
        return http_json(f"http://127.0.0.1:{self.admin_port}/status")

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.admin_port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as response:
            text: str = response.read().decode()
            return text

    def log(self) -> str:
        return self.log_path.read_text()


def start_envoy(
    tmp: Path, xds: Xds, node_id: str = "envoy-test", transport_socket: str = ""
) -> EnvoyProcess:
    admin = free_port()
    bootstrap = tmp / f"bootstrap-{admin}.yaml"
    bootstrap.write_text(
        render_bootstrap(xds.port, admin, node_id, transport_socket=transport_socket)
    )
    envoy = EnvoyProcess(bootstrap, admin, next(_BASE_IDS), log_path=tmp / f"envoy-{admin}.log")
    try:
        envoy.start().wait_ready(30)
    except BaseException:
        envoy.stop()
        raise
    return envoy


def cluster_requests(envoy: EnvoyProcess, cluster: str) -> int:
    """Requests Envoy has completed to ``cluster`` (0 if it has no such cluster)."""
    stats = envoy.admin(f"/stats?filter=^cluster\\.{cluster}\\.upstream_rq_completed$").decode()
    for line in stats.splitlines():
        name, _, value = line.partition(": ")
        if name == f"cluster.{cluster}.upstream_rq_completed":
            return int(value)
    return 0


def envoy_clusters(envoy: EnvoyProcess) -> set[str]:
    data = json.loads(envoy.admin("/clusters?format=json"))
    return {c["name"] for c in data.get("cluster_statuses", [])}


def chat(model: str, content: str = "hi") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 4}


@dataclass
class Load:
    """Continuous requests from a background thread; every status is counted."""

    url: str
    model: str
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Load:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        deadline = time.monotonic() + 120  # bounded, whatever happens
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    response = client.post(
                        f"{self.url}/v1/chat/completions",
                        json=chat(self.model),
                        headers={"x-smesh-model": self.model},
                    )
                    self.statuses[response.status_code] += 1
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + len(self.errors)

    def non_2xx(self) -> dict[int | str, int]:
        bad: dict[int | str, int] = {s: n for s, n in self.statuses.items() if not 200 <= s < 300}
        if self.errors:
            bad["transport"] = len(self.errors)
        return bad
