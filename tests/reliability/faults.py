"""Steady load, a restartable Redis, and the bookkeeping of an outage.

:class:`SteadyLoad` sends chat requests at a fixed rate from a scheduler thread (each on
a fresh connection, so a failure is always this request's own), whatever the answers
take. :func:`outage` kills a component, holds the outage, restarts it and measures the
errors during it and the time until the gateway serves again.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from smesh.ports import free_port
from tests.integration.harness import Xds, wait_until
from tests.redis_server import ping
from tests.reliability.client import Call, send
from tests.reliability.mesh import chat_body

__all__ = ["Phase", "Redis", "Shot", "SteadyLoad", "config_save", "outage", "window"]


@dataclass(frozen=True)
class Shot:
    """One request of the load: when it left and returned (monotonic), what came back."""

    test_id: str
    started: float
    ended: float
    status: int
    error: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class SteadyLoad:
    """``rate`` chat requests per second as one tenant until the context exits."""

    port: int
    key: str
    model: str = "chat"
    rate: float = 50.0
    timeout: float = 5.0
    prefix: str = "load"
    _shots: list[Shot] = field(default_factory=list)
    _inflight: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> SteadyLoad:
        self._pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="load")
        self._thread = threading.Thread(target=self._schedule, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def _schedule(self) -> None:
        assert self._pool is not None
        interval = 1.0 / self.rate
        due = time.monotonic()
        index = 0
        while not self._stop.is_set():
            test_id = f"{self.prefix}-{index}"
            with self._lock:
                self._inflight[test_id] = time.monotonic()
            self._pool.submit(self._shoot, test_id)
            index += 1
            due += interval
            self._stop.wait(max(0.0, due - time.monotonic()))

    def _shoot(self, test_id: str) -> None:
        headers = (
            ("authorization", f"Bearer {self.key}"),
            ("content-type", "application/json"),
            ("x-test-id", test_id),
        )
        call = Call("POST", "/v1/chat/completions", headers, chat_body(self.model, max_tokens=4))
        answer = send(self.port, call, timeout=self.timeout)
        shot = Shot(test_id, answer.started, time.monotonic(), answer.status, answer.error)
        with self._lock:
            self._shots.append(shot)
            del self._inflight[test_id]

    def shots(self, since: float = 0.0, until: float = float("inf")) -> list[Shot]:
        """The requests sent in [since, until)."""
        with self._lock:
            return [s for s in self._shots if since <= s.started < until]

    def settled(self, before: float) -> bool:
        """Whether every request sent before ``before`` has its answer."""
        with self._lock:
            return all(sent >= before for sent in self._inflight.values())

    def wait_settled(self, before: float) -> None:
        wait_until(lambda: self.settled(before), timeout=self.timeout + 2)

    def first_success(self, since: float) -> Shot | None:
        done = [s for s in self.shots(since) if s.ok]
        return min(done, key=lambda s: s.ended) if done else None


@dataclass
class Phase:
    """What a load saw around one event."""

    name: str
    requests: int
    errors: int
    recovery_s: float | None = None
    errors_after_recovery: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)


def _statuses(shots: list[Shot]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for shot in shots:
        counts[shot.status] = counts.get(shot.status, 0) + 1
    return dict(sorted(counts.items()))


def outage(
    load: SteadyLoad,
    name: str,
    kill: Callable[[], object],
    restart: Callable[[], object],
    hold_s: float,
    recovered: Callable[[], bool] | None = None,
    settle_s: float = 1.0,
) -> Phase:
    """Kill, hold the outage ``hold_s``, restart; errors from the kill until recovery.

    Recovery is the first successful request sent after the restart began, or, when
    ``recovered`` is given (a component whose outage clients do not see), that predicate.
    Then ``settle_s`` more of load must see no error.
    """
    began = time.monotonic()
    kill()
    time.sleep(hold_s)  # the outage itself lasts this long, under load
    restarted = time.monotonic()
    restart()
    if recovered is None:
        wait_until(lambda: load.first_success(restarted) is not None, timeout=30)
        shot = load.first_success(restarted)
        assert shot is not None
        back = shot.ended
    else:
        wait_until(recovered, timeout=30)
        back = time.monotonic()
    time.sleep(settle_s)  # steady load after recovery, to count errors in it
    load.wait_settled(back + settle_s)
    during = load.shots(began, back)
    after = load.shots(back + 0.2, back + settle_s)
    return Phase(
        name,
        requests=len(during),
        errors=sum(not s.ok for s in during),
        recovery_s=round(back - restarted, 3),
        errors_after_recovery=sum(not s.ok for s in after),
        statuses=_statuses(during),
    )


def window(load: SteadyLoad, name: str, action: Callable[[], object], hold_s: float) -> Phase:
    """Errors while ``action``'s effect lasts ``hold_s`` (no restart: the next step follows)."""
    began = time.monotonic()
    action()
    time.sleep(hold_s)  # the state under test lasts this long, under load
    ended = time.monotonic()
    load.wait_settled(ended)
    shots = load.shots(began, ended)
    return Phase(name, len(shots), sum(not s.ok for s in shots), statuses=_statuses(shots))


def _processed(xds: Xds) -> int:
    status = xds.status()
    return int(status["loads"]) + int(status["rejects"])


def config_save(
    load: SteadyLoad,
    xds: Xds,
    config: Path,
    name: str,
    write: Callable[[Path], object],
    good: str,
    hold_s: float,
) -> Phase:
    """Save a config with ``write``, keep it ``hold_s`` under load, restore ``good``.

    ``detail["config_errors"]`` is what xds /status showed while the save was in place.
    Errors count from the save until the restored config serves again.
    """
    seen = _processed(xds)
    began = time.monotonic()
    write(config)
    wait_until(lambda: _processed(xds) > seen, timeout=10)
    time.sleep(hold_s)  # the saved file stays in place this long, under load
    shown = xds.status()["config_errors"]
    seen = _processed(xds)
    config.write_text(good)
    wait_until(lambda: _processed(xds) > seen and not xds.status()["config_errors"], timeout=10)
    restored = time.monotonic()
    wait_until(lambda: load.first_success(restored) is not None, timeout=30)
    time.sleep(0.5)  # steady load on the restored config
    ended = time.monotonic()
    load.wait_settled(ended)
    shots = load.shots(began, ended)
    return Phase(
        name,
        requests=len(shots),
        errors=sum(not s.ok for s in shots),
        statuses=_statuses(shots),
        detail={"config_errors": [line[-120:] for line in shown[:2]]},
    )


@dataclass
class Redis:
    """``redis-server`` on a fixed loopback port, killable and restartable there."""

    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Redis:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(self.workdir)]
        argv += ["--logfile", str(self.workdir / f"redis-{self.port}.log")]
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        try:
            wait_until(lambda: ping(self.port), timeout=10)
        except BaseException:
            self.stop()
            raise
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
