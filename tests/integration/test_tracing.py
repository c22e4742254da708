"""Traces: Envoy and extproc export to one OTLP collector; extproc joins Envoy's trace."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from smesh.ports import free_port
from tests.integration.gateway import simulated_gateway
from tests.integration.harness import wait_until

pytestmark = pytest.mark.integration


class Collector(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    """An OTLP/gRPC trace receiver (the protocol a real collector speaks); keeps every span."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, trace_pb2.Span]] = []
        self._lock = threading.Lock()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        with self._lock:
            for resource_spans in request.resource_spans:
                service = next(
                    (
                        a.value.string_value
                        for a in resource_spans.resource.attributes
                        if a.key == "service.name"
                    ),
                    "",
                )
                for scope in resource_spans.scope_spans:
                    self.spans.extend((service, span) for span in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def of(self, service: str) -> list[trace_pb2.Span]:
        with self._lock:
            return [span for name, span in self.spans if name == service]


@pytest.fixture
def collector() -> Iterator[tuple[Collector, int]]:
    receiver = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    server.start()
    yield receiver, port
    server.stop(grace=None)


def test_extproc_span_is_a_child_of_envoys(
    tmp_path: Path, collector: tuple[Collector, int]
) -> None:
    """One request gives Envoy spans and an extproc span in the same trace, parented by Envoy."""
    receiver, collector_port = collector

    def render(sim: int, port: int, extproc_port: int, keys: dict[str, str]) -> str:
        return f"""
listeners: [{{name: gateway, port: {port}}}]
extproc: {{port: {extproc_port}}}
tracing: {{collector: "127.0.0.1:{collector_port}", service_name: smesh-test-gateway}}
tenants: [{{name: acme, api_keys: ["{keys["acme"]}"]}}]
models: [{{name: chat, backends: [{{cluster: sim}}]}}]
clusters: [{{name: sim, endpoints: ["127.0.0.1:{sim}"]}}]
"""

    with simulated_gateway(tmp_path, render, ["acme"]) as gateway:
        assert gateway.chat(gateway.keys["acme"], "trace me").status_code == 200
        wait_until(lambda: bool(receiver.of("smesh-extproc")), timeout=15, step=0.2)
        [extproc_span] = receiver.of("smesh-extproc")
        wait_until(
            lambda: any(
                s.trace_id == extproc_span.trace_id for s in receiver.of("smesh-test-gateway")
            ),
            timeout=15,
            step=0.2,
        )
    envoy_spans = [
        s for s in receiver.of("smesh-test-gateway") if s.trace_id == extproc_span.trace_id
    ]
    assert extproc_span.parent_span_id in {s.span_id for s in envoy_spans}
    attributes = {a.key: a.value for a in extproc_span.attributes}
    assert attributes["tenant"].string_value == "acme"
    assert attributes["gen_ai.request.model"].string_value == "chat"
