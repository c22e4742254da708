"""The simulator's knobs: one frozen value, validated when built."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

__all__ = ["FAILURE_KINDS", "FailureKind", "SimSettings"]

FailureKind = Literal["500", "429", "timeout", "reset"]
FAILURE_KINDS: tuple[str, ...] = get_args(FailureKind)


@dataclass(frozen=True, slots=True)
class SimSettings:
    """How one simulated model server behaves.

    ``model_names`` empty means "serve any model name"; otherwise requests for other
    names get a 404. Latencies are seconds: ``ttft`` before the first token, ``itl``
    between tokens. At most ``max_concurrency`` requests generate at once; the rest
    queue (``vllm:num_requests_waiting``). Each model request fails with probability
    ``failure_rate`` in the way ``failure_kind`` names. With ``echo`` the completion is
    the last user message verbatim; otherwise ``max_tokens`` tokens of filler text
    unless the request sets its own limit. ``seed`` makes failures reproducible.
    ``chunk_bytes`` > 0 writes every answer (JSON or SSE) in pieces of that many bytes,
    each flushed on its own, so a proxy sees a body split at arbitrary byte boundaries.
    """

    model_names: tuple[str, ...] = ()
    ttft: float = 0.02
    itl: float = 0.005
    max_concurrency: int = 256
    failure_rate: float = 0.0
    failure_kind: FailureKind = "500"
    echo: bool = False
    max_tokens: int = 16
    seed: int = 0
    retry_after_s: int = 1
    timeout_sleep_s: float = field(default=3600.0)
    chunk_bytes: int = 0  # > 0: answers are written in pieces of this many bytes

    def __post_init__(self) -> None:
        if self.ttft < 0 or self.itl < 0:
            raise ValueError(f"ttft and itl must be >= 0, got ttft={self.ttft} itl={self.itl}")
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {self.max_concurrency}")
        if not 0.0 <= self.failure_rate <= 1.0:
            raise ValueError(f"failure_rate must be within 0..1, got {self.failure_rate}")
        if self.failure_kind not in FAILURE_KINDS:
            raise ValueError(
                f"failure_kind must be one of {', '.join(FAILURE_KINDS)}, got {self.failure_kind!r}"
            )
        if self.chunk_bytes < 0:
            raise ValueError(f"chunk_bytes must be >= 0, got {self.chunk_bytes}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if isinstance(self.model_names, str):
            raise TypeError("model_names must be a tuple of names, not one string")

    @property
    def default_model(self) -> str:
        """The name reported when nothing else names a model."""
        return self.model_names[0] if self.model_names else "smesh-sim"

    def serves(self, model: str) -> bool:
        """Whether a request for ``model`` is served (any name when none is fixed)."""
        return not self.model_names or model in self.model_names
