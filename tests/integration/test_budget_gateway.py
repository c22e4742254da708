"""Budgets through the whole gateway: two extproc processes, one real Redis, concurrent load."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.gateway import Gateway, start_gateway
from tests.integration.harness import Simulator, start_simulator
from tests.redis_server import RedisServer, running_redis

pytestmark = pytest.mark.integration

LIMIT = 2_000  # tokens per minute for the tenant
CAP = 8  # max_tokens: the simulator answers exactly this many tokens

MESH = """
listeners:
  - {{name: gateway, port: {port}}}
extproc:
  port: {extproc_port}
  budget_store: {{kind: redis, url: "{redis}"}}
tenants:
  - name: team
    api_keys: ["{keys[team]}"]
    budgets: {{tokens_per_minute: {limit}}}
models:
  - {{name: chat, backends: [{{cluster: sim}}], max_tokens: {cap}}}
clusters:
  - {{name: sim, endpoints: ["127.0.0.1:{sim}"]}}
"""


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture
def two_gateways(tmp_path: Path, redis: RedisServer) -> Iterator[list[Gateway]]:
    """Two Envoys, each with its own extproc process; one tenant, one Redis."""
    sim: Simulator = start_simulator(tmp_path)
    gateways: list[Gateway] = []
    keys: dict[str, str] | None = None
    try:
        for i in range(2):
            tmp = tmp_path / f"gw{i}"
            tmp.mkdir()

            def render(port: int, extproc_port: int, hashes: dict[str, str]) -> str:
                return MESH.format(
                    port=port,
                    extproc_port=extproc_port,
                    keys=hashes,
                    redis=redis.url,
                    limit=LIMIT,
                    cap=CAP,
                    sim=sim.port,
                )

            gateway = start_gateway(tmp, render, ["team"], keys=keys)
            keys = gateway.keys
            gateways.append(gateway)
        yield gateways
    finally:
        for gateway in gateways:
            gateway.stop()
        sim.stop()


def _wait_for_fresh_minute() -> None:
    """The budget window is the wall-clock minute: start early in one."""
    if time.time() % 60 > 40:
        time.sleep(60.5 - time.time() % 60)


def test_shared_budget_across_processes(two_gateways: list[Gateway]) -> None:
    """Under concurrent load on two extproc processes the tenant's tokens never pass the limit,
    and nothing is refused while one more request's reservation would still fit."""
    _wait_for_fresh_minute()
    minute = int(time.time() // 60)
    key = two_gateways[0].keys["team"]
    statuses: Counter[int] = Counter()
    used: list[int] = []
    lock = threading.Lock()
    deadline = time.monotonic() + 15

    def worker(gateway: Gateway) -> None:
        with httpx.Client(timeout=10) as client:
            while time.monotonic() < deadline:
                response = client.post(
                    f"{gateway.url}/v1/chat/completions",
                    headers={"authorization": f"Bearer {key}"},
                    json={"model": "chat", "messages": [{"role": "user", "content": "tally ho"}]},
                )
                with lock:
                    statuses[response.status_code] += 1
                    if response.status_code == 200:
                        used.append(response.json()["usage"]["total_tokens"])
                if response.status_code == 429 and statuses[429] > 40:
                    return

    threads = [threading.Thread(target=worker, args=(g,)) for g in two_gateways for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert int(time.time() // 60) == minute, "the minute rolled over during the test; rerun"
    assert set(statuses) <= {200, 429}, statuses
    assert statuses[429] > 0
    reservation = max(used)  # prompt estimate + cap == actual usage for this simulator
    assert LIMIT - reservation < sum(used) <= LIMIT, (sum(used), statuses)
    # Both extproc processes metered traffic.
    for gateway in two_gateways:
        assert 'tenant="team"' in gateway.extprocs[0].metrics()


def test_redis_down_fails_closed_with_503(two_gateways: list[Gateway], redis: RedisServer) -> None:
    """With the budget store unreachable, budgeted requests get a clear 503, not a free pass."""
    gateway = two_gateways[0]
    ok = gateway.post(
        "/v1/chat/completions",
        b'{"model": "chat", "messages": [{"role": "user", "content": "hi"}]}',
        key=gateway.keys["team"],
    )
    assert ok.status_code == 200
    redis.stop()
    refused = gateway.post(
        "/v1/chat/completions",
        b'{"model": "chat", "messages": [{"role": "user", "content": "hi"}]}',
        key=gateway.keys["team"],
    )
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "budget_store_unavailable"
