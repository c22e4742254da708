"""Watch ``mesh.yaml``; publish every valid edit, refuse every invalid one.

Saves are debounced (~100 ms, editors write files in several steps). An invalid edit is
logged as ``file:line: field: message`` lines and the last good snapshot keeps serving.
The parent directory is watched, not the file, so atomic-rename saves are seen too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from watchfiles import awatch

from smesh.config.loader import ConfigError, load_config
from smesh.config.schema import MeshConfig
from smesh.xds.cache import SnapshotCache
from smesh.xds.snapshot import InconsistentSnapshot, Snapshot

__all__ = ["FileSource"]

log = logging.getLogger(__name__)

Compile = Callable[[MeshConfig], Snapshot]


class FileSource:
    """One config file feeding one cache."""

    def __init__(
        self,
        path: str | Path,
        cache: SnapshotCache,
        compile_config: Compile,
        debounce_ms: int = 100,
    ) -> None:
        self.path = Path(path).resolve()
        self._cache = cache
        self._compile = compile_config
        self._debounce_ms = debounce_ms
        self.errors: list[str] = []
        self.config: MeshConfig | None = None
        self.loads = 0
        self.rejects = 0
        self.last_load_at: float | None = None

    def reload(self) -> bool:
        """Load, validate, compile and publish; False (old snapshot kept) on any error."""
        try:
            config = load_config(self.path)
            snapshot = self._compile(config)
            self._cache.publish(snapshot)
        except ConfigError as exc:
            return self._reject(exc.lines)
        except InconsistentSnapshot as exc:
            return self._reject([f"{self.path}:1: (snapshot): {p}" for p in exc.problems])
        except ValueError as exc:  # a translation error (e.g. a simulated cluster with no port)
            return self._reject([f"{self.path}:1: {exc}"])
        self.config, self.errors, self.last_load_at = config, [], time.time()
        self.loads += 1
        log.info("config %s loaded (snapshot %s)", self.path, snapshot.version)
        return True

    def _reject(self, lines: list[str]) -> bool:
        self.errors = lines
        self.rejects += 1
        for line in lines:
            log.error("invalid config, keeping the last good one: %s", line)
        return False

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Reload on every change until ``stop`` is set."""
        target = str(self.path)
        async for _ in awatch(
            self.path.parent,
            watch_filter=lambda _change, path: path == target,
            debounce=self._debounce_ms,
            step=20,
            stop_event=stop,
        ):
            self.reload()
