"""Fallback through Envoy priorities: when the backend fails, the fallback cluster answers."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from smesh.ports import free_port
from tests.integration.harness import (
    Xds,
    chat,
    cluster_requests,
    start_envoy,
    start_simulator,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("failure", ["down", "500s"])
def test_fallback_serves_when_the_backend_fails(tmp_path: Path, failure: str) -> None:
    """A dead or erroring backend is retried on the next priority: the client sees 200s."""
    primary = start_simulator(tmp_path, *(["--failure-rate", "1"] if failure == "500s" else []))
    backup = start_simulator(tmp_path)
    port = free_port()
    config = tmp_path / "mesh.yaml"
    config.write_text(
        f"""
listeners: [{{name: gateway, port: {port}}}]
models:
  - name: chat
    backends: [{{cluster: primary}}]
    fallback: [backup]
    retries: {{attempts: 2, on: [connect-failure, reset, 5xx]}}
clusters:
  - {{name: primary, endpoints: ["127.0.0.1:{primary.port}"], outlier_detection: null}}
  - {{name: backup, endpoints: ["127.0.0.1:{backup.port}"], outlier_detection: null}}
"""
    )
    if failure == "down":
        primary.stop()
    xds = Xds(config, tmp_path / "xds.log").start()
    envoy = None
    try:
        envoy = start_envoy(tmp_path, xds)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        wait_until(
            lambda: (
                httpx.post(url, json=chat("chat"), headers={"x-smesh-model": "chat"}).status_code
                == 200
            ),
            timeout=10,
        )
        statuses = [
            httpx.post(
                url, json=chat("chat"), headers={"x-smesh-model": "chat"}, timeout=10
            ).status_code
            for _ in range(20)
        ]
        assert statuses == [200] * 20
        # Both priorities live in one Envoy cluster (backend~model); the backup simulator
        # is the one that answered.
        served = httpx.get(f"{backup.url}/metrics").text
        assert "vllm:e2e_request_latency_seconds_count" in served
        assert cluster_requests(envoy, "primary~chat") >= 20
    finally:
        if envoy is not None:
            envoy.stop()
        xds.stop()
        backup.stop()
        if primary.process.poll() is None:
            primary.stop()
