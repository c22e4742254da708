"""Recent snapshots by content version, kept across xds restarts.

Why: a reconnecting Envoy tells us only the *versions* it holds (``version_info``, no
nonce). Versions are content hashes, so if we published that version before we know
exactly which clusters and routes the Envoy still uses — and make-before-break can keep a
removed cluster until a route table without it is ACKed, instead of deleting it under a
live route (measured: an edit made while xds was down gave 7 to 14 503s on reconnect).

Snapshots are written to ``directory`` (one folder per snapshot, one DiscoveryResponse
per resource type) so a restarted process still knows them.
"""

from __future__ import annotations

import logging
import shutil
from collections import OrderedDict
from pathlib import Path

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import DecodeError, Message

from smesh.xds.resources import ADS_ORDER, CLUSTER, ENDPOINT, LISTENER, ROUTE
from smesh.xds.snapshot import Snapshot

__all__ = ["SnapshotHistory"]

log = logging.getLogger(__name__)

_MESSAGES: dict[str, type[Message]] = {
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
}


def _file(type_url: str) -> str:
    return type_url.rsplit(".", 1)[-1] + ".pb"


class SnapshotHistory:
    """The last ``keep`` snapshots, findable by any of their per-type versions."""

    def __init__(self, directory: Path | None = None, keep: int = 16) -> None:
        self._directory = directory
        self._keep = keep
        self._snapshots: OrderedDict[str, Snapshot] = OrderedDict()
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            self._load(directory)

    def add(self, snapshot: Snapshot) -> None:
        self._snapshots.pop(snapshot.version, None)
        self._snapshots[snapshot.version] = snapshot
        if self._directory is not None:
            self._write(self._directory / snapshot.version, snapshot)
        while len(self._snapshots) > self._keep:
            old, _ = self._snapshots.popitem(last=False)
            if self._directory is not None:
                shutil.rmtree(self._directory / old, ignore_errors=True)

    def find(self, type_url: str, type_version: str) -> Snapshot | None:
        """The newest snapshot whose ``type_url`` resources had ``type_version``."""
        for snapshot in reversed(self._snapshots.values()):
            if snapshot.type_version(type_url) == type_version:
                return snapshot
        return None

    @staticmethod
    def _write(folder: Path, snapshot: Snapshot) -> None:
        tmp = folder.with_name(folder.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        for type_url in ADS_ORDER:
            response = discovery_pb2.DiscoveryResponse(
                type_url=type_url, version_info=snapshot.type_version(type_url)
            )
            for name in sorted(snapshot.resources[type_url]):
                response.resources.add().Pack(snapshot.resources[type_url][name])
            (tmp / _file(type_url)).write_bytes(response.SerializeToString())
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)  # a folder is either complete or absent

    def _load(self, directory: Path) -> None:
        folders = sorted(
            (f for f in directory.iterdir() if f.is_dir() and not f.name.endswith(".tmp")),
            key=lambda f: f.stat().st_mtime,
        )
        for folder in folders[-self._keep :]:
            try:
                snapshot = self._read(folder)
            except (OSError, DecodeError) as exc:
                log.warning("ignoring unreadable snapshot %s: %s", folder, exc)
                continue
            if snapshot.version != folder.name:
                log.warning(
                    "ignoring snapshot %s: its content hashes to %s", folder, snapshot.version
                )
                continue
            self._snapshots[snapshot.version] = snapshot

    @staticmethod
    def _read(folder: Path) -> Snapshot:
        resources: dict[str, dict[str, Message]] = {}
        for type_url in ADS_ORDER:
            response = discovery_pb2.DiscoveryResponse.FromString(
                (folder / _file(type_url)).read_bytes()
            )
            by_name: dict[str, Message] = {}
            for packed in response.resources:
                message = _MESSAGES[type_url]()
                packed.Unpack(message)
                name = getattr(message, "cluster_name", "") or getattr(message, "name", "")
                by_name[name] = message
            resources[type_url] = by_name
        return Snapshot.build(resources)
