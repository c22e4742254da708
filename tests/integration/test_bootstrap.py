"""The Envoy bootstrap we render is accepted by Envoy itself, plain and with TLS to xds."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from smesh.envoy_process import envoy_binary, render_bootstrap, xds_tls_socket
from tests.certs import make_pki

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
@pytest.mark.parametrize(
    "node_id", ["gw-1", "n", "on"], ids=["name", "yaml-bool-n", "yaml-bool-on"]
)
def test_bootstrap_validates(tmp_path: Path, tls: bool, node_id: str) -> None:
    """Envoy accepts the rendered bootstrap, even for node ids YAML would read as booleans."""
    ca = make_pki(tmp_path).ca
    socket = xds_tls_socket(str(ca), sni="xds.internal") if tls else ""
    path = tmp_path / "bootstrap.yaml"
    path.write_text(render_bootstrap(18000, 19000, node_id, transport_socket=socket))
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
