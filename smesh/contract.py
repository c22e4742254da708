"""The data-plane contract xds and extproc share: header names, metadata keys, error bodies.

xds compiles Envoy config that relies on these names (routes match the model header,
local replies leave extproc's errors alone); extproc sets and reads them. Neither
imports the other: both import this.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson

__all__ = [
    "ACCESS_LOG_NAME",
    "COMPLETION_TOKENS_KEY",
    "ERROR_HEADER",
    "ERROR_TYPES",
    "GUARD_HEADER",
    "JWT_FILTER",
    "JWT_PAYLOAD_KEY",
    "MODEL_HEADER",
    "OVERHEAD_HEADER",
    "PROMPT_TOKENS_KEY",
    "REQUEST_NAMESPACE",
    "RESIDENCY_HEADER",
    "SMESH_HEADER_PREFIX",
    "TENANT_HEADER",
    "USAGE_NAMESPACE",
    "error_body",
    "residency_key",
]

# Every header the gateway itself sets starts with this; Envoy drops client copies of all
# of them before any filter runs (the connection manager's early header mutation).
SMESH_HEADER_PREFIX = "x-smesh-"
# The header the route table matches on; extproc sets it from the JSON body.
MODEL_HEADER = "x-smesh-model"
# The tenant extproc authenticated (for upstream logs and per-tenant routing).
TENANT_HEADER = "x-smesh-tenant"
# A residency-restricted tenant's allowed regions, sorted and joined with "+"; routes for
# such tenants match it and only reach clusters in those regions.
RESIDENCY_HEADER = "x-smesh-residency"
# On every refusal extproc answers itself; Envoy's local-reply mapper leaves those alone.
ERROR_HEADER = "x-smesh-error"
# Time extproc spent on a request, returned to the client.
OVERHEAD_HEADER = "x-smesh-overhead-ms"
# A guard that flagged (not blocked) a request names itself here (request and response).
GUARD_HEADER = "x-smesh-guard"
# jwt_authn writes the verified payload here; ext_proc forwards the namespace to extproc.
JWT_FILTER = "envoy.filters.http.jwt_authn"
JWT_PAYLOAD_KEY = "jwt_payload"
# Dynamic metadata extproc writes on every request it forwards (tenant, model, the
# reservation to settle, guard outcomes); Envoy's gRPC access log carries it back to
# extproc once the answer is done.
REQUEST_NAMESPACE = "smesh.request"
# Token usage Envoy itself reads from JSON answers (json_to_metadata) and SSE streams
# (sse_to_metadata): keys PROMPT_TOKENS_KEY and COMPLETION_TOKENS_KEY.
USAGE_NAMESPACE = "smesh.usage"
PROMPT_TOKENS_KEY = "prompt_tokens"
COMPLETION_TOKENS_KEY = "completion_tokens"
# The access-log name Envoy's gRPC access logger reports under.
ACCESS_LOG_NAME = "smesh"

# HTTP status → the OpenAI error ``type`` the official clients expect.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    431: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
    504: "timeout",
}


def error_body(status: int, code: str, message: str, error_type: str | None = None) -> bytes:
    """``{"error": {"message", "type", "code"}}``, the body the ``openai`` client parses."""
    kind = error_type or ERROR_TYPES.get(status, "api_error")
    return orjson.dumps({"error": {"message": message, "type": kind, "code": code}})


def residency_key(regions: Iterable[str]) -> str:
    """The RESIDENCY_HEADER value for a set of regions (order-independent)."""
    return "+".join(sorted(set(regions)))
