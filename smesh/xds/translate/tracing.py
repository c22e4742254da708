"""Envoy tracing: the connection manager starts a span per request and exports it (OTLP/gRPC).

Envoy propagates the W3C ``traceparent`` to upstreams and to the ext_proc gRPC call, so
extproc's spans become children of Envoy's (see ``smesh.extproc.servicer``).
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import grpc_service_pb2
from envoy.config.trace.v3 import http_tracer_pb2, opentelemetry_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.v3 import percent_pb2
from google.protobuf import wrappers_pb2

from smesh.config import schema as config
from smesh.xds.resources import OTEL_COLLECTOR_CLUSTER
from smesh.xds.translate._convert import message_to_any
from smesh.xds.translate.extproc import make_grpc_service_cluster

__all__ = ["OTEL_TRACER", "make_collector_cluster", "make_tracing"]

OTEL_TRACER = "envoy.tracers.opentelemetry"


def make_tracing(tracing: config.Tracing) -> hcm_pb2.HttpConnectionManager.Tracing:
    """Per-request spans, sampled at ``sampling_percent``, exported to the collector."""
    provider = http_tracer_pb2.Tracing.Http(
        name=OTEL_TRACER,
        typed_config=message_to_any(
            opentelemetry_pb2.OpenTelemetryConfig(
                grpc_service=grpc_service_pb2.GrpcService(
                    envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(
                        cluster_name=OTEL_COLLECTOR_CLUSTER
                    )
                ),
                service_name=tracing.service_name,
            )
        ),
    )
    return hcm_pb2.HttpConnectionManager.Tracing(
        provider=provider,
        random_sampling=percent_pb2.Percent(value=tracing.sampling_percent),
        spawn_upstream_span=wrappers_pb2.BoolValue(value=True),
    )


def make_collector_cluster(tracing: config.Tracing) -> cluster_pb2.Cluster:
    return make_grpc_service_cluster(
        OTEL_COLLECTOR_CLUSTER, tracing.collector.address, tracing.collector.port
    )
