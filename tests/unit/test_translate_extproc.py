"""Tests for the gateway's edge filters: smesh.xds.translate.extproc, .jwt and .local_reply.

They share one file because they are wired together: ``translate`` puts jwt_authn, the
body limit and ext_proc ahead of the router, and every listener gets the local replies.
"""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2
from envoy.extensions.filters.http.ext_proc.v3 import ext_proc_pb2, processing_mode_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from smesh.config import schema as config
from smesh.contract import ERROR_HEADER, JWT_FILTER, JWT_PAYLOAD_KEY
from smesh.xds.resources import CLUSTER, ENDPOINT, EXTPROC_CLUSTER, LISTENER
from smesh.xds.snapshot import Snapshot, check_consistency
from smesh.xds.translate import make_http_filters, translate
from smesh.xds.translate._envoy_extra_types import BodySizeLimit
from smesh.xds.translate.clusters import HTTP_PROTOCOL_OPTIONS
from smesh.xds.translate.extproc import (
    make_answer_mode,
    make_body_limit_filter,
    make_ext_proc_filter,
    make_extproc_cluster,
)
from smesh.xds.translate.jwt import JWT_PROVIDER, make_jwt_filter
from smesh.xds.translate.listener import make_listener
from smesh.xds.translate.local_reply import make_local_reply_config
from tests.unit.builders import JWKS, mesh, sample_config

MODE = processing_mode_pb2.ProcessingMode


def _processor(ext: config.ExtProc) -> ext_proc_pb2.ExternalProcessor:
    built = make_ext_proc_filter(ext)
    assert built.name == "envoy.filters.http.ext_proc"
    processor = ext_proc_pb2.ExternalProcessor()
    assert built.typed_config.Unpack(processor)
    return processor


def _jwt(jwt: config.Jwt) -> jwt_pb2.JwtAuthentication:
    built = make_jwt_filter(jwt)
    assert built.name == JWT_FILTER
    authentication = jwt_pb2.JwtAuthentication()
    assert built.typed_config.Unpack(authentication)
    return authentication


def _gateway(**extra: Any) -> config.MeshConfig:
    document = sample_config().model_dump(mode="json", exclude_defaults=True)
    document["extproc"] = {"port": 18081}
    document.update(extra)
    return mesh(**document)


def _hcm(listener: Any) -> hcm_pb2.HttpConnectionManager:
    hcm = hcm_pb2.HttpConnectionManager()
    assert listener.filter_chains[0].filters[-1].typed_config.Unpack(hcm)
    return hcm


# --- ext_proc ---------------------------------------------------------------------------


def test_ext_proc_talks_grpc_to_the_extproc_cluster_with_a_large_message_cap() -> None:
    """Envoy gRPC to EXTPROC_CLUSTER; the 4 MiB default cap is raised past the 64 MiB body cap."""
    grpc_service = _processor(config.ExtProc()).grpc_service
    assert grpc_service.envoy_grpc.cluster_name == EXTPROC_CLUSTER
    assert grpc_service.envoy_grpc.max_receive_message_length.value > 64 << 20


def test_ext_proc_sees_two_messages_and_no_answer_by_default() -> None:
    """Request headers SEND and body BUFFERED; no response phase unless a request overrides."""
    processor = _processor(config.ExtProc())
    mode = processor.processing_mode
    assert (mode.request_header_mode, mode.request_body_mode) == (MODE.SEND, MODE.BUFFERED)
    assert (mode.response_header_mode, mode.response_body_mode) == (MODE.SKIP, MODE.NONE)
    assert (mode.request_trailer_mode, mode.response_trailer_mode) == (MODE.SKIP, MODE.SKIP)
    assert processor.allow_mode_override
    answers = make_answer_mode()
    assert (answers.response_header_mode, answers.response_body_mode) == (
        MODE.SEND,
        MODE.STREAMED,
    )


def test_ext_proc_fails_closed_by_default_and_open_when_configured() -> None:
    """failure_mode_allow follows the config, and is false unless set."""
    assert not _processor(config.ExtProc()).failure_mode_allow


