"""The ADS client against the real ADS server, in-process: convergence, ACKs, changes, NACKs."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2

from smesh.config.loader import parse_config
from smesh.xds.app import compile_config
from smesh.xds.cache import SnapshotCache
from smesh.xds.client import AdsClient, AdsClientError
from smesh.xds.resources import ADS_ORDER, CLUSTER, ENDPOINT, LISTENER, ROUTE, ROUTE_CONFIG_NAME
from smesh.xds.server import AggregatedDiscoveryService, ServerTls, start_server
from smesh.xds.sotw import SotwStream

pytestmark = pytest.mark.integration

NODE = "client-test"


def mesh(*models: str) -> str:
    entries = "".join(f"  - {{name: {m}, backends: [{{cluster: sim}}]}}\n" for m in models)
    return f"""
listeners:
  - {{name: gateway, port: 10000}}
models:
{entries}clusters:
  - {{name: sim, endpoints: ["127.0.0.1:9"]}}
"""


def publish(cache: SnapshotCache, *models: str) -> None:
    cache.publish(compile_config(parse_config(mesh(*models))))


def route_names(client: AdsClient) -> set[str]:
    names: set[str] = set()
    for table in client.resources[ROUTE].values():
        assert isinstance(table, route_pb2.RouteConfiguration)
        names |= {r.name for vhost in table.virtual_hosts for r in vhost.routes}
    return names


def converged(client: AdsClient) -> bool:
    return all(client.resources[t] for t in ADS_ORDER)


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


Scenario = Callable[[SnapshotCache, str], Awaitable[None]]


def run(scenario: Scenario, tls: ServerTls | None = None) -> None:
    """A fresh cache + ADS server on a free port around ``scenario``; always stopped."""

    async def main() -> None:
        cache = SnapshotCache()
        publish(cache, "alpha")
        server, port = await start_server(cache, "127.0.0.1:0", tls)
        try:
            await asyncio.wait_for(scenario(cache, f"127.0.0.1:{port}"), 20)
        finally:
            await server.stop(grace=None)

    asyncio.run(main())


def in_sync(cache: SnapshotCache, type_url: str) -> bool:
    return cache.registry.node(NODE).of(type_url).in_sync


def test_converges_on_all_four_types_and_acks() -> None:
    """Clusters, endpoints, listeners and routes arrive; the server sees every type ACKed."""

    async def scenario(cache: SnapshotCache, target: str) -> None:
        async with AdsClient(target, NODE) as client:
            await client.wait_for(converged, timeout=5)
            assert "alpha" in route_names(client)
            assert set(client.resources[ROUTE]) == {ROUTE_CONFIG_NAME}
            assert "sim" in client.resources[CLUSTER]
            assert set(client.resources[ENDPOINT]) <= set(client.resources[CLUSTER])
            assert client.resources[LISTENER]
            snapshot = cache.snapshot
            assert snapshot is not None
            await until(lambda: all(in_sync(cache, t) for t in ADS_ORDER))
            for type_url in ADS_ORDER:
                assert client.versions[type_url] == snapshot.type_version(type_url)
                assert client.acks[type_url] == 1
                assert not client.nacks[type_url]
            assert cache.registry.node(NODE).streams == 1
        await until(lambda: cache.registry.node(NODE).streams == 0)

    run(scenario)


def test_sees_a_published_change() -> None:
    """A new model published later reaches the client's route table, and is ACKed."""

    async def scenario(cache: SnapshotCache, target: str) -> None:
        seen: list[tuple[str, float]] = []

        def on_ack(client: AdsClient, response: discovery_pb2.DiscoveryResponse) -> None:
            if response.type_url == ROUTE and "beta" in route_names(client):
                seen.append((response.version_info, time.time()))

        async with AdsClient(target, NODE, on_ack=on_ack) as client:
            await client.wait_for(converged, timeout=5)
            assert "beta" not in route_names(client)
            published = time.time()
            publish(cache, "alpha", "beta")
            await client.wait_for(lambda c: "beta" in route_names(c), timeout=5)
            assert {"alpha", "beta"} <= route_names(client)
            assert len(seen) == 1 and seen[0][1] >= published
            await until(lambda: in_sync(cache, ROUTE))
            assert cache.registry.node(NODE).of(ROUTE).acked_version == seen[0][0]

    run(scenario)


