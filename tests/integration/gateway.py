"""A whole gateway for tests: simulators, extproc, xds and a real Envoy, from one YAML."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from smesh.envoy_process import EnvoyProcess
from smesh.extproc.keys import hash_api_key, new_api_key
from smesh.ports import free_port, wait_http
from tests.integration.harness import Simulator, Xds, start_envoy, start_simulator


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class JwtIssuer:
    """An RSA key pair; signs RS256 tokens and publishes the matching JWKS."""

    issuer: str = "https://idp.test"
    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )

    def jwks(self) -> str:
        numbers = self.key.public_key().public_numbers()
        n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
        e = numbers.e.to_bytes(3, "big")
        jwk = {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "k1", "n": _b64(n), "e": _b64(e)}
        return json.dumps({"keys": [jwk]})

    def token(self, claims: dict[str, object], key: rsa.RSAPrivateKey | None = None) -> str:
        header = _b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "k1"}).encode())
        body = {"iss": self.issuer, "aud": "smesh", "exp": int(time.time()) + 600, **claims}
        payload = _b64(json.dumps(body).encode())
        signing_input = f"{header}.{payload}".encode()
        signature = (key or self.key).sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return f"{header}.{payload}.{_b64(signature)}"


@dataclass
class ExtProc:
    config: Path
    log_path: Path
    port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    workers: int = 1
    process: subprocess.Popen[bytes] | None = None
    extra_args: tuple[str, ...] = ()

    def start(self) -> ExtProc:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "smesh.cli",
                "extproc",
                "--config",
                str(self.config),
                "--port",
                str(self.port),
                "--metrics-port",
                str(self.metrics_port),
                "--workers",
                str(self.workers),
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_http(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=30)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def metrics(self, worker: int = 0) -> str:
        url = f"http://127.0.0.1:{self.metrics_port + worker}/metrics"
        return httpx.get(url, timeout=5).text


@dataclass
class Gateway:
    """Everything started; ``keys`` maps tenant name → raw API key."""

    tmp: Path
    port: int
    keys: dict[str, str]
    xds: Xds
    extprocs: list[ExtProc]
    envoy: EnvoyProcess

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, tenant: str | None = None, api_key: str | None = None) -> openai.OpenAI:
        key = api_key if api_key is not None else self.keys[tenant or ""]
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=20)

    def post(self, path: str, body: bytes, key: str | None, **headers: str) -> httpx.Response:
        if key is not None:
            headers["authorization"] = f"Bearer {key}"
        headers.setdefault("content-type", "application/json")
        return httpx.post(f"{self.url}{path}", content=body, headers=headers, timeout=20)

    def chat(self, key: str, text: str = "hi", model: str = "chat") -> httpx.Response:
        """One chat completion with ``key``, as raw HTTP (status and headers visible)."""
        return httpx.post(
            f"{self.url}/v1/chat/completions",
            headers={"authorization": f"Bearer {key}"},
            json={"model": model, "messages": [{"role": "user", "content": text}]},
            timeout=10,
        )

    def stop(self) -> None:
        self.envoy.stop()
        for extproc in self.extprocs:
            extproc.stop()
        self.xds.stop()


Render = Callable[[int, int, dict[str, str]], str]


def start_gateway(
    tmp: Path,
    render: Render,
    tenants: list[str],
    extproc_workers: list[int] | None = None,
    keys: dict[str, str] | None = None,
    xds_args: tuple[str, ...] = (),
    extproc_args: tuple[str, ...] = (),
    xds_transport_socket: str = "",
) -> Gateway:
    """``render(port, extproc_port, key_hashes)`` gives the mesh YAML; keys are made here."""
    keys = keys or {t: new_api_key() for t in tenants}
    hashes_ = {t: hash_api_key(k) for t, k in keys.items()}
    port = free_port()
    extprocs = [
        ExtProc(tmp / "mesh.yaml", tmp / f"extproc-{i}.log", workers=w, extra_args=extproc_args)
        for i, w in enumerate(extproc_workers or [1])
    ]
    config = tmp / "mesh.yaml"
    config.write_text(render(port, extprocs[0].port, hashes_))
    xds = Xds(config, tmp / "xds.log", extra_args=xds_args)
    started: list[ExtProc] = []
    try:
        for extproc in extprocs:
            started.append(extproc.start())
        xds.start()
        envoy = start_envoy(tmp, xds, transport_socket=xds_transport_socket)
    except BaseException:
        for extproc in started:
            extproc.stop()
        xds.stop()
        raise
    return Gateway(tmp, port, keys, xds, extprocs, envoy)


SimRender = Callable[[int, int, int, dict[str, str]], str]


@contextmanager
def simulated_gateway(
    tmp: Path, render: SimRender, tenants: list[str], **options: Any
) -> Iterator[Gateway]:
    """One simulator plus a gateway; ``render(sim_port, port, extproc_port, key_hashes)``.

    Everything started is stopped, whichever step fails.
    """
    sim = start_simulator(tmp)
    try:
        gateway = start_gateway(
            tmp, lambda port, ep, keys: render(sim.port, port, ep, keys), tenants, **options
        )
        try:
            yield gateway
        finally:
            gateway.stop()
    finally:
        sim.stop()


__all__ = ["ExtProc", "Gateway", "JwtIssuer", "Simulator", "simulated_gateway", "start_gateway"]
