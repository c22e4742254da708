"""The Envoy bootstrap we render is accepted by Envoy itself, plain and with TLS to xds."""

from __future__ import annotations

import datetime
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from smesh.envoy_process import envoy_binary, render_bootstrap, xds_tls_socket

pytestmark = pytest.mark.integration


def self_signed_ca() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smesh test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
@pytest.mark.parametrize(
    "node_id", ["gw-1", "n", "on"], ids=["name", "yaml-bool-n", "yaml-bool-on"]
)
def test_bootstrap_validates(tmp_path: Path, tls: bool, node_id: str) -> None:
    """Envoy accepts the rendered bootstrap, even for node ids YAML would read as booleans."""
    ca = tmp_path / "ca.pem"
    ca.write_bytes(self_signed_ca())
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
