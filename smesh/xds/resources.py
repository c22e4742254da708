"""Type URLs and resource naming shared by the translators, snapshot and server."""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf.message import Message

__all__ = [
    "ADS_ORDER",
    "CLUSTER",
    "ENDPOINT",
    "EXTPROC_CLUSTER",
    "LISTENER",
    "OTEL_COLLECTOR_CLUSTER",
    "ROUTE",
    "ROUTE_CONFIG_NAME",
    "Resources",
    "fallback_cluster_name",
]

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

# Make-before-break order for ADS (xDS spec, "Eventual consistency considerations"):
# clusters, then their endpoints, then listeners, then the routes that point at them.
ADS_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE)

# Every gateway listener shares one route table.
ROUTE_CONFIG_NAME = "smesh_models"

# type URL -> resource name -> typed Envoy message
Resources = Mapping[str, Mapping[str, Message]]


def fallback_cluster_name(backend: str, model: str) -> str:
    """The Envoy cluster serving ``backend`` for ``model``, its fallbacks as lower priorities."""
    return f"{backend}~{model}"


# The Envoy cluster of the extproc service.
EXTPROC_CLUSTER = "smesh_extproc"
# The Envoy cluster of the OpenTelemetry collector (config `tracing.collector`).
OTEL_COLLECTOR_CLUSTER = "smesh_otel_collector"
