"""Pure translators: a :class:`~smesh.config.schema.MeshConfig` → typed Envoy resources.

Nothing here does I/O or keeps state: the same config (and the same simulator
addresses) always gives the same messages, so every xds replica computes the same
content-hash versions. :func:`translate` builds a whole resource set; the ``make_*``
functions in the submodules build one kind each.

Errors: :class:`TranslateError` (a ``ValueError``) when a config that passed validation
still cannot be turned into resources (a simulated cluster without an address, an
endpoint that is not an IP address, a reference to a cluster that does not exist).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf.message import Message

from smesh.config import schema as config
from smesh.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, ROUTE_CONFIG_NAME
from smesh.xds.translate._errors import TranslateError
from smesh.xds.translate.clusters import make_cluster, make_clusters
from smesh.xds.translate.endpoints import make_load_assignments, resolve_endpoints
from smesh.xds.translate.extproc import (
    make_body_limit_filter,
    make_ext_proc_filter,
    make_extproc_cluster,
    make_model_from_body_filter,
)
from smesh.xds.translate.grpc_listener import (
    grpc_route_name,
    make_grpc_listener,
    make_grpc_route_configuration,
)
from smesh.xds.translate.jwt import make_jwt_filter
from smesh.xds.translate.listener import make_listener
from smesh.xds.translate.local_reply import make_local_reply_config
from smesh.xds.translate.routes import make_route_configuration
from smesh.xds.translate.tracing import make_collector_cluster, make_tracing
from smesh.xds.translate.usage import (
    make_json_usage_filter,
    make_sse_usage_filter,
    make_usage_access_log,
)

__all__ = [
    "TranslateError",
    "make_body_limit_filter",
    "make_cluster",
    "make_clusters",
    "make_ext_proc_filter",
    "make_extproc_cluster",
    "make_http_filters",
    "make_jwt_filter",
    "make_listener",
    "make_load_assignments",
    "make_local_reply_config",
    "make_route_configuration",
    "resolve_endpoints",
    "translate",
]


def make_http_filters(cfg: config.MeshConfig) -> list[hcm_pb2.HttpFilter]:
    """The filters ahead of the router: jwt_authn (verifies), buffer (413), ext_proc (decides)."""
    filters = []
    if cfg.jwt is not None:
        filters.append(make_jwt_filter(cfg.jwt))
    if cfg.extproc is not None:
        filters.append(make_body_limit_filter(cfg.extproc))
        if any(model.failure_mode_allow for model in cfg.models):
            filters.append(make_model_from_body_filter())
        filters.append(make_ext_proc_filter(cfg.extproc))
        # After ext_proc: on the way back they read the upstream's own answer.
        filters.append(make_json_usage_filter())
        filters.append(make_sse_usage_filter())
    return filters


def translate(
    cfg: config.MeshConfig,
    simulated: Mapping[str, Sequence[config.Endpoint]] | None = None,
) -> dict[str, dict[str, Message]]:
    """Every resource for ``cfg``: type URL → resource name → message."""
    resolved = resolve_endpoints(cfg, simulated)
    filters = make_http_filters(cfg)
    clusters = make_clusters(cfg)
    if cfg.extproc is not None:
        # STATIC (or STRICT_DNS): its endpoints are inline, so it needs no CLA over EDS.
        clusters.append(make_extproc_cluster(cfg.extproc))
    tracing = None
    if cfg.tracing is not None:
        tracing = make_tracing(cfg.tracing)
        clusters.append(make_collector_cluster(cfg.tracing))
    access_logs = [make_usage_access_log()] if cfg.extproc is not None else []
    listeners = {
        listener.name: make_listener(
            listener, filters, tracing, cfg.extproc is not None, access_logs
        )
        for listener in cfg.listeners
    }
    routes = {ROUTE_CONFIG_NAME: make_route_configuration(cfg)}
    for service in cfg.grpc_services:  # proxyless gRPC clients (xds:///NAME)
        listeners[service.name] = make_grpc_listener(service)
        routes[grpc_route_name(service)] = make_grpc_route_configuration(service)
    return {
        LISTENER: listeners,
        ROUTE: routes,
        CLUSTER: {cluster.name: cluster for cluster in clusters},
        ENDPOINT: {cla.cluster_name: cla for cla in make_load_assignments(cfg, resolved)},
    }
