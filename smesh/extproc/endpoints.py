"""What each OpenAI endpoint's request body must hold, parsed once.

One spec per endpoint (chat completions, completions, embeddings): it validates the JSON
body a client sent and extracts what the gateway decides on — the model, whether the
answer streams, the completion cap. Pure functions; errors are :class:`GatewayError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from smesh.extproc.errors import GatewayError

__all__ = ["ENDPOINTS", "EndpointSpec", "ParsedRequest", "parse_request"]


@dataclass(frozen=True)
class EndpointSpec:
    path: str
    required: str  # the field that carries the input
    streams: bool  # may answer with SSE
    completes: bool  # produces completion tokens (embeddings do not)


ENDPOINTS = {
    spec.path: spec
    for spec in (
        EndpointSpec("/v1/chat/completions", "messages", streams=True, completes=True),
        EndpointSpec("/v1/completions", "prompt", streams=True, completes=True),
        EndpointSpec("/v1/embeddings", "input", streams=False, completes=False),
    )
}


@dataclass(frozen=True)
class ParsedRequest:
    body: dict[str, Any]
    model: str
    stream: bool
    max_tokens: int | None


def _bad(message: str, code: str = "invalid_request") -> GatewayError:
    return GatewayError(400, code, message)


def parse_request(spec: EndpointSpec, raw: bytes) -> ParsedRequest:
    """Validate the JSON body of ``spec``'s endpoint; raise a 400 GatewayError otherwise."""
    if not raw:
        raise _bad("the request body is empty; send a JSON object", "empty_body")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson rejects invalid UTF-8 too; its message names the position, not the content.
        raise _bad(f"the request body is not valid JSON: {exc}", "invalid_json") from None
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object", "invalid_json")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' is required and must be a string", "model_required")
    value = body.get(spec.required)
    if value is None or value in ([], ""):
        raise _bad(f"'{spec.required}' is required", "missing_field")
    if spec.required == "messages" and not (
        isinstance(value, list) and all(isinstance(m, dict) for m in value)
    ):
        raise _bad("'messages' must be a list of message objects", "invalid_messages")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("'stream' must be a boolean", "invalid_stream")
    if stream and not spec.streams:
        raise _bad(f"{spec.path} does not stream", "invalid_stream")
    cap = body.get("max_completion_tokens", body.get("max_tokens"))
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        raise _bad("'max_tokens' must be a positive integer", "invalid_max_tokens")
    return ParsedRequest(body=body, model=model, stream=stream, max_tokens=cap)
