"""The per-request decisions extproc makes, phase by phase (no gRPC, no Envoy)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from smesh.config.loader import parse_config
from smesh.extproc.budget import MemoryBudgetStore
from smesh.extproc.keys import hash_api_key
from smesh.extproc.policy import Policy
from smesh.extproc.processor import Continue, Deps, Processor, Reply
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
def telemetry() -> Telemetry:
    return Telemetry()


def processor(
    policy: Policy, telemetry: Telemetry, store: MemoryBudgetStore | None = None
) -> Processor:
    return Processor(Deps(budgets=store or MemoryBudgetStore(), telemetry=telemetry), policy)


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
    assert decision.clear_route_cache
    # Nothing to change (canonical model, a cap, no stream): the client's bytes go as sent.
    assert decision.body is None and "content-length" not in decision.set_headers


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
    """Outside its regions a model is 'not found' to the tenant; inside, the residency header."""
    p = processor(policy, telemetry)
    p.request_headers(headers(OTHER), None)
    assert error_code(p.request_body(body(model="far"))) == (404, "model_not_found")
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


def _forwarded_metadata(decision: Continue | Reply) -> dict[str, object]:
    assert isinstance(decision, Continue) and decision.metadata is not None
    fields = decision.metadata["smesh.request"]
    assert isinstance(fields, dict)
    return fields


def test_a_forwarded_request_carries_what_its_access_log_entry_needs(
    policy: Policy, telemetry: Telemetry
) -> None:
    """Tenant, model, endpoint and the held reservation travel as dynamic metadata."""
    config = parse_config(CONFIG.replace("requests_per_minute: 2", "tokens_per_minute: 500"))
    policy = Policy.from_config(config)
    p = processor(policy, telemetry)
    p.request_headers({**headers(OTHER), "x-request-id": "req-7"}, None)
    fields = _forwarded_metadata(p.request_body(body(max_tokens=5)))
    assert (fields["tenant"], fields["model"], fields["endpoint"]) == (
        "tiny",
        "chat",
        "/v1/chat/completions",
    )
    reservation = p.state.reservation
    assert reservation is not None and reservation.hold_id == "req-7"
    assert fields["reservation"] == (
        f"{reservation.tokens} {reservation.minute} {reservation.day} req-7"
    )


def test_the_overhead_is_extprocs_own_time_not_the_wait_between_phases(
    policy: Policy, telemetry: Telemetry
) -> None:
    """x-smesh-overhead-ms counts extproc's phases, not Envoy buffering the body between them."""
    now = [100.0]
    deps = Deps(budgets=MemoryBudgetStore(), telemetry=telemetry, clock=lambda: now[0])
    p = Processor(deps, policy)
    p.request_headers(headers(), None)
    p.state.overhead_s = 0.0002  # the servicer's measure of the headers phase
    now[0] += 5.0  # the body arrives five seconds later (a slow client upload)
    fields = _forwarded_metadata(p.request_body(body(max_tokens=5)))
    assert fields["overhead_ms"] == 0.2


def test_a_tenant_without_answer_guards_never_asks_for_the_answer(
    policy: Policy, telemetry: Telemetry
) -> None:
    """Two messages per request: the headers decision does not switch the response on."""
    decision = processor(policy, telemetry).request_headers(headers(), None)
    assert isinstance(decision, Continue) and not decision.answer_mode


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
    assert p.state.tenant is not None and p.state.tenant.name == "tiny"
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
    """enforce_in_stream: a stream outrunning its reservation with the budget spent is cut."""
    config = parse_config(
        CONFIG.replace(
            "budgets: {requests_per_minute: 2}",
            "budgets: {tokens_per_minute: 80, enforce_in_stream: true}",
        )
    )
    policy = Policy.from_config(config)
    store = MemoryBudgetStore()
    p = processor(policy, telemetry, store)
    first = p.request_headers(headers(OTHER), None)
    assert isinstance(first, Continue) and first.answer_mode  # this tenant's streams are read
    assert isinstance(p.request_body(body(stream=True, max_tokens=2)), Continue)
    # Another request spends the rest of the minute's budget meanwhile.
    left = 80 - store.used("tiny")["tokens_per_minute"]
    assert store.reserve("tiny", config.tenants[1].budgets, left).admitted
    p.response_headers({":status": "200", "content-type": "text/event-stream"})
    # The server ignores max_tokens and keeps going.
    first_chunk = p.response_body(_sse(_delta("one")), end_of_stream=False)
    assert isinstance(first_chunk, Continue) and first_chunk.body == _sse(_delta("one"))
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


