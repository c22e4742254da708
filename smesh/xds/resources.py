"""Type URLs and resource naming shared by the translators, snapshot and server."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from google.protobuf.message import Message

__all__ = [
    "ADS_ORDER",
    "CLUSTER",
    "ENDPOINT",
    "ERROR_HEADER",
    "EXTPROC_CLUSTER",
    "JWT_FILTER",
    "JWT_PAYLOAD_KEY",
    "LISTENER",
    "MODEL_HEADER",
    "OTEL_COLLECTOR_CLUSTER",
    "RESIDENCY_HEADER",
    "ROUTE",
    "ROUTE_CONFIG_NAME",
    "TENANT_HEADER",
    "Resources",
    "fallback_cluster_name",
    "residency_key",
]

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

# Make-before-break order for ADS (xDS spec, "Eventual consistency considerations"):
# clusters, then their endpoints, then listeners, then the routes that point at them.
ADS_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE)

# The header the route table matches on; extproc sets it from the JSON body.
MODEL_HEADER = "x-smesh-model"
# Every gateway listener shares one route table.
ROUTE_CONFIG_NAME = "smesh_models"

# type URL -> resource name -> typed Envoy message
Resources = Mapping[str, Mapping[str, Message]]


def fallback_cluster_name(backend: str, model: str) -> str:
    """The Envoy cluster serving ``backend`` for ``model``, its fallbacks as lower priorities."""
    return f"{backend}~{model}"


# Headers extproc sets (and strips when a client sends them) for the route table.
TENANT_HEADER = "x-smesh-tenant"
# A residency-restricted tenant's allowed regions, sorted and joined with "+"; routes for
# such tenants match it and only reach clusters in those regions.
RESIDENCY_HEADER = "x-smesh-residency"
# On every refusal extproc answers itself; Envoy's local-reply mapper leaves those alone.
ERROR_HEADER = "x-smesh-error"
# The Envoy cluster of the extproc service.
EXTPROC_CLUSTER = "smesh_extproc"
# The Envoy cluster of the OpenTelemetry collector (config `tracing.collector`).
OTEL_COLLECTOR_CLUSTER = "smesh_otel_collector"
# jwt_authn writes the verified payload here; ext_proc forwards the namespace to extproc.
JWT_FILTER = "envoy.filters.http.jwt_authn"
JWT_PAYLOAD_KEY = "jwt_payload"


def residency_key(regions: Iterable[str]) -> str:
    """The RESIDENCY_HEADER value for a set of regions (order-independent)."""
    return "+".join(sorted(set(regions)))
