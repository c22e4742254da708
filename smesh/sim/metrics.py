"""vLLM-style Prometheus metrics, one registry per simulator app.

Names and the ``model_name`` label follow vLLM's ``/metrics`` so that anything that
scrapes a real vLLM (dashboards, load-aware routing) works against the simulator.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "SimMetrics"]

# vLLM's bucket boundaries (seconds).
_TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
_E2E_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0,
)  # fmt: skip


class SimMetrics:
    """The simulator's metrics in their own ``CollectorRegistry``."""

    def __init__(self, max_concurrency: int, model_names: Iterable[str] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._max_concurrency = max_concurrency
        self._running_by_model: dict[str, int] = {}
        label = ("model_name",)
        self.running = Gauge(
            "vllm:num_requests_running",
            "Number of requests generating now.",
            label,
            registry=self.registry,
        )
        self.waiting = Gauge(
            "vllm:num_requests_waiting",
            "Number of requests queued for a generation slot.",
            label,
            registry=self.registry,
        )
        self.kv_cache_usage = Gauge(
            "vllm:kv_cache_usage_perc",
            "KV-cache usage, 0..1 (simulated: running requests / max concurrency).",
            label,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Seconds from request arrival to the first token.",
            label,
            buckets=_TTFT_BUCKETS,
            registry=self.registry,
        )
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "Seconds from request arrival to the last token.",
            label,
            buckets=_E2E_BUCKETS,
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens",
            "Prompt tokens processed.",
            label,
            registry=self.registry,
        )
        self.generation_tokens = Counter(
            "vllm:generation_tokens",
            "Generated tokens.",
            label,
            registry=self.registry,
        )
        for name in model_names:
            self._touch(name)

    def _touch(self, model: str) -> None:
        """Create every labelled series for ``model`` so it shows up at zero."""
        for metric in (self.running, self.waiting, self.kv_cache_usage):
            metric.labels(model)
        for counter in (self.prompt_tokens, self.generation_tokens):
            counter.labels(model)

    def queued(self, model: str, delta: int) -> None:
        """A request for ``model`` started (+1) or stopped (-1) waiting for a slot."""
        self.waiting.labels(model).inc(delta)

    def generating(self, model: str, delta: int) -> None:
        """A request for ``model`` took (+1) or released (-1) a generation slot."""
        if model not in self._running_by_model:
            self._touch(model)
        running = self._running_by_model.get(model, 0) + delta
        self._running_by_model[model] = running
        self.running.labels(model).set(running)
        self.kv_cache_usage.labels(model).set(running / self._max_concurrency)

    def observe(
        self,
        model: str,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        ttft_s: float | None,
        e2e_s: float,
    ) -> None:
        """Record one finished request."""
        self.prompt_tokens.labels(model).inc(prompt_tokens)
        self.generation_tokens.labels(model).inc(completion_tokens)
        if ttft_s is not None:
            self.ttft.labels(model).observe(ttft_s)
        self.e2e.labels(model).observe(e2e_s)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        text: bytes = generate_latest(self.registry)
        return text