def test_a_stream_of_a_requests_only_tenant_is_never_read(telemetry: Telemetry) -> None:
    """Only requests are counted: no tokenising, no extending, no response phases at all."""
    config = parse_config(CONFIG)  # tiny: requests_per_minute only
    p = processor(Policy.from_config(config), telemetry)
    decision = p.request_headers(headers(OTHER), None)
    assert isinstance(decision, Continue) and not decision.answer_mode
    assert isinstance(p.request_body(body(stream=True)), Continue)
    assert p.state.stream_budget is None and p.state.answer is None


def test_a_malformed_client_traceparent_is_not_recorded(
    policy: Policy, telemetry: Telemetry
) -> None:
    """A client's traceparent that is not W3C trace-context never reaches the records."""
    for bad in ("00-zzzz-1-01", "00-" + "0" * 32 + "-00f067aa0ba902b7-01", "x" * 500):
        p = processor(policy, telemetry)
        p.request_headers({**headers(), "traceparent": bad}, None)
        assert "traceparent" not in _forwarded_metadata(p.request_body(body()))
    p = processor(policy, telemetry)
    good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    p.request_headers({**headers(), "traceparent": good}, None)
    assert _forwarded_metadata(p.request_body(body()))["traceparent"] == good


def _refusal(policy: Policy, telemetry: Telemetry, raw: bytes, key: str = KEY) -> tuple[int, str]:
    p = processor(policy, telemetry)
    assert isinstance(p.request_headers(headers(key), None), Continue)
    return error_code(p.request_body(raw))


def test_another_tenants_model_and_an_unknown_one_look_the_same(
    policy: Policy, telemetry: Telemetry
) -> None:
    """No tenant can tell another's model from a missing one: same status, code, message."""
    p = processor(policy, telemetry)
    p.request_headers(headers(OTHER), None)
    owned = p.request_body(body(model="far"))
    p = processor(policy, telemetry)
    p.request_headers(headers(OTHER), None)
    missing = p.request_body(body(model="nope"))
    assert isinstance(owned, Reply) and isinstance(missing, Reply)
    assert owned.status == missing.status == 404
    assert orjson.loads(owned.body)["error"]["message"].replace("far", "X") == orjson.loads(
        missing.body
    )["error"]["message"].replace("nope", "X")


def test_the_real_refusal_reason_is_kept_in_the_metrics(
    policy: Policy, telemetry: Telemetry
) -> None:
    """The refusal metric records model_not_allowed though the client saw model_not_found."""
    p = processor(policy, telemetry)
    p.request_headers(headers(OTHER), None)
    p.request_body(body(model="far"))
    value = telemetry.registry.get_sample_value(
        "smesh_refusals_total",
        {"tenant": "tiny", "http_response_status_code": "404", "code": "model_not_allowed"},
    )
    assert value == 1
    assert (
        telemetry.registry.get_sample_value(
            "smesh_refusals_total",
            {"tenant": "tiny", "http_response_status_code": "404", "code": "model_not_found"},
        )
        is None
    )


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "far", "model": "chat", "max_tokens": 5, "messages": []}',
        b'{"model": "chat", "max_tokens": 5, "messages": [{"role": "user", "content": "a",'
        b' "content": "b"}]}',
        b'{"mo\\u0064el": "far", "model": "chat", "messages": [{"role": "user"}]}',
    ],
    ids=["model", "nested-content", "escaped-key"],
)
def test_duplicate_keys_at_any_level_are_refused(
    policy: Policy, telemetry: Telemetry, raw: bytes
) -> None:
    """A repeated key (escapes decoded) is 400 duplicate_key: no parser can disagree on it."""
    assert _refusal(policy, telemetry, raw, key=OTHER) == (400, "duplicate_key")


