"""ext_proc translation: the ``extproc`` config section → the HTTP filter and its cluster.

Envoy calls extproc inline on one gRPC stream per HTTP request (DESIGN decisions 4-5):
request headers and the buffered request body go out (tenant, model routing, guards);
the answer does not, unless extproc switches the response phases on for one request
with ``mode_override`` (``allow_mode_override`` is on) — see :func:`make_processing_mode`.
Defaults that were measured to break are raised here: the 200 ms ``message_timeout``, the
4 MiB gRPC message cap (a buffered body travels in one message) and the cluster's 1,024
concurrent-request circuit breaker (every HTTP request holds one gRPC stream open).

The request body limit (``max_body_bytes``, 413 past it) is a buffer filter ahead of
ext_proc (:func:`make_body_limit_filter`). Measured with Envoy 1.40: the buffer filter
sets the stream's buffer limit to exactly its ``max_request_bytes``, lower or higher than
the listener's 1 MiB default, and Envoy answers 413 as soon as the body passes it. A
route or virtual host ``request_body_buffer_limit`` only *raised* the limit (a 100 KB
body passed a 64 KiB setting). The stream limit is shared by both directions, so a
BUFFERED response body is held to the same size (Envoy answers 500 past it).

No ``grpc_service.timeout`` is set: measured, it does not bound the ext_proc stream (a
1 s value let a 3 s request through all four phases), and were a later Envoy to apply it
to the whole stream it would cut long SSE answers. ``message_timeout`` bounds each reply.
"""

from __future__ import annotations

import ipaddress

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2
from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, grpc_service_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.filters.http.ext_proc.v3 import ext_proc_pb2, processing_mode_pb2
from envoy.extensions.filters.http.transform.v3 import transform_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import wrappers_pb2

from smesh.config import schema as config
from smesh.contract import JWT_FILTER, MODEL_HEADER, REQUEST_NAMESPACE
from smesh.xds.resources import EXTPROC_CLUSTER
from smesh.xds.translate._convert import int_to_uint32, message_to_any, seconds_to_duration
from smesh.xds.translate._envoy_extra_types import BodySizeLimit
from smesh.xds.translate.clusters import HTTP_PROTOCOL_OPTIONS, make_tls_transport_socket

__all__ = [
    "BODY_LIMIT_FILTER",
    "EXTPROC_CONNECT_TIMEOUT_S",
    "EXTPROC_MAX_CONNECTIONS",
    "EXTPROC_MAX_REQUESTS",
    "EXT_PROC_FILTER",
    "MAX_BUFFERED_ANSWER_BYTES",
    "MAX_GRPC_MESSAGE_BYTES",
    "MAX_MESSAGE_TIMEOUT_S",
    "make_answer_mode",
    "make_body_limit_filter",
    "make_ext_proc_filter",
    "make_extproc_cluster",
    "make_fail_open_override",
    "make_model_from_body_filter",
    "make_processing_mode",
]

EXT_PROC_FILTER = "envoy.filters.http.ext_proc"
BODY_LIMIT_FILTER = "envoy.filters.http.body_size_limit"
# How much of one answer Envoy may hold (json_to_metadata reads a JSON answer whole to
# find its usage). A larger JSON answer is a 500; streams are not held.
MAX_BUFFERED_ANSWER_BYTES = 64 << 20
TRANSFORM_FILTER = "envoy.filters.http.transform"

# A buffered body travels in one gRPC message; the config caps bodies at 64 MiB, so the
# message cap (default 4 MiB) must be at least that plus the envelope.
MAX_GRPC_MESSAGE_BYTES = 64 << 20 | 64 << 10
# The most a processor may ask for with an ``override_message_timeout`` (e.g. while a
# slow guard runs); without it Envoy ignores the override.
MAX_MESSAGE_TIMEOUT_S = 30.0
EXTPROC_CONNECT_TIMEOUT_S = 1.0
# Every HTTP request holds one gRPC stream (an HTTP/2 request to this cluster) open for
# its whole life, SSE included: the default 1,024 concurrent requests ran out under load.
EXTPROC_MAX_REQUESTS = 1_000_000
EXTPROC_MAX_CONNECTIONS = 1024
# HTTP/2 PINGs on idle connections: a silently dead extproc is noticed in seconds, not at
# the next request.
GRPC_STREAMS_PER_CONNECTION = 8
KEEPALIVE_INTERVAL_S = 30.0
KEEPALIVE_TIMEOUT_S = 5.0

