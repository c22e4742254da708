"""Metrics, spans and the audit record for each request — never prompt or answer text.

OpenTelemetry GenAI names (``gen_ai.client.token.usage``, ``gen_ai.server.request.duration``,
``gen_ai.server.time_to_first_token``) with ``tenant``/``model`` attributes, plus the
gateway's own overhead. Spans join the client's/Envoy's ``traceparent``. Readers and
providers are injected: the process wires a Prometheus reader, tests an in-memory one.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import orjson
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from smesh.extproc.metering import Usage

__all__ = ["RequestRecord", "Telemetry", "trace_id_of"]

audit_log = logging.getLogger("smesh.audit")
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


def trace_id_of(traceparent: str) -> str | None:
    """The trace id of a well-formed ``traceparent`` (not all zeros), else ``None``."""
    match = _TRACEPARENT.fullmatch(traceparent)
    if match is None or match.group(1) == "0" * 32 or match.group(2) == "0" * 16:
        return None
    return match.group(1)


@dataclass(frozen=True)
class RequestRecord:
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


@lru_cache(maxsize=4096)
def _attributes(tenant: str, model: str) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """The attribute sets of one (tenant, model), built once (never mutated by the SDK)."""
    attrs = {"tenant": tenant, "gen_ai.request.model": model}
    return (
        attrs,
        {**attrs, "gen_ai.token.type": "input"},
        {**attrs, "gen_ai.token.type": "output"},
    )


@lru_cache(maxsize=4096)
def _with_status(tenant: str, model: str, status: int) -> dict[str, str | int]:
    return {"tenant": tenant, "gen_ai.request.model": model, "http.response.status_code": status}


class Telemetry:
    """Everything extproc reports about requests."""

    def __init__(
        self,
        readers: Sequence[MetricReader] = (),
        tracer_provider: TracerProvider | None = None,
        request_lines: bool = True,
    ) -> None:
        # One JSON line per request on the smesh.audit logger; off when the hash-chained
        # audit log keeps the records (the same facts twice cost ~10 µs a request).
        self._request_lines = request_lines
        self.meter_provider = MeterProvider(metric_readers=list(readers))
        meter = self.meter_provider.get_meter("smesh.extproc")
        self._tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Tokens by type",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )
        self._duration = meter.create_histogram(
            "gen_ai.server.request.duration",
            unit="s",
            description="Request duration",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
        )
        self._ttft = meter.create_histogram(
            "gen_ai.server.time_to_first_token",
            unit="s",
            description="Time to first byte",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
        )
        self._overhead = meter.create_histogram(
            "smesh.extproc.overhead",
            unit="s",
            description="Time spent in extproc",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
        )
        self._cost = meter.create_counter("smesh.cost", description="Catalog cost")
        self._refusals = meter.create_counter("smesh.refusals", description="Refused requests")
        self._audit_lost = meter.create_counter(
            "smesh.audit.lost", description="Audit records that found no room in the queue"
        )
        self._settle_failures = meter.create_counter(
            "smesh.budget.settle_failures", description="Reservations that could not be settled"
        )
        # No exporter configured, no spans: an unexported span still costs ~30 µs a request.
        self._tracer_provider = tracer_provider
        self._tracer = tracer_provider.get_tracer("smesh.extproc") if tracer_provider else None

    def refused(self, tenant: str, status: int, code: str) -> None:
        self._refusals.add(1, {"tenant": tenant, "http.response.status_code": status, "code": code})
        audit_log.info(
            "%s",
            orjson.dumps(
                {"event": "refused", "tenant": tenant, "status": status, "code": code}
            ).decode(),
        )

    def audit_lost(self) -> None:
        """An audit record could not be queued in time (the log is far behind)."""
        self._audit_lost.add(1)

    def settle_failed(self, exc: Exception) -> None:
        """A reservation could not be settled; it stays counted until its window ends."""
        self._settle_failures.add(1)
        log.error("could not settle a reservation (it expires with its window): %s", exc)

    def record(self, r: RequestRecord) -> None:
        attrs, inputs, outputs = _attributes(r.tenant, r.model)
        if r.usage is not None:
            self._tokens.record(r.usage.prompt_tokens, inputs)
            self._tokens.record(r.usage.completion_tokens, outputs)
            self._cost.add(r.cost, attrs)
        self._duration.record(r.duration_s, _with_status(r.tenant, r.model, r.status))
        if r.ttft_s is not None:
            self._ttft.record(r.ttft_s, attrs)
        self._overhead.record(r.overhead_s, attrs)
        trace_id = self._span(r)
        if not self._request_lines:
            return
        audit_log.info(
            "%s",
            orjson.dumps(
                {
                    "event": "request",
                    "tenant": r.tenant,
                    "model": r.model,
                    "endpoint": r.endpoint,
                    "status": r.status,
                    "prompt_tokens": r.usage.prompt_tokens if r.usage else None,
                    "completion_tokens": r.usage.completion_tokens if r.usage else None,
                    "cost": round(r.cost, 8),
                    "duration_ms": round(r.duration_s * 1000, 2),
                    "overhead_ms": round(r.overhead_s * 1000, 3),
                    "stream": r.streamed,
                    "trace_id": trace_id,
                }
            ).decode(),
        )

    def _span(self, r: RequestRecord) -> str:
        if self._tracer is None:
            # The audit line still joins the caller's trace, when its traceparent is valid.
            return trace_id_of(r.traceparent) or ""
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
        return format(span.get_span_context().trace_id, "032x")

    def shutdown(self) -> None:
        self.meter_provider.shutdown()
        if self._tracer_provider is not None:
            self._tracer_provider.shutdown()  # flushes spans still batched
