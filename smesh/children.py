"""Child processes we start (simulators, extproc, nginx in benchmarks): stop them for sure."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from typing import Any

__all__ = ["stop_process", "stop_processes"]


def stop_process(process: subprocess.Popen[Any] | None, timeout: float = 10.0) -> None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL; always reaped."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def stop_processes(processes: Iterable[subprocess.Popen[Any]], timeout: float = 10.0) -> None:
    """SIGTERM all first (so they stop in parallel), then reap each; SIGKILL the stragglers."""
    running = [p for p in processes if p.poll() is None]
    for process in running:
        process.terminate()
    for process in running:
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
