"""The gateway in-process for the property tests: one policy, the real servicers, Envoy's side.

:func:`exchange` plays Envoy's part of one ext_proc stream through the ``Process`` method of
both servicers (thread pool and ``grpc.aio``, which must answer alike): it sends the request
headers, the buffered body only if the headers were not answered, and the response phases
only if extproc switched them on (``mode_override``), as the filter does. Every response is
serialised and parsed again, as gRPC would, so the servicers' protobuf handling is under
test too. Errors the product logs with a traceback are collected per exchange, so a failing
example shows where it broke. The invariants live in :mod:`tests.property.checks`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

from smesh.config.loader import parse_config
from smesh.contract import JWT_FILTER, JWT_PAYLOAD_KEY
from smesh.extproc.budget import BudgetStore, BudgetUnavailable, MemoryBudgetStore, Reservation
from smesh.extproc.keys import hash_api_key
from smesh.extproc.policy import Policy
from smesh.extproc.processor import Deps, Processor
from smesh.extproc.servicer import AsyncExternalProcessorService, ExternalProcessorService
from smesh.extproc.telemetry import Telemetry

__all__ = [
    "EMAIL",
    "INPUTS",
    "KEYS",
    "LIMIT",
    "POLICY",
    "Exchange",
    "StoreDown",
    "body_message",
    "count",
    "exchange",
    "headers_message",
    "response_body_message",
    "response_headers_message",
    "scaled",
]

# The PII every answer test plants; no client may ever read it from a guarded answer.
EMAIL = "jane.doe@example.com"

KEYS = {
    "plain": "sk-prop-plain",
    "guarded": "sk-prop-guarded",
    "metered": "sk-prop-metered",
    "both": "sk-prop-both",
    "owner": "sk-prop-owner",
}
# plain: residency-bound (eu), so "far" (us) is another tenant's model to it; guarded: PII
# redacted both ways; metered: a token budget enforced in the stream; both: the two at once;
# owner: the only tenant that may use "secret".
CONFIG = f"""
extproc: {{}}
jwt: {{issuer: x, jwks_file: /etc/jwks.json, tenant_claim: team}}
guards: [{{name: g, pii: {{prompts: redact, answers: redact}}}}]
tenants:
  - {{name: plain, api_keys: ["{hash_api_key(KEYS["plain"])}"], models: [chat, embed, far],
     regions: [eu]}}
  - {{name: guarded, api_keys: ["{hash_api_key(KEYS["guarded"])}"], models: [chat, embed],
     guard: g}}
  - name: metered
    api_keys: ["{hash_api_key(KEYS["metered"])}"]
    models: [chat, embed]
    budgets: {{tokens_per_minute: 400, enforce_in_stream: true}}
  - name: both
    api_keys: ["{hash_api_key(KEYS["both"])}"]
    models: [chat, embed]
    guard: g
    budgets: {{tokens_per_minute: 400, enforce_in_stream: true}}
  - {{name: owner, api_keys: ["{hash_api_key(KEYS["owner"])}"], models: [secret]}}
models:
  - {{name: chat, aliases: [gpt-4o-mini], backends: [{{cluster: eu}}], max_tokens: 64}}
  - {{name: far, backends: [{{cluster: us}}], max_tokens: 64}}
  - {{name: embed, backends: [{{cluster: eu}}]}}
  - {{name: secret, backends: [{{cluster: eu}}]}}
clusters:
  - {{name: eu, region: eu, endpoints: ["127.0.0.1:1"]}}
  - {{name: us, region: us, endpoints: ["127.0.0.1:2"]}}
"""
POLICY = Policy.from_config(parse_config(CONFIG))
# Envoy's request body limit (413 past it, before extproc sees anything).
LIMIT = POLICY.config.extproc.max_body_bytes
_TELEMETRY = Telemetry()
# What a gRPC worker thread runs under (sys.getrecursionlimit() of a fresh interpreter).
DEFAULT_RECURSION_LIMIT = 1000

# Examples that ran through every check, per test; the run prints the sum (conftest.py).
INPUTS: Counter[str] = Counter()


def scaled(examples: int) -> int:
    """A slow run's example count, times ``SMESH_PROPERTY_SCALE`` (default 1) for shorter runs."""
    return max(1, round(examples * float(os.environ.get("SMESH_PROPERTY_SCALE", "1"))))


def count(test: str) -> None:
    """One more generated input ran through ``test``'s checks."""
    INPUTS[test] += 1


# -- protobuf in ----------------------------------------------------------------------------


