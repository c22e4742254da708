"""Hostile answers through the real servicer: SSE garbage and JSON, chunked anywhere.

The request is a valid one from a tenant whose answers extproc reads (an answer guard that
redacts PII, a token budget enforced in the stream, or both); then the upstream's answer is
anything at all. For every answer: nothing escapes the servicer (no immediate 500 in the
middle of a response), each chunk comes back as bytes, and once the gateway has closed a
stream with its own error event only ``[DONE]`` follows, and no later chunk carries
anything. A metered stream passes byte for byte until it is cut. For well-formed OpenAI
answers the client never reads the email the upstream planted, however it was split.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from smesh.extproc.budget import MemoryBudgetStore
from smesh.extproc.guards.texts import answer_texts
from smesh.extproc.sse import event_data
from tests.property.answer_strategies import (
    SSE_SEEDS,
    Chunked,
    chunked,
    json_answers,
    mutated_streams,
    openai_streams,
    sse_garbage,
)
from tests.property.checks import (
    answer_texts_of_stream,
    closing_event,
    skip_known,
    sse_events,
)
from tests.property.gateway import (
    EMAIL,
    KEYS,
    Exchange,
    StoreDown,
    body_message,
    count,
    exchange,
    headers_message,
    response_body_message,
    response_headers_message,
    scaled,
)

# Failing examples carry whole answers (up to 200 KB): hypothesis warns about the long repr.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

CI = settings(
    max_examples=120,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SLOW_TIMEOUT_S = 900

READ_TENANTS = ("guarded", "metered", "both")
GUARDED = ("guarded", "both")
STREAMS = ("/v1/chat/completions", "/v1/completions")
_REQUEST = {
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "write to me"}]},
    "/v1/completions": {"prompt": "write to me"},
}
SSE_HEADERS = [(":status", b"200"), ("content-type", b"text/event-stream")]


def answer(
    tenant: str,
    endpoint: str,
    response_headers: list[tuple[str, bytes | str]],
    chunks: list[bytes],
    *,
    stream: bool = True,
    store_down: bool = False,
) -> Exchange:
    """One valid request from ``tenant``, then ``chunks`` as the upstream's answer."""
    body = {"model": "chat", "stream": stream, "max_tokens": 4, **_REQUEST[endpoint]}
    request = [
        (":path", endpoint),
        (":method", "POST"),
        ("authorization", f"Bearer {KEYS[tenant]}".encode()),
    ]
    messages = [
        headers_message(request),
        body_message(orjson.dumps(body)),
        response_headers_message(response_headers),
        *(response_body_message(c, i == len(chunks) - 1) for i, c in enumerate(chunks)),
    ]
    result = exchange(messages, store=StoreDown if store_down else MemoryBudgetStore)
    assert result.tenant_asked_for_answers, "this tenant's answers must pass through extproc"
    answered, sent = len(result.got), len(messages)
    assert answered == sent, result.explain(result.got[-1])
    assert result.got[1].WhichOneof("response") == "request_body", result.explain(result.got[1])
    assert result.got[2].WhichOneof("response") == "response_headers", result.explain()
    return result


def client_stream(result: Exchange, *, skip: bool = False) -> tuple[bytes, int]:
    """What the client got, and where in it the gateway closed the stream (-1: it did not).

    Checks the closing rule: the gateway's own error event comes before any ``[DONE]`` and
    only ``[DONE]`` follows it; no later chunk carries anything. ``skip`` discards an
    example that breaks the rule by a known bug instead of failing on it (slow runs).
    """
    outs = result.client_body()
    out = b"".join(outs)
    at, end = closing_event(out)
    if at < 0:
        return out, -1
    after = [event_data(e) for e in sse_events(out[end:])]
    done_before = any(event_data(e) == b"[DONE]" for e in sse_events(out[:at]))
    if skip:
        skip_known("flush-after-cut" if after != [b"[DONE]"] else None)
        skip_known("cut-after-done" if done_before else None)
    assert after == [b"[DONE]"], f"after the gateway's error event the client got: {after}"
    assert not done_before, "the gateway's error event came after [DONE]: the stream had ended"
    sent = 0
    for chunk in outs:
        assert sent <= at or chunk == b"", f"sent after the stream was closed: {chunk[:200]!r}"
        sent += len(chunk)
    return out, at


def passes_cleanly(
    tenant: str,
    endpoint: str,
    headers: list[tuple[str, bytes | str]],
    answer_bytes: Chunked,
    store_down: bool,
    skip: bool,
) -> None:
    """No crash, bytes out, nothing after the close; a metered-only stream is untouched."""
    result = answer(tenant, endpoint, headers, answer_bytes.chunks(), store_down=store_down)
    out, cut = client_stream(result, skip=skip)
    if tenant == "metered":
        # Only metered, never rewritten: every byte as sent, unless the stream was cut; then
        # what came before the cut, whole events, and the closing error event.
        data = answer_bytes.data
        assert out == data if cut < 0 else data.startswith(out[:cut])


