"""A small state-of-the-world ADS client that subscribes like Envoy does.

For tests and benchmarks: it asks for clusters and listeners as wildcards, then for the
endpoints of every EDS cluster and the route tables every listener names, ACKs each
response (echoing ``version_info`` and ``nonce``), and keeps the latest resources.
xDS protocol spec: https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol

Errors: :class:`AdsClientError` when the stream ends while not closing (raised by
:meth:`AdsClient.run` and by :meth:`AdsClient.wait_for`). It does not reconnect.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf.message import Message
from google.rpc import status_pb2

from smesh.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from smesh.xds.snapshot import cluster_eds_name, listener_route_names

__all__ = ["AdsClient", "AdsClientError"]

MESSAGE_TYPES: dict[str, type[Message]] = {
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
}
# Full-state types: a response holds every resource, omission deletes.
_WILDCARD_TYPES = (CLUSTER, LISTENER)
_INVALID_ARGUMENT = 3  # google.rpc.Code, what Envoy sets in error_detail

_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    # One connection per client, as separate Envoys would have (not a shared subchannel).
    ("grpc.use_local_subchannel_pool", 1),
]

OnAck = Callable[["AdsClient", discovery_pb2.DiscoveryResponse], None]
NackIf = Callable[[discovery_pb2.DiscoveryResponse], str | None]


class AdsClientError(Exception):
    """The ADS stream ended (or failed) while the client was not closing."""


@dataclass
class _Subscription:
    names: set[str] = field(default_factory=set)
    requested: bool = False
    nonce: str = ""


def _name(message: Message) -> str:
    if isinstance(message, endpoint_pb2.ClusterLoadAssignment):
        return str(message.cluster_name)
    return str(getattr(message, "name", ""))


class AdsClient:
    """One ADS stream; ``resources`` and ``versions`` hold what was last ACKed, by type."""

    def __init__(
        self,
        target: str,
        node_id: str,
        channel_credentials: grpc.ChannelCredentials | None = None,
        *,
        node_cluster: str = "smesh-ads-client",
        nack_if: NackIf | None = None,
        on_ack: OnAck | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.target, self.node_id, self.node_cluster = target, node_id, node_cluster
        self._credentials = channel_credentials
        self._nack_if, self._on_ack, self._clock = nack_if, on_ack, clock
        self.resources: dict[str, dict[str, Message]] = {t: {} for t in MESSAGE_TYPES}
        self.versions: dict[str, str] = {}
        self.acked_at: dict[str, float] = {}
        self.acks: dict[str, int] = dict.fromkeys(MESSAGE_TYPES, 0)
        self.nacks: dict[str, list[str]] = {t: [] for t in MESSAGE_TYPES}
        self._subs: dict[str, _Subscription] = {t: _Subscription() for t in MESSAGE_TYPES}
        self._call: grpc.aio.StreamStreamCall | None = None
        self._closing = False
        self._error: AdsClientError | None = None
        self._changed: asyncio.Condition | None = None
        self._task: asyncio.Task[None] | None = None
        self._node_sent = False

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self) -> None:
        """Stream until :meth:`close`; raises :class:`AdsClientError` if the stream ends."""
        if self._credentials is None:
            channel = grpc.aio.insecure_channel(self.target, options=_OPTIONS)
        else:
            channel = grpc.aio.secure_channel(self.target, self._credentials, options=_OPTIONS)
        try:
            self._call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(
                channel
            ).StreamAggregatedResources()
            for type_url in _WILDCARD_TYPES:  # Envoy: CDS then LDS, both wildcard
                await self._send(type_url)
            while not self._closing:
                response = await self._call.read()
                if response is grpc.aio.EOF:
                    raise AdsClientError(f"ADS stream to {self.target} ended by the server")
                await self._handle(response)
        except AdsClientError as exc:
            await self._fail(exc)
            raise
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.CancelledError) as exc:
            if not self._closing:
                error = AdsClientError(f"ADS stream to {self.target} failed: {exc}")
                await self._fail(error)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                raise error from exc
        finally:
            if self._call is not None:
                self._call.cancel()
            await channel.close()

    def close(self) -> None:
        """Stop :meth:`run` (it returns normally)."""
        self._closing = True
        if self._call is not None:
            self._call.cancel()

    async def __aenter__(self) -> AdsClient:
        self._task = asyncio.create_task(self.run())
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
        if self._task is not None:
            try:
                await self._task
            except AdsClientError:
                if kind is None:
                    raise

    async def wait_for(
        self,
        predicate: Callable[[AdsClient], bool],
        timeout: float,  # noqa: ASYNC109 (a deadline for a condition, not for I/O)
    ) -> None:
        """Until ``predicate(self)`` holds after an ACK or NACK; TimeoutError, or AdsClientError."""
        async with asyncio.timeout(timeout):
            changed = self._condition()
            async with changed:
                await changed.wait_for(lambda: self._error is not None or predicate(self))
        if self._error is not None and not predicate(self):
            raise self._error

    # -- protocol ------------------------------------------------------------------------

    async def _handle(self, response: discovery_pb2.DiscoveryResponse) -> None:
        type_url = response.type_url
        sub = self._subs.get(type_url)
        if sub is None:
            return  # not a type we asked for
        sub.nonce = response.nonce
        error = self._nack_if(response) if self._nack_if else None
        resources: dict[str, Message] = {}
        if error is None:
            try:
                for packed in response.resources:
                    message = MESSAGE_TYPES[type_url]()
                    if not packed.Unpack(message):
                        raise ValueError(f"{packed.type_url} is not {type_url}")
                    resources[_name(message)] = message
            except ValueError as exc:  # protobuf's DecodeError is a ValueError too
                error = f"cannot unpack a resource: {exc}"
        if error is not None:
            # NACK: the previous version stays (xDS spec, "ACK/NACK and resource type instance
            # version"); the server must not resend it.
            self.nacks[type_url].append(error)
            await self._send(type_url, error)
            await self._notify()
            return
        if type_url in _WILDCARD_TYPES:
            self.resources[type_url] = resources
        else:
            kept = self.resources[type_url]
            kept.update(resources)
            for gone in set(kept) - sub.names:
                del kept[gone]
        self.versions[type_url] = response.version_info
        await self._send(type_url)
        await self._follow(type_url)
        self.acks[type_url] += 1
        self.acked_at[type_url] = self._clock()
        if self._on_ack is not None:
            self._on_ack(self, response)
        await self._notify()

    async def _follow(self, type_url: str) -> None:
        """Subscribe to what clusters and listeners name: endpoints, route tables."""
        if type_url == CLUSTER:
            child = ENDPOINT
            names = {
                n
                for c in self.resources[CLUSTER].values()
                if isinstance(c, cluster_pb2.Cluster) and (n := cluster_eds_name(c)) is not None
            }
        elif type_url == LISTENER:
            child = ROUTE
            names = set()
            for listener in self.resources[LISTENER].values():
                assert isinstance(listener, listener_pb2.Listener)
                names |= listener_route_names(listener)
        else:
            return
        sub = self._subs[child]
        if names == sub.names and sub.requested:
            return
        if not names and not sub.requested:
            return  # an empty first request would mean "wildcard"
        sub.names = names
        for gone in set(self.resources[child]) - names:
            del self.resources[child][gone]
        await self._send(child)

    async def _send(self, type_url: str, error: str | None = None) -> None:
        sub = self._subs[type_url]
        request = discovery_pb2.DiscoveryRequest(
            type_url=type_url,
            version_info=self.versions.get(type_url, ""),
            response_nonce=sub.nonce,
            resource_names=sorted(sub.names),
        )
        if not self._node_sent:  # like Envoy's set_node_on_first_message_only
            request.node.CopyFrom(
                base_pb2.Node(
                    id=self.node_id, cluster=self.node_cluster, user_agent_name="smesh-ads-client"
                )
            )
            self._node_sent = True
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=_INVALID_ARGUMENT, message=error))
        sub.requested = True
        assert self._call is not None
        await self._call.write(request)

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def _notify(self) -> None:
        changed = self._condition()
        async with changed:
            changed.notify_all()

    async def _fail(self, error: AdsClientError) -> None:
        self._error = error
        await self._notify()
