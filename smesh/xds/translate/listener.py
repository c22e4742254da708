"""Listener translation: one gateway listener → one Envoy ``Listener``.

Every listener carries a single HTTP connection manager whose routes come from RDS over
ADS (the shared :data:`~smesh.xds.resources.ROUTE_CONFIG_NAME` table), so a model change
never touches the listener and never drains connections. The HTTP filters in front of
the router (jwt_authn, then ext_proc) are built elsewhere and passed in, in order. Errors
Envoy answers itself become the OpenAI-style JSON error (:mod:`.local_reply`).

Clients are external, whatever their address (Envoy's docs, "IP address detection" and
"x-forwarded-for"): ``use_remote_address`` makes the peer address authoritative and
appends it to ``x-forwarded-for``, only ``trusted_hops`` proxies in front are believed,
and no source range counts as internal, so a client's ``x-request-id`` is replaced by
Envoy's own. Before any filter runs, the early header mutation drops every client copy
of the gateway's own ``x-smesh-*`` headers and of Envoy's ``x-envoy-*`` headers: no
filter, and no failure mode of one, ever sees a spoofed value. Slow or idle clients are
bounded by the request-headers timeout, the stream and connection idle timeouts and a
per-listener connection limit (``connection_limit`` network filter; this Envoy build has
no global downstream-connections monitor extension to rely on alone).
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.config.core.v3 import (
    address_pb2,
    config_source_pb2,
    extension_pb2,
    protocol_pb2,
    substitution_format_string_pb2,
)
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.connection_limit.v3 import connection_limit_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.http.early_header_mutation.header_mutation.v3 import (
    header_mutation_pb2,
)
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import struct_pb2, wrappers_pb2

from smesh.config import schema as config
from smesh.contract import MODEL_HEADER, SMESH_HEADER_PREFIX
from smesh.xds.resources import ROUTE_CONFIG_NAME
from smesh.xds.translate._convert import int_to_uint32, message_to_any, seconds_to_duration
from smesh.xds.translate.local_reply import make_local_reply_config

__all__ = [
    "ACCESS_LOG_FIELDS",
    "CLIENT_HEADER_PREFIXES",
    "make_access_log",
    "make_connection_limit_filter",
    "make_early_header_mutation",
    "make_http_connection_manager",
    "make_listener",
]

HCM_FILTER = "envoy.filters.network.http_connection_manager"
CONNECTION_LIMIT_FILTER = "envoy.filters.network.connection_limit"
ROUTER_FILTER = "envoy.filters.http.router"
STDOUT_ACCESS_LOG = "envoy.access_loggers.stdout"
EARLY_HEADER_MUTATION = "envoy.http.early_header_mutation.header_mutation"

# Client copies of headers with these prefixes are dropped before any filter runs: ours,
# which routing trusts once extproc sets them, and Envoy's own (x-envoy-original-path...).
# Without extproc there is no tenant to spoof: clients choose the model with the header.
CLIENT_HEADER_PREFIXES = (SMESH_HEADER_PREFIX, "x-envoy-")

# One JSON line per request. Only metadata: a prompt or answer must never reach a log.
ACCESS_LOG_FIELDS: dict[str, str] = {
    "start_time": "%START_TIME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "duration_ms": "%DURATION%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "upstream_host": "%UPSTREAM_HOST%",
    "model": f"%REQ({MODEL_HEADER.upper()})%",
    "request_id": "%REQ(X-REQUEST-ID)%",
}


def make_access_log() -> accesslog_pb2.AccessLog:
    """A JSON access log on Envoy's stdout, so it lands wherever the container logs go."""
    json_format = struct_pb2.Struct()
    json_format.update(ACCESS_LOG_FIELDS)
    stdout = stream_pb2.StdoutAccessLog(
        log_format=substitution_format_string_pb2.SubstitutionFormatString(json_format=json_format)
    )
    return accesslog_pb2.AccessLog(name=STDOUT_ACCESS_LOG, typed_config=message_to_any(stdout))


def _u32(value: int) -> wrappers_pb2.UInt32Value:
    return wrappers_pb2.UInt32Value(value=value)


def _bool(value: bool) -> wrappers_pb2.BoolValue:
    return wrappers_pb2.BoolValue(value=value)


def _filters(
    filters: hcm_pb2.HttpFilter | Sequence[hcm_pb2.HttpFilter] | None,
) -> list[hcm_pb2.HttpFilter]:
    if filters is None:
        return []
    if isinstance(filters, hcm_pb2.HttpFilter):
        return [filters]
    return list(filters)


