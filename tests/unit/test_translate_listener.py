"""Tests for smesh.xds.translate.listener."""

from __future__ import annotations

from envoy.config.core.v3 import config_source_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.connection_limit.v3 import connection_limit_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.http.early_header_mutation.header_mutation.v3 import (
    header_mutation_pb2,
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
    network_filter = chain.filters[-1]
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


def test_timeouts_suit_long_streams_and_bound_slow_clients() -> None:
    """Streams may idle 2 minutes, requests have no overall timeout, headers must come in 10 s."""
    hcm = _hcm(config.Listener(name="edge", port=8080))
    assert hcm.stream_idle_timeout.ToSeconds() == 120
    assert hcm.HasField("request_timeout")
    assert hcm.request_timeout.ToNanoseconds() == 0
    assert hcm.request_headers_timeout.ToSeconds() == 10
    assert hcm.common_http_protocol_options.idle_timeout.ToSeconds() == 60
    assert hcm.max_request_headers_kb.value == 60


def test_listener_limits_come_from_config() -> None:
    """Every slow-client bound is the operator's to set per listener."""
    listener = config.Listener(
        name="edge",
        port=8080,
        request_headers_timeout=2.5,
        stream_idle_timeout=30,
        idle_timeout=5,
        max_connections=100,
        max_request_headers_kb=16,
        trusted_hops=1,
    )
    hcm = _hcm(listener)
    assert hcm.request_headers_timeout.ToMilliseconds() == 2500
    assert hcm.stream_idle_timeout.ToSeconds() == 30
    assert hcm.common_http_protocol_options.idle_timeout.ToSeconds() == 5
    assert hcm.max_request_headers_kb.value == 16
    assert hcm.xff_num_trusted_hops == 1
    [chain] = make_listener(listener).filter_chains
    assert chain.filters[0].name == "envoy.filters.network.connection_limit"
    limit = connection_limit_pb2.ConnectionLimit()
    assert chain.filters[0].typed_config.Unpack(limit)
    assert limit.max_connections.value == 100


def test_clients_are_external_and_cannot_spoof_gateway_headers() -> None:
    """The peer address is authoritative, nothing is internal, x-smesh-*/x-envoy-* dropped early."""
    hcm = _hcm(config.Listener(name="edge", port=8080))
    assert hcm.use_remote_address.value is True
    assert hcm.xff_num_trusted_hops == 0
    [never] = hcm.internal_address_config.cidr_ranges  # one address no client comes from
    assert (never.address_prefix, never.prefix_len.value) == ("0.0.0.0", 32)
    [early] = hcm.early_header_mutation_extensions
    mutation = header_mutation_pb2.HeaderMutation()
    assert early.typed_config.Unpack(mutation)
    prefixes = {m.remove_on_match.key_matcher.prefix for m in mutation.mutations}
    assert prefixes == {"x-smesh-", "x-envoy-"}


def test_without_extproc_clients_pick_the_model_by_header() -> None:
    """No extproc, no tenants: the client's x-smesh-model header is kept (it is the route)."""
    listener = make_listener(config.Listener(name="edge", port=8080), gateway_sets_headers=False)
    hcm = hcm_pb2.HttpConnectionManager()
    assert listener.filter_chains[0].filters[-1].typed_config.Unpack(hcm)
    mutation = header_mutation_pb2.HeaderMutation()
    assert hcm.early_header_mutation_extensions[0].typed_config.Unpack(mutation)
    assert [m.remove_on_match.key_matcher.prefix for m in mutation.mutations] == ["x-envoy-"]


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
