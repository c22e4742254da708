"""Snapshot history: findable by per-type version, and still there after a restart."""

from __future__ import annotations

from pathlib import Path

from smesh.xds.history import SnapshotHistory
from smesh.xds.resources import CLUSTER, ROUTE
from tests.unit.test_sotw import BASE, reweighted, snapshot


def test_find_by_type_version_and_survive_a_restart(tmp_path: Path) -> None:
    """A new history over the same folder finds what the old one stored, content-checked."""
    first, second = snapshot(BASE), reweighted()
    history = SnapshotHistory(tmp_path)
    history.add(first)
    history.add(second)
    reloaded = SnapshotHistory(tmp_path)
    found = reloaded.find(CLUSTER, first.type_version(CLUSTER))
    assert found is not None and found.version == first.version
    assert reloaded.find(ROUTE, second.type_version(ROUTE)) is not None
    assert reloaded.find(ROUTE, "nope") is None


def test_keeps_only_the_newest(tmp_path: Path) -> None:
    """Past ``keep`` snapshots the oldest is forgotten, on disk too."""
    history = SnapshotHistory(tmp_path, keep=1)
    old = snapshot(BASE)
    history.add(old)
    history.add(reweighted())
    assert history.find(CLUSTER, old.type_version(CLUSTER)) is None
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 1


def test_tampered_folder_is_ignored(tmp_path: Path) -> None:
    """A folder whose content does not hash to its name is not trusted."""
    snap = snapshot(BASE)
    SnapshotHistory(tmp_path).add(snap)
    (tmp_path / snap.version).rename(tmp_path / "0000000000000000")
    assert SnapshotHistory(tmp_path).find(CLUSTER, snap.type_version(CLUSTER)) is None
