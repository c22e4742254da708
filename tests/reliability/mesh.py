"""A real gateway (xds, extproc, Envoy) in front of recording backends, from one YAML template.

The template is ``str.format``-ed with ``port``, ``extproc_port``, ``keys`` (tenant →
``sha256:…`` hash), ``backend`` (backend name → port) and any extra fields given. Every
process started is stopped, whichever step fails.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smesh.extproc.keys import hash_api_key, new_api_key
from smesh.ports import free_port
from tests.integration.gateway import ExtProc, Gateway
from tests.integration.harness import Xds, start_envoy
from tests.reliability.backend import Record, RecordingBackend, records_of
from tests.reliability.client import Answer, Call, send

__all__ = ["Mesh", "chat_body", "recorded_gateway"]


@dataclass
class Mesh:
    gateway: Gateway
    backends: dict[str, RecordingBackend]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return self.gateway.port

    @property
    def keys(self) -> dict[str, str]:
        return self.gateway.keys

    def mark(self) -> dict[str, int]:
        """Where each backend's records stand now; pass it to :meth:`records`."""
        return {name: backend.count() for name, backend in self.backends.items()}

    def records(self, since: Mapping[str, int] | None = None) -> list[Record]:
        return records_of(self.backends.values(), since or {})

    def chat(
        self, tenant: str, model: str, *headers: tuple[str, str], port: int | None = None
    ) -> Answer:
        """One plain chat completion as ``tenant`` (fresh connection)."""
        call = Call(
            "POST",
            "/v1/chat/completions",
            (
                ("authorization", f"Bearer {self.keys[tenant]}"),
                ("content-type", "application/json"),
                *headers,
            ),
            chat_body(model),
        )
        return send(port or self.port, call)


def chat_body(model: Any, text: str = "hello there", **fields: Any) -> bytes:
    return json.dumps(
        {"model": model, "messages": [{"role": "user", "content": text}], **fields}
    ).encode()


def metrics_port_block(workers: int) -> int:
    """A port P with P … P+workers-1 all free: extproc worker i serves metrics on P+i.

    ``free_port()`` alone vouches for P only; P+1 is often some connection's source port
    at that moment, and a worker that cannot bind its metrics port takes extproc down.
    """
    for _ in range(100):
        socks: list[socket.socket] = []
        try:
            first = socket.socket()
            socks.append(first)
            first.bind(("127.0.0.1", 0))
            port: int = first.getsockname()[1]
            for offset in range(1, workers):
                other = socket.socket()
                socks.append(other)
                other.bind(("127.0.0.1", port + offset))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        return port
    raise RuntimeError(f"no block of {workers} free ports")


def start_recorded_gateway(
    tmp: Path, render: Callable[[int, int, dict[str, str]], str], tenants: list[str], workers: int
) -> Gateway:
    """``start_gateway`` with one extproc of ``workers`` processes on a free metrics block."""
    keys = {tenant: new_api_key() for tenant in tenants}
    config = tmp / "mesh.yaml"
    extproc = ExtProc(
        config, tmp / "extproc-0.log", workers=workers, metrics_port=metrics_port_block(workers)
    )
    port = free_port()
    config.write_text(render(port, extproc.port, {t: hash_api_key(k) for t, k in keys.items()}))
    xds = Xds(config, tmp / "xds.log")
    try:
        extproc.start()
        xds.start()
        envoy = start_envoy(tmp, xds)
    except BaseException:
        extproc.stop()
        xds.stop()
        raise
    return Gateway(tmp, port, keys, xds, [extproc], envoy)


@contextmanager
def recorded_gateway(
    tmp: Path,
    template: str,
    tenants: list[str],
    backends: list[str],
    extproc_workers: int = 1,
    **fields: Any,
) -> Iterator[Mesh]:
    started: dict[str, RecordingBackend] = {}
    try:
        for name in backends:
            started[name] = RecordingBackend(name, tmp).start()
        ports = {name: b.port for name, b in started.items()}

        def render(port: int, extproc_port: int, hashes: dict[str, str]) -> str:
            return template.format(
                port=port, extproc_port=extproc_port, keys=hashes, backend=ports, **fields
            )

        gateway = start_recorded_gateway(tmp, render, tenants, extproc_workers)
        try:
            yield Mesh(gateway, started, dict(fields))
        finally:
            gateway.stop()
    finally:
        for backend in started.values():
            backend.stop()
