"""What must hold for every input, and the bugs known to break it (not fixed yet).

Requests: a refusal is a 4xx OpenAI error marked as the gateway's; a forwarded body is valid
JSON with no key twice at any depth, one ``model`` equal to the header Envoy routes on and
usable by the tenant, every cap within the model's, no planted email in a guarded prompt.
Answers: the stream as the client reads it, and where the gateway closed it.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from hypothesis import reject

from smesh.contract import ERROR_HEADER, MODEL_HEADER, TENANT_HEADER
from smesh.extproc.guards.texts import request_texts
from smesh.extproc.sse import SseSplitter, event_data
from tests.property.gateway import EMAIL, POLICY

__all__ = [
    "GATEWAY_STREAM_CODES",
    "KNOWN_BUGS",
    "SKIPPED",
    "answer_texts_of_stream",
    "assert_forwarded",
    "assert_openai_error",
    "closing_event",
    "known_request_bug",
    "no_duplicate_keys",
    "skip_known",
    "sse_events",
]

# Codes of the error events the gateway itself ends a stream with.
GATEWAY_STREAM_CODES = frozenset(
    {
        "guard_failed",
        "pii_in_answer",
        "invalid_answer",
        "answer_too_large",
        "budget_exceeded",
        "budget_store_unavailable",
    }
)
# Bugs these tests found that are not fixed yet. Each is pinned by a CI test that fails until
# it is fixed (an @example, or a test of its own); the slow variants discard inputs that hit
# one (:func:`skip_known`), so that their inputs go looking for new bugs. Remove an entry when
# its fix lands: the slow run then covers that ground again.
KNOWN_BUGS: dict[str, str] = {}  # all four found by these tests are fixed (see git log)
# The planted email as a word of its own: what a guard must always redact. (Glued to more
# address-like text, "...@example.com-x", it is another string, and another question.)
_EMAIL_WORD = re.compile(r"(?<![\w.+%@-])" + re.escape(EMAIL) + r"(?![\w@-]|\.[\w-])")
# Examples the slow run discarded, per known bug (printed with the input count).
SKIPPED: Counter[str] = Counter()
_BUDGETED = frozenset({"metered", "both"})
_WHITESPACE = re.compile(rb"(?:[ \t\r\n]|\\[ntr])+")


def skip_known(bug: str | None) -> None:
    """Discard this example (slow runs) if it hits ``bug``, one of KNOWN_BUGS; count it."""
    if bug is not None and bug in KNOWN_BUGS:
        SKIPPED[bug] += 1
        reject()


def known_request_bug(tenant: str, raw: bytes) -> str | None:
    """The known bug (see KNOWN_BUGS) that request ``raw`` from ``tenant`` would hit, if any."""
    if "two-caps" in KNOWN_BUGS and b'"max_tokens"' in raw and b'"max_completion_tokens"' in raw:
        return "two-caps"
    if (
        "whitespace-run" in KNOWN_BUGS
        and tenant in _BUDGETED
        and len(raw) > 500_000
        and max(len(m.group()) for m in _WHITESPACE.finditer(raw + b" ")) >= 500_000
    ):
        return "whitespace-run"
    return None


def assert_openai_error(immediate: ep.ImmediateResponse, logged: Sequence[str]) -> str:
    """A 4xx with ``{"error": {"message", "type", "code"}}``, marked as ours; returns the code."""
    status = immediate.status.code
    where = f"status {status}: {immediate.body[:300]!r}\n" + "\n".join(logged)
    assert 400 <= status < 500, f"client input got a {status}: {where}"
    body = orjson.loads(immediate.body)
    assert isinstance(body, dict) and set(body) == {"error"}, where
    error = body["error"]
    assert isinstance(error, dict), where
    assert {"message", "type", "code"} <= set(error), where
    assert all(isinstance(error[k], str) and error[k] for k in ("message", "type", "code")), where
    headers = {h.header.key: h.header.raw_value for h in immediate.headers.set_headers}
    assert headers.get("content-type") == b"application/json", where
    assert headers.get(ERROR_HEADER) == b"1", where
    code = error["code"]
    assert isinstance(code, str)
    return code


def no_duplicate_keys(raw: bytes) -> Any:
    """Parse ``raw`` as JSON, failing on any object (at any depth) that repeats a key."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in items]
        assert len(keys) == len(set(keys)), f"duplicate keys forwarded: {sorted(keys)}"
        return dict(items)

    return json.loads(raw, object_pairs_hook=pairs)


