"""Hostile requests through the real servicer (no Envoy): headers and bodies of every shape.

For every input: nothing escapes the servicer, every refusal is a 4xx OpenAI error marked as
the gateway's, and every request let through carries the body extproc checked: valid JSON,
no key twice at any depth, exactly one ``model``, equal to the ``x-smesh-model`` header Envoy
routes on and usable by the tenant; for a guarded tenant no prompt text carries the email.
The ``slow`` variants run the same properties on many more inputs (``pytest -m slow``).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.property.checks import (
    assert_forwarded,
    assert_openai_error,
    known_request_bug,
    skip_known,
)
from tests.property.gateway import (
    KEYS,
    POLICY,
    Exchange,
    body_message,
    count,
    exchange,
    headers_message,
    scaled,
)
from tests.property.json_text import struct_values
from tests.property.request_strategies import (
    ENDPOINTS,
    REQUEST_SEEDS,
    deeply_nested_bodies,
    duplicate_key_bodies,
    hostile_headers,
    mutated_requests,
    request_bodies,
    sized_bodies,
)

CI = settings(
    max_examples=150,
    deadline=timedelta(seconds=1),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
BIG = settings(CI, max_examples=12, deadline=timedelta(seconds=2))
SLOW_TIMEOUT_S = 900

TENANTS = sorted(KEYS)
VALID_BODY = b'{"model": "chat", "messages": [{"role": "user", "content": "hi"}]}'


def tenant_headers(tenant: str, endpoint: str) -> list[tuple[str, bytes | str]]:
    return [
        (":path", endpoint),
        (":method", "POST"),
        ("content-type", "application/json"),
        ("authorization", f"Bearer {KEYS[tenant]}".encode()),
    ]


def check(result: Exchange, endpoint: str) -> dict[str, Any] | None:
    """The invariants of one request; the forwarded body, if it was forwarded."""
    immediate = result.immediate
    if immediate is not None:
        if immediate.status.code == 200:  # only the model list is answered locally
            listing = orjson.loads(immediate.body)
            assert isinstance(listing, dict) and listing.get("object") in ("list", "model")
            return None
        assert_openai_error(immediate, result.logged)
        return None
    first = result.got[0]
    assert first.WhichOneof("response") == "request_headers", result.explain(first)
    assert len(result.got) == 2, "a request let through must have its body checked"
    _, body = assert_forwarded(result.got[1], endpoint, result.sent[1].request_body.body)
    return body


def run(tenant: str, endpoint: str, raw: bytes, *, skip: bool = False) -> dict[str, Any] | None:
    """One request; ``skip`` discards it if it would hit a known bug (slow runs)."""
    if skip:
        skip_known(known_request_bug(tenant, raw))
    result = exchange([headers_message(tenant_headers(tenant, endpoint)), body_message(raw)])
    assert result.immediate is not None or len(result.got) == 2
    return check(result, endpoint)


# -- bodies ----------------------------------------------------------------------------------

bodies = st.sampled_from(ENDPOINTS).flatmap(lambda e: st.tuples(st.just(e), request_bodies(e)))


def hostile_body(tenant: str, case: tuple[str, bytes], *, skip: bool = False) -> None:
    run(tenant, *case, skip=skip)
    count("hostile_body")


# Two caps: the one checked (max_completion_tokens wins) and one the upstream may read.
_TWO_CAPS = (
    b'{"model":"chat","max_completion_tokens":3,"max_tokens":100000,'
    b'"messages":[{"role":"user","content":"hi"}]}'
)


@CI
@example(tenant="plain", case=("/v1/chat/completions", _TWO_CAPS))
@given(tenant=st.sampled_from(TENANTS), case=bodies)
def test_a_hostile_body_is_refused_cleanly_or_forwarded_as_checked(
    tenant: str, case: tuple[str, bytes]
) -> None:
    """Bytes, JSON of any shape, wrong types, bad UTF-8: a 4xx error or the checked body."""
    hostile_body(tenant, case)


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TIMEOUT_S)
@settings(CI, max_examples=scaled(4_000))
@given(tenant=st.sampled_from(TENANTS), case=bodies)
def test_a_hostile_body_is_refused_cleanly_or_forwarded_as_checked_many(
    tenant: str, case: tuple[str, bytes]
) -> None:
    """As above, on 4,000 inputs (known bugs skipped)."""
    hostile_body(tenant, case, skip=True)


@pytest.mark.parametrize(("endpoint", "raw"), REQUEST_SEEDS, ids=range(len(REQUEST_SEEDS)))
def test_every_edit_seed_is_a_request_the_gateway_forwards(endpoint: str, raw: bytes) -> None:
    """Unedited, each seed is forwarded (guarded and metered), so edits reach every check."""
    for tenant in ("guarded", "metered"):
        assert run(tenant, endpoint, raw) is not None


def byte_edits(tenant: str, case: tuple[str, bytes], *, skip: bool = False) -> None:
    run(tenant, *case, skip=skip)
    count("request_byte_edits")


@CI
@given(tenant=st.sampled_from(TENANTS), case=mutated_requests)
def test_byte_edits_of_valid_requests_are_refused_cleanly_or_forwarded_as_checked(
    tenant: str, case: tuple[str, bytes]
) -> None:
    """Valid requests with bytes inserted, deleted, copied or overwritten, anywhere."""
    byte_edits(tenant, case)


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TIMEOUT_S)
@settings(CI, max_examples=scaled(65_000))
@given(tenant=st.sampled_from(TENANTS), case=mutated_requests)
def test_byte_edits_of_valid_requests_are_refused_cleanly_or_forwarded_as_checked_many(
    tenant: str, case: tuple[str, bytes]
) -> None:
    """As above, on 65,000 inputs (known bugs skipped)."""
    byte_edits(tenant, case, skip=True)


duplicates = st.sampled_from(ENDPOINTS).flatmap(
    lambda e: st.tuples(st.just(e), duplicate_key_bodies(e))
)


def duplicate_keys(tenant: str, case: tuple[str, bytes], *, skip: bool = False) -> None:
    endpoint, raw = case
    forwarded = run(tenant, endpoint, raw, skip=skip)
    if forwarded is not None:
        # The route and the upstream get the model that was checked (the last "model", by the
        # parser's rule and Python's), by its canonical name.
        last = json.loads(raw)["model"]
        assert forwarded["model"] == POLICY.models[last].name
    count("duplicate_keys")


@CI
@given(tenant=st.sampled_from(TENANTS), case=duplicates)
def test_repeated_keys_route_and_forward_the_one_model_that_was_checked(
    tenant: str, case: tuple[str, bytes]
) -> None:
    """{"model": "a", "model": "b"}: the header, the forwarded body and the check agree."""
    duplicate_keys(tenant, case)


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TIMEOUT_S)
@settings(CI, max_examples=scaled(2_000))
@given(tenant=st.sampled_from(TENANTS), case=duplicates)
def test_repeated_keys_route_and_forward_the_one_model_that_was_checked_many(
    tenant: str, case: tuple[str, bytes]
) -> None:
    """As above, on 2,000 inputs (known bugs skipped)."""
    duplicate_keys(tenant, case, skip=True)


nested = st.sampled_from(ENDPOINTS).flatmap(
    lambda e: st.tuples(st.just(e), deeply_nested_bodies(e))
)


def deep_nesting(tenant: str, case: tuple[str, bytes], *, skip: bool = False) -> None:
    run(tenant, *case, skip=skip)
    count("deep_nesting")


# A token-budget tenant's prompt is counted before the body is serialised: a "role" nested
# 1,000 deep (orjson reads 1,024) must still be a 400.
_DEEP_ROLE = (
    b'{"model":"chat","messages":[{"role":' + b"[" * 1000 + b"]" * 1000 + b',"content":"hi"}]}'
)


@CI
@example(tenant="metered", case=("/v1/chat/completions", _DEEP_ROLE))
@given(tenant=st.sampled_from(TENANTS), case=nested)
def test_nesting_at_any_depth_anywhere_is_refused_cleanly_or_forwarded(
    tenant: str, case: tuple[str, bytes]
) -> None:
    """1..1500 levels in any field, for every tenant: a 400, never a 500, or forwarded."""
    deep_nesting(tenant, case)


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TIMEOUT_S)
@settings(CI, max_examples=scaled(8_000))
@given(tenant=st.sampled_from(TENANTS), case=nested)
def test_nesting_at_any_depth_anywhere_is_refused_cleanly_or_forwarded_many(
    tenant: str, case: tuple[str, bytes]
) -> None:
    """As above, on 8,000 inputs (known bugs skipped)."""
    deep_nesting(tenant, case, skip=True)


sized = st.sampled_from(ENDPOINTS).flatmap(lambda e: st.tuples(st.just(e), sized_bodies(e)))


def at_the_limit(tenant: str, case: tuple[str, bytes], *, skip: bool = False) -> None:
    run(tenant, *case, skip=skip)
    count("at_the_limit")


# A token-budget tenant's prompt is counted exactly when a bound would refuse it: a run of
# 999,999 spaces (Envoy's limit is 1 MiB) must be counted, or refused, like any other text.
_SPACES = b'{"model":"chat","messages":[{"role":"user","content":"' + b" " * 999_999 + b'"}]}'


@BIG
@example(tenant="metered", case=("/v1/chat/completions", _SPACES))
@given(tenant=st.sampled_from(TENANTS), case=sized)
def test_bodies_at_and_past_the_size_limit_are_answered_in_time(
    tenant: str, case: tuple[str, bytes]
) -> None:
    """Bodies of Envoy's limit ±1 byte (1 MiB): answered within 2 s, cleanly."""
    at_the_limit(tenant, case)


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TIMEOUT_S)
@settings(BIG, max_examples=scaled(100))
@given(tenant=st.sampled_from(TENANTS), case=sized)
def test_bodies_at_and_past_the_size_limit_are_answered_in_time_many(
    tenant: str, case: tuple[str, bytes]
) -> None:
    """As above, on 100 megabyte inputs (known bugs skipped)."""
    at_the_limit(tenant, case, skip=True)


