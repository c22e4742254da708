"""TLS on every gRPC channel: Envoy → xds (ADS) and Envoy → extproc, with a real Envoy."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from smesh.envoy_process import xds_tls_socket
from tests.certs import make_pki
from tests.integration.gateway import simulated_gateway

pytestmark = pytest.mark.integration


def test_gateway_over_tls_control_and_processing_channels(tmp_path: Path) -> None:
    """With ADS and ext_proc both on TLS the gateway serves; a plaintext ADS client gets nothing."""
    pki = make_pki(tmp_path)
    tls = ("--tls-cert", str(pki.cert), "--tls-key", str(pki.key))

    def render(sim: int, port: int, extproc_port: int, keys: dict[str, str]) -> str:
        return f"""
listeners: [{{name: gateway, port: {port}}}]
extproc:
  port: {extproc_port}
  tls: {{ca_file: "{pki.ca}", sni: localhost}}
tenants: [{{name: acme, api_keys: ["{keys["acme"]}"]}}]
models: [{{name: chat, backends: [{{cluster: sim}}]}}]
clusters: [{{name: sim, endpoints: ["127.0.0.1:{sim}"]}}]
"""

    with simulated_gateway(
        tmp_path,
        render,
        ["acme"],
        xds_args=tls,
        extproc_args=tls,
        xds_transport_socket=xds_tls_socket(str(pki.ca), sni="localhost"),
    ) as gateway:
        response = gateway.chat(gateway.keys["acme"], "over tls")
        assert response.status_code == 200, response.text
        assert "x-smesh-overhead-ms" in response.headers  # it went through extproc
        # The ADS port speaks only TLS: a plaintext client cannot even start a stream.
        with grpc.insecure_channel(f"127.0.0.1:{gateway.xds.port}") as channel:
            stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
            request = discovery_pb2.DiscoveryRequest(
                type_url="type.googleapis.com/envoy.config.cluster.v3.Cluster"
            )
            with pytest.raises(grpc.RpcError):
                next(stub.StreamAggregatedResources(iter([request]), timeout=3))
