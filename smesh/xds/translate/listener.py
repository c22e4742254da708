"""Listener translation: one gateway listener → one Envoy ``Listener``.

Every listener carries a single HTTP connection manager whose routes come from RDS over
ADS (the shared :data:`~smesh.xds.resources.ROUTE_CONFIG_NAME` table), so a model change
never touches the listener and never drains connections. The HTTP filters in front of
the router (jwt_authn, then ext_proc) are built elsewhere and passed in, in order. Errors
Envoy answers itself become the OpenAI-style JSON error (:mod:`.local_reply`).
"""

from __future__ import annotations

from collections.abc import Sequence

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

from smesh.config import schema as config
from smesh.contract import MODEL_HEADER
from smesh.xds.resources import ROUTE_CONFIG_NAME
from smesh.xds.translate._convert import message_to_any, seconds_to_duration
from smesh.xds.translate.local_reply import make_local_reply_config

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


def _filters(
    filters: hcm_pb2.HttpFilter | Sequence[hcm_pb2.HttpFilter] | None,
) -> list[hcm_pb2.HttpFilter]:
    if filters is None:
        return []
    if isinstance(filters, hcm_pb2.HttpFilter):
        return [filters]
    return list(filters)


def make_http_connection_manager(
    stat_prefix: str,
    filters: hcm_pb2.HttpFilter | Sequence[hcm_pb2.HttpFilter] | None = None,
    tracing: hcm_pb2.HttpConnectionManager.Tracing | None = None,
) -> hcm_pb2.HttpConnectionManager:
    """The HTTP connection manager: routes from RDS over ADS, ``filters`` then the router."""
    http_filters = _filters(filters)
    http_filters.append(
        hcm_pb2.HttpFilter(name=ROUTER_FILTER, typed_config=message_to_any(router_pb2.Router()))
    )
    manager = hcm_pb2.HttpConnectionManager(
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
        local_reply_config=make_local_reply_config(),
    )
    if tracing is not None:
        manager.tracing.CopyFrom(tracing)
    return manager


def make_listener(
    listener: config.Listener,
    filters: hcm_pb2.HttpFilter | Sequence[hcm_pb2.HttpFilter] | None = None,
    tracing: hcm_pb2.HttpConnectionManager.Tracing | None = None,
) -> listener_pb2.Listener:
    """One Envoy listener for ``listener``; ``filters`` (one or several) run before the router."""
    hcm = make_http_connection_manager(listener.name, filters, tracing)
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
