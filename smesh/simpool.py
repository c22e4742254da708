"""Start and stop model-simulator processes for the ``simulate:`` clusters of a config."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from smesh.children import stop_processes
from smesh.config.schema import Cluster, Endpoint, MeshConfig, Simulate
from smesh.ports import free_port, wait_http

__all__ = ["SimulatorPool"]


def _argv(settings: Simulate, port: int) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "smesh.sim",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--ttft",
        str(settings.ttft),
        "--itl",
        str(settings.itl),
        "--max-concurrency",
        str(settings.max_concurrency),
        "--failure-rate",
        str(settings.failure_rate),
        "--failure-kind",
        settings.failure_kind,
        "--chunk-bytes",
        str(settings.chunk_bytes),
    ]
    return [*argv, "--echo"] if settings.echo else argv


@dataclass
class _Running:
    settings: Simulate
    endpoints: tuple[Endpoint, ...]
    processes: list[subprocess.Popen[bytes]]


@dataclass
class SimulatorPool:
    """One simulator process per replica of every simulated cluster, started on demand."""

    log_dir: Path
    _running: dict[str, _Running] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)

    def endpoints(self, config: MeshConfig) -> dict[str, tuple[Endpoint, ...]]:
        """Endpoints of every simulated cluster, starting (or restarting) what changed."""
        wanted = {c.name: c for c in config.clusters if c.simulate is not None}
        for name in set(self._running) - set(wanted):
            self._stop(name)
        for name, cluster in wanted.items():
            running = self._running.get(name)
            if running is None or running.settings != cluster.simulate:
                if running is not None:
                    self._stop(name)
                self._start(cluster)
        return {name: self._running[name].endpoints for name in wanted}

    def _start(self, cluster: Cluster) -> None:
        settings = cluster.simulate
        assert settings is not None
        ports = [
            settings.port + i if settings.port else free_port() for i in range(settings.replicas)
        ]
        log = (self.log_dir / f"sim-{cluster.name}.log").open("ab")
        self._logs.append(log)
        processes = [
            subprocess.Popen(_argv(settings, port), stdout=log, stderr=subprocess.STDOUT)
            for port in ports
        ]
        for port in ports:
            wait_http(f"http://127.0.0.1:{port}/health", timeout=20)
        self._running[cluster.name] = _Running(
            settings, tuple(Endpoint(address="127.0.0.1", port=p) for p in ports), processes
        )

    def _stop(self, name: str) -> None:
        stop_processes(self._running.pop(name).processes, timeout=5)

    def stop_all(self) -> None:
        running = list(self._running.values())
        self._running.clear()
        stop_processes([p for item in running for p in item.processes], timeout=5)
        for log in self._logs:
            log.close()
