"""``smesh xds``: the control plane process — file source, cache, ADS server, admin."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from smesh.config.schema import Endpoint, MeshConfig
from smesh.xds.admin import make_admin_app
from smesh.xds.cache import SnapshotCache
from smesh.xds.filesource import FileSource
from smesh.xds.history import SnapshotHistory
from smesh.xds.server import ServerTls, start_server
from smesh.xds.snapshot import Snapshot
from smesh.xds.translate import translate

__all__ = ["XdsSettings", "compile_config", "run_xds"]

log = logging.getLogger(__name__)


def compile_config(
    config: MeshConfig, simulated: Mapping[str, Sequence[Endpoint]] | None = None
) -> Snapshot:
    """Config → Envoy resources → snapshot (pure)."""
    return Snapshot.build(translate(config, simulated))


@dataclass(frozen=True)
class XdsSettings:
    config: Path
    host: str = "127.0.0.1"
    port: int = 18000
    admin_port: int = 18001
    tls: ServerTls | None = None
    state_dir: Path | None = None  # snapshot history kept across restarts


async def run_xds(
    settings: XdsSettings,
    stop: asyncio.Event,
    compile_fn: Callable[[MeshConfig], Snapshot] = compile_config,
    on_ready: Callable[[int, int], None] | None = None,
) -> int:
    """Serve until ``stop`` is set; 1 if the first config is invalid, else 0."""
    history = SnapshotHistory(settings.state_dir / "snapshots" if settings.state_dir else None)
    cache = SnapshotCache(history=history)
    source = FileSource(settings.config, cache, compile_fn)
    if not source.reload():
        return 1
    server, port = await start_server(cache, f"{settings.host}:{settings.port}", settings.tls)

    def extra() -> dict[str, object]:
        return {
            "config": str(source.path),
            "config_errors": source.errors,
            "config_error_at": source.last_error_at if source.errors else None,
            "config_loaded_at": source.last_load_at,
            "loads": source.loads,
            "rejects": source.rejects,
        }

    runner = web.AppRunner(make_admin_app(cache, extra), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.admin_port)
    await site.start()
    admin_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    log.info("xds serving ADS on %s:%d, admin on :%d", settings.host, port, admin_port)
    if on_ready:
        on_ready(port, admin_port)
    watcher = asyncio.create_task(source.run(stop), name="config-watch")
    try:
        await stop.wait()
    finally:
        watcher.cancel()
        try:
            await watcher
        except asyncio.CancelledError:
            pass
        except Exception:  # run() never raises by design; if it ever does, say so
            log.exception("the config watcher failed")
        await server.stop(grace=1.0)
        await runner.cleanup()
    return 0


def main_xds(settings: XdsSettings) -> int:
    """Run in the foreground; SIGINT/SIGTERM stop it cleanly."""

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        def ready(port: int, admin_port: int) -> None:
            print(f"smesh-xds ADS on {settings.host}:{port} admin on :{admin_port}", flush=True)

        return await run_xds(settings, stop, on_ready=ready)

    return asyncio.run(main())