def test_a_changed_body_is_serialised_again(policy: Policy, telemetry: Telemetry) -> None:
    """An alias is rewritten: the upstream body names the canonical model, one key each."""
    p = processor(policy, telemetry)
    p.request_headers(headers(), None)
    decision = p.request_body(body(model="gpt-4o-mini", max_tokens=5))
    assert isinstance(decision, Continue) and decision.body is not None
    assert decision.body.count(b'"model"') == 1
    assert orjson.loads(decision.body)["model"] == decision.set_headers["x-smesh-model"] == "chat"


@pytest.mark.parametrize("depth", [300, 600, 1000, 1100])
def test_deeply_nested_json_is_a_client_error(
    policy: Policy, telemetry: Telemetry, depth: int
) -> None:
    """Valid JSON nested hundreds of levels deep is 400 invalid_json, not a 500."""
    nested = b"[" * depth + b"]" * depth
    raw = (
        b'{"model": "chat", "messages": [{"role": "user", "content": "hi"}], "x": ' + nested + b"}"
    )
    assert _refusal(policy, telemetry, raw) == (400, "invalid_json")


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"max_tokens": 11}, (400, "max_tokens_too_large")),
        ({"max_tokens": 9223372036854775807}, (400, "max_tokens_too_large")),
        ({"max_tokens": 2.5}, (400, "invalid_max_tokens")),
        ({"stream_options": "yes", "stream": True}, (400, "invalid_stream_options")),
        ({"stream_options": {"include_usage": 1}, "stream": True}, (400, "invalid_stream_options")),
        ({"stream_options": {"include_usage": True}}, (400, "invalid_stream_options")),
    ],
    ids=["over-model-cap", "int64-max", "not-an-int", "options-string", "usage-int", "no-stream"],
)
def test_body_field_refusals(
    policy: Policy, telemetry: Telemetry, fields: dict[str, object], expected: tuple[int, str]
) -> None:
    """Fields the gateway relies on are checked, with a clear code."""
    assert _refusal(policy, telemetry, body(**fields)) == expected


@pytest.mark.parametrize(
    ("content_type", "allowed"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("application/vnd.api+json", True),
        (None, True),
        ("application/x-www-form-urlencoded", False),
        ("text/plain", False),
        ("multipart/form-data; boundary=x", False),
    ],
)
def test_json_endpoints_take_json(
    policy: Policy, telemetry: Telemetry, content_type: str | None, allowed: bool
) -> None:
    """A non-JSON content-type is 415; a missing one is accepted (documented leniency)."""
    hdrs = headers()
    if content_type is not None:
        hdrs["content-type"] = content_type
    decision = processor(policy, telemetry).request_headers(hdrs, None)
    if allowed:
        assert isinstance(decision, Continue)
    else:
        assert error_code(decision) == (415, "unsupported_media_type")


TOKENS = CONFIG.replace("budgets: {requests_per_minute: 2}", "budgets: {tokens_per_minute: 30}")


def test_a_reservation_past_the_whole_budget_is_400_and_blocks_nothing(
    telemetry: Telemetry,
) -> None:
    """A prompt + cap larger than tokens_per_minute can never fit: 400, and others still pass."""
    policy = Policy.from_config(parse_config(TOKENS.replace("max_tokens: 10", "max_tokens: 100")))
    store = MemoryBudgetStore()
    p = processor(policy, telemetry, store)
    p.request_headers(headers(OTHER), None)
    assert error_code(p.request_body(body(max_tokens=90))) == (400, "request_exceeds_budget")
    p = processor(policy, telemetry, store)
    p.request_headers(headers(OTHER), None)
    assert isinstance(p.request_body(body(max_tokens=5)), Continue)


