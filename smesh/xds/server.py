"""The ADS gRPC service: a stream loop that moves messages, and nothing else.

Protocol decisions live in :mod:`smesh.xds.sotw`; snapshots come from the cache. One
task per stream reads requests; both requests and snapshot changes turn into responses
in a single queue, so responses leave in exactly the order the protocol decided them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from smesh.xds.cache import SnapshotCache
from smesh.xds.snapshot import Snapshot
from smesh.xds.sotw import SotwStream

__all__ = ["AggregatedDiscoveryService", "ServerTls", "start_server"]

log = logging.getLogger(__name__)

Responses = Sequence[discovery_pb2.DiscoveryResponse]


class AggregatedDiscoveryService(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """``envoy.service.discovery.v3.AggregatedDiscoveryService`` (state of the world)."""

    def __init__(
        self, cache: SnapshotCache, new_stream: Callable[..., SotwStream] = SotwStream
    ) -> None:
        self._cache = cache
        self._new_stream = new_stream

    async def StreamAggregatedResources(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        stream = self._new_stream(self._cache.registry, history=self._cache.history)
        outbox: asyncio.Queue[Responses | None] = asyncio.Queue()
        failure: list[BaseException] = []

        def on_snapshot(snapshot: Snapshot) -> None:
            outbox.put_nowait(stream.on_snapshot(snapshot))

        async def read() -> None:
            try:
                async for request in request_iterator:
                    outbox.put_nowait(stream.on_request(request))
            except (asyncio.CancelledError, grpc.aio.AioRpcError):
                pass  # the client went away
            except Exception as exc:
                # A bug handling one request must not end the stream as if all were well:
                # the client would keep stale config and never reconnect. Fail it loudly.
                log.exception("ADS stream from %r failed", stream.node_id)
                failure.append(exc)
            finally:
                outbox.put_nowait(None)

        if self._cache.snapshot is not None:
            stream.on_snapshot(self._cache.snapshot)
        unwatch = self._cache.watch(on_snapshot)
        reader = asyncio.create_task(read())
        try:
            while (responses := await outbox.get()) is not None:
                for response in responses:
                    await context.write(response)
            if failure:
                await context.abort(
                    grpc.StatusCode.INTERNAL, f"xds failed on this stream: {failure[0]!r}"
                )
        except (asyncio.CancelledError, grpc.aio.AioRpcError):
            pass  # the client went away: a normal end of stream
        finally:
            unwatch()
            reader.cancel()
            stream.close()
            log.info("ADS stream from %r closed", stream.node_id)

    async def DeltaAggregatedResources(
        self, request_iterator: AsyncIterator[object], context: grpc.aio.ServicerContext
    ) -> None:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, "delta xDS is not served yet; use SotW ADS"
        )


@dataclass(frozen=True)
class ServerTls:
    """TLS for the xDS port; ``client_ca`` set means clients must present certificates."""

    cert_file: Path
    key_file: Path
    client_ca: Path | None = None

    def credentials(self) -> grpc.ServerCredentials:
        ca = self.client_ca.read_bytes() if self.client_ca else None
        return grpc.ssl_server_credentials(
            [(self.key_file.read_bytes(), self.cert_file.read_bytes())],
            root_certificates=ca,
            require_client_auth=ca is not None,
        )


_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
]


async def start_server(
    cache: SnapshotCache,
    address: str,
    tls: ServerTls | None = None,
    service: AggregatedDiscoveryService | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Start serving ADS on ``address`` (``host:port``, port 0 picks one); returns the port."""
    server = grpc.aio.server(options=_OPTIONS)
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(
        service or AggregatedDiscoveryService(cache), server
    )
    if tls is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, tls.credentials())
    await server.start()
    return server, port