_SEND = processing_mode_pb2.ProcessingMode.SEND
_SKIP = processing_mode_pb2.ProcessingMode.SKIP
_BUFFERED = processing_mode_pb2.ProcessingMode.BUFFERED


def make_processing_mode() -> processing_mode_pb2.ProcessingMode:
    """Two messages per request: request headers, then the buffered request body; no response.

    The headers tell extproc who is calling (it may refuse at once); the body, which model
    (routing happens on the header extproc then sets, with ``clear_route_cache``). With
    request headers skipped the route is chosen before the body is seen, so two messages
    is the least that lets Python route on the body (FINDINGS). The answer never passes
    through Python by default: usage is captured natively (:mod:`.usage`). A request whose
    tenant scans answers, or cuts streams that outrun their reservation, switches the
    response phases on for itself with ``mode_override`` (see :func:`make_answer_mode`).
    """
    return processing_mode_pb2.ProcessingMode(
        request_header_mode=_SEND,
        request_body_mode=_BUFFERED,
        request_trailer_mode=_SKIP,
        response_header_mode=_SKIP,
        response_body_mode=processing_mode_pb2.ProcessingMode.NONE,
        response_trailer_mode=_SKIP,
    )


def make_answer_mode() -> processing_mode_pb2.ProcessingMode:
    """The per-request override for a request whose answer extproc must see.

    Response headers SEND (to drop a content-length the rewrite invalidates) and the body
    STREAMED: Envoy shares one buffer limit between the two directions, so a BUFFERED
    answer larger than ``max_body_bytes`` would be a 500 (measured); extproc keeps what it
    needs itself.
    """
    mode = make_processing_mode()
    mode.response_header_mode = _SEND
    mode.response_body_mode = processing_mode_pb2.ProcessingMode.STREAMED
    return mode


def make_ext_proc_filter(ext: config.ExtProc) -> hcm_pb2.HttpFilter:
    """The ext_proc HTTP filter: gRPC to EXTPROC_CLUSTER, fail closed unless configured."""
    processor = ext_proc_pb2.ExternalProcessor(
        grpc_service=grpc_service_pb2.GrpcService(
            envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(
                cluster_name=EXTPROC_CLUSTER,
                max_receive_message_length=int_to_uint32(MAX_GRPC_MESSAGE_BYTES),
            ),
        ),
        processing_mode=make_processing_mode(),
        allow_mode_override=True,
        failure_mode_allow=False,  # fail closed; a model opts out per route
        message_timeout=seconds_to_duration(ext.message_timeout),
        max_message_timeout=seconds_to_duration(max(MAX_MESSAGE_TIMEOUT_S, ext.message_timeout)),
        # The payload jwt_authn verified (under JWT_PAYLOAD_KEY) reaches extproc as
        # metadata; extproc never parses a token itself.
        metadata_options=ext_proc_pb2.MetadataOptions(
            forwarding_namespaces=ext_proc_pb2.MetadataOptions.MetadataNamespaces(
                untyped=[JWT_FILTER]
            ),
            # What extproc writes about a forwarded request, for the access log to carry
            # back; Envoy drops any other namespace a processor sends.
            receiving_namespaces=ext_proc_pb2.MetadataOptions.MetadataNamespaces(
                untyped=[REQUEST_NAMESPACE]
            ),
        ),
    )
    return hcm_pb2.HttpFilter(name=EXT_PROC_FILTER, typed_config=message_to_any(processor))


def make_fail_open_override() -> ext_proc_pb2.ExtProcPerRoute:
    """Per-route: if extproc cannot be reached, pass the request through unprocessed.

    Only for models whose operator chose availability over enforcement
    (``models[].failure_mode_allow``); the filter itself always fails closed.
    """
    return ext_proc_pb2.ExtProcPerRoute(
        overrides=ext_proc_pb2.ExtProcOverrides(
            failure_mode_allow=wrappers_pb2.BoolValue(value=True)
        )
    )