def test_ext_proc_timeouts_come_from_config_with_room_to_override() -> None:
    """message_timeout is the configured one; max_message_timeout allows 30 s overrides."""
    processor = _processor(config.ExtProc.model_validate({"message_timeout": "750ms"}))
    assert processor.message_timeout.ToMilliseconds() == 750
    assert processor.max_message_timeout.ToSeconds() == 30
    slow = _processor(config.ExtProc(message_timeout=45.0))
    assert slow.max_message_timeout.ToSeconds() == 45


def test_ext_proc_receives_the_verified_jwt_payload() -> None:
    """The jwt_authn metadata namespace is forwarded (untyped) to extproc."""
    options = _processor(config.ExtProc()).metadata_options
    assert list(options.forwarding_namespaces.untyped) == [JWT_FILTER]


def test_body_limit_filter_caps_requests_at_max_body_bytes() -> None:
    """body_size_limit's max_request_bytes is the configured body limit (413 past it)."""
    built = make_body_limit_filter(config.ExtProc(max_body_bytes=65536))
    assert built.name == "envoy.filters.http.body_size_limit"
    limit = BodySizeLimit()
    assert built.typed_config.Unpack(limit)
    assert limit.max_request_bytes.value == 65536


def test_extproc_cluster_is_static_http2_with_inline_endpoint() -> None:
    """A STATIC cluster to address:port, explicit HTTP/2 with PING keepalive, no EDS."""
    cluster = make_extproc_cluster(config.ExtProc(address="10.1.2.3", port=18081))
    assert cluster.name == EXTPROC_CLUSTER
    assert cluster.type == cluster_pb2.Cluster.STATIC
    assert not cluster.HasField("eds_cluster_config")
    [locality] = cluster.load_assignment.endpoints
    [host] = locality.lb_endpoints
    socket = host.endpoint.address.socket_address
    assert (socket.address, socket.port_value) == ("10.1.2.3", 18081)
    options = http_protocol_options_pb2.HttpProtocolOptions()
    assert cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].Unpack(options)
    http2 = options.explicit_http_config.http2_protocol_options
    assert http2.connection_keepalive.interval.ToSeconds() > 0
    assert cluster.upstream_connection_options.HasField("tcp_keepalive")
    assert cluster.connect_timeout.ToSeconds() == 1


def test_extproc_cluster_with_a_host_name_resolves_it() -> None:
    """A host name (a Kubernetes Service) makes the cluster STRICT_DNS, still without EDS."""
    cluster = make_extproc_cluster(config.ExtProc(address="extproc.smesh.svc"))
    assert cluster.type == cluster_pb2.Cluster.STRICT_DNS


def test_extproc_cluster_breakers_allow_far_more_than_1024_streams() -> None:
    """Every HTTP request holds a stream: request and pending limits are raised far past 1,024."""
    cluster = make_extproc_cluster(config.ExtProc())
    assert len(cluster.circuit_breakers.thresholds) == 2
    for thresholds in cluster.circuit_breakers.thresholds:
        assert thresholds.max_requests.value >= 100_000
        assert thresholds.max_pending_requests.value >= 100_000


# --- jwt_authn --------------------------------------------------------------------------


def test_jwt_provider_verifies_issuer_audiences_and_inline_jwks() -> None:
    """One provider: issuer, audiences, inline JWKS, payload in metadata, token not forwarded."""
    jwt = config.Jwt(issuer="https://idp.example", audiences=("smesh",), jwks=JWKS)
    provider = _jwt(jwt).providers[JWT_PROVIDER]
    assert provider.issuer == "https://idp.example"
    assert list(provider.audiences) == ["smesh"]
    assert provider.local_jwks.inline_string == JWKS
    assert provider.payload_in_metadata == JWT_PAYLOAD_KEY
    assert not provider.forward
    [header] = provider.from_headers
    assert (header.name, header.value_prefix) == ("authorization", "Bearer ")


def test_jwt_provider_reads_a_jwks_file() -> None:
    """jwks_file becomes a filename data source."""
    provider = _jwt(config.Jwt(issuer="i", jwks_file="/etc/smesh/jwks.json")).providers[
        JWT_PROVIDER
    ]
    assert provider.local_jwks.filename == "/etc/smesh/jwks.json"


def test_jwt_rule_lets_api_keys_through() -> None:
    """Every path requires the provider OR missing/failed, so a bearer API key passes on."""
    [rule] = _jwt(config.Jwt(issuer="i", jwks=JWKS)).rules
    assert rule.match.prefix == "/"
    either = rule.requires.requires_any.requirements
    assert [r.WhichOneof("requires_type") for r in either] == [
        "provider_name",
        "allow_missing_or_failed",
    ]
    assert either[0].provider_name == JWT_PROVIDER


