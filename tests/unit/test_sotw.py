"""The SotW ADS protocol, driven as Envoy drives it (no sockets: requests in, responses out)."""

from __future__ import annotations

from pathlib import Path

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2

from smesh.config.loader import parse_config
from smesh.xds.app import compile_config
from smesh.xds.history import SnapshotHistory
from smesh.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, ROUTE_CONFIG_NAME
from smesh.xds.snapshot import Snapshot, route_clusters
from smesh.xds.sotw import SotwStream
from smesh.xds.status import NodeRegistry

BASE = """
listeners: [{name: gw, port: 10000}]
models:
  - name: chat
    backends: [{cluster: a}]
clusters:
  - {name: a, endpoints: ["127.0.0.1:9001"]}
"""


def snapshot(text: str) -> Snapshot:
    return compile_config(parse_config(text))


def repointed() -> Snapshot:
    """``chat`` moved from cluster a to a new cluster b (a removed)."""
    return snapshot(BASE.replace("cluster: a}", "cluster: b}").replace("name: a,", "name: b,"))


def reweighted() -> Snapshot:
    """A second backend and a 50/50 split."""
    return snapshot(
        BASE.replace("[{cluster: a}]", "[{cluster: a, weight: 50}, {cluster: b, weight: 50}]")
        + '  - {name: b, endpoints: ["127.0.0.1:9002"]}\n'
    )


class FakeEnvoy:
    """Speaks to a SotwStream like Envoy: wildcard LDS/CDS, named RDS/EDS, ACKs what it gets."""

    def __init__(self, stream: SotwStream) -> None:
        self.stream = stream
        self.last: dict[str, discovery_pb2.DiscoveryResponse] = {}
        self.first = True

    def request(
        self,
        type_url: str,
        names: tuple[str, ...] = (),
        ack: discovery_pb2.DiscoveryResponse | None = None,
        error: str = "",
        version: str = "",
    ) -> list[discovery_pb2.DiscoveryResponse]:
        request = discovery_pb2.DiscoveryRequest(
            type_url=type_url, resource_names=list(names), version_info=version
        )
        if self.first:
            request.node.id, request.node.cluster = "envoy-1", "gw"
            self.first = False
        if ack is not None:
            request.response_nonce = ack.nonce
            request.version_info = ack.version_info
            if error:
                request.error_detail.message = error
        responses = self.stream.on_request(request)
        for response in responses:
            self.last[response.type_url] = response
        return responses

    def push(self, snap: Snapshot) -> list[discovery_pb2.DiscoveryResponse]:
        responses = self.stream.on_snapshot(snap)
        for response in responses:
            self.last[response.type_url] = response
        return responses

    def names(self, type_url: str) -> set[str]:
        response = self.last[type_url]
        kinds = {CLUSTER: cluster_pb2.Cluster, ROUTE: route_pb2.RouteConfiguration}
        out = set()
        for packed in response.resources:
            message = kinds[type_url]() if type_url in kinds else None
            if message is not None:
                packed.Unpack(message)
                out.add(message.name)
        return out

    def route_clusters(self) -> set[str]:
        table = route_pb2.RouteConfiguration()
        self.last[ROUTE].resources[0].Unpack(table)
        return route_clusters(table)

    def converge(self) -> None:
        """Initial handshake: CDS, EDS, LDS, RDS each requested and ACKed."""
        [cds] = self.request(CLUSTER)
        assert self.request(CLUSTER, ack=cds) == []
        [eds] = self.request(ENDPOINT, ("a",))
        [lds] = self.request(LISTENER) + self.request(ENDPOINT, ("a",), ack=eds)
        self.request(LISTENER, ack=lds)
        [rds] = self.request(ROUTE, (ROUTE_CONFIG_NAME,))
        assert self.request(ROUTE, (ROUTE_CONFIG_NAME,), ack=rds) == []


def connected(snap: Snapshot | None = None) -> tuple[FakeEnvoy, NodeRegistry]:
    registry = NodeRegistry()
    stream = SotwStream(registry)
    stream.on_snapshot(snap or snapshot(BASE))
    envoy = FakeEnvoy(stream)
    envoy.converge()
    return envoy, registry


def test_first_wildcard_request_gets_full_state_with_nonce_and_content_version() -> None:
    """The first CDS request is answered with every cluster, a nonce and a content hash."""
    stream = SotwStream(NodeRegistry())
    snap = snapshot(BASE)
    stream.on_snapshot(snap)
    [response] = FakeEnvoy(stream).request(CLUSTER)
    assert response.nonce
    assert response.version_info == snap.type_version(CLUSTER)
    assert len(response.resources) == 1