def test_a_reservation_that_does_not_fit_what_is_left_is_429(telemetry: Telemetry) -> None:
    """Two requests that each fit alone: the second waits for the window (Retry-After)."""
    policy = Policy.from_config(parse_config(TOKENS))
    store = MemoryBudgetStore()
    p = processor(policy, telemetry, store)
    p.request_headers(headers(OTHER), None)
    assert isinstance(p.request_body(body(max_tokens=10)), Continue)
    assert p.state.reservation is not None
    left = 30 - p.state.reservation.tokens
    p = processor(policy, telemetry, store)
    p.request_headers(headers(OTHER), None)
    decision = p.request_body(body(max_tokens=10))
    if p.state.reservation is None:
        assert error_code(decision) == (429, "budget_exceeded")
        assert isinstance(decision, Reply) and int(decision.headers["retry-after"]) >= 1
    else:  # the prompt is small enough that both fit: the counter shows no overshoot
        assert p.state.reservation.tokens <= left
    assert store.used("tiny")["tokens_per_minute"] <= 30


BIG_TPM = CONFIG.replace("budgets: {requests_per_minute: 2}", "budgets: {tokens_per_minute: 3000}")


def _reserve_chat(policy: Policy, telemetry: Telemetry, store: MemoryBudgetStore, text: str) -> Any:
    p = processor(policy, telemetry, store)
    p.request_headers(headers(OTHER), None)
    return p, p.request_body(body(max_tokens=5, messages=[{"role": "user", "content": text}]))


def test_a_big_prompt_reserves_a_bound_without_tokenising(telemetry: Telemetry) -> None:
    """Over 512 bytes the reservation is the body-size bound (no tokenizer on the hot path)."""
    policy = Policy.from_config(parse_config(BIG_TPM))
    text = "plain words " * 100  # 1.2 KB, about 200 tokens
    p, decision = _reserve_chat(policy, telemetry, MemoryBudgetStore(), text)
    assert isinstance(decision, Continue) and p.state.reservation is not None
    raw_len = len(body(max_tokens=5, messages=[{"role": "user", "content": text}]))
    assert p.state.reservation.tokens == policy.estimators["chat"].bound(raw_len) + 5


def test_a_bound_that_would_refuse_falls_back_to_the_exact_count(telemetry: Telemetry) -> None:
    """A prompt whose bound exceeds the whole limit but whose real count fits is admitted."""
    policy = Policy.from_config(parse_config(BIG_TPM))
    text = "plain words " * 300  # 3.6 KB: bound ~3,600 > 3,000; exact ~600
    p, decision = _reserve_chat(policy, telemetry, MemoryBudgetStore(), text)
    assert isinstance(decision, Continue) and p.state.reservation is not None
    exact = policy.counters["chat"].count(text)
    assert exact < p.state.reservation.tokens < 1000


def test_a_small_prompt_is_counted_exactly(telemetry: Telemetry) -> None:
    """Bodies of 512 bytes or less reserve the tokenizer's count: nothing refused early."""
    policy = Policy.from_config(parse_config(BIG_TPM))
    p, decision = _reserve_chat(policy, telemetry, MemoryBudgetStore(), "hello there")
    assert isinstance(decision, Continue) and p.state.reservation is not None
    assert p.state.reservation.tokens == p.state.prompt_tokens + 5
    assert p.state.prompt_tokens < 20


def test_a_deep_body_is_refused_even_when_nothing_would_change(
    policy: Policy, telemetry: Telemetry
) -> None:
    """With max_tokens set (no rewrite needed), 400 levels of nesting are still a 400."""
    nested = b"[" * 400 + b"]" * 400
    raw = (
        b'{"model": "chat", "max_tokens": 5, "messages": [{"role": "user"}], "x": ' + nested + b"}"
    )
    assert _refusal(policy, telemetry, raw) == (400, "invalid_json")
