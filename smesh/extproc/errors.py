"""Refusals as clients expect them: OpenAI-style JSON errors with the right HTTP status.

``{"error": {"message": ..., "type": ..., "code": ...}}`` — the shape the official
``openai`` client parses into ``APIStatusError`` subclasses. The exception tree::

    GatewayError                 one refusal: status, code, message (+ Retry-After)

``reason`` is what the gateway records (audit, metrics) when it differs from what the
client is told: a model another tenant owns is answered exactly like a model that does
not exist (404 ``model_not_found``), so no tenant can list another's models, while the
audit record keeps ``model_not_allowed``.
"""

from __future__ import annotations

from dataclasses import dataclass

from smesh.contract import error_body

__all__ = ["GatewayError", "error_body"]


@dataclass(frozen=True)
class GatewayError(Exception):
    """A request the gateway refuses; never carries prompt text."""

    status: int
    code: str
    message: str
    retry_after: int | None = None
    reason: str = ""  # recorded, never sent; defaults to ``code``

    @property
    def recorded_reason(self) -> str:
        return self.reason or self.code

    def body(self) -> bytes:
        return error_body(self.status, self.code, self.message)

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"