def test_ack_gets_no_response_and_unchanged_snapshot_sends_nothing() -> None:
    """After convergence, re-publishing identical content pushes nothing."""
    envoy, registry = connected()
    assert envoy.push(snapshot(BASE)) == []
    status = registry.node("envoy-1")
    assert all(t.in_sync for t in status.types.values())


def test_nonces_are_unique_on_a_stream() -> None:
    """Every response on one stream carries a fresh nonce."""
    envoy, _ = connected()
    nonces = {r.nonce for r in envoy.last.values()}
    assert len(nonces) == 4


def test_weight_change_pushes_clusters_first_and_routes_after_acks() -> None:
    """A new backend cluster reaches Envoy (CDS, then EDS) before the route that uses it."""
    envoy, _ = connected()
    pushed = envoy.push(reweighted())
    assert [r.type_url for r in pushed] == [CLUSTER]
    assert envoy.names(CLUSTER) == {"a", "b"}
    # CDS ACKed: Envoy now asks for b's endpoints; the route is still held back.
    assert envoy.request(CLUSTER, ack=pushed[0]) == []
    [eds] = envoy.request(ENDPOINT, ("a", "b"), ack=envoy.last[ENDPOINT])
    assert eds.type_url == ENDPOINT
    # Endpoints ACKed: now the route table goes out.
    [rds] = envoy.request(ENDPOINT, ("a", "b"), ack=eds)
    assert rds.type_url == ROUTE
    assert envoy.route_clusters() == {"a", "b"}


def test_removed_cluster_stays_until_route_without_it_is_acked() -> None:
    """Repointing a route keeps the old cluster in CDS until the new route is ACKed."""
    envoy, _ = connected()
    [cds] = envoy.push(repointed())
    assert envoy.names(CLUSTER) == {"a", "b"}
    envoy.request(CLUSTER, ack=cds)
    [eds] = envoy.request(ENDPOINT, ("a", "b"), ack=envoy.last[ENDPOINT])
    [rds] = envoy.request(ENDPOINT, ("a", "b"), ack=eds)
    assert envoy.route_clusters() == {"b"}
    [cds2] = envoy.request(ROUTE, (ROUTE_CONFIG_NAME,), ack=rds)
    assert cds2.type_url == CLUSTER
    assert envoy.names(CLUSTER) == {"b"}


def test_nacked_route_is_not_resent_and_keeps_its_clusters() -> None:
    """A NACK is recorded, not answered, and clusters the old route uses are not removed."""
    envoy, registry = connected()
    [cds] = envoy.push(repointed())
    envoy.request(CLUSTER, ack=cds)
    [eds] = envoy.request(ENDPOINT, ("a", "b"), ack=envoy.last[ENDPOINT])
    [rds] = envoy.request(ENDPOINT, ("a", "b"), ack=eds)
    assert envoy.request(ROUTE, (ROUTE_CONFIG_NAME,), ack=rds, error="invalid regex") == []
    nack = registry.node("envoy-1").of(ROUTE)
    assert (nack.nacks, nack.nack_error) == (1, "invalid regex")
    assert nack.nack_version == rds.version_info != nack.acked_version
    # CDS was never shrunk: "a" is what Envoy's old (kept) route uses.
    assert "a" in envoy.names(CLUSTER)
    # A later edit that uses "a" again goes out without any cluster removal.
    pushed = envoy.push(reweighted())
    assert [r.type_url for r in pushed] == [ENDPOINT]


def test_stale_nonce_is_ignored() -> None:
    """A request answering an older nonce neither ACKs nor triggers a push."""
    envoy, _ = connected()
    old = envoy.last[CLUSTER]
    [cds] = envoy.push(reweighted())
    assert envoy.request(CLUSTER, ack=old) == []
    # The real ACK still counts afterwards.
    assert envoy.request(CLUSTER, ack=cds) == []


def test_newly_subscribed_name_is_sent_even_if_unchanged() -> None:
    """Re-subscribing to endpoints (same content) gets them again."""
    envoy, _ = connected()
    eds = envoy.last[ENDPOINT]
    assert envoy.request(ENDPOINT, (), ack=eds) == []  # unsubscribe all
    [again] = envoy.request(ENDPOINT, ("a",), ack=None)
    assert again.version_info == eds.version_info


def test_cluster_change_resends_its_endpoints() -> None:
    """When a Cluster changes, its (unchanged) ClusterLoadAssignment follows."""
    envoy, _ = connected()
    changed = snapshot(
        BASE.replace(
            'endpoints: ["127.0.0.1:9001"]', 'endpoints: ["127.0.0.1:9001"], connect_timeout: 3s'
        )
    )
    [cds] = envoy.push(changed)
    [eds] = envoy.request(CLUSTER, ack=cds)
    assert eds.type_url == ENDPOINT
    assert eds.version_info == envoy.last[ENDPOINT].version_info


