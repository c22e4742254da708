"""The current snapshot, and who wants to hear when it changes.

Sources (file watcher, Kubernetes) call :meth:`SnapshotCache.publish`; every ADS stream
registers a callback. Only consistent snapshots are published, so a stream never sees a
route to a cluster that does not exist. All calls happen on the server's event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from smesh.xds.history import SnapshotHistory
from smesh.xds.snapshot import InconsistentSnapshot, Snapshot, check_consistency
from smesh.xds.status import NodeRegistry

__all__ = ["SnapshotCache"]

log = logging.getLogger(__name__)

Watcher = Callable[[Snapshot], None]


class SnapshotCache:
    """Holds the one snapshot every node gets, plus the per-node status registry."""

    def __init__(
        self, registry: NodeRegistry | None = None, history: SnapshotHistory | None = None
    ) -> None:
        self.registry = registry or NodeRegistry()
        self.history = history or SnapshotHistory()
        self._snapshot: Snapshot | None = None
        self._watchers: list[Watcher] = []

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    def publish(self, snapshot: Snapshot) -> bool:
        """Make ``snapshot`` current; False when it equals the current one (nothing to push).

        Raises :class:`InconsistentSnapshot` (and keeps the old one) if it has dangling
        references.
        """
        if problems := check_consistency(snapshot):
            raise InconsistentSnapshot(problems)
        if self._snapshot is not None and self._snapshot.version == snapshot.version:
            return False
        self._snapshot = snapshot
        self.history.add(snapshot)
        log.info("snapshot %s published", snapshot.version)
        for watcher in list(self._watchers):
            watcher(snapshot)
        return True

    def watch(self, watcher: Watcher) -> Callable[[], None]:
        """Call ``watcher`` with every new snapshot; returns the function that stops it."""
        self._watchers.append(watcher)
        return lambda: self._watchers.remove(watcher)
