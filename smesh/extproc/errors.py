"""Refusals as clients expect them: OpenAI-style JSON errors with the right HTTP status.

``{"error": {"message": ..., "type": ..., "code": ...}}`` — the shape the official
``openai`` client parses into ``APIStatusError`` subclasses. The exception tree::

    GatewayError                 one refusal: status, code, message (+ Retry-After)
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

__all__ = ["GatewayError", "error_body"]

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


def error_body(status: int, code: str, message: str) -> bytes:
    kind = _TYPES.get(status, "api_error")
    return orjson.dumps({"error": {"message": message, "type": kind, "code": code}})


@dataclass(frozen=True)
class GatewayError(Exception):
    """A request the gateway refuses; never carries prompt text."""

    status: int
    code: str
    message: str
    retry_after: int | None = None

    def body(self) -> bytes:
        return error_body(self.status, self.code, self.message)

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"
