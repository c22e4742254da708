"""Tests for smesh.xds.translate.listener."""

from __future__ import annotations

from envoy.config.core.v3 import config_source_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import empty_pb2

from smesh.config import schema as config
from smesh.contract import MODEL_HEADER
from smesh.xds.resources import ROUTE_CONFIG_NAME
from smesh.xds.translate.listener import make_listener


def _hcm(
    listener: config.Listener, ext_proc: hcm_pb2.HttpFilter | None = None
) -> hcm_pb2.HttpConnectionManager:
    built = make_listener(listener, ext_proc)
    [chain] = built.filter_chains
    [network_filter] = chain.filters
    assert network_filter.name == "envoy.filters.network.http_connection_manager"
    hcm = hcm_pb2.HttpConnectionManager()
    assert network_filter.typed_config.Unpack(hcm)
    return hcm


def test_listener_binds_configured_address_and_port() -> None:
    """The listener is named after the config and binds its address and port."""
    built = make_listener(config.Listener(name="edge", port=8443, address="0.0.0.0"))
    assert built.name == "edge"
    assert built.address.socket_address.address == "0.0.0.0"
    assert built.address.socket_address.port_value == 8443


def test_routes_come_from_rds_over_ads() -> None:
    """The connection manager asks ADS (v3) for the shared route table."""
    hcm = _hcm(config.Listener(name="edge", port=8080))
    assert hcm.stat_prefix == "edge"
    assert hcm.codec_type == hcm_pb2.HttpConnectionManager.AUTO
    assert hcm.rds.route_config_name == ROUTE_CONFIG_NAME
    assert hcm.rds.config_source.HasField("ads")
    assert hcm.rds.config_source.resource_api_version == config_source_pb2.V3


def test_router_is_the_only_filter_without_ext_proc() -> None:
    """Without ext_proc the chain is just the router, with typed Router config."""
    hcm = _hcm(config.Listener(name="edge", port=8080))
    assert [f.name for f in hcm.http_filters] == ["envoy.filters.http.router"]
    assert hcm.http_filters[0].typed_config.Is(router_pb2.Router.DESCRIPTOR)


def test_ext_proc_filter_runs_before_router() -> None:
    """A given ext_proc filter is placed first, ahead of the router."""
    ext_proc = hcm_pb2.HttpFilter(name="envoy.filters.http.ext_proc")
    ext_proc.typed_config.Pack(empty_pb2.Empty())
    hcm = _hcm(config.Listener(name="edge", port=8080), ext_proc)
    assert [f.name for f in hcm.http_filters] == [
        "envoy.filters.http.ext_proc",
        "envoy.filters.http.router",
    ]


def test_timeouts_suit_long_streams() -> None:
    """Streams may idle for 5 minutes and requests have no overall timeout."""
    hcm = _hcm(config.Listener(name="edge", port=8080))
    assert hcm.stream_idle_timeout.ToSeconds() == 300
    assert hcm.HasField("request_timeout")
    assert hcm.request_timeout.ToNanoseconds() == 0


def test_access_log_is_json_metadata_on_stdout() -> None:
    """The access log writes JSON to stdout with request metadata and never a body."""
    hcm = _hcm(config.Listener(name="edge", port=8080))
    [log] = hcm.access_log
    assert log.name == "envoy.access_loggers.stdout"
    stdout = stream_pb2.StdoutAccessLog()
    assert log.typed_config.Unpack(stdout)
    fields = dict(stdout.log_format.json_format.items())
    assert fields["model"] == f"%REQ({MODEL_HEADER.upper()})%"
    assert fields["response_flags"] == "%RESPONSE_FLAGS%"
    assert fields["upstream_host"] == "%UPSTREAM_HOST%"
    assert fields["request_id"] == "%REQ(X-REQUEST-ID)%"
    assert not any("BODY" in str(value) for value in fields.values())