def _header_map(pairs: Sequence[tuple[str, bytes | str]]) -> base_pb2.HeaderMap:
    """Envoy fills ``raw_value``; a ``str`` value goes in ``value`` (older Envoys)."""
    return base_pb2.HeaderMap(
        headers=[
            base_pb2.HeaderValue(key=k, raw_value=v)
            if isinstance(v, bytes)
            else base_pb2.HeaderValue(key=k, value=v)
            for k, v in pairs
        ]
    )


def headers_message(
    pairs: Sequence[tuple[str, bytes | str]],
    *,
    end_of_stream: bool = False,
    metadata: dict[str, dict[str, Any]] | None = None,
    claims: Any = None,
) -> ep.ProcessingRequest:
    """The request-headers message; ``claims`` go where jwt_authn puts the verified payload."""
    request = ep.ProcessingRequest(
        request_headers=ep.HttpHeaders(headers=_header_map(pairs), end_of_stream=end_of_stream)
    )
    for namespace, fields in (metadata or {}).items():
        request.metadata_context.filter_metadata[namespace].update(fields)
    if claims is not None:
        request.metadata_context.filter_metadata[JWT_FILTER].update({JWT_PAYLOAD_KEY: claims})
    return request


def body_message(raw: bytes) -> ep.ProcessingRequest:
    """The whole request body (BUFFERED mode: one message)."""
    return ep.ProcessingRequest(request_body=ep.HttpBody(body=raw, end_of_stream=True))


def response_headers_message(pairs: Sequence[tuple[str, bytes | str]]) -> ep.ProcessingRequest:
    return ep.ProcessingRequest(response_headers=ep.HttpHeaders(headers=_header_map(pairs)))


def response_body_message(chunk: bytes, end_of_stream: bool) -> ep.ProcessingRequest:
    """One chunk of the answer (STREAMED mode)."""
    return ep.ProcessingRequest(response_body=ep.HttpBody(body=chunk, end_of_stream=end_of_stream))


# -- one stream -----------------------------------------------------------------------------


class StoreDown(MemoryBudgetStore):
    """A store that admits the request, then cannot be reached when the stream asks for more."""

    def extend(
        self, reservation: Reservation, limits: Any, tokens: int, now: float | None = None
    ) -> Reservation | None:
        raise BudgetUnavailable("connection refused (test)")


class _Context:
    """The part of grpc.ServicerContext the servicer reads: the caller's metadata."""

    def __init__(self, traceparent: str) -> None:
        self._metadata = (("traceparent", traceparent),) if traceparent else ()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


