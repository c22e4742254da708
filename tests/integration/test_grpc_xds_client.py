"""gRPC's own xDS client (xds:///NAME) is served by xds next to Envoy, without upsetting Envoy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from smesh.config.loader import ConfigError, parse_config
from smesh.ports import free_port
from tests.integration.harness import Xds, start_envoy, wait_until

pytestmark = pytest.mark.integration

SERVICE = "echo.smesh.internal"

CLIENT = textwrap.dedent(
    f"""
    import grpc
    channel = grpc.insecure_channel("xds:///{SERVICE}")
    say = channel.unary_unary("/smesh.test.Echo/Say")
    print(say(b"hello over xds", timeout=20).decode(), flush=True)
    """
)


@pytest.fixture
def echo_server() -> Iterator[tuple[int, list[bytes]]]:
    """A real gRPC server with one bytes-in/bytes-out method; records what it got."""
    received: list[bytes] = []

    def say(request: bytes, context: grpc.ServicerContext) -> bytes:
        received.append(request)
        return b"echo: " + request

    handler = grpc.method_handlers_generic_handler(
        "smesh.test.Echo", {"Say": grpc.unary_unary_rpc_method_handler(say)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    server.start()
    yield port, received
    server.stop(grace=None)


def test_grpc_client_dials_through_xds(
    tmp_path: Path, echo_server: tuple[int, list[bytes]]
) -> None:
    """The client gets listener, route, cluster and endpoints, calls the backend, and ACKs all;
    Envoy on the same xds never receives the api_listener and stays in sync."""
    port, received = echo_server
    config = tmp_path / "mesh.yaml"
    config.write_text(
        f"""
listeners: [{{name: gateway, port: {free_port()}}}]
grpc_services: [{{name: {SERVICE}, cluster: echo}}]
models: [{{name: chat, backends: [{{cluster: echo}}]}}]
clusters: [{{name: echo, protocol: http2, endpoints: ["127.0.0.1:{port}"]}}]
"""
    )
    xds = Xds(config, tmp_path / "xds.log").start()
    envoy = None
    try:
        envoy = start_envoy(tmp_path, xds)
        bootstrap = tmp_path / "grpc-bootstrap.json"
        bootstrap.write_text(
            json.dumps(
                {
                    "xds_servers": [
                        {
                            "server_uri": f"127.0.0.1:{xds.port}",
                            "channel_creds": [{"type": "insecure"}],
                            "server_features": ["xds_v3"],
                        }
                    ],
                    "node": {"id": "grpc-client", "locality": {}},
                }
            )
        )
        result = subprocess.run(
            [sys.executable, "-c", CLIENT],
            env={**os.environ, "GRPC_XDS_BOOTSTRAP": str(bootstrap)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip() == "echo: hello over xds"
        assert received == [b"hello over xds"]

        def both_in_sync() -> bool:
            nodes = xds.status()["nodes"]
            return all(
                t["in_sync"] and not t["nack_error"]
                for node in ("grpc-client", "envoy-test")
                for t in nodes.get(node, {}).get("types", {}).values()
            ) and {"grpc-client", "envoy-test"} <= set(nodes)

        wait_until(both_in_sync, timeout=10)
        listeners = json.loads(envoy.admin("/config_dump?resource=dynamic_listeners"))
        names = {item["name"] for item in listeners.get("configs", [])}
        assert names == {"gateway"}, names
    finally:
        if envoy is not None:
            envoy.stop()
        xds.stop()


def test_grpc_service_needs_an_http2_cluster() -> None:
    """A gRPC service on an HTTP/1 cluster is a located config error."""
    text = (
        "grpc_services: [{name: a.b, cluster: c}]\n"
        'clusters: [{name: c, endpoints: ["127.0.0.1:1"]}]'
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="mesh.yaml")
    assert caught.value.lines == [
        "mesh.yaml:1: grpc_services[0].cluster: cluster 'c' must be protocol: http2 (gRPC)"
    ]