# --- local replies ----------------------------------------------------------------------


def _cel(filter_: accesslog_pb2.AccessLogFilter) -> str:
    expression = cel_pb2.ExpressionFilter()
    assert filter_.extension_filter.typed_config.Unpack(expression)
    text: str = expression.expression
    return text


@pytest.mark.parametrize(
    ("status", "code"),
    [(401, "invalid_token"), (413, "request_too_large"), (503, "upstream_unavailable")],
    ids=["401", "413", "503"],
)
def test_local_reply_mapper_per_status_writes_json(status: int, code: str) -> None:
    """A mapper for the status rewrites the body to the JSON error with Envoy's text."""
    mappers = make_local_reply_config().mappers
    [mapper] = [
        m
        for m in mappers
        if m.filter.and_filter.filters[0].status_code_filter.comparison.value.default_value
        == status
    ]
    assert not mapper.HasField("status_code")
    body = mapper.body_format_override.json_format
    assert body["error"]["code"] == code
    assert body["error"]["message"] == "%LOCAL_REPLY_BODY%"
    assert set(body["error"].keys()) == {"message", "type", "code"}


def test_local_reply_mappers_skip_replies_that_are_already_ours() -> None:
    """Each mapper also needs: no x-smesh-error header and not a route's direct response."""
    mappers = make_local_reply_config().mappers
    for mapper in mappers:
        _status, mine = mapper.filter.and_filter.filters
        expression = _cel(mine)
        assert f"!('{ERROR_HEADER}' in response.headers)" in expression
        assert "response.code_details != 'direct_response'" in expression


def test_local_reply_last_mapper_catches_every_other_error() -> None:
    """The last mapper matches any status >= 400; nothing applies to successes."""
    last = make_local_reply_config().mappers[-1]
    comparison = last.filter.and_filter.filters[0].status_code_filter.comparison
    assert comparison.op == accesslog_pb2.ComparisonFilter.GE
    assert comparison.value.default_value == 400
    assert not make_local_reply_config().HasField("body_format")


def test_every_listener_has_local_replies() -> None:
    """Even without extproc, the connection manager carries the local reply config."""
    hcm = _hcm(make_listener(config.Listener(name="edge", port=8080)))
    assert hcm.local_reply_config == make_local_reply_config()


# --- wiring -----------------------------------------------------------------------------


def test_no_extproc_means_no_edge_filters_and_no_extproc_cluster() -> None:
    """A mesh without extproc/jwt translates as before: router only, no extproc cluster."""
    resources = translate(sample_config())
    assert make_http_filters(sample_config()) == []
    assert EXTPROC_CLUSTER not in resources[CLUSTER]
    hcm = _hcm(resources[LISTENER]["gateway"])
    assert [f.name for f in hcm.http_filters] == ["envoy.filters.http.router"]


def test_translate_orders_jwt_body_limit_ext_proc_router() -> None:
    """jwt_authn, buffer, ext_proc, then the usage capture filters, then the router."""
    cfg = _gateway(jwt={"issuer": "i", "jwks": JWKS})
    hcm = _hcm(translate(cfg)[LISTENER]["gateway"])
    assert [f.name for f in hcm.http_filters] == [
        JWT_FILTER,
        "envoy.filters.http.body_size_limit",
        "envoy.filters.http.ext_proc",
        "envoy.filters.http.json_to_metadata",
        "envoy.filters.http.sse_to_metadata",
        "envoy.filters.http.router",
    ]
    assert [log.name for log in hcm.access_log] == [
        "envoy.access_loggers.stdout",
        "envoy.access_loggers.http_grpc",
    ]


def test_extproc_cluster_joins_a_consistent_snapshot() -> None:
    """The extproc cluster is published without a ClusterLoadAssignment, and it is consistent."""
    resources = translate(_gateway())
    assert resources[CLUSTER][EXTPROC_CLUSTER] == make_extproc_cluster(config.ExtProc(port=18081))
    assert EXTPROC_CLUSTER not in resources[ENDPOINT]
    assert check_consistency(Snapshot.build(resources)) == []
