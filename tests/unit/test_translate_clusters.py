"""Tests for smesh.xds.translate.clusters."""

from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.v3 import http_pb2

from smesh.config.references import check_references
from smesh.xds.translate import TranslateError
from smesh.xds.translate.clusters import HTTP_PROTOCOL_OPTIONS, make_clusters
from tests.unit.builders import mesh, sample_config


def _clusters() -> dict[str, cluster_pb2.Cluster]:
    return {c.name: c for c in make_clusters(sample_config())}


def _protocol_options(
    cluster: cluster_pb2.Cluster,
) -> http_protocol_options_pb2.HttpProtocolOptions:
    options = http_protocol_options_pb2.HttpProtocolOptions()
    assert cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].Unpack(options)
    return options


def test_sample_config_is_consistent() -> None:
    """The shared sample passes the config's own reference checks."""
    assert check_references(sample_config()) == []


def test_one_cluster_per_config_cluster_plus_derived_fallbacks() -> None:
    """Every config cluster appears once, followed by one derived cluster per fallback backend."""
    assert [c.name for c in make_clusters(sample_config())] == [
        "vllm-a",
        "vllm-canary",
        "tgi-b",
        "sim",
        "secure",
        "vllm-a~mistral-7b",
    ]


def test_clusters_take_endpoints_from_eds_over_ads() -> None:
    """Each cluster is EDS over ADS (v3), with its own name as the service name."""
    for name, cluster in _clusters().items():
        assert cluster.type == cluster_pb2.Cluster.EDS
        eds = cluster.eds_cluster_config
        assert eds.service_name == name
        assert eds.eds_config.HasField("ads")
        assert eds.eds_config.resource_api_version == config_source_pb2.V3


def test_connect_timeout_and_least_request() -> None:
    """connect_timeout comes from config and load balancing is least-request."""
    cluster = _clusters()["vllm-a"]
    assert cluster.connect_timeout.ToMilliseconds() == 250
    names = [p.typed_extension_config.name for p in cluster.load_balancing_policy.policies]
    assert names == [
        "envoy.load_balancing_policies.least_request",
        "envoy.load_balancing_policies.round_robin",
    ]


def test_circuit_breakers_cover_default_and_high_priority() -> None:
    """The configured limits apply to DEFAULT and HIGH priority alike."""
    thresholds = _clusters()["vllm-a"].circuit_breakers.thresholds
    assert [t.priority for t in thresholds] == [base_pb2.DEFAULT, base_pb2.HIGH]
    for t in thresholds:
        assert t.max_requests.value == 512
        assert t.max_retries.value == 5
        assert t.max_connections.value == 1024
        assert t.max_pending_requests.value == 1024


def test_outlier_detection_when_set() -> None:
    """Outlier detection mirrors config (gateway failures enforced) and is absent when null."""
    clusters = _clusters()
    outlier = clusters["vllm-a"].outlier_detection
    assert outlier.consecutive_5xx.value == 5
    assert outlier.consecutive_gateway_failure.value == 3
    assert outlier.enforcing_consecutive_gateway_failure.value == 100
    assert outlier.interval.ToSeconds() == 5
    assert outlier.base_ejection_time.ToSeconds() == 30
    assert outlier.max_ejection_percent.value == 50
    assert not clusters["vllm-canary"].HasField("outlier_detection")


def test_http_health_check_when_set() -> None:
    """An active HTTP health check follows config; clusters without one have none."""
    clusters = _clusters()
    [check] = clusters["vllm-a"].health_checks
    assert check.http_health_check.path == "/health"
    assert check.http_health_check.codec_client_type == http_pb2.HTTP1
    assert check.interval.ToSeconds() == 2
    assert check.timeout.ToMilliseconds() == 500
    assert check.healthy_threshold.value == 1
    assert check.unhealthy_threshold.value == 2
    assert list(clusters["sim"].health_checks) == []


@pytest.mark.parametrize(
    ("name", "http2"), [("vllm-a", False), ("vllm-canary", True)], ids=["http1", "http2"]
)
def test_explicit_upstream_protocol(name: str, http2: bool) -> None:
    """The upstream HTTP version is set explicitly from ``protocol``."""
    explicit = _protocol_options(_clusters()[name]).explicit_http_config
    assert explicit.HasField("http2_protocol_options") is http2
    assert explicit.HasField("http_protocol_options") is not http2


def test_tls_transport_socket() -> None:
    """TLS sets SNI, the trusted CA file and the client certificate files."""
    clusters = _clusters()
    socket = clusters["secure"].transport_socket
    assert socket.name == "envoy.transport_sockets.tls"
    context = tls_pb2.UpstreamTlsContext()
    assert socket.typed_config.Unpack(context)
    assert context.sni == "models.internal"
    common = context.common_tls_context
    assert list(common.alpn_protocols) == ["h2"]
    assert common.validation_context.trusted_ca.filename == "/etc/smesh/ca.pem"
    [cert] = common.tls_certificates
    assert cert.certificate_chain.filename == "/etc/smesh/client.pem"
    assert cert.private_key.filename == "/etc/smesh/client.key"
    assert not clusters["vllm-a"].HasField("transport_socket")


def test_derived_fallback_cluster_copies_backend_settings() -> None:
    """A derived fallback cluster equals its backend cluster except for its names."""
    clusters = _clusters()
    derived = cluster_pb2.Cluster()
    derived.CopyFrom(clusters["vllm-a~mistral-7b"])
    assert derived.eds_cluster_config.service_name == "vllm-a~mistral-7b"
    derived.name = "vllm-a"
    derived.eds_cluster_config.service_name = "vllm-a"
    assert derived == clusters["vllm-a"]


def test_unknown_backend_cluster_is_a_translate_error() -> None:
    """A fallback model naming a cluster that does not exist raises TranslateError."""
    cfg = mesh(
        models=[{"name": "m", "backends": [{"cluster": "ghost"}], "fallback": ["c"]}],
        clusters=[{"name": "c", "endpoints": ["10.0.0.1:80"]}],
    )
    with pytest.raises(TranslateError, match="ghost"):
        make_clusters(cfg)
