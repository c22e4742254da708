"""Metrics and spans for each request — never prompt or answer text.

Metric names follow the OpenTelemetry GenAI conventions in their Prometheus form
(``gen_ai_client_token_usage``, ``gen_ai_server_request_duration_seconds``,
``gen_ai_server_time_to_first_token_seconds``) with ``tenant`` and
``gen_ai_request_model`` labels, plus the gateway's own overhead, cost and refusals.

Why prometheus_client and not the OpenTelemetry metrics SDK: every request records five
observations, and on this machine one OpenTelemetry ``record`` costs ~8 µs (it cleans and
hashes its attribute dict every time) against ~1.2 µs for a prometheus_client child that
is looked up once per (tenant, model) and kept — measured, the SDK was most of the
access-log path's cost per request. Spans still come from the OpenTelemetry SDK and join
Envoy's trace. The registry is injected: each process serves its own; tests read theirs.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any, NamedTuple

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector

from smesh.extproc.metering import Usage

__all__ = ["RequestRecord", "Telemetry", "trace_id_of"]

log = logging.getLogger(__name__)
_PROPAGATOR = TraceContextTextMapPropagator()
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
_SECONDS_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
# W3C trace-context ``traceparent``: version 00, a 32-hex trace id, a 16-hex parent id,
# 2-hex flags. A client controls this header: nothing else is ever recorded from it.
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
_MODEL_LABELS = ("tenant", "gen_ai_request_model")


def trace_id_of(traceparent: str) -> str | None:
    """The trace id of a well-formed ``traceparent`` (not all zeros), else ``None``."""
    match = _TRACEPARENT.fullmatch(traceparent)
    if match is None or match.group(1) == "0" * 32 or match.group(2) == "0" * 16:
        return None
    return match.group(1)


class RequestRecord(NamedTuple):  # one per request: cheaper than a frozen dataclass
    tenant: str
    model: str
    endpoint: str
    status: int
    usage: Usage | None
    cost: float
    duration_s: float
    ttft_s: float | None
    overhead_s: float
    streamed: bool
    traceparent: str


class _Children:
    """One (tenant, model)'s metric children, looked up once and kept."""

    __slots__ = ("cost", "duration", "inputs", "outputs", "overhead", "ttft")

    def __init__(self, telemetry: Telemetry, tenant: str, model: str) -> None:
        self.inputs = telemetry.tokens.labels(tenant, model, "input")
        self.outputs = telemetry.tokens.labels(tenant, model, "output")
        self.cost = telemetry.cost.labels(tenant, model)
        self.ttft = telemetry.ttft.labels(tenant, model)
        self.overhead = telemetry.overhead.labels(tenant, model)
        self.duration: dict[int, Any] = {}


class Telemetry:
    """Everything extproc reports about requests (thread-safe)."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # CPU, memory, open files of this worker
        self.tokens = Histogram(
            "gen_ai_client_token_usage",
            "Tokens by type",
            [*_MODEL_LABELS, "gen_ai_token_type"],
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "gen_ai_server_request_duration_seconds",
            "Request duration",
            [*_MODEL_LABELS, "http_response_status_code"],
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time to the first byte of the answer",
            _MODEL_LABELS,
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "smesh_extproc_overhead_seconds",
            "Time spent in extproc per request",
            _MODEL_LABELS,
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self.cost = Counter("smesh_cost", "Catalog cost", _MODEL_LABELS, registry=r)
        self.refusals = Counter(
            "smesh_refusals",
            "Requests refused by the gateway (code: the real reason)",
            ["tenant", "http_response_status_code", "code"],
            registry=r,
        )
        self.audit_lost_total = Counter(
            "smesh_audit_lost", "Audit records that found no room in the queue", registry=r
        )
        self.settle_failures = Counter(
            "smesh_budget_settle_failures",
            "Reservations that could not be settled (they expire)",
            registry=r,
        )
        self._children: dict[tuple[str, str], _Children] = {}
        # No exporter configured, no spans: an unexported span still costs ~30 µs a request.
        self._tracer_provider = tracer_provider
        self._tracer = tracer_provider.get_tracer("smesh.extproc") if tracer_provider else None

    def refused(self, tenant: str, status: int, code: str) -> None:
        self.refusals.labels(tenant, str(status), code).inc()

    def audit_lost(self) -> None:
        """An audit record could not be queued in time (the log is far behind)."""
        self.audit_lost_total.inc()

    def settle_failed(self, exc: Exception) -> None:
        """A reservation could not be settled; it stays counted until it expires."""
        self.settle_failures.inc()
        log.error("could not settle a reservation (it expires on its own): %s", exc)

    def _of(self, tenant: str, model: str) -> _Children:
        children = self._children.get((tenant, model))
        if children is None:
            # Built twice under a race at worst: prometheus_client returns the same child.
            children = self._children.setdefault((tenant, model), _Children(self, tenant, model))
        return children

    def record(self, r: RequestRecord) -> None:
        children = self._of(r.tenant, r.model)
        if r.usage is not None:
            children.inputs.observe(r.usage.prompt_tokens)
            children.outputs.observe(r.usage.completion_tokens)
            if r.cost:
                children.cost.inc(r.cost)
        duration = children.duration.get(r.status)
        if duration is None:
            duration = self.duration.labels(r.tenant, r.model, str(r.status))
            children.duration[r.status] = duration
        duration.observe(r.duration_s)
        if r.ttft_s is not None:
            children.ttft.observe(r.ttft_s)
        children.overhead.observe(r.overhead_s)
        if self._tracer is not None:
            self._span(r)

    def _span(self, r: RequestRecord) -> None:
        assert self._tracer is not None
        valid = trace_id_of(r.traceparent) is not None
        parent = _PROPAGATOR.extract({"traceparent": r.traceparent}) if valid else None
        end = time.time_ns()
        start = end - int(r.duration_s * 1e9)
        span = self._tracer.start_span(
            f"smesh.extproc {r.endpoint}", context=parent, kind=SpanKind.SERVER, start_time=start
        )
        span.set_attributes(
            {
                "tenant": r.tenant,
                "gen_ai.request.model": r.model,
                "http.response.status_code": r.status,
                "gen_ai.usage.input_tokens": r.usage.prompt_tokens if r.usage else 0,
                "gen_ai.usage.output_tokens": r.usage.completion_tokens if r.usage else 0,
            }
        )
        span.end(end_time=end)

    def shutdown(self) -> None:
        if self._tracer_provider is not None:
            self._tracer_provider.shutdown()  # flushes spans still batched
