"""``smesh up``: xds, the simulators a config declares, and a real Envoy — one command.

Prints the gateway URL and a status table once Envoy serves; SIGINT/SIGTERM stop every
child. Without ``--config`` the embedded demo mesh is copied to ``.smesh/mesh.yaml`` and
watched there, so editing that file reroutes the running gateway.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from smesh.envoy_process import EnvoyProcess, render_bootstrap
from smesh.ports import free_port
from smesh.simpool import SimulatorPool
from smesh.xds.app import XdsSettings, compile_config, run_xds
from smesh.xds.config import MeshConfig
from smesh.xds.loader import ConfigError, load_config
from smesh.xds.snapshot import Snapshot

__all__ = ["StackSettings", "run_stack", "status_table"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StackSettings:
    config: Path | None
    port: int | None = None
    state_dir: Path = Path(".smesh")


def _prepare_config(settings: StackSettings) -> Path:
    (settings.state_dir / "logs").mkdir(parents=True, exist_ok=True)
    if settings.config is not None:
        return settings.config
    path = settings.state_dir / "mesh.yaml"
    path.write_text(resources.files("smesh").joinpath("default_mesh.yaml").read_text())
    return path


def status_table(config: MeshConfig, gateway: str, xds: str, admin: str, state: Path) -> str:
    rows = [("gateway", gateway), ("xds (ADS)", xds), ("xds status", f"{admin}/status")]
    for model in config.models:
        split = ", ".join(f"{b.cluster} {b.weight}" for b in model.backends)
        fallback = f" → fallback {', '.join(model.fallback)}" if model.fallback else ""
        rows.append((f"model {model.name}", f"{split}{fallback}"))
    rows.append(("logs", str(state)))
    width = max(len(k) for k, _ in rows)
    lines = [f"  {k.ljust(width)}  {v}" for k, v in rows]
    first = config.models[0].name if config.models else "MODEL"
    example = (
        f"curl -s {gateway}/v1/chat/completions -H 'content-type: application/json' "
        f"-H 'x-smesh-model: {first}' "
        f'-d \'{{"model": "{first}", "messages": [{{"role": "user", "content": "hi"}}]}}\''
    )
    return "\n".join(["Sovereign Mesh is up.", *lines, "", "Try:", f"  {example}", ""])


def _with_port(config: MeshConfig, port: int | None) -> MeshConfig:
    """The config with its first listener moved to ``port`` (``smesh up --port``)."""
    if port is None or not config.listeners:
        return config
    first = config.listeners[0].model_copy(update={"port": port})
    return config.model_copy(update={"listeners": (first, *config.listeners[1:])})


async def _run(settings: StackSettings) -> int:
    config_path = _prepare_config(settings)
    state = settings.state_dir.resolve()
    logs = state / "logs"
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        for line in exc.lines:
            print(line)
        return 1
    config = _with_port(config, settings.port)
    pool = SimulatorPool(logs)

    def compile_fn(cfg: MeshConfig) -> Snapshot:
        # --port applies to every reload, so later edits of the file keep it.
        cfg = _with_port(cfg, settings.port)
        return compile_config(cfg, pool.endpoints(cfg))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    ports: asyncio.Future[tuple[int, int]] = loop.create_future()
    xds_settings = XdsSettings(config_path, port=free_port(), admin_port=free_port())
    xds = asyncio.create_task(
        run_xds(xds_settings, stop, compile_fn, lambda p, a: ports.set_result((p, a)))
    )
    envoy: EnvoyProcess | None = None
    try:
        waiting: set[asyncio.Future[Any]] = {xds, ports}
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if xds in done:
            return xds.result()
        xds_port, admin_port = ports.result()
        envoy_admin = free_port()
        bootstrap = logs / "envoy-bootstrap.yaml"
        bootstrap.write_text(render_bootstrap(xds_port, envoy_admin, f"smesh-up-{os.getpid()}"))
        envoy = EnvoyProcess(
            bootstrap, envoy_admin, base_id=os.getpid() % 60000, log_path=logs / "envoy.log"
        ).start()
        await asyncio.to_thread(envoy.wait_ready, 60.0)
        listener = config.listeners[0]
        host = "127.0.0.1" if listener.address in ("0.0.0.0", "::") else listener.address
        print(
            status_table(
                config,
                gateway=f"http://{host}:{listener.port}",
                xds=f"127.0.0.1:{xds_port}",
                admin=f"http://127.0.0.1:{admin_port}",
                state=logs,
            ),
            flush=True,
        )
        print("Ctrl-C stops everything.", flush=True)
        await stop.wait()
        return await xds
    finally:
        stop.set()
        if envoy is not None:
            envoy.stop()
        if not xds.done():
            await asyncio.wait({xds}, timeout=5)
        pool.stop_all()
        print("stopped.", flush=True)


def run_stack(settings: StackSettings) -> int:
    return asyncio.run(_run(settings))
