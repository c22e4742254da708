"""``smesh up``: xds, extproc, the simulators a config declares, and a real Envoy.

Prints the gateway URL and a status table once Envoy serves; SIGINT/SIGTERM stop every
child. Without ``--config`` the embedded demo mesh is written to ``.smesh/mesh.yaml``
with a fresh demo API key (only its hash is in the file; the key is printed once) and
watched there, so editing that file reroutes the running gateway.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import IO, Any

from smesh.children import stop_process
from smesh.config.loader import ConfigError, load_config
from smesh.config.schema import MeshConfig
from smesh.envoy_process import EnvoyProcess, render_bootstrap
from smesh.extproc.keys import hash_api_key, new_api_key
from smesh.ports import free_port, wait_tcp
from smesh.simpool import SimulatorPool
from smesh.xds.app import XdsSettings, compile_config, run_xds
from smesh.xds.snapshot import Snapshot

__all__ = ["StackSettings", "run_stack", "status_table"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StackSettings:
    config: Path | None
    port: int | None = None
    state_dir: Path = Path(".smesh")
    host: str | None = None  # the first listener's address (0.0.0.0 in a container)


def _prepare_config(settings: StackSettings) -> tuple[Path, str | None]:
    """The config path to watch, and the demo key when the embedded default is used."""
    (settings.state_dir / "logs").mkdir(parents=True, exist_ok=True)
    if settings.config is not None:
        return settings.config, None
    key = new_api_key()
    template = resources.files("smesh").joinpath("default_mesh.yaml").read_text()
    path = settings.state_dir / "mesh.yaml"
    path.write_text(Template(template).substitute(DEMO_KEY_HASH=hash_api_key(key)))
    return path, key


def status_table(
    config: MeshConfig, gateway: str, xds: str, admin: str, state: Path, demo_key: str | None
) -> str:
    rows = [("gateway", gateway), ("xds (ADS)", xds), ("xds status", f"{admin}/status")]
    for model in config.models:
        split = ", ".join(f"{b.cluster} {b.weight}" for b in model.backends)
        fallback = f" → fallback {', '.join(model.fallback)}" if model.fallback else ""
        rows.append((f"model {model.name}", f"{split}{fallback}"))
    rows.extend((f"tenant {t.name}", f"models {', '.join(t.models)}") for t in config.tenants)
    if demo_key:
        rows.append(("demo API key", demo_key))
    rows.append(("logs", str(state)))
    width = max(len(k) for k, _ in rows)
    lines = [f"  {k.ljust(width)}  {v}" for k, v in rows]
    first = config.models[0].name if config.models else "MODEL"
    auth = (
        f"-H 'authorization: Bearer {demo_key}' "
        if demo_key
        else ("-H 'authorization: Bearer YOUR_KEY' " if config.extproc else "")
    )
    route = "" if config.extproc else f"-H 'x-smesh-model: {first}' "
    example = (
        f"curl -s {gateway}/v1/chat/completions -H 'content-type: application/json' {auth}{route}"
        f'-d \'{{"model": "{first}", "messages": [{{"role": "user", "content": "hi"}}]}}\''
    )
    return "\n".join(["Sovereign Mesh is up.", *lines, "", "Try:", f"  {example}", ""])


def _with_ports(
    config: MeshConfig, settings: StackSettings, extproc_port: int | None
) -> MeshConfig:
    """``--port``/``--host`` move the first listener; extproc runs where up started it."""
    update: dict[str, Any] = {}
    moved = {
        k: v for k, v in (("port", settings.port), ("address", settings.host)) if v is not None
    }
    if moved and config.listeners:
        first = config.listeners[0].model_copy(update=moved)
        update["listeners"] = (first, *config.listeners[1:])
    if extproc_port is not None and config.extproc is not None:
        update["extproc"] = config.extproc.model_copy(
            update={"address": "127.0.0.1", "port": extproc_port}
        )
    return config.model_copy(update=update) if update else config


def _start_extproc(config_path: Path, port: int, log_file: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "smesh.cli",
            "extproc",
            "--config",
            str(config_path),
            "--port",
            str(port),
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )


async def _run(settings: StackSettings) -> int:
    config_path, demo_key = _prepare_config(settings)
    state = settings.state_dir.resolve()
    logs = state / "logs"
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        for line in exc.lines:
            print(line)
        return 1
    extproc_port = free_port() if config.extproc is not None else None
    config = _with_ports(config, settings, extproc_port)
    pool = SimulatorPool(logs)

    def compile_fn(cfg: MeshConfig) -> Snapshot:
        # Overrides apply to every reload, so later edits of the file keep them.
        cfg = _with_ports(cfg, settings, extproc_port)
        return compile_config(cfg, pool.endpoints(cfg))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    extproc_log = (logs / "extproc.log").open("ab")
    extproc = (
        _start_extproc(config_path, extproc_port, extproc_log) if extproc_port is not None else None
    )
    ports: asyncio.Future[tuple[int, int]] = loop.create_future()
    xds_settings = XdsSettings(
        config_path, port=free_port(), admin_port=free_port(), state_dir=state / "xds"
    )
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
        # Fail closed means a dead extproc answers every request with 500: say so now.
        if extproc_port is not None and not await asyncio.to_thread(
            wait_tcp, extproc_port, 30.0, extproc
        ):
            print(f"extproc did not start; see {logs / 'extproc.log'}", flush=True)
            return 1
        listener = config.listeners[0]
        host = "127.0.0.1" if listener.address in ("0.0.0.0", "::") else listener.address
        print(
            status_table(
                config,
                gateway=f"http://{host}:{listener.port}",
                xds=f"127.0.0.1:{xds_port}",
                admin=f"http://127.0.0.1:{admin_port}",
                state=logs,
                demo_key=demo_key,
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
        stop_process(extproc)
        extproc_log.close()
        if not xds.done():
            await asyncio.wait({xds}, timeout=5)
        pool.stop_all()
        print("stopped.", flush=True)


def run_stack(settings: StackSettings) -> int:
    return asyncio.run(_run(settings))