def test_nack_is_recorded_by_the_server_and_not_resent() -> None:
    """A NACKed route table is reported with its error, never resent; later changes flow."""

    async def scenario(cache: SnapshotCache, target: str) -> None:
        responses: list[discovery_pb2.DiscoveryResponse] = []

        def nack_if(response: discovery_pb2.DiscoveryResponse) -> str | None:
            responses.append(response)
            if response.type_url != ROUTE:
                return None
            for packed in response.resources:
                table = route_pb2.RouteConfiguration()
                packed.Unpack(table)
                if any(r.name == "bad" for v in table.virtual_hosts for r in v.routes):
                    return "route 'bad' refused by the test"
            return None

        def route_pushes() -> int:
            return sum(r.type_url == ROUTE for r in responses)

        async with AdsClient(target, NODE, nack_if=nack_if) as client:
            await client.wait_for(converged, timeout=5)
            good_version = client.versions[ROUTE]
            publish(cache, "alpha", "bad")
            await client.wait_for(lambda c: bool(c.nacks[ROUTE]), timeout=5)
            status = cache.registry.node(NODE).of(ROUTE)
            await until(lambda: status.nacks == 1)
            assert status.nack_error == "route 'bad' refused by the test"
            assert not status.in_sync
            assert client.versions[ROUTE] == good_version
            assert "bad" not in route_names(client)
            pushes = route_pushes()
            await asyncio.sleep(0.3)
            assert route_pushes() == pushes  # not resent
            # The stream is still alive: a good change after the bad one is delivered.
            publish(cache, "alpha", "gamma")
            await client.wait_for(lambda c: "gamma" in route_names(c), timeout=5)
            await until(lambda: in_sync(cache, ROUTE))
            assert client.nacks[ROUTE] == ["route 'bad' refused by the test"]

    run(scenario)


def test_wait_for_times_out() -> None:
    """A condition that never holds ends in TimeoutError, and the client still closes."""

    async def scenario(_: SnapshotCache, target: str) -> None:
        async with AdsClient(target, NODE) as client:
            with pytest.raises(TimeoutError):
                await client.wait_for(lambda c: "never" in route_names(c), timeout=0.3)

    run(scenario)


def test_server_going_away_ends_wait_for() -> None:
    """When the server ends the stream, a waiting caller gets AdsClientError, not a hang."""

    async def main() -> None:
        cache = SnapshotCache()
        publish(cache, "alpha")
        server, port = await start_server(cache, "127.0.0.1:0")
        client = AdsClient(f"127.0.0.1:{port}", NODE)
        task = asyncio.create_task(client.run())
        try:
            await client.wait_for(converged, timeout=5)
            await server.stop(grace=None)
            with pytest.raises(AdsClientError):
                await client.wait_for(lambda c: "never" in route_names(c), timeout=5)
            with pytest.raises(AdsClientError):
                await task
        finally:
            client.close()
            await server.stop(grace=None)

    asyncio.run(main())


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_converges_over_tls(tmp_path: Path) -> None:
    """With channel credentials the client speaks TLS to a TLS-only server."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
            *("-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", str(key)),
            *("-out", str(cert), "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())

    async def scenario(cache: SnapshotCache, target: str) -> None:
        async with AdsClient(target, NODE, credentials) as client:
            await client.wait_for(converged, timeout=5)
        await until(lambda: in_sync(cache, ROUTE))

    run(scenario, ServerTls(cert, key))


class _FailingStream(SotwStream):
    """A protocol bug on the first route ACK: the server must fail the stream, not end it OK."""

    def on_request(
        self, request: discovery_pb2.DiscoveryRequest
    ) -> list[discovery_pb2.DiscoveryResponse]:
        if request.type_url == ROUTE and request.response_nonce:
            raise RuntimeError("protocol bug")
        return super().on_request(request)


def test_a_failure_in_the_stream_reader_fails_the_stream_loudly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The client sees INTERNAL (so Envoy reconnects) and the server logs the traceback."""

    async def main() -> None:
        cache = SnapshotCache()
        publish(cache, "alpha")
        service = AggregatedDiscoveryService(cache, new_stream=_FailingStream)
        server, port = await start_server(cache, "127.0.0.1:0", service=service)
        try:
            client = AdsClient(f"127.0.0.1:{port}", NODE)
            with pytest.raises(AdsClientError, match="INTERNAL"):
                await asyncio.wait_for(client.run(), 10)
        finally:
            await server.stop(grace=None)

    with caplog.at_level("ERROR", logger="smesh.xds.server"):
        asyncio.run(main())
    assert any("protocol bug" in (r.exc_text or "") for r in caplog.records), caplog.text
