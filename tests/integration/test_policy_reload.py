"""Operators edit tenants in the YAML; extproc and Envoy follow without a restart."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from smesh.extproc.keys import hash_api_key, new_api_key
from tests.integration.gateway import simulated_gateway
from tests.integration.harness import wait_until

pytestmark = pytest.mark.integration


def test_new_tenant_key_works_after_a_save_and_a_removed_one_stops(tmp_path: Path) -> None:
    """A saved new tenant's key works within seconds, a removed one is refused, and a broken
    save changes nothing."""
    late_key = new_api_key()

    def render(sim: int, port: int, extproc_port: int, keys: dict[str, str]) -> str:
        return f"""
listeners: [{{name: gateway, port: {port}}}]
extproc: {{port: {extproc_port}}}
tenants:
  - {{name: first, api_keys: ["{keys["first"]}"]}}
models: [{{name: chat, backends: [{{cluster: sim}}]}}]
clusters: [{{name: sim, endpoints: ["127.0.0.1:{sim}"]}}]
"""

    config = tmp_path / "mesh.yaml"
    with simulated_gateway(tmp_path, render, ["first"]) as gateway:

        def status(key: str) -> int:
            return gateway.chat(key).status_code

        assert status(late_key) == 401
        original = config.read_text()
        config.write_text(
            original.replace(
                "tenants:\n",
                f'tenants:\n  - {{name: late, api_keys: ["{hash_api_key(late_key)}"]}}\n',
            )
        )
        wait_until(lambda: status(late_key) == 200, timeout=10, step=0.1)
        # A broken save is refused by extproc too: the late tenant keeps working.
        config.write_text(config.read_text().replace("name: late,", "name: late, colour: red,"))
        wait_until(lambda: bool(gateway.xds.status()["config_errors"]), timeout=10)
        time.sleep(0.3)  # extproc watches the same file with the same debounce
        for _ in range(10):
            assert status(late_key) == 200
        config.write_text(original)
        wait_until(lambda: status(late_key) == 401, timeout=10, step=0.1)
        assert status(gateway.keys["first"]) == 200
