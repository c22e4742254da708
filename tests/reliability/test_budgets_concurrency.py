"""Budgets hold under a burst: 100 requests at once at the start of a budget window.

Twice: extproc with the memory store, and two extproc worker processes sharing Redis.
The recording backend reports usage equal to each request's reservation (its prompt
counted as extproc estimates it, plus ``max_tokens``), so admitted tokens can be
compared with the limit exactly. Each scenario has its own tenant, so all of them can
share one wall-clock minute.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from smesh.config.schema import Tokenizer
from smesh.extproc.tokens import CHAT_PATH, estimate_prompt_tokens, load_counter
from tests.redis_server import running_redis
from tests.reliability.client import Answer, Call, burst, error_problem, send, sse_usage
from tests.reliability.mesh import Mesh, recorded_gateway
from tests.reliability.report import figure

pytestmark = pytest.mark.integration

RPM = 20
TPM = 2_000
CAP = 64  # max_tokens of every request here
BURST = 100
MAX_INT64 = 9_223_372_036_854_775_807

MESH = """
listeners:
  - {{name: gateway, port: {port}}}
extproc:
  port: {extproc_port}
  budget_store: {store}
tenants:
  - {{name: rpm, api_keys: ["{keys[rpm]}"], budgets: {{requests_per_minute: {rpm}}}}}
  - {{name: tpm-json, api_keys: ["{keys[tpm-json]}"], budgets: {{tokens_per_minute: {tpm}}}}}
  - {{name: tpm-stream, api_keys: ["{keys[tpm-stream]}"], budgets: {{tokens_per_minute: {tpm}}}}}
  - {{name: huge, api_keys: ["{keys[huge]}"], budgets: {{tokens_per_minute: {tpm}}}}}
models:
  - {{name: chat, backends: [{{cluster: one}}], max_tokens: {cap}}}
clusters:
  - {{name: one, endpoints: ["127.0.0.1:{backend[one]}"]}}
"""
TENANTS = ["rpm", "tpm-json", "tpm-stream", "huge"]


@pytest.fixture(scope="module", params=["memory", "redis-2-workers"])
def budget_mesh(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mesh]:
    """A gateway whose tenants each hold one budget; memory store, or Redis with 2 workers."""
    tmp = tmp_path_factory.mktemp(f"budgets-{request.param}")
    with ExitStack() as stack:
        workers = 1
        store = "{kind: memory}"
        if request.param != "memory":
            redis = stack.enter_context(running_redis())
            store, workers = f'{{kind: redis, url: "{redis.url}"}}', 2
        mesh = stack.enter_context(
            recorded_gateway(
                tmp,
                MESH,
                TENANTS,
                ["one"],
                extproc_workers=workers,
                store=store,
                rpm=RPM,
                tpm=TPM,
                cap=CAP,
            )
        )
        mesh.extra["store"] = request.param
        yield mesh


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "chat", "messages": [{"role": "user", "content": "tally ho"}], **fields}


def reservation(request_body: dict[str, Any]) -> int:
    """What extproc reserves for ``request_body``: its prompt estimate plus max_tokens."""
    prompt = estimate_prompt_tokens(CHAT_PATH, request_body, load_counter(Tokenizer()))
    return prompt + int(request_body["max_tokens"])


def call(mesh: Mesh, tenant: str, request_body: dict[str, Any]) -> Call:
    headers = (
        ("authorization", f"Bearer {mesh.keys[tenant]}"),
        ("content-type", "application/json"),
    )
    return Call("POST", CHAT_PATH, headers, json.dumps(request_body).encode())


class Window:
    """Run inside one wall-clock minute (the budget window), starting early enough in it."""

    def __init__(self, need_s: float = 8.0) -> None:
        left = 60 - time.time() % 60
        if left < need_s:
            time.sleep(left + 0.2)
        self.minute = int(time.time() // 60)

    def check(self) -> None:
        assert int(time.time() // 60) == self.minute, "the minute rolled over mid-test; rerun"


def refused_properly(answers: list[Answer]) -> list[str]:
    """Problems with the 429s: each needs Retry-After (1-60 s) and an OpenAI error body."""
    problems = []
    for answer in answers:
        if answer.status != 429:
            continue
        retry = answer.header("retry-after")
        if not (len(retry) == 1 and retry[0].isdigit() and 1 <= int(retry[0]) <= 60):
            problems.append(f"retry-after {retry}")
        if problem := error_problem(answer):
            problems.append(problem)
    return problems


def test_requests_per_minute_admits_exactly_the_limit(budget_mesh: Mesh) -> None:
    """100 requests at once against 20/minute: exactly 20 served, 80 get 429 with Retry-After."""
    window = Window()
    calls = [call(budget_mesh, "rpm", body(max_tokens=4)) for _ in range(BURST)]
    answers = burst(budget_mesh.port, calls)
    window.check()
    statuses = Counter(a.status for a in answers)
    store = budget_mesh.extra["store"]
    figure("budget_rpm_admitted", statuses[200], store=store, limit=RPM, burst=BURST)
    assert statuses == {200: RPM, 429: BURST - RPM}, statuses
    assert refused_properly(answers) == []
    if store != "memory":  # the shared store was shared: both worker processes took part
        extproc = budget_mesh.gateway.extprocs[0]
        took_part = [w for w in range(2) if 'tenant="rpm"' in extproc.metrics(w)]
        assert took_part == [0, 1], f"only extproc workers {took_part} saw the burst"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_tokens_per_minute_holds_within_one_reservation(budget_mesh: Mesh, stream: bool) -> None:
    """100 requests at once against 2,000 tokens/minute: admitted tokens within one reservation
    of the limit (nothing refused while a whole request still fits), the rest 429."""
    tenant = "tpm-stream" if stream else "tpm-json"
    fields: dict[str, Any] = {"max_tokens": CAP}
    if stream:
        fields |= {"stream": True, "stream_options": {"include_usage": True}}
    held = reservation(body(**fields))
    window = Window()
    answers = burst(
        budget_mesh.port, [call(budget_mesh, tenant, body(**fields)) for _ in range(BURST)]
    )
    window.check()
    statuses = Counter(a.status for a in answers)
    usages = [sse_usage(a.body) if stream else a.json().get("usage") for a in answers if a.ok]
    assert all(u and u["total_tokens"] == held for u in usages), (held, usages[:3])
    admitted = sum(u["total_tokens"] for u in usages if u)
    store = budget_mesh.extra["store"]
    figure(
        "budget_tpm_admitted_tokens",
        admitted,
        store=store,
        stream=stream,
        limit=TPM,
        reservation=held,
        statuses=dict(statuses),
    )
    assert set(statuses) <= {200, 429}, statuses
    assert TPM - held < admitted < TPM + held, (admitted, held, statuses)
    assert refused_properly(answers) == []


def test_max_int_max_tokens_is_refused_and_blocks_nothing(budget_mesh: Mesh) -> None:
    """max_tokens = 2^63-1 against 2,000 tokens/minute is a 400 (it can never fit), and the
    tenant's next ordinary request is still served."""
    window = Window()
    huge = send(budget_mesh.port, call(budget_mesh, "huge", body(max_tokens=MAX_INT64)))
    after = send(budget_mesh.port, call(budget_mesh, "huge", body(max_tokens=CAP)))
    window.check()
    assert (huge.status, after.status) == (400, 200), (huge.body[:200], after.body[:200])
    assert error_problem(huge) is None
