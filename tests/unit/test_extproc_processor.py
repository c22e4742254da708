"""The per-request decisions extproc makes, phase by phase (no gRPC, no Envoy)."""

from __future__ import annotations

import orjson
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from smesh.config.loader import parse_config
from smesh.extproc.budget import MemoryBudgetStore
from smesh.extproc.keys import hash_api_key
from smesh.extproc.policy import Policy
from smesh.extproc.processor import Continue, Processor, Reply
from smesh.extproc.telemetry import Telemetry

KEY, OTHER = "sk-test-acme", "sk-test-tiny"
CONFIG = f"""
extproc: {{}}
tenants:
  - {{name: acme, api_keys: ["{hash_api_key(KEY)}"]}}
  - name: tiny
    api_keys: ["{hash_api_key(OTHER)}"]
    models: [chat]
    regions: [eu]
    budgets: {{requests_per_minute: 2}}
models:
  - {{name: chat, aliases: [gpt-4o-mini], backends: [{{cluster: eu}}], max_tokens: 10}}
  - {{name: far, backends: [{{cluster: us}}]}}
clusters:
  - {{name: eu, region: eu, endpoints: ["127.0.0.1:1"]}}
  - {{name: us, region: us, endpoints: ["127.0.0.1:2"]}}
"""


@pytest.fixture
def policy() -> Policy:
    return Policy.from_config(parse_config(CONFIG))


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def telemetry(reader: InMemoryMetricReader) -> Telemetry:
    return Telemetry([reader])


def processor(
    policy: Policy, telemetry: Telemetry, store: MemoryBudgetStore | None = None
) -> Processor:
    return Processor(policy=policy, budgets=store or MemoryBudgetStore(), telemetry=telemetry)


def headers(
    key: str | None = KEY, path: str = "/v1/chat/completions", method: str = "POST"
) -> dict[str, str]:
    out = {":path": path, ":method": method}
    if key is not None:
        out["authorization"] = f"Bearer {key}"
    return out


def body(**fields: object) -> bytes:
    return orjson.dumps(
        {"model": "chat", "messages": [{"role": "user", "content": "hi"}], **fields}
    )


def error_code(decision: Continue | Reply) -> tuple[int, str]:
    assert isinstance(decision, Reply)
    return decision.status, orjson.loads(decision.body)["error"]["code"]


def test_body_routes_by_model_and_strips_credentials(policy: Policy, telemetry: Telemetry) -> None:
    """The route header comes from the body; the API key never goes upstream."""
    p = processor(policy, telemetry)
    assert isinstance(p.request_headers(headers(), None), Continue)
    decision = p.request_body(body(max_tokens=5))
    assert isinstance(decision, Continue)
    assert decision.set_headers["x-smesh-model"] == "chat"
    assert decision.set_headers["x-smesh-tenant"] == "acme"
    assert "authorization" in decision.remove_headers
    assert "x-smesh-residency" in decision.remove_headers
    assert decision.clear_route_cache and decision.body is None


def test_missing_max_tokens_gets_the_reserved_cap(policy: Policy, telemetry: Telemetry) -> None:
    """Without max_tokens the model's cap is reserved and sent, so the server cannot overrun it."""
    p = processor(policy, telemetry)
    p.request_headers(headers(), None)
    decision = p.request_body(body())
    assert isinstance(decision, Continue) and decision.body is not None
    assert orjson.loads(decision.body)["max_tokens"] == 10


def test_alias_is_rewritten_in_the_body(policy: Policy, telemetry: Telemetry) -> None:
    """An alias is routed, and the body names the canonical model (with a new content-length)."""
    p = processor(policy, telemetry)
    p.request_headers(headers(), None)
    decision = p.request_body(body(model="gpt-4o-mini"))
    assert isinstance(decision, Continue) and decision.body is not None
    assert orjson.loads(decision.body)["model"] == "chat"
    assert decision.set_headers["content-length"] == str(len(decision.body))


def test_streaming_forces_usage(policy: Policy, telemetry: Telemetry) -> None:
    """A streaming request gets include_usage injected."""
    p = processor(policy, telemetry)
    p.request_headers(headers(), None)
    decision = p.request_body(body(stream=True))
    assert isinstance(decision, Continue) and decision.body is not None
    assert orjson.loads(decision.body)["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("hdrs", "expected"),
    [
        (headers(key=None), (401, "missing_api_key")),
        (headers(key="sk-wrong"), (401, "invalid_api_key")),
        (headers(path="/v1/nope"), (404, "unknown_endpoint")),
        (headers(method="GET"), (405, "method_not_allowed")),
    ],
    ids=["no-key", "wrong-key", "unknown-path", "wrong-method"],
)
def test_header_phase_refusals(
    policy: Policy, telemetry: Telemetry, hdrs: dict[str, str], expected: tuple[int, str]
) -> None:
    """Refusals decided from headers alone are JSON errors marked as ours."""
    decision = processor(policy, telemetry).request_headers(hdrs, None)
    assert error_code(decision) == expected
    assert isinstance(decision, Reply) and decision.headers["x-smesh-error"] == "1"


def test_region_and_model_refusals(policy: Policy, telemetry: Telemetry) -> None:
    """Outside its regions a tenant gets 403 region_not_allowed; inside, the residency header."""
    p = processor(policy, telemetry)
    p.request_headers(headers(OTHER), None)
    assert error_code(p.request_body(body(model="far"))) == (403, "region_not_allowed")
    p = processor(policy, telemetry)
    p.request_headers(headers(OTHER), None)
    decision = p.request_body(body())
    assert isinstance(decision, Continue) and decision.set_headers["x-smesh-residency"] == "eu"


