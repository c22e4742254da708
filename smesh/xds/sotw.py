"""The state-of-the-world ADS protocol for one stream, without gRPC.

:class:`SotwStream` takes requests and snapshots and returns the responses to send; the
gRPC servicer only moves messages. Rules it implements (xDS protocol spec,
https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol):

- Every response carries a nonce unique on the stream. A request whose ``response_nonce``
  is not the last nonce sent for its type is stale and ignored ("When the nonce is stale").
- ACK (nonce current, no ``error_detail``) → the resources become *accepted*; nothing is
  sent back unless something else changed. NACK → the error is recorded, nothing is
  resent; the client keeps its previous config and so do we.
- A type is sent only when what it would hold differs from what was last sent, or names
  were newly subscribed (they are sent even when unchanged), or on the first request.
- Empty ``resource_names`` means wildcard only before any name was requested; ``*`` is
  an explicit wildcard. LDS/CDS responses are the full state (omission deletes).
- One response per type is in flight at a time; the next waits for its ACK/NACK.
- Make-before-break (ADS ordering, "Eventual consistency considerations"): a route table is
  sent only once every cluster it uses, and that cluster's endpoints, were ACKed; a
  listener only once CDS is ACKed; a cluster that a route the client holds (ACKed, or in
  flight) still uses stays in CDS until a route table without it is ACKed — removing it
  earlier is an outage, and a NACKed route table means the old one is still in use.
- After a Cluster changes, its ClusterLoadAssignment is sent again even if unchanged:
  Envoy rebuilds the cluster and waits for endpoints.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import Message

from smesh.xds.history import SnapshotHistory
from smesh.xds.resources import ADS_ORDER, CLUSTER, ENDPOINT, LISTENER, ROUTE
from smesh.xds.snapshot import Snapshot, _type_version, cluster_eds_name, route_clusters
from smesh.xds.status import NodeRegistry

__all__ = ["SotwStream"]

WILDCARD = "*"


@dataclass
class _TypeState:
    """What one resource type looks like on this stream."""

    requested: bool = False
    names: set[str] = field(default_factory=set)
    wildcard: bool = False
    ever_named: bool = False
    nonce: str = ""
    in_flight: bool = False
    # versions and messages of the last response; and of the last ACKed one
    sent: dict[str, str] = field(default_factory=dict)
    sent_messages: dict[str, Message] = field(default_factory=dict)
    accepted: dict[str, str] = field(default_factory=dict)
    accepted_messages: dict[str, Message] = field(default_factory=dict)
    # names to send even if unchanged (new subscriptions, EDS after a cluster change)
    force: set[str] = field(default_factory=set)
    resumed: bool = False  # accepted state taken from history on a reconnect

    def wants(self, name: str, named_only: frozenset[str] = frozenset()) -> bool:
        return name in self.names or (self.wildcard and name not in named_only)


class SotwStream:
    """One ADS stream's protocol state. Not thread-safe: drive it from one task."""

    def __init__(
        self,
        registry: NodeRegistry,
        nonces: Callable[[], str] | None = None,
        history: SnapshotHistory | None = None,
    ) -> None:
        self._registry = registry
        self._history = history
        counter = itertools.count(1)
        self._nonce = nonces or (lambda: str(next(counter)))
        self._types: dict[str, _TypeState] = {t: _TypeState() for t in ADS_ORDER}
        self._snapshot: Snapshot | None = None
        self.node_id = ""
        self.node_cluster = ""

    # -- inputs --------------------------------------------------------------------------

    def on_request(
        self, request: discovery_pb2.DiscoveryRequest
    ) -> list[discovery_pb2.DiscoveryResponse]:
        """Handle one request; return what to send."""
        if not self.node_id and request.HasField("node"):
            # `node` is read from the first request only (set_node_on_first_message_only).
            self.node_id, self.node_cluster = request.node.id, request.node.cluster
            self._registry.connected(self.node_id, self.node_cluster)
        state = self._types.get(request.type_url)
        if state is None:
            return []  # a type we do not serve: the client's initial_fetch_timeout ends it
        if request.response_nonce and request.response_nonce != state.nonce:
            return []  # stale: a newer response is on its way; its ACK will follow
        if not state.nonce and request.version_info and not request.response_nonce:
            self._resume(request.type_url, request.version_info)
        if request.response_nonce:
            state.in_flight = False
            if request.HasField("error_detail"):
                # The request's version_info is the last *accepted* one; record what was refused.
                refused = _type_version(state.sent)
                self._registry.nacked(
                    self.node_id, request.type_url, refused, request.error_detail.message
                )
            else:
                self._accept(request.type_url, state)
        self._subscribe(state, list(request.resource_names))
        state.requested = True
        return self._responses()

    def on_snapshot(self, snapshot: Snapshot) -> list[discovery_pb2.DiscoveryResponse]:
        """A new snapshot was published; return what to send."""
        self._snapshot = snapshot
        return self._responses()

    def close(self) -> None:
        if self.node_id:
            self._registry.disconnected(self.node_id)

    # -- protocol ------------------------------------------------------------------------

    def _subscribe(self, state: _TypeState, names: list[str]) -> None:
        explicit = [n for n in names if n != WILDCARD]
        if explicit:
            state.ever_named = True
        state.wildcard = WILDCARD in names or (not names and not state.ever_named)
        added = set(explicit) - state.names
        state.names = set(explicit)
        state.force |= added
        state.force &= state.names | (set(state.sent) if state.wildcard else set())
        for gone in set(state.sent) - state.names:
            if not state.wildcard:
                del state.sent[gone]

    def _resume(self, type_url: str, version: str) -> None:
        """A reconnecting client holds ``version``: if we published it, take it as accepted.

        Content-hash versions make this exact. The other types are taken from the same
        snapshot until their own first request says otherwise, so the first CDS answer
        already keeps the clusters the client's routes still use (make-before-break
        across an xds restart).
        """
        snapshot = self._history.find(type_url, version) if self._history else None
        if snapshot is None:
            return
        for other, state in self._types.items():
            if state.nonce or (other != type_url and state.resumed):
                continue
            state.accepted = dict(snapshot.versions[other])
            state.accepted_messages = dict(snapshot.resources[other])
            state.sent = dict(state.accepted)
            state.sent_messages = dict(state.accepted_messages)
            state.resumed = True

    def _accept(self, type_url: str, state: _TypeState) -> None:
        before = dict(state.accepted)
        state.accepted = dict(state.sent)
        state.accepted_messages = dict(state.sent_messages)
        self._registry.acked(self.node_id, type_url, _type_version(state.sent))
        if type_url == CLUSTER:
            endpoints = self._types[ENDPOINT]
            for name, version in state.accepted.items():
                if before.get(name) not in (None, version):
                    message = state.accepted_messages[name]
                    assert isinstance(message, cluster_pb2.Cluster)
                    if (eds := cluster_eds_name(message)) is not None:
                        endpoints.force.add(eds)

    def _responses(self) -> list[discovery_pb2.DiscoveryResponse]:
        if self._snapshot is None:
            return []
        out = []
        for type_url in ADS_ORDER:
            state = self._types[type_url]
            if not state.requested or state.in_flight:
                continue
            desired = self._desired(type_url, state)
            if desired is None:
                continue
            versions = {n: v for n, (v, _) in desired.items()}
            # The first answer goes out even when empty for wildcard (full-state) types: the
            # client waits for it before it finishes initialising.
            first = not state.nonce and (state.wildcard or bool(versions))
            forced = state.force & set(versions)
            if state.wildcard:
                changed = versions != state.sent  # full state: a removal is a change
            else:
                # Named types: omitting a name deletes nothing, so only changes count.
                changed = any(state.sent.get(n) != v for n, v in versions.items())
            if not first and not forced and not changed:
                continue
            out.append(self._respond(type_url, state, desired))
        return out

    def _respond(
        self, type_url: str, state: _TypeState, desired: dict[str, tuple[str, Message]]
    ) -> discovery_pb2.DiscoveryResponse:
        state.sent = {n: v for n, (v, _) in desired.items()}
        state.sent_messages = {n: m for n, (_, m) in desired.items()}
        state.force.clear()
        state.nonce = self._nonce()
        state.in_flight = True
        version = _type_version(state.sent)
        self._registry.sent(self.node_id, type_url, version)
        response = discovery_pb2.DiscoveryResponse(
            version_info=version, type_url=type_url, nonce=state.nonce
        )
        for name in sorted(desired):
            response.resources.add().Pack(desired[name][1])
        return response

    def _desired(self, type_url: str, state: _TypeState) -> dict[str, tuple[str, Message]] | None:
        """What this type should hold now, or None to hold back (make-before-break)."""
        snap = self._snapshot
        assert snap is not None
        current = {
            n: (snap.versions[type_url][n], m)
            for n, m in snap.resources[type_url].items()
            if state.wants(n, snap.named_only)
        }
        if type_url == CLUSTER:
            for name in self._clusters_in_use() - set(current):
                if name in state.sent_messages and state.wants(name):
                    current[name] = (state.sent[name], state.sent_messages[name])
            return current
        if type_url == ENDPOINT:
            retained = self._types[CLUSTER].sent_messages
            for name in state.names - set(current):
                if name in state.sent_messages and any(
                    cluster_eds_name(c) == name for c in retained.values()
                ):
                    current[name] = (state.sent[name], state.sent_messages[name])
            return current
        if type_url == LISTENER:
            return current if self._clusters_settled() else None
        if type_url == ROUTE:
            if not all(
                self._cluster_ready(c) for _, m in current.values() for c in route_clusters(m)
            ):
                return None
            return current
        return current

    def _clusters_in_use(self) -> set[str]:
        """Clusters the client's route tables (ACKed or in flight) may still send traffic to."""
        routes = self._types[ROUTE]
        tables = list(routes.accepted_messages.values())
        if routes.in_flight:
            tables += routes.sent_messages.values()
        used: set[str] = set()
        for table in tables:
            assert isinstance(table, route_pb2.RouteConfiguration)
            used |= route_clusters(table)
        return used

    def _clusters_settled(self) -> bool:
        """CDS is ACKed at the version we want, and every cluster's endpoints too.

        Listeners go last but routes (ADS order CDS → EDS → LDS → RDS); a client that
        does not watch all clusters (gRPC's xDS client) asks for them after the route.
        """
        clusters = self._types[CLUSTER]
        if not clusters.requested or not clusters.wildcard:
            return True
        acked = not clusters.in_flight and clusters.accepted == clusters.sent
        return acked and bool(clusters.nonce) and all(map(self._cluster_ready, clusters.accepted))

    def _cluster_ready(self, name: str) -> bool:
        """The client holds this cluster and its endpoints (wildcard CDS clients only)."""
        clusters = self._types[CLUSTER]
        if not clusters.requested or not clusters.wildcard:
            return True  # a client that asks for clusters by name asks after the route
        cluster = clusters.accepted_messages.get(name)
        if cluster is None:
            return False
        assert isinstance(cluster, cluster_pb2.Cluster)
        eds = cluster_eds_name(cluster)
        endpoints = self._types[ENDPOINT]
        if eds is None:
            return True
        in_flight = endpoints.in_flight and eds in endpoints.sent
        return eds in endpoints.accepted and eds not in endpoints.force and not in_flight