def make_early_header_mutation(
    prefixes: Sequence[str] = CLIENT_HEADER_PREFIXES,
) -> extension_pb2.TypedExtensionConfig:
    """Remove every client header starting with one of ``prefixes``, before any filter."""
    mutation = header_mutation_pb2.HeaderMutation(
        mutations=[
            mutation_rules_pb2.HeaderMutation(
                remove_on_match=mutation_rules_pb2.HeaderMutation.RemoveOnMatch(
                    key_matcher=string_pb2.StringMatcher(prefix=prefix, ignore_case=True)
                )
            )
            for prefix in prefixes
        ]
    )
    return extension_pb2.TypedExtensionConfig(
        name=EARLY_HEADER_MUTATION, typed_config=message_to_any(mutation)
    )


def make_connection_limit_filter(listener: config.Listener) -> listener_components_pb2.Filter:
    """At most ``max_connections`` open client connections; more are closed at once."""
    limit = connection_limit_pb2.ConnectionLimit(
        stat_prefix=f"{listener.name}_connections",
        max_connections=wrappers_pb2.UInt64Value(value=listener.max_connections),
    )
    return listener_components_pb2.Filter(
        name=CONNECTION_LIMIT_FILTER, typed_config=message_to_any(limit)
    )


def make_http_connection_manager(
    listener: config.Listener,
    filters: hcm_pb2.HttpFilter | Sequence[hcm_pb2.HttpFilter] | None = None,
    tracing: hcm_pb2.HttpConnectionManager.Tracing | None = None,
    gateway_sets_headers: bool = True,
    access_logs: Sequence[accesslog_pb2.AccessLog] = (),
) -> hcm_pb2.HttpConnectionManager:
    """The HTTP connection manager: routes from RDS over ADS, ``filters`` then the router.

    ``gateway_sets_headers``: extproc sets the ``x-smesh-*`` headers, so client copies
    are dropped; without extproc the client's model header is how it picks a model.
    """
    prefixes = CLIENT_HEADER_PREFIXES if gateway_sets_headers else ("x-envoy-",)
    http_filters = _filters(filters)
    http_filters.append(
        hcm_pb2.HttpFilter(name=ROUTER_FILTER, typed_config=message_to_any(router_pb2.Router()))
    )
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=listener.name,
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(
            config_source=config_source_pb2.ConfigSource(
                ads=config_source_pb2.AggregatedConfigSource(),
                resource_api_version=config_source_pb2.V3,
            ),
            route_config_name=ROUTE_CONFIG_NAME,
        ),
        http_filters=http_filters,
        # Silence on a request or an answer this long resets the stream (a prefill of a
        # long prompt is silent too: the default leaves it two minutes).
        stream_idle_timeout=seconds_to_duration(listener.stream_idle_timeout),
        # A client must finish sending its headers within this; half-sent headers no
        # longer hold a connection for minutes.
        request_headers_timeout=seconds_to_duration(listener.request_headers_timeout),
        common_http_protocol_options=protocol_pb2.HttpProtocolOptions(
            idle_timeout=seconds_to_duration(listener.idle_timeout)
        ),
        max_request_headers_kb=int_to_uint32(listener.max_request_headers_kb),
        # 0 disables the whole-request timeout: a generation may stream for many minutes;
        # the per-route timeout (model.timeout) bounds it instead.
        request_timeout=seconds_to_duration(0),
        use_remote_address=_bool(True),
        xff_num_trusted_hops=listener.trusted_hops,
        # No client address is internal: every client is external, so its x-request-id is
        # replaced and its x-envoy-* headers are not honoured. An empty range list means
        # "the RFC 1918 and loopback defaults" to this Envoy (measured: a loopback client
        # kept its x-request-id), so the list names one address no client connects from.
        internal_address_config=hcm_pb2.HttpConnectionManager.InternalAddressConfig(
            unix_sockets=False,
            cidr_ranges=[address_pb2.CidrRange(address_prefix="0.0.0.0", prefix_len=_u32(32))],
        ),
        early_header_mutation_extensions=[make_early_header_mutation(prefixes)],
        access_log=[make_access_log(), *access_logs],
        local_reply_config=make_local_reply_config(),
    )
    if tracing is not None:
        manager.tracing.CopyFrom(tracing)
    return manager


def make_listener(
    listener: config.Listener,
    filters: hcm_pb2.HttpFilter | Sequence[hcm_pb2.HttpFilter] | None = None,
    tracing: hcm_pb2.HttpConnectionManager.Tracing | None = None,
    gateway_sets_headers: bool = True,
    access_logs: Sequence[accesslog_pb2.AccessLog] = (),
) -> listener_pb2.Listener:
    """One Envoy listener for ``listener``; ``filters`` (one or several) run before the router."""
    hcm = make_http_connection_manager(
        listener, filters, tracing, gateway_sets_headers, access_logs
    )
    return listener_pb2.Listener(
        name=listener.name,
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(
                address=listener.address, port_value=listener.port
            )
        ),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[
                    make_connection_limit_filter(listener),
                    listener_components_pb2.Filter(
                        name=HCM_FILTER, typed_config=message_to_any(hcm)
                    ),
                ]
            )
        ],
    )