def test_requests_per_minute_budget(policy: Policy, telemetry: Telemetry) -> None:
    """The third request in a minute for a 2 rpm tenant is 429 with Retry-After."""
    store = MemoryBudgetStore()
    for _ in range(2):
        p = processor(policy, telemetry, store)
        p.request_headers(headers(OTHER), None)
        assert isinstance(p.request_body(body()), Continue)
    p = processor(policy, telemetry, store)
    p.request_headers(headers(OTHER), None)
    decision = p.request_body(body())
    assert error_code(decision) == (429, "budget_exceeded")
    assert isinstance(decision, Reply) and int(decision.headers["retry-after"]) >= 1


def test_models_list_answers_locally(policy: Policy, telemetry: Telemetry) -> None:
    """GET /v1/models is answered from the tenant's catalog."""
    decision = processor(policy, telemetry).request_headers(
        headers(OTHER, "/v1/models", "GET"), None
    )
    assert isinstance(decision, Reply) and decision.status == 200
    assert [m["id"] for m in orjson.loads(decision.body)["data"]] == ["chat", "gpt-4o-mini"]


def test_usage_is_settled_and_metered(
    policy: Policy, telemetry: Telemetry, reader: InMemoryMetricReader
) -> None:
    """The JSON answer's usage is recorded as gen_ai.client.token.usage for the tenant."""
    p = processor(policy, telemetry)
    p.request_headers(headers(), None)
    p.request_body(body())
    p.response_headers({":status": "200"})
    answer = {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}
    p.response_body(orjson.dumps(answer), end_of_stream=True)
    data = reader.get_metrics_data()
    assert data is not None
    points = [
        (dict(point.attributes), point.sum)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == "gen_ai.client.token.usage"
        for point in metric.data.data_points
    ]
    assert (
        {"tenant": "acme", "gen_ai.request.model": "chat", "gen_ai.token.type": "input"},
        7,
    ) in points
    assert (
        {"tenant": "acme", "gen_ai.request.model": "chat", "gen_ai.token.type": "output"},
        3,
    ) in points


def test_jwt_claim_names_the_tenant(telemetry: Telemetry) -> None:
    """With a jwt section, the verified payload's claim picks the tenant; an unknown one is 401."""
    config = parse_config(
        CONFIG.replace(
            "extproc: {}",
            "extproc: {}\njwt: {issuer: x, jwks_file: /etc/jwks.json, tenant_claim: team}",
        )
    )
    policy = Policy.from_config(config)
    p = processor(policy, telemetry)
    assert isinstance(p.request_headers(headers(key=None), {"team": "tiny"}), Continue)
    assert p.tenant is not None and p.tenant.name == "tiny"
    assert error_code(
        processor(policy, telemetry).request_headers(headers(None), {"team": "x"})
    ) == (
        401,
        "unknown_tenant",
    )


def _sse(*payloads: bytes) -> bytes:
    return b"".join(b"data: " + p + b"\n\n" for p in payloads)


def _delta(text: str) -> bytes:
    return orjson.dumps(
        {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}}]}
    )


def test_stream_past_an_exhausted_budget_is_cut(telemetry: Telemetry) -> None:
    """A stream outrunning its reservation with the budget spent ends in an error event + [DONE]."""
    config = parse_config(
        CONFIG.replace("budgets: {requests_per_minute: 2}", "budgets: {tokens_per_minute: 40}")
    )
    policy = Policy.from_config(config)
    store = MemoryBudgetStore()
    p = processor(policy, telemetry, store)
    p.request_headers(headers(OTHER), None)
    assert isinstance(p.request_body(body(stream=True, max_tokens=2)), Continue)
    # Another request spends the rest of the minute's budget meanwhile.
    assert store.reserve("tiny", config.tenants[1].budgets, 100).admitted
    p.response_headers({":status": "200", "content-type": "text/event-stream"})
    # The server ignores max_tokens and keeps going.
    first = p.response_body(_sse(_delta("one")), end_of_stream=False)
    assert isinstance(first, Continue) and first.body == _sse(_delta("one"))
    out = b""
    for word in ["two", "three", "four", "five", "six", "seven", "eight"] * 3:
        decision = p.response_body(_sse(_delta(f" {word}")), end_of_stream=False)
        assert isinstance(decision, Continue) and decision.body is not None
        out += decision.body
    events = [e for e in out.split(b"\n\n") if e]
    error = next(e for e in events if b'"error"' in e)
    assert orjson.loads(error.removeprefix(b"data: "))["error"]["code"] == "budget_exceeded"
    assert events[-1] == b"data: [DONE]"
    last = p.response_body(_sse(b"[DONE]"), end_of_stream=True)
    assert isinstance(last, Continue) and last.body == b""


def test_span_joins_the_callers_trace(policy: Policy) -> None:
    """The request span is a child of the traceparent Envoy forwarded."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    p = processor(policy, Telemetry(tracer_provider=provider))
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    p.request_headers({**headers(), "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}, None)
    p.request_body(body())
    p.response_headers({":status": "200"})
    p.response_body(orjson.dumps({"usage": {"prompt_tokens": 1, "completion_tokens": 1}}), True)
    [span] = exporter.get_finished_spans()
    assert format(span.context.trace_id, "032x") == trace_id
    assert span.parent is not None and format(span.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert span.attributes is not None and span.attributes["tenant"] == "acme"
