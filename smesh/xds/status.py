"""Per-node config state, as operators need to see it: what each Envoy accepted or refused.

The ADS streams record into a :class:`NodeRegistry`; the admin endpoint serves it as JSON
(``/status``) and as Prometheus metrics (``/metrics``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["NodeRegistry", "NodeStatus", "RegistryCollector", "TypeStatus"]


@dataclass
class TypeStatus:
    sent_version: str = ""
    acked_version: str = ""
    acked_at: float | None = None
    nack_version: str = ""
    nack_error: str = ""
    nack_at: float | None = None
    pushes: int = 0
    acks: int = 0
    nacks: int = 0

    @property
    def in_sync(self) -> bool:
        return bool(self.sent_version) and self.sent_version == self.acked_version


@dataclass
class NodeStatus:
    node_id: str
    cluster: str = ""
    streams: int = 0
    connected_at: float | None = None
    types: dict[str, TypeStatus] = field(default_factory=dict)

    def of(self, type_url: str) -> TypeStatus:
        return self.types.setdefault(type_url, TypeStatus())


class NodeRegistry:
    """What every node (Envoy or extproc) holds, by resource type."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._nodes: dict[str, NodeStatus] = {}
        self._clock = clock

    def node(self, node_id: str) -> NodeStatus:
        return self._nodes.setdefault(node_id, NodeStatus(node_id))

    def connected(self, node_id: str, cluster: str) -> None:
        node = self.node(node_id)
        node.cluster, node.streams, node.connected_at = cluster, node.streams + 1, self._clock()

    def disconnected(self, node_id: str) -> None:
        node = self.node(node_id)
        node.streams = max(0, node.streams - 1)

    def sent(self, node_id: str, type_url: str, version: str) -> None:
        status = self.node(node_id).of(type_url)
        status.sent_version, status.pushes = version, status.pushes + 1

    def acked(self, node_id: str, type_url: str, version: str) -> None:
        status = self.node(node_id).of(type_url)
        status.acked_version, status.acked_at, status.acks = version, self._clock(), status.acks + 1

    def nacked(self, node_id: str, type_url: str, version: str, error: str) -> None:
        status = self.node(node_id).of(type_url)
        status.nack_version, status.nack_error = version, error
        status.nack_at, status.nacks = self._clock(), status.nacks + 1

    def nodes(self) -> Iterator[NodeStatus]:
        yield from self._nodes.values()

    def as_dict(self) -> dict[str, Any]:
        return {
            n.node_id: {
                **{k: v for k, v in asdict(n).items() if k != "types"},
                "types": {
                    t.rsplit(".", 1)[-1]: {**asdict(s), "in_sync": s.in_sync}
                    for t, s in n.types.items()
                },
            }
            for n in self._nodes.values()
        }


class RegistryCollector(Collector):
    """Prometheus view of the registry (read at scrape time, no copies kept)."""

    def __init__(self, registry: NodeRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        labels = ["node", "type"]
        pushes = CounterMetricFamily("smesh_xds_pushes", "Responses sent", labels=labels)
        acks = CounterMetricFamily("smesh_xds_acks", "ACKs received", labels=labels)
        nacks = CounterMetricFamily("smesh_xds_nacks", "NACKs received", labels=labels)
        in_sync = GaugeMetricFamily(
            "smesh_xds_in_sync", "1 when the last push was ACKed", labels=labels
        )
        streams = GaugeMetricFamily("smesh_xds_streams", "Open ADS streams", labels=["node"])
        for node in self._registry.nodes():
            streams.add_metric([node.node_id], node.streams)
            for type_url, status in node.types.items():
                key = [node.node_id, type_url.rsplit(".", 1)[-1]]
                pushes.add_metric(key, status.pushes)
                acks.add_metric(key, status.acks)
                nacks.add_metric(key, status.nacks)
                in_sync.add_metric(key, 1.0 if status.in_sync else 0.0)
        yield from (pushes, acks, nacks, in_sync, streams)