def test_reconnect_with_version_and_no_nonce_is_answered() -> None:
    """A fresh stream whose first request carries a version but no nonce still gets state."""
    registry = NodeRegistry()
    first = SotwStream(registry)
    first.on_snapshot(snapshot(BASE))
    envoy = FakeEnvoy(first)
    envoy.converge()
    version = envoy.last[CLUSTER].version_info
    first.close()
    second = SotwStream(registry)
    second.on_snapshot(snapshot(BASE))
    [cds] = FakeEnvoy(second).request(CLUSTER, version=version)
    assert cds.version_info == version


def test_unknown_type_and_unknown_names_get_no_response() -> None:
    """A name the snapshot lacks is not answered (the client waits for it)."""
    stream = SotwStream(NodeRegistry())
    stream.on_snapshot(snapshot(BASE))
    envoy = FakeEnvoy(stream)
    assert envoy.request(ENDPOINT, ("nope",)) == []
    assert envoy.request("type.googleapis.com/some.Other") == []


def test_first_connect_follows_ads_order() -> None:
    """Listeners wait until clusters and their endpoints are ACKed: CDS → EDS → LDS → RDS."""
    stream = SotwStream(NodeRegistry())
    stream.on_snapshot(snapshot(BASE))
    envoy = FakeEnvoy(stream)
    [cds] = envoy.request(CLUSTER)
    assert envoy.request(LISTENER) == []  # CDS not ACKed yet
    assert envoy.request(CLUSTER, ack=cds) == []
    [eds] = envoy.request(ENDPOINT, ("a",))
    assert eds.type_url == ENDPOINT
    [lds] = envoy.request(ENDPOINT, ("a",), ack=eds)
    assert lds.type_url == LISTENER


def test_api_listeners_go_only_to_clients_that_name_them() -> None:
    """A gRPC api_listener is left out of wildcard LDS (Envoy) and sent when asked by name."""
    snap = snapshot(
        BASE.replace(
            "clusters:", "grpc_services: [{name: svc.internal, cluster: a}]\nclusters:"
        ).replace('endpoints: ["127.0.0.1:9001"]', 'endpoints: ["127.0.0.1:9001"], protocol: http2')
    )
    assert snap.named_only == {"svc.internal"}
    envoy, _ = connected(snap)
    listener_names = set()
    for packed in envoy.last[LISTENER].resources:
        listener = listener_pb2.Listener()
        packed.Unpack(listener)
        listener_names.add(listener.name)
    assert listener_names == {"gw"}
    grpc_stream = SotwStream(NodeRegistry())
    grpc_stream.on_snapshot(snap)
    [named] = FakeEnvoy(grpc_stream).request(LISTENER, ("svc.internal",))
    assert len(named.resources) == 1


def test_reconnect_after_restart_keeps_clusters_the_held_routes_use(tmp_path: Path) -> None:
    """A client reconnecting with versions we published keeps its route's cluster until a
    route table without it is ACKed, even though this stream never sent it anything."""
    history = SnapshotHistory(tmp_path)
    before = snapshot(BASE)
    history.add(before)
    after = repointed()  # edited while the client was away: route to b, cluster a removed
    history.add(after)
    stream = SotwStream(NodeRegistry(), history=history)
    stream.on_snapshot(after)
    envoy = FakeEnvoy(stream)
    [cds] = envoy.request(CLUSTER, version=before.type_version(CLUSTER))
    assert envoy.names(CLUSTER) == {"a", "b"}  # "a" kept: the held route still uses it
    assert envoy.request(CLUSTER, ack=cds) == []
    [eds] = envoy.request(ENDPOINT, ("a", "b"), version=before.type_version(ENDPOINT))
    assert envoy.request(LISTENER, version=before.type_version(LISTENER)) == []  # after EDS
    [lds] = envoy.request(ENDPOINT, ("a", "b"), ack=eds)
    assert lds.type_url == LISTENER
    envoy.request(LISTENER, ack=lds)
    [rds] = envoy.request(ROUTE, (ROUTE_CONFIG_NAME,), version=before.type_version(ROUTE))
    assert envoy.route_clusters() == {"b"}
    [shrunk] = envoy.request(ROUTE, (ROUTE_CONFIG_NAME,), ack=rds)
    assert shrunk.type_url == CLUSTER and envoy.names(CLUSTER) == {"b"}