# -- any bytes ---------------------------------------------------------------------------------

_statuses = st.one_of(
    st.sampled_from((b"200", b"201", b"204", b"299", b"400", b"429", b"500", b"503", b"", b"2OO")),
    st.integers(0, 999).map(lambda n: str(n).encode()),
)
_media = st.one_of(
    st.sampled_from(
        (
            b"text/event-stream",
            b"text/event-stream; charset=utf-8",
            b"TEXT/EVENT-STREAM",
            b"application/json",
            b"application/json; charset=utf-8",
            b"text/plain",
            b"",
        )
    ),
    st.binary(max_size=30),
)
garbage_cases = st.tuples(
    st.sampled_from(READ_TENANTS),
    st.sampled_from(STREAMS),
    _statuses,
    _media,
    sse_garbage().flatmap(chunked),
    st.booleans(),  # the budget store goes away mid-stream
)
# Guarded and metered, the store gone: the stream is cut while "jane.doe@exam" is held back.
_HELD_AT_CUT = (
    b'data: {"choices":[{"index":0,"delta":{"content":"mail jane.doe@exam"}}]}\n\ndata: [DONE]\n\n'
)


def garbage(case: tuple[Any, ...], *, skip: bool = False) -> None:
    tenant, endpoint, status, media, answer_bytes, store_down = case
    headers = [(":status", status), ("content-type", media)]
    passes_cleanly(tenant, endpoint, headers, answer_bytes, store_down, skip)
    count("answer_garbage")


@CI
@example(
    case=(
        "both",
        "/v1/chat/completions",
        b"200",
        b"text/event-stream",
        Chunked(_HELD_AT_CUT, (_HELD_AT_CUT.index(b"data: [DONE]"),)),
        True,
    )
)
@given(case=garbage_cases)
def test_any_answer_bytes_pass_cleanly_and_nothing_follows_the_close(case: tuple[Any, ...]) -> None:
    """Garbage, partial and huge events, [DONE] anywhere, any framing: bytes out, no crash."""
    garbage(case)


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TIMEOUT_S)
@settings(CI, max_examples=scaled(3_000))
@given(case=garbage_cases)
def test_any_answer_bytes_pass_cleanly_and_nothing_follows_the_close_many(
    case: tuple[Any, ...],
) -> None:
    """As above, on 3,000 inputs (known bugs skipped)."""
    garbage(case, skip=True)


@pytest.mark.parametrize("endpoint", STREAMS)
def test_the_edited_streams_start_from_a_valid_answer(endpoint: str) -> None:
    """Unedited, the seed stream reaches the client whole, the split email redacted."""
    result = answer("both", endpoint, SSE_HEADERS, [SSE_SEEDS[endpoint]])
    out, closed = client_stream(result)
    assert EMAIL.encode() not in out and b"<EMAIL_1>" in out, out
    assert out.endswith(b"data: [DONE]\n\n") and closed < 0, out


edited_cases = st.tuples(
    st.sampled_from(READ_TENANTS),
    st.sampled_from(STREAMS).flatmap(
        lambda e: st.tuples(st.just(e), mutated_streams(e).flatmap(chunked))
    ),
    st.booleans(),  # the budget store goes away mid-stream
)


def edited_stream(case: tuple[Any, ...], *, skip: bool = False) -> None:
    tenant, (endpoint, answer_bytes), store_down = case
    passes_cleanly(tenant, endpoint, SSE_HEADERS, answer_bytes, store_down, skip)
    count("answer_byte_edits")


@CI
@example(case=("metered", ("/v1/completions", Chunked(SSE_SEEDS["/v1/completions"], ())), True))
@given(case=edited_cases)
def test_byte_edits_of_a_valid_stream_pass_cleanly(case: tuple[Any, ...]) -> None:
    """A valid stream with bytes inserted, deleted, copied or overwritten: no crash."""
    edited_stream(case)


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TIMEOUT_S)
@settings(CI, max_examples=scaled(10_000))
@given(case=edited_cases)
def test_byte_edits_of_a_valid_stream_pass_cleanly_many(case: tuple[Any, ...]) -> None:
    """As above, on 10,000 inputs (known bugs skipped)."""
    edited_stream(case, skip=True)


# -- well-formed streams -------------------------------------------------------------------


def _stream_cases(fields_by_endpoint: dict[str, tuple[str, ...]]) -> st.SearchStrategy[Any]:
    """(tenant, endpoint, whether [DONE] was sent, the chunked answer)."""

    def for_endpoint(endpoint: str) -> st.SearchStrategy[Any]:
        streams = openai_streams(fields_by_endpoint[endpoint])
        return streams.flatmap(lambda s: st.tuples(st.just(endpoint), st.just(s[1]), chunked(s[0])))

    endpoints = st.sampled_from(sorted(fields_by_endpoint)).flatmap(for_endpoint)
    return st.tuples(st.sampled_from(GUARDED), endpoints).map(lambda c: (c[0], *c[1]))