def make_model_from_body_filter() -> hcm_pb2.HttpFilter:
    """Route on the body's model *before* ext_proc, so its per-route fail-open applies.

    Envoy picks a route, and with it ext_proc's per-route settings, when the ext_proc
    filter first sees the request headers — before extproc has read the body. This
    transform filter (ahead of ext_proc) reads ``model`` from the JSON body into the model
    header and re-picks the route, so a request for a model that fails open reaches
    ext_proc on that model's route. extproc still sets the header from its own parse and
    clears the route cache again: the model it checked is the model that is served.
    Installed only when some model sets ``failure_mode_allow`` (it costs a body parse).
    """
    header = base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=MODEL_HEADER, value="%REQUEST_BODY(model)%"),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )
    transform = transform_pb2.TransformConfig(
        request_transformation=transform_pb2.Transformation(
            headers_mutations=[mutation_rules_pb2.HeaderMutation(append=header)]
        ),
        clear_route_cache=True,
    )
    return hcm_pb2.HttpFilter(name=TRANSFORM_FILTER, typed_config=message_to_any(transform))


def make_body_limit_filter(ext: config.ExtProc) -> hcm_pb2.HttpFilter:
    """``body_size_limit``: 413 for a request body past ``max_body_bytes``, never a hang.

    Not the buffer filter: that one enforces its limit by setting the stream's buffer
    limit, which Envoy shares with the answer, so every filter that reads a whole answer
    (json_to_metadata, for usage) would turn an answer larger than the request limit into
    a 500 (measured). This filter counts the request body alone; the stream's buffer limit
    is raised to :data:`MAX_BUFFERED_ANSWER_BYTES` on the virtual host instead.
    """
    limit = BodySizeLimit()
    limit.max_request_bytes.value = ext.max_body_bytes
    return hcm_pb2.HttpFilter(name=BODY_LIMIT_FILTER, typed_config=message_to_any(limit))


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def make_grpc_service_cluster(
    name: str, address: str, port: int, tls: config.UpstreamTls | None = None
) -> cluster_pb2.Cluster:
    """A cluster Envoy calls over gRPC (extproc, the trace collector): HTTP/2, inline endpoints.

    STATIC for an IP address (no EDS); STRICT_DNS for a host name (a Kubernetes Service),
    which Envoy re-resolves. Neither waits for a ClusterLoadAssignment over ADS.
    """
    http2 = protocol_pb2.Http2ProtocolOptions(
        connection_keepalive=protocol_pb2.KeepaliveSettings(
            interval=seconds_to_duration(KEEPALIVE_INTERVAL_S),
            timeout=seconds_to_duration(KEEPALIVE_TIMEOUT_S),
        ),
        # Few streams per connection, so Envoy opens several: processes sharing the port
        # with SO_REUSEPORT only share load when there are connections to spread.
        max_concurrent_streams=int_to_uint32(GRPC_STREAMS_PER_CONNECTION),
    )
    options = http_protocol_options_pb2.HttpProtocolOptions(
        explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http2_protocol_options=http2
        )
    )
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.STATIC if _is_ip(address) else cluster_pb2.Cluster.STRICT_DNS,
        connect_timeout=seconds_to_duration(EXTPROC_CONNECT_TIMEOUT_S),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[
                endpoint_components_pb2.LocalityLbEndpoints(
                    lb_endpoints=[
                        endpoint_components_pb2.LbEndpoint(
                            endpoint=endpoint_components_pb2.Endpoint(
                                address=address_pb2.Address(
                                    socket_address=address_pb2.SocketAddress(
                                        address=address, port_value=port
                                    )
                                )
                            )
                        )
                    ]
                )
            ],
        ),
        circuit_breakers=circuit_breaker_pb2.CircuitBreakers(
            thresholds=[
                circuit_breaker_pb2.CircuitBreakers.Thresholds(
                    priority=priority,
                    max_connections=int_to_uint32(EXTPROC_MAX_CONNECTIONS),
                    max_pending_requests=int_to_uint32(EXTPROC_MAX_REQUESTS),
                    max_requests=int_to_uint32(EXTPROC_MAX_REQUESTS),
                    # gRPC streams to extproc are never retried by Envoy.
                    max_retries=int_to_uint32(0),
                )
                for priority in (base_pb2.DEFAULT, base_pb2.HIGH)
            ]
        ),
        upstream_connection_options=cluster_pb2.UpstreamConnectionOptions(
            tcp_keepalive=address_pb2.TcpKeepalive()
        ),
    )
    cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].CopyFrom(
        message_to_any(options)
    )
    if tls is not None:
        cluster.transport_socket.CopyFrom(make_tls_transport_socket(tls, "http2"))
    return cluster


def make_extproc_cluster(ext: config.ExtProc) -> cluster_pb2.Cluster:
    """The extproc cluster. Its gRPC channel carries prompts: TLS (and mTLS) when configured."""
    return make_grpc_service_cluster(EXTPROC_CLUSTER, ext.address, ext.port, ext.tls)