class _Tracebacks(logging.Handler):
    """Formats each logged exception at once (holding records would keep their frames)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info))
        self.seen.append(text)


@dataclass
class Exchange:
    """What one ext_proc stream sent and got back, in order."""

    sent: list[ep.ProcessingRequest]
    got: list[ep.ProcessingResponse]
    logged: list[str] = field(default_factory=list)  # errors the product logged, tracebacks
    tenant_asked_for_answers: bool = False

    @property
    def immediate(self) -> ep.ImmediateResponse | None:
        last = self.got[-1] if self.got else None
        if last is not None and last.HasField("immediate_response"):
            return last.immediate_response
        return None

    def client_body(self) -> list[bytes]:
        """What the client received for each answer chunk extproc saw (rewritten or not)."""
        out = []
        for request, response in zip(self.sent, self.got, strict=True):
            if request.WhichOneof("request") != "response_body":
                continue
            assert response.WhichOneof("response") == "response_body", self.explain(response)
            mutation = response.response_body.response.body_mutation
            kind = mutation.WhichOneof("mutation")
            assert kind in (None, "body"), f"unexpected body mutation {kind}"
            out.append(mutation.body if kind == "body" else request.response_body.body)
        return out

    def explain(self, response: ep.ProcessingResponse | None = None) -> str:
        what = str(response)[:600] if response is not None else ""
        return what + "\n" + "\n".join(self.logged)


def _on_a_worker_thread(serve: Callable[[], None]) -> str:
    """Run ``serve`` as the gRPC server does: on a fresh thread, under Python's default limit.

    Hypothesis raises the recursion limit while a test runs; under it a body nested 1,000
    deep would pass here and fail in production (RecursionError at about 1,000 frames).
    Returns what escaped ``serve`` (type, message, traceback), or ``""``.
    """
    escaped: list[str] = []

    def run() -> None:
        try:
            serve()
        except BaseException as exc:  # reported on the test's thread
            escaped.append("".join(traceback.format_exception(exc)))

    raised = sys.getrecursionlimit()
    sys.setrecursionlimit(DEFAULT_RECURSION_LIMIT)
    try:
        worker = threading.Thread(target=run, name="extproc-test")
        worker.start()
        worker.join()
    finally:
        sys.setrecursionlimit(raised)
    return escaped[0] if escaped else ""


def _drive(
    server: str,
    messages: Sequence[ep.ProcessingRequest],
    store: Callable[[], BudgetStore],
    traceparent: str,
) -> Exchange:
    """One stream through the ``server`` servicer ("sync" or "aio"), Envoy's side played."""
    deps = Deps(budgets=store(), telemetry=_TELEMETRY)
    result = Exchange(sent=[], got=[])
    wired: list[ep.ProcessingResponse] = []

    def envoy() -> Iterator[ep.ProcessingRequest]:
        for message in messages:
            phase = message.WhichOneof("request")
            if phase.startswith("response") and not result.tenant_asked_for_answers:
                return  # the response phases are off unless extproc switched them on
            result.sent.append(message)
            yield message
            last = result.got[-1]
            if last.HasField("immediate_response"):
                return  # Envoy answers the client; nothing else of this request reaches us
            if phase == "request_headers" and last.HasField("mode_override"):
                result.tenant_asked_for_answers = True

    def received(response: ep.ProcessingResponse) -> None:
        wired.append(response)
        # What gRPC sends, and what Envoy reads.
        result.got.append(ep.ProcessingResponse.FromString(response.SerializeToString()))

    def serve_sync() -> None:
        service = ExternalProcessorService(lambda: Processor(deps, POLICY))
        for response in service.Process(envoy(), _Context(traceparent)):
            received(response)

    async def serve_aio() -> None:
        service = AsyncExternalProcessorService(lambda: Processor(deps, POLICY), False)

        async def requests() -> AsyncIterator[ep.ProcessingRequest]:
            for message in envoy():
                yield message

        async for response in service.Process(requests(), _Context(traceparent)):
            received(response)

    handler = _Tracebacks()
    product = logging.getLogger("smesh")
    propagate = product.propagate
    product.addHandler(handler)
    product.propagate = False  # tracebacks of fail-closed paths would pile up in pytest
    try:
        escaped = _on_a_worker_thread(
            serve_sync if server == "sync" else lambda: asyncio.run(serve_aio())
        )
    finally:
        product.removeHandler(handler)
        product.propagate = propagate
    result.logged = handler.seen
    assert not escaped, f"escaped the {server} servicer (the stream would fail or hang):\n{escaped}"
    assert wired == result.got, "a response changed on the wire"
    assert len(result.got) == len(result.sent), result.explain()
    return result


def _comparable(response: ep.ProcessingResponse) -> ep.ProcessingResponse:
    """``response`` less what may differ between servicers: dynamic metadata (it carries
    clock readings) and which 4xx a refusal is. Which check refuses a body nested ~1,000
    deep depends on the stack the JSON parser runs on (its recursion limit), and the aio
    stack is deeper: 400 invalid_json there can be 404 model_not_found on the other."""
    copy = ep.ProcessingResponse()
    copy.CopyFrom(response)
    copy.ClearField("dynamic_metadata")
    immediate = copy.immediate_response
    if copy.HasField("immediate_response") and 400 <= immediate.status.code < 500:
        error = orjson.loads(immediate.body)["error"]
        assert {"message", "type", "code"} <= set(error), error  # an OpenAI error either way
        immediate.ClearField("body")
        immediate.status.code = 400
    return copy


def exchange(
    messages: Sequence[ep.ProcessingRequest],
    *,
    store: Callable[[], BudgetStore] = MemoryBudgetStore,
    traceparent: str = "",
) -> Exchange:
    """Run one stream the way Envoy would send ``messages``, through both servicers.

    The thread-pool servicer and the ``grpc.aio`` one (the default server) each get the
    stream with a fresh budget store from ``store``; they must answer alike, message for
    message (metadata and which 4xx aside). Fails if anything escapes a servicer
    (gRPC would end the stream with an error, or, for a ``BaseException`` such as a Rust
    panic, never end it) or a response does not survive serialisation. Returns the sync
    exchange.
    """
    sync = _drive("sync", messages, store, traceparent)
    aio = _drive("aio", messages, store, traceparent)
    assert [_comparable(r) for r in aio.got] == [_comparable(r) for r in sync.got], (
        f"the aio servicer answered otherwise:\n{aio.got}\nsync:\n{sync.got}"
    )
    return sync