def no_email_in_stream(case: tuple[Any, ...]) -> None:
    tenant, endpoint, done, answer_bytes = case
    result = answer(tenant, endpoint, SSE_HEADERS, answer_bytes.chunks())
    out, closed = client_stream(result)
    assert EMAIL.encode() not in out, out.decode()[:2000]
    leaked = {key: text for key, text in answer_texts_of_stream(out).items() if EMAIL in text}
    assert not leaked, f"the client read the email: {leaked}"
    assert b'"guard_failed"' not in out, "\n".join(result.logged)
    if done and closed < 0:
        assert out.endswith((b"data: [DONE]\n\n", b"data: [DONE]\r\n\r\n"))


CONTENT = _stream_cases({"/v1/chat/completions": ("content", "tool"), "/v1/completions": ("text",)})


def content_stream(case: tuple[Any, ...]) -> None:
    no_email_in_stream(case)
    count("stream_content")


@CI
@given(case=CONTENT)
def test_a_streamed_answer_never_shows_the_email_however_it_is_split(case: tuple[Any, ...]) -> None:
    """Content, tool-call arguments and completion text: redacted across any deltas/chunks."""
    content_stream(case)


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TIMEOUT_S)
@settings(CI, max_examples=scaled(3_000))
@given(case=CONTENT)
def test_a_streamed_answer_never_shows_the_email_however_it_is_split_many(
    case: tuple[Any, ...],
) -> None:
    """As above, on 3,000 inputs."""
    content_stream(case)


# Text fields OpenAI-compatible servers stream besides content: the JSON answer path redacts
# every one of them (guards/texts.py), so the stream must too. Fails until it does; no slow
# variant (every input hits the same bug).
OTHER_FIELDS = _stream_cases(
    {"/v1/chat/completions": ("refusal", "function_call", "reasoning_content")}
)
_REFUSAL = (
    b'data: {"choices":[{"index":0,"delta":{"refusal":"jane.doe@example.com "}}]}\n\n'
    b"data: [DONE]\n\n"
)


@CI
@example(case=("guarded", "/v1/chat/completions", True, Chunked(_REFUSAL, ())))
@given(case=OTHER_FIELDS)
def test_every_streamed_text_field_is_redacted(case: tuple[Any, ...]) -> None:
    """delta.refusal, delta.function_call.arguments, delta.reasoning_content: redacted too."""
    no_email_in_stream(case)
    count("stream_other_fields")


# -- JSON answers ----------------------------------------------------------------------------


json_cases = st.tuples(st.sampled_from(GUARDED), st.sampled_from(STREAMS)).flatmap(
    lambda te: json_answers(te[1]).flatmap(
        lambda a: st.tuples(st.just(te[0]), st.just(te[1]), st.just(a[1]), chunked(a[0]))
    )
)


def json_answer(case: tuple[Any, ...]) -> None:
    tenant, endpoint, valid, answer_bytes = case
    headers = [(":status", b"200"), ("content-type", b"application/json")]
    result = answer(tenant, endpoint, headers, answer_bytes.chunks(), stream=False)
    outs = result.client_body()
    assert all(out == b"" for out in outs[:-1]), "a JSON answer is held until it is whole"
    sent = orjson.loads(outs[-1])
    assert isinstance(sent, dict)
    if valid:
        assert "error" not in sent, "\n".join(result.logged)
        leaked = [t for t in answer_texts(endpoint, sent) if EMAIL in t]
        assert not leaked, leaked
        assert EMAIL.encode() not in outs[-1]
    elif set(sent) == {"error"}:
        assert sent["error"]["code"] in ("invalid_answer", "guard_failed")
    count("answer_json")


@CI
@given(case=json_cases)
def test_a_json_answer_is_redacted_whole_or_withheld(case: tuple[Any, ...]) -> None:
    """Valid answers come back as JSON without the email; anything else as an error object."""
    json_answer(case)


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TIMEOUT_S)
@settings(CI, max_examples=scaled(1_500))
@given(case=json_cases)
def test_a_json_answer_is_redacted_whole_or_withheld_many(case: tuple[Any, ...]) -> None:
    """As above, on 1,500 inputs."""
    json_answer(case)


# -- the status line -------------------------------------------------------------------------


@CI
@example(status="²")
@given(status=st.text(max_size=4))
def test_any_status_value_is_read_without_raising(status: str) -> None:
    """:status is read as a number only when it is one (str.isdigit also accepts '²')."""
    data = b"data: [DONE]\n\n"
    result = answer("metered", "/v1/chat/completions", [(":status", status)], [data])
    assert result.got[2].WhichOneof("response") == "response_headers", result.explain()
    count("status_value")
