"""Pure translators: a :class:`~smesh.xds.config.MeshConfig` → typed Envoy resources.

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

from smesh.xds import config
from smesh.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, ROUTE_CONFIG_NAME
from smesh.xds.translate._errors import TranslateError
from smesh.xds.translate.clusters import make_cluster, make_clusters
from smesh.xds.translate.endpoints import make_load_assignments, resolve_endpoints
from smesh.xds.translate.listener import make_listener
from smesh.xds.translate.routes import make_route_configuration

__all__ = [
    "TranslateError",
    "make_cluster",
    "make_clusters",
    "make_listener",
    "make_load_assignments",
    "make_route_configuration",
    "resolve_endpoints",
    "translate",
]


def translate(
    cfg: config.MeshConfig,
    simulated: Mapping[str, Sequence[config.Endpoint]] | None = None,
    ext_proc: hcm_pb2.HttpFilter | None = None,
) -> dict[str, dict[str, Message]]:
    """Every resource for ``cfg``: type URL → resource name → message."""
    resolved = resolve_endpoints(cfg, simulated)
    return {
        LISTENER: {listener.name: make_listener(listener, ext_proc) for listener in cfg.listeners},
        ROUTE: {ROUTE_CONFIG_NAME: make_route_configuration(cfg)},
        CLUSTER: {cluster.name: cluster for cluster in make_clusters(cfg)},
        ENDPOINT: {cla.cluster_name: cla for cla in make_load_assignments(cfg, resolved)},
    }
