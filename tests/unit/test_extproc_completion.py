"""The end of a forwarded request, from Envoy's access-log entry: settle, metrics, audit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from envoy.data.accesslog.v3 import accesslog_pb2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from smesh.config.loader import parse_config
from smesh.config.schema import Budgets
from smesh.extproc.audit import AuditLog, verify
from smesh.extproc.budget import (
    Hold,
    MemoryBudgetStore,
    Reservation,
    reservation_from_text,
    reservation_text,
)
from smesh.extproc.completion import CompletionSink, completion_of
from smesh.extproc.policy import StaticPolicySource
from smesh.extproc.telemetry import Telemetry

CONFIG = """
extproc: {}
tenants: [{name: acme}]
models:
  - name: chat
    backends: [{cluster: c}]
    price: {prompt_per_1m: 1000000, completion_per_1m: 2000000}
clusters: [{name: c, endpoints: ["127.0.0.1:1"]}]
"""
LIMITS = Budgets(tokens_per_minute=10_000)
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def entry(
    status: int = 200,
    usage: tuple[int, int] | None = (7, 3),
    reservation: str | None = None,
    **fields: Any,
) -> accesslog_pb2.HTTPAccessLogEntry:
    built = accesslog_pb2.HTTPAccessLogEntry()
    built.request.request_id = "req-1"
    built.response.response_code.value = status
    common = built.common_properties
    common.upstream_cluster = "c"
    common.time_to_last_downstream_tx_byte.FromMilliseconds(120)
    common.time_to_first_downstream_tx_byte.FromMilliseconds(30)
    ours: dict[str, Any] = {
        "tenant": "acme",
        "model": "chat",
        "endpoint": "/v1/chat/completions",
        "stream": False,
        "started_at": 1_800_000_000.0,
        "overhead_ms": 0.9,
        **fields,
    }
    if reservation is not None:
        ours["reservation"] = reservation
    common.metadata.filter_metadata["smesh.request"].update(ours)
    if usage is not None:
        common.metadata.filter_metadata["smesh.usage"].update(
            {"prompt_tokens": usage[0], "completion_tokens": usage[1]}
        )
    return built


def test_an_entry_without_our_metadata_is_not_ours() -> None:
    """Requests extproc never forwarded (health checks, refusals) complete nothing."""
    assert completion_of(accesslog_pb2.HTTPAccessLogEntry()) is None


def test_an_entry_is_read_into_a_completion() -> None:
    """Status, cluster, usage, timings and our metadata come out of one entry."""
    done = completion_of(entry(guards=["pii"], entities={"EMAIL": 2}))
    assert done is not None
    assert (done.tenant, done.model, done.status, done.cluster) == ("acme", "chat", 200, "c")
    assert done.usage is not None and done.usage.total == 10
    assert done.duration_s == pytest.approx(0.12) and done.ttft_s == pytest.approx(0.03)
    assert done.guards == ("pii",) and done.entities == {"EMAIL": 2}


@pytest.mark.parametrize(
    ("status", "usage", "charged"),
    [(200, (7, 3), 10), (200, None, 500), (503, None, 0), (429, (0, 0), 0)],
    ids=["usage", "answered-no-usage", "upstream-error", "error-with-usage"],
)
def test_the_reservation_settles_to_the_reported_usage(
    status: int, usage: tuple[int, int] | None, charged: int
) -> None:
    """Reported usage; a 2xx without usage keeps the hold; an error gives it back."""
    store = MemoryBudgetStore()
    held = store.reserve("acme", LIMITS, 500, hold=Hold("req-1", 60)).reservation
    assert held is not None
    sink = CompletionSink(StaticPolicySource(parse_config(CONFIG)), store, Telemetry())
    done = completion_of(entry(status, usage, reservation_text(held)))
    assert done is not None
    sink.handle([done])
    assert store.used("acme")["tokens_per_minute"] == charged
    assert store.expire(now=10**10) == 0  # settled: nothing left to expire


def test_metrics_cost_and_the_audit_record(tmp_path: Path) -> None:
    """Token metrics by tenant, the catalog cost, and one verifiable audit record."""
    telemetry = Telemetry()
    log = AuditLog(tmp_path / "audit.jsonl", b"k" * 32)
    sink = CompletionSink(
        StaticPolicySource(parse_config(CONFIG)), MemoryBudgetStore(), telemetry, log
    )
    done = completion_of(entry(guards=["pii"], entities={"EMAIL": 1}))
    assert done is not None
    sink.handle([done])
    log.close()
    labels = {"tenant": "acme", "gen_ai_request_model": "chat"}
    sample = telemetry.registry.get_sample_value
    assert sample("gen_ai_client_token_usage_sum", {**labels, "gen_ai_token_type": "input"}) == 7
    assert sample("gen_ai_client_token_usage_sum", {**labels, "gen_ai_token_type": "output"}) == 3
    assert sample("smesh_cost_total", labels) == pytest.approx(7 + 6)
    [line] = (tmp_path / "audit.jsonl").read_bytes().splitlines()
    record = orjson.loads(line)
    assert (record["tenant"], record["cluster"], record["decision"]) == ("acme", "c", "forwarded")
    assert (record["prompt_tokens"], record["completion_tokens"]) == (7, 3)
    assert record["entities"] == {"EMAIL": 1} and record["guards"] == ["pii"]
    assert verify(tmp_path / "audit.jsonl", b"k" * 32).ok


def test_the_span_joins_the_callers_trace() -> None:
    """The request span is a child of the traceparent Envoy forwarded to extproc."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sink = CompletionSink(
        StaticPolicySource(parse_config(CONFIG)),
        MemoryBudgetStore(),
        Telemetry(tracer_provider=provider),
    )
    done = completion_of(entry(traceparent=TRACEPARENT))
    assert done is not None
    sink.handle([done])
    [span] = exporter.get_finished_spans()
    assert format(span.context.trace_id, "032x") == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert span.parent is not None and format(span.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert span.attributes is not None and span.attributes["tenant"] == "acme"


def test_a_reservation_travels_as_one_string_and_reads_back() -> None:
    """The metadata form of a reservation round-trips; anything else is not one."""
    held = Reservation("acme", 1500, 29_414_000, 20_426, "5d3c1f2a-1111 with spaces")
    assert reservation_from_text("acme", reservation_text(held)) == held
    assert reservation_from_text("acme", "1500 1 2 ") == Reservation("acme", 1500, 1, 2, "")
    full_width_one = "\uff11"
    for bad in ("", "1500 1 2", "-5 1 2 h", "1.5 1 2 h", "1500 x 2 h", f"{full_width_one} 1 2 h"):
        assert reservation_from_text("acme", bad) is None, bad
