"""failure_mode_allow is per model: with extproc down, only opted-out models are served.

A real Envoy, xds, and a recording backend of our own (tests/reliability/backend.py) that
keeps every request it receives; extproc is never started, so every request sees it
down. The opted-out model is reached without a tenant check — and still without the
client's credentials or cookies, which Envoy removes at the router.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from smesh.envoy_process import EnvoyProcess
from smesh.ports import free_port
from tests.integration.harness import Xds, start_envoy, wait_until
from tests.reliability.backend import RecordingBackend

pytestmark = pytest.mark.integration

MESH = """
listeners: [{{name: gateway, port: {port}}}]
extproc: {{port: {dead}}}
tenants: [{{name: a}}]
models:
  - {{name: public-chat, backends: [{{cluster: b}}], failure_mode_allow: true}}
  - {{name: private-chat, backends: [{{cluster: b}}]}}
clusters:
  - {{name: b, endpoints: ["127.0.0.1:{backend}"]}}
"""


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[int, RecordingBackend]]:
    backend = RecordingBackend("b", tmp_path).start()
    port = free_port()
    config = tmp_path / "mesh.yaml"
    config.write_text(MESH.format(port=port, dead=free_port(), backend=backend.port))
    xds = Xds(config, tmp_path / "xds.log").start()
    envoy: EnvoyProcess | None = None
    try:
        envoy = start_envoy(tmp_path, xds)
        yield port, backend
    finally:
        if envoy is not None:
            envoy.stop()
        xds.stop()
        backend.stop()


def _post(port: int, model: str) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        headers={
            "authorization": "Bearer sk-anything",
            "cookie": "session=secret",
            "x-smesh-tenant": "spoofed",
        },
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    )


def test_only_the_opted_out_model_is_served_while_extproc_is_down(
    stack: tuple[int, RecordingBackend],
) -> None:
    """public-chat passes through unprocessed; private-chat fails closed with a JSON 500."""
    port, backend = stack
    wait_until(lambda: _post(port, "public-chat").status_code == 200, timeout=15)
    closed = _post(port, "private-chat")
    assert closed.status_code == 500
    assert closed.json()["error"]["code"] == "gateway_error"
    before = backend.count()
    assert _post(port, "private-chat").status_code == 500
    assert backend.count() == before  # fail closed: nothing reached a model server
    records = backend.records()
    assert records and all(r.header("authorization") == [] for r in records)
    assert all(r.header("cookie") == [] for r in records)
    assert all(r.header("x-smesh-tenant") == [] for r in records)
