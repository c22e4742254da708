"""Shared config builders for the translator tests: one sample mesh using every feature."""

from __future__ import annotations

from typing import Any

from smesh.config import schema as config

# A key set with one (dummy) key: config validation, like Envoy, rejects an empty one.
JWKS = '{"keys": [{"kty": "RSA", "kid": "k1", "n": "AQAB", "e": "AQAB"}]}'


def mesh(**document: Any) -> config.MeshConfig:
    """A MeshConfig from a ``mesh.yaml``-shaped dict (as an operator would write it)."""
    return config.MeshConfig.model_validate(document)


def sample_config() -> config.MeshConfig:
    """Canary weights, aliases, fallback, TLS, HTTP/2, health checks and a simulated cluster."""
    return mesh(
        listeners=[{"name": "gateway", "port": 10000, "address": "0.0.0.0"}],
        models=[
            {
                "name": "llama-3-70b",
                "aliases": ["llama", "meta/llama-3.1+70b"],
                "backends": [
                    {"cluster": "vllm-a", "weight": 90},
                    {"cluster": "vllm-canary", "weight": 10},
                ],
                "timeout": "90s",
                "retries": {"attempts": 2, "per_try_timeout": "30s", "on": ["5xx", "reset"]},
            },
            {
                "name": "mistral-7b",
                "backends": [{"cluster": "vllm-a"}],
                "fallback": ["tgi-b", "sim"],
                "retries": {"attempts": 3},
            },
            {
                "name": "qwen",
                "backends": [{"cluster": "sim", "weight": 1}, {"cluster": "tgi-b", "weight": 0}],
                "retries": {"attempts": 0},
            },
        ],
        clusters=[
            {
                "name": "vllm-a",
                "region": "eu-west",
                "endpoints": ["10.0.0.1:8000", {"address": "10.0.0.2", "port": 8000, "weight": 3}],
                "connect_timeout": "250ms",
                "health_check": {"path": "/health", "interval": "2s", "timeout": "500ms"},
                "circuit_breakers": {"max_requests": 512, "max_retries": 5},
            },
            {
                "name": "vllm-canary",
                "endpoints": ["10.0.1.1:8000"],
                "protocol": "http2",
                "outlier_detection": None,
            },
            {
                "name": "tgi-b",
                "region": "eu-central",
                "endpoints": ["10.0.2.1:8080"],
                "health_check": {},
            },
            {"name": "sim", "simulate": {"replicas": 2, "port": 9100}},
            {
                "name": "secure",
                "endpoints": ["10.0.3.1:443"],
                "protocol": "http2",
                "tls": {
                    "sni": "models.internal",
                    "ca_file": "/etc/smesh/ca.pem",
                    "cert_file": "/etc/smesh/client.pem",
                    "key_file": "/etc/smesh/client.key",
                },
            },
        ],
    )
