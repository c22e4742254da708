"""An immutable, versioned set of Envoy resources, and its consistency check.

Versions are content hashes: every xds replica computes the same version from the same
input, so an Envoy may reconnect to any replica and still be recognised as up to date.
Nothing is published unless :func:`check_consistency` finds every EDS and RDS name that
CDS and LDS refer to (an Envoy that gets a route to a missing cluster answers 503).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import orjson
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import json_format
from google.protobuf.message import Message

from smesh.xds.resources import ADS_ORDER, CLUSTER, ENDPOINT, LISTENER, ROUTE

__all__ = [
    "InconsistentSnapshot",
    "Snapshot",
    "check_consistency",
    "cluster_eds_name",
    "listener_route_names",
    "resource_version",
    "route_clusters",
]


class InconsistentSnapshot(ValueError):
    """A snapshot refers to resources it does not contain."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def resource_version(message: Message) -> str:
    """A stable content hash (JSON with sorted keys: Any-packed maps serialise in any order)."""
    canonical = orjson.dumps(
        json_format.MessageToDict(message, preserving_proto_field_name=True),
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(canonical).hexdigest()[:16]


def _type_version(versions: Mapping[str, str]) -> str:
    digest = hashlib.sha256()
    for name in sorted(versions):
        digest.update(f"{name}\0{versions[name]}\n".encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Snapshot:
    """Resources by type URL and name, with a content version for each."""

    resources: Mapping[str, Mapping[str, Message]]
    versions: Mapping[str, Mapping[str, str]]
    version: str = field(default="")
    # Sent only to clients that ask for them by name, never in a wildcard answer: gRPC
    # api_listeners, which Envoy (an LDS wildcard client) has no use for.
    named_only: frozenset[str] = frozenset()

    @classmethod
    def build(cls, resources: Mapping[str, Mapping[str, Message]]) -> Snapshot:
        frozen = {t: MappingProxyType(dict(resources.get(t, {}))) for t in ADS_ORDER}
        versions = {
            t: MappingProxyType({n: resource_version(m) for n, m in frozen[t].items()})
            for t in ADS_ORDER
        }
        overall = _type_version({t: _type_version(v) for t, v in versions.items()})
        named_only = frozenset(
            name
            for name, listener in frozen[LISTENER].items()
            if isinstance(listener, listener_pb2.Listener) and listener.HasField("api_listener")
        )
        return cls(MappingProxyType(frozen), MappingProxyType(versions), overall, named_only)

    def names(self, type_url: str) -> frozenset[str]:
        return frozenset(self.resources.get(type_url, {}))

    def get(self, type_url: str, name: str) -> Message | None:
        return self.resources.get(type_url, {}).get(name)

    def type_version(self, type_url: str) -> str:
        return _type_version(self.versions.get(type_url, {}))


def route_clusters(route_config: route_pb2.RouteConfiguration) -> set[str]:
    """Every cluster a route table can send traffic to."""
    names: set[str] = set()
    for vhost in route_config.virtual_hosts:
        for route in vhost.routes:
            if not route.HasField("route"):
                continue
            action = route.route
            if action.cluster:
                names.add(action.cluster)
            names.update(w.name for w in action.weighted_clusters.clusters)
    return names


def listener_route_names(listener: listener_pb2.Listener) -> set[str]:
    """RDS names the listener's HTTP connection managers subscribe to."""
    names: set[str] = set()
    chains = [*listener.filter_chains]
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    for chain in chains:
        for net_filter in chain.filters:
            if net_filter.typed_config.Is(hcm_pb2.HttpConnectionManager.DESCRIPTOR):
                manager = hcm_pb2.HttpConnectionManager()
                net_filter.typed_config.Unpack(manager)
                if manager.HasField("rds"):
                    names.add(manager.rds.route_config_name)
    if listener.HasField("api_listener"):
        manager = hcm_pb2.HttpConnectionManager()
        if listener.api_listener.api_listener.Unpack(manager) and manager.HasField("rds"):
            names.add(manager.rds.route_config_name)
    return names


def cluster_eds_name(cluster: cluster_pb2.Cluster) -> str | None:
    """The ClusterLoadAssignment name an EDS cluster waits for (None for other types)."""
    if cluster.type != cluster_pb2.Cluster.EDS:
        return None
    name: str = cluster.eds_cluster_config.service_name or cluster.name
    return name


def _missing(kind: str, wanted: Iterable[tuple[str, str]], have: frozenset[str]) -> list[str]:
    return [
        f"{owner} refers to {kind} {name!r}, which is not in the snapshot"
        for owner, name in sorted(wanted)
        if name not in have
    ]


def check_consistency(snapshot: Snapshot) -> list[str]:
    """Dangling references, as readable sentences (empty when consistent)."""
    routes: list[tuple[str, str]] = []
    for name, message in snapshot.resources[LISTENER].items():
        assert isinstance(message, listener_pb2.Listener)
        routes.extend((f"listener {name!r}", r) for r in listener_route_names(message))
    clusters: list[tuple[str, str]] = []
    for name, message in snapshot.resources[ROUTE].items():
        assert isinstance(message, route_pb2.RouteConfiguration)
        clusters.extend((f"route table {name!r}", c) for c in route_clusters(message))
    assignments: list[tuple[str, str]] = []
    for name, message in snapshot.resources[CLUSTER].items():
        assert isinstance(message, cluster_pb2.Cluster)
        if (eds := cluster_eds_name(message)) is not None:
            assignments.append((f"cluster {name!r}", eds))
    return [
        *_missing("route table", routes, snapshot.names(ROUTE)),
        *_missing("cluster", clusters, snapshot.names(CLUSTER)),
        *_missing("endpoints", assignments, snapshot.names(ENDPOINT)),
    ]
