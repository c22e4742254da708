"""Proxyless gRPC: what gRPC's own xDS client needs to dial ``xds:///NAME``.

gRPC asks for the Listener named exactly NAME, which must be an ``api_listener`` wrapping an
HTTP connection manager (RDS over ADS, router last); then that route table, whose virtual
host matches NAME; then the cluster by name and its endpoints (localities need weights,
which ``endpoints.py`` always sets). These listeners are sent only to clients that ask for
them by name (see ``Snapshot.named_only``): Envoy's wildcard LDS never sees them.
"""

from __future__ import annotations

from envoy.config.core.v3 import config_source_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from smesh.config import schema as config
from smesh.xds.translate._convert import message_to_any

__all__ = ["grpc_route_name", "make_grpc_listener", "make_grpc_route_configuration"]


def grpc_route_name(service: config.GrpcService) -> str:
    return f"grpc/{service.name}"


def make_grpc_listener(service: config.GrpcService) -> listener_pb2.Listener:
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=f"grpc_{service.name}",
        rds=hcm_pb2.Rds(
            config_source=config_source_pb2.ConfigSource(
                ads=config_source_pb2.AggregatedConfigSource(),
                resource_api_version=config_source_pb2.V3,
            ),
            route_config_name=grpc_route_name(service),
        ),
        http_filters=[
            hcm_pb2.HttpFilter(
                name="envoy.filters.http.router", typed_config=message_to_any(router_pb2.Router())
            )
        ],
    )
    return listener_pb2.Listener(
        name=service.name,
        api_listener=api_listener_pb2.ApiListener(api_listener=message_to_any(manager)),
    )


def make_grpc_route_configuration(service: config.GrpcService) -> route_pb2.RouteConfiguration:
    return route_pb2.RouteConfiguration(
        name=grpc_route_name(service),
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name=service.name,
                domains=[service.name],
                routes=[
                    route_components_pb2.Route(
                        match=route_components_pb2.RouteMatch(prefix=""),
                        route=route_components_pb2.RouteAction(cluster=service.cluster),
                    )
                ],
            )
        ],
    )