# -- headers ---------------------------------------------------------------------------------

claims = st.one_of(
    st.none(),
    st.sampled_from([*TENANTS, "", "nobody"]).map(lambda name: {"team": name}),
    struct_values(finite=False),
)
header_cases = st.tuples(
    hostile_headers(),
    st.one_of(st.just(VALID_BODY), request_bodies("/v1/chat/completions")),
    st.booleans(),  # the headers message says the body is empty
    claims,
    st.one_of(st.just(""), st.text(max_size=60)),  # the traceparent Envoy passes to extproc
)


def hostile_headers_case(case: tuple[Any, ...], *, skip: bool = False) -> None:
    pairs, raw, empty, payload, traceparent = case
    if skip:
        skip_known(known_request_bug("", raw))
    message = headers_message(pairs, end_of_stream=empty, claims=payload)
    result = exchange([message, body_message(raw)], traceparent=traceparent)
    path = dict(pairs).get(":path", "")
    endpoint = path.decode("utf-8", "replace") if isinstance(path, bytes) else path
    check(result, endpoint.split("?", 1)[0])
    count("hostile_headers")


@CI
@given(case=header_cases)
def test_hostile_headers_are_refused_cleanly_or_forwarded_as_checked(case: tuple[Any, ...]) -> None:
    """Odd or missing :path/:method, any content-type, credentials, claims, 100+ headers."""
    hostile_headers_case(case)


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TIMEOUT_S)
@settings(CI, max_examples=scaled(3_000))
@given(case=header_cases)
def test_hostile_headers_are_refused_cleanly_or_forwarded_as_checked_many(
    case: tuple[Any, ...],
) -> None:
    """As above, on 3,000 inputs (known bugs skipped)."""
    hostile_headers_case(case, skip=True)
