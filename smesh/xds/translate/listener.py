"""Listener translation: one gateway listener → one Envoy ``Listener``.

Every listener carries a single HTTP connection manager whose routes come from RDS over
ADS (the shared :data:`~smesh.xds.resources.ROUTE_CONFIG_NAME` table), so a model change
never touches the listener and never drains connections. The filter chain has one
optional slot in front of the router for the ext_proc filter, built elsewhere.
"""

from __future__ import annotations

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import (
    address_pb2,
    config_source_pb2,
    substitution_format_string_pb2,
)
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import struct_pb2

from smesh.xds import config
from smesh.xds.resources import MODEL_HEADER, ROUTE_CONFIG_NAME
from smesh.xds.translate._convert import message_to_any, seconds_to_duration

__all__ = ["ACCESS_LOG_FIELDS", "make_access_log", "make_http_connection_manager", "make_listener"]

HCM_FILTER = "envoy.filters.network.http_connection_manager"
ROUTER_FILTER = "envoy.filters.http.router"
STDOUT_ACCESS_LOG = "envoy.access_loggers.stdout"

# An LLM stream may sit silent while a long prompt prefills; five minutes of silence is
# the point where we call the stream dead.
STREAM_IDLE_TIMEOUT_S = 300.0

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


def make_http_connection_manager(
    stat_prefix: str, ext_proc: hcm_pb2.HttpFilter | None = None
) -> hcm_pb2.HttpConnectionManager:
    """The HTTP connection manager: routes from RDS over ADS, [ext_proc,] router."""
    http_filters = [] if ext_proc is None else [ext_proc]
    http_filters.append(
        hcm_pb2.HttpFilter(name=ROUTER_FILTER, typed_config=message_to_any(router_pb2.Router()))
    )
    return hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix,
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(
            config_source=config_source_pb2.ConfigSource(
                ads=config_source_pb2.AggregatedConfigSource(),
                resource_api_version=config_source_pb2.V3,
            ),
            route_config_name=ROUTE_CONFIG_NAME,
        ),
        http_filters=http_filters,
        stream_idle_timeout=seconds_to_duration(STREAM_IDLE_TIMEOUT_S),
        # 0 disables the whole-request timeout: a generation may stream for many minutes;
        # the per-route timeout (model.timeout) bounds it instead.
        request_timeout=seconds_to_duration(0),
        access_log=[make_access_log()],
    )


def make_listener(
    listener: config.Listener, ext_proc: hcm_pb2.HttpFilter | None = None
) -> listener_pb2.Listener:
    """One Envoy listener for ``listener``; ``ext_proc`` (if given) runs before the router."""
    hcm = make_http_connection_manager(listener.name, ext_proc)
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
                    listener_components_pb2.Filter(
                        name=HCM_FILTER, typed_config=message_to_any(hcm)
                    )
                ]
            )
        ],
    )
