"""Endpoint translation: where each Envoy cluster's hosts are (``ClusterLoadAssignment``).

Two steps. :func:`resolve_endpoints` decides the hosts of every config cluster: static
ones as configured, simulated ones from the running simulator (or ``simulate.port``).
:func:`make_load_assignments` turns those into one assignment per Envoy cluster; a
derived fallback cluster puts the backend's hosts at priority 0 and each fallback at the
next priority, so Envoy spills over only when the level above is unhealthy.

Every locality has a ``load_balancing_weight``: gRPC's xDS client rejects an assignment
without one, and it costs Envoy nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping, Sequence

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from smesh.config import schema as config
from smesh.xds.resources import fallback_cluster_name
from smesh.xds.translate._convert import int_to_uint32
from smesh.xds.translate._errors import TranslateError
from smesh.xds.translate.residency import fallback_views

__all__ = [
    "SIMULATOR_HOST",
    "make_load_assignment",
    "make_load_assignments",
    "make_locality_endpoints",
    "resolve_endpoints",
]

SIMULATOR_HOST = "127.0.0.1"


def _check_ip(cluster: config.Cluster, endpoint: config.Endpoint) -> None:
    # An EDS host must be an IP literal: Envoy NACKs a hostname in a ClusterLoadAssignment.
    # Failing here names the cluster instead of leaving a NACK to decode.
    try:
        ipaddress.ip_address(endpoint.address)
    except ValueError:
        raise TranslateError(
            f"cluster {cluster.name!r}: endpoint {endpoint.address}:{endpoint.port} must be "
            "an IP address (hostnames are not resolved for EDS clusters)"
        ) from None


def resolve_endpoints(
    cfg: config.MeshConfig,
    simulated: Mapping[str, Sequence[config.Endpoint]] | None = None,
) -> dict[str, tuple[config.Endpoint, ...]]:
    """Config cluster name → its hosts; ``simulated`` gives the running simulators' hosts."""
    resolved: dict[str, tuple[config.Endpoint, ...]] = {}
    for cluster in cfg.clusters:
        if cluster.simulate is None:
            endpoints = cluster.endpoints
        elif simulated is not None and cluster.name in simulated:
            endpoints = tuple(simulated[cluster.name])
        elif cluster.simulate.port is not None:
            first = cluster.simulate.port
            endpoints = tuple(
                config.Endpoint(address=SIMULATOR_HOST, port=port)
                for port in range(first, first + cluster.simulate.replicas)
            )
        else:
            raise TranslateError(
                f"cluster {cluster.name!r} is simulated but has no address: give it "
                "simulate.port, or start it with `smesh up`"
            )
        for endpoint in endpoints:
            _check_ip(cluster, endpoint)
        resolved[cluster.name] = endpoints
    return resolved


def make_locality_endpoints(
    cluster: config.Cluster, endpoints: Sequence[config.Endpoint], priority: int
) -> endpoint_components_pb2.LocalityLbEndpoints:
    """One locality (region, sub-zone = cluster name) holding ``endpoints`` at ``priority``."""
    return endpoint_components_pb2.LocalityLbEndpoints(
        locality=base_pb2.Locality(region=cluster.region or "", sub_zone=cluster.name),
        load_balancing_weight=int_to_uint32(1),
        priority=priority,
        lb_endpoints=[
            endpoint_components_pb2.LbEndpoint(
                endpoint=endpoint_components_pb2.Endpoint(
                    address=address_pb2.Address(
                        socket_address=address_pb2.SocketAddress(
                            address=endpoint.address, port_value=endpoint.port
                        )
                    )
                ),
                load_balancing_weight=int_to_uint32(endpoint.weight),
            )
            for endpoint in endpoints
        ],
    )


def make_load_assignment(
    name: str,
    levels: Sequence[config.Cluster],
    resolved: Mapping[str, Sequence[config.Endpoint]],
) -> endpoint_pb2.ClusterLoadAssignment:
    """The assignment for Envoy cluster ``name``: ``levels[i]``'s hosts at priority ``i``."""
    localities = []
    for priority, cluster in enumerate(levels):
        if cluster.name not in resolved:
            raise TranslateError(f"no endpoints resolved for cluster {cluster.name!r}")
        localities.append(make_locality_endpoints(cluster, resolved[cluster.name], priority))
    return endpoint_pb2.ClusterLoadAssignment(cluster_name=name, endpoints=localities)


def _levels(cfg: config.MeshConfig) -> Iterator[tuple[str, list[config.Cluster]]]:
    clusters = {cluster.name: cluster for cluster in cfg.clusters}
    for cluster in cfg.clusters:
        yield cluster.name, [cluster]
    for derived_as, model, view in fallback_views(cfg):
        for backend in view.backends:
            names = (backend.cluster, *view.fallback)
            missing = [name for name in names if name not in clusters]
            if missing:
                raise TranslateError(
                    f"model {model.name!r} refers to unknown cluster {missing[0]!r}"
                )
            yield (
                fallback_cluster_name(backend.cluster, derived_as),
                [clusters[name] for name in names],
            )


def make_load_assignments(
    cfg: config.MeshConfig, resolved: Mapping[str, Sequence[config.Endpoint]]
) -> list[endpoint_pb2.ClusterLoadAssignment]:
    """One assignment per Envoy cluster (plain and derived fallback), from ``resolved`` hosts."""
    return [make_load_assignment(name, levels, resolved) for name, levels in _levels(cfg)]
