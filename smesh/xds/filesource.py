"""Watch ``mesh.yaml``; publish every valid edit, refuse every invalid one, never stop watching.

Saves are debounced (editors write files in several steps) and then read until two reads
agree (:func:`~smesh.config.loader.read_settled`), so a file caught mid-write is never
applied. An invalid edit — an empty file included — is logged as ``file:line: field:
message`` lines, shown in ``/status``, and the last good snapshot keeps serving.

Loading and compiling run in a worker thread: compiling may start simulator processes
and wait for them (``smesh up``), and the event loop must keep serving ADS streams
meanwhile. Publishing happens back on the loop, where the streams live. Any failure of
one reload (a translation bug, a simulator that will not stop) is logged with its
traceback and reported; the watcher goes on. The parent directory is watched, not the
file, so atomic-rename saves are seen too.
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
# Two reads this far apart must agree before a save is applied.
SETTLE_S = 0.05
# After the watcher itself fails (the directory vanished...), try again this much later.
REWATCH_S = 1.0


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
        self.last_error_at: float | None = None

    def _build(self, settle_s: float) -> tuple[MeshConfig, Snapshot] | list[str]:
        """Load, validate and compile (blocking); the error lines instead on any failure."""
        try:
            config = load_config(self.path, settle_s=settle_s)
            return config, self._compile(config)
        except ConfigError as exc:
            return exc.lines
        except ValueError as exc:  # a translation error (e.g. a simulated cluster with no port)
            return [f"{self.path}:1: {exc}"]
        except Exception as exc:
            log.exception("compiling %s failed", self.path)
            return [f"{self.path}:1: (compile): {type(exc).__name__}: {exc}"]

    def _publish(self, built: tuple[MeshConfig, Snapshot] | list[str]) -> bool:
        if isinstance(built, list):
            return self._reject(built)
        config, snapshot = built
        try:
            self._cache.publish(snapshot)
        except InconsistentSnapshot as exc:
            return self._reject([f"{self.path}:1: (snapshot): {p}" for p in exc.problems])
        self.config, self.errors, self.last_load_at = config, [], time.time()
        self.loads += 1
        log.info("config %s loaded (snapshot %s)", self.path, snapshot.version)
        return True

    def reload(self) -> bool:
        """Load, validate, compile and publish now (at start, before serving)."""
        return self._publish(self._build(settle_s=0.0))

    async def reload_async(self) -> bool:
        """The same, with the blocking part in a thread so ADS streams keep flowing."""
        built = await asyncio.to_thread(self._build, SETTLE_S)
        return self._publish(built)

    def _reject(self, lines: list[str]) -> bool:
        self.errors = lines
        self.rejects += 1
        self.last_error_at = time.time()
        for line in lines:
            log.error("invalid config, keeping the last good one: %s", line)
        return False

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Reload on every change until ``stop`` is set; a failure never ends the watch."""
        target = str(self.path)
        while stop is None or not stop.is_set():
            try:
                async for _ in awatch(
                    self.path.parent,
                    watch_filter=lambda _change, path: path == target,
                    debounce=self._debounce_ms,
                    step=20,
                    stop_event=stop,
                ):
                    await self.reload_async()
                return  # awatch ends only when stop is set
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("watching %s failed; watching again in %.0fs", target, REWATCH_S)
                self._reject([f"{self.path}:1: (watch): the file watcher failed; restarting it"])
                await asyncio.sleep(REWATCH_S)
