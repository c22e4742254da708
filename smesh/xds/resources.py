"""Type URLs and resource naming shared by the translators, snapshot and server."""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf.message import Message

__all__ = [
    "ADS_ORDER",
    "CLUSTER",
    "ENDPOINT",
    "LISTENER",
    "MODEL_HEADER",
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

# The header the route table matches on; extproc sets it from the JSON body.
MODEL_HEADER = "x-smesh-model"
# Every gateway listener shares one route table.
ROUTE_CONFIG_NAME = "smesh_models"

# type URL -> resource name -> typed Envoy message
Resources = Mapping[str, Mapping[str, Message]]


def fallback_cluster_name(backend: str, model: str) -> str:
    """The Envoy cluster serving ``backend`` for ``model``, its fallbacks as lower priorities."""
    return f"{backend}~{model}"