def assert_forwarded(
    response: ep.ProcessingResponse, endpoint: str, sent: bytes
) -> tuple[str, dict[str, Any]]:
    """The body phase let the request go: one model, the routed one, usable by the tenant.

    What goes upstream is the rewritten body, or ``sent`` (the client's bytes) when extproc
    changed nothing. Returns the tenant and the forwarded body.
    """
    assert response.WhichOneof("response") == "request_body", str(response)[:600]
    common = response.request_body.response
    headers = {
        h.header.key: h.header.raw_value.decode() for h in common.header_mutation.set_headers
    }
    rewritten = common.body_mutation.WhichOneof("mutation") == "body"
    raw = common.body_mutation.body if rewritten else sent
    if rewritten or "content-length" in headers:
        assert headers["content-length"] == str(len(raw))
    assert "authorization" in common.header_mutation.remove_headers
    assert common.clear_route_cache, "the route must be chosen again on the model header"
    body = no_duplicate_keys(raw)
    assert isinstance(body, dict), raw[:200]
    # The model Envoy routes on (the header) is the one the upstream reads (the body).
    model, tenant = headers[MODEL_HEADER], headers[TENANT_HEADER]
    assert body["model"] == model, (body["model"], model)
    assert model in POLICY.usable[tenant], f"{tenant} may not use {model}"
    if endpoint != "/v1/embeddings":
        # Every cap the upstream may read is the checked one: within the model's max_tokens.
        caps = {k: body[k] for k in ("max_tokens", "max_completion_tokens") if k in body}
        assert caps, "a completion goes upstream with a cap"
        top = POLICY.models[model].max_tokens
        assert all(
            isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= top for c in caps.values()
        ), f"a cap went upstream unchecked: {caps} (the model allows 1..{top})"
    if body.get("stream") is True:
        assert body["stream_options"]["include_usage"] is True
    if POLICY.guards.get(tenant) is not None:
        leaked = [t for t in request_texts(endpoint, body) if _EMAIL_WORD.search(t)]
        assert not leaked, f"a guarded prompt went upstream with the email: {leaked[:2]}"
    return tenant, body


def sse_events(out: bytes) -> list[bytes]:
    """``out`` as SSE events, byte for byte (a last partial event included)."""
    splitter = SseSplitter()
    events = splitter.feed(out)
    rest = splitter.flush()
    return [*events, rest] if rest else events


def closing_event(out: bytes) -> tuple[int, int]:
    """Where the gateway's own error event (a cut, a withheld answer) starts and ends in
    ``out``; ``(-1, -1)`` if there is none.

    Found by its bytes (``data: {"error": ...}`` and a blank line, with a code only the
    gateway uses), not by re-framing ``out``: glued to an unterminated upstream event it is
    still the gateway's.
    """
    at = out.find(b'data: {"error":')
    while at >= 0:
        end = out.find(b"\n\n", at)
        if end < 0:
            break
        try:
            error = orjson.loads(out[at + 6 : end])["error"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            error = None
        if isinstance(error, dict) and error.get("code") in GATEWAY_STREAM_CODES:
            return at, end + 2
        at = out.find(b'data: {"error":', at + 1)
    return -1, -1


def answer_texts_of_stream(out: bytes) -> dict[tuple[Any, str], str]:
    """Every generated text the client reads in an SSE answer, joined per choice and field."""
    texts: dict[tuple[Any, str], str] = {}

    def add(index: Any, name: str, value: Any) -> None:
        if isinstance(value, str):
            key = (repr(index), name)
            texts[key] = texts.get(key, "") + value

    for event in sse_events(out):
        data = event_data(event)
        try:
            chunk = orjson.loads(data) if data is not None else None
        except orjson.JSONDecodeError:
            continue
        if not isinstance(chunk, dict) or not isinstance(chunk.get("choices"), list):
            continue
        for choice in chunk["choices"]:
            if not isinstance(choice, dict):
                continue
            index = choice.get("index")
            add(index, "text", choice.get("text"))
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                continue
            for name in ("content", "refusal", "reasoning_content"):
                add(index, name, delta.get(name))
            function = delta.get("function_call")
            if isinstance(function, dict):
                add(index, "function_call", function.get("arguments"))
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                if isinstance(call, dict) and isinstance(call.get("function"), dict):
                    add(index, f"tool{call.get('index')!r}", call["function"].get("arguments"))
    return texts
