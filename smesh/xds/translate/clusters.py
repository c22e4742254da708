"""Cluster translation: config clusters → Envoy ``Cluster`` resources (endpoints via EDS).

Each config cluster becomes one EDS cluster of the same name. A model with ``fallback``
needs a cluster whose priority 0 holds a backend's endpoints and whose lower priorities
hold the fallbacks' (Envoy fails over between priorities, not between clusters), so for
every such backend a derived cluster named ``fallback_cluster_name(backend, model)`` is
added with the backend's settings (and one per region-restricted view of the model,
see :mod:`~smesh.xds.translate.residency`). The config checks that fallbacks share the backend's
TLS settings, because they share this one cluster's transport socket.
"""

from __future__ import annotations

from collections.abc import Iterator

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import (
    base_pb2,
    config_source_pb2,
    extension_pb2,
    health_check_pb2,
    protocol_pb2,
)
from envoy.extensions.load_balancing_policies.least_request.v3 import least_request_pb2
from envoy.extensions.load_balancing_policies.round_robin.v3 import round_robin_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.v3 import http_pb2
from google.protobuf.message import Message

from smesh.config import schema as config
from smesh.xds.resources import fallback_cluster_name
from smesh.xds.translate._convert import int_to_uint32, message_to_any, seconds_to_duration
from smesh.xds.translate._errors import TranslateError
from smesh.xds.translate.residency import fallback_views

__all__ = [
    "HTTP_PROTOCOL_OPTIONS",
    "find_cluster",
    "make_circuit_breakers",
    "make_cluster",
    "make_clusters",
    "make_common_tls_context",
    "make_health_check",
    "make_http_protocol_options",
    "make_outlier_detection",
    "make_tls_transport_socket",
]

HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
TLS_TRANSPORT_SOCKET = "envoy.transport_sockets.tls"

# Outlier detection's gateway-failure rule enforces 0 % unless told otherwise; a rule
# the operator turned on should eject.
_ENFORCE_ALWAYS = 100


def make_circuit_breakers(
    breakers: config.CircuitBreakers,
) -> circuit_breaker_pb2.CircuitBreakers:
    """The same limits for DEFAULT and HIGH priority traffic."""
    return circuit_breaker_pb2.CircuitBreakers(
        thresholds=[
            circuit_breaker_pb2.CircuitBreakers.Thresholds(
                priority=priority,
                max_connections=int_to_uint32(breakers.max_connections),
                max_pending_requests=int_to_uint32(breakers.max_pending_requests),
                max_requests=int_to_uint32(breakers.max_requests),
                max_retries=int_to_uint32(breakers.max_retries),
            )
            for priority in (base_pb2.DEFAULT, base_pb2.HIGH)
        ]
    )


def make_outlier_detection(
    outlier: config.OutlierDetection,
) -> outlier_detection_pb2.OutlierDetection:
    """Eject hosts that keep failing (5xx, or gateway errors: connect failures, 502-504)."""
    return outlier_detection_pb2.OutlierDetection(
        consecutive_5xx=int_to_uint32(outlier.consecutive_5xx),
        consecutive_gateway_failure=int_to_uint32(outlier.consecutive_gateway_failure),
        enforcing_consecutive_gateway_failure=int_to_uint32(_ENFORCE_ALWAYS),
        interval=seconds_to_duration(outlier.interval),
        base_ejection_time=seconds_to_duration(outlier.base_ejection_time),
        max_ejection_percent=int_to_uint32(outlier.max_ejection_percent),
    )


def make_health_check(check: config.HealthCheck, protocol: str) -> health_check_pb2.HealthCheck:
    """An active HTTP health check, spoken in the cluster's own HTTP version."""
    codec = http_pb2.HTTP2 if protocol == "http2" else http_pb2.HTTP1
    return health_check_pb2.HealthCheck(
        timeout=seconds_to_duration(check.timeout),
        interval=seconds_to_duration(check.interval),
        healthy_threshold=int_to_uint32(check.healthy_threshold),
        unhealthy_threshold=int_to_uint32(check.unhealthy_threshold),
        http_health_check=health_check_pb2.HealthCheck.HttpHealthCheck(
            path=check.path, codec_client_type=codec
        ),
    )


def make_http_protocol_options(protocol: str) -> http_protocol_options_pb2.HttpProtocolOptions:
    """Explicit HTTP/1.1 or HTTP/2 upstream; model servers differ and ALPN is not always there."""
    explicit = http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig()
    if protocol == "http2":
        explicit.http2_protocol_options.CopyFrom(protocol_pb2.Http2ProtocolOptions())
    else:
        explicit.http_protocol_options.CopyFrom(protocol_pb2.Http1ProtocolOptions())
    return http_protocol_options_pb2.HttpProtocolOptions(explicit_http_config=explicit)


def make_tls_transport_socket(tls: config.UpstreamTls, protocol: str) -> base_pb2.TransportSocket:
    """TLS to the upstream: SNI, a CA bundle to verify it, and an optional client cert."""
    common = make_common_tls_context(tls, protocol)
    context = tls_pb2.UpstreamTlsContext(common_tls_context=common)
    if tls.sni is not None:
        context.sni = tls.sni
    return base_pb2.TransportSocket(name=TLS_TRANSPORT_SOCKET, typed_config=message_to_any(context))


def make_common_tls_context(tls: config.UpstreamTls, protocol: str) -> tls_pb2.CommonTlsContext:
    """The common TLS context: ALPN matching ``protocol``, trusted CA, client certificate."""
    common = tls_pb2.CommonTlsContext(
        alpn_protocols=["h2"] if protocol == "http2" else ["http/1.1"]
    )
    if tls.ca_file is not None:
        common.validation_context.CopyFrom(
            common_pb2.CertificateValidationContext(
                trusted_ca=base_pb2.DataSource(filename=tls.ca_file)
            )
        )
    if tls.cert_file is not None and tls.key_file is not None:
        common.tls_certificates.append(
            common_pb2.TlsCertificate(
                certificate_chain=base_pb2.DataSource(filename=tls.cert_file),
                private_key=base_pb2.DataSource(filename=tls.key_file),
            )
        )
    return common


def make_load_balancing_policy() -> cluster_pb2.LoadBalancingPolicy:
    """Least-request (LLM requests differ by orders of magnitude in cost), else round robin.

    The typed policy list, not the ``lb_policy`` enum: gRPC's xDS client rejects
    LEAST_REQUEST in the enum (measured) and takes the first policy it supports here.
    """

    def policy(name: str, message: Message) -> cluster_pb2.LoadBalancingPolicy.Policy:
        return cluster_pb2.LoadBalancingPolicy.Policy(
            typed_extension_config=extension_pb2.TypedExtensionConfig(
                name=name, typed_config=message_to_any(message)
            )
        )

    return cluster_pb2.LoadBalancingPolicy(
        policies=[
            policy("envoy.load_balancing_policies.least_request", least_request_pb2.LeastRequest()),
            policy("envoy.load_balancing_policies.round_robin", round_robin_pb2.RoundRobin()),
        ]
    )


def make_cluster(cluster: config.Cluster, name: str | None = None) -> cluster_pb2.Cluster:
    """One EDS cluster with ``cluster``'s settings, named ``name`` (default: the cluster's)."""
    name = cluster.name if name is None else name
    result = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=config_source_pb2.ConfigSource(
                ads=config_source_pb2.AggregatedConfigSource(),
                resource_api_version=config_source_pb2.V3,
            ),
            service_name=name,
        ),
        connect_timeout=seconds_to_duration(cluster.connect_timeout),
        load_balancing_policy=make_load_balancing_policy(),
        circuit_breakers=make_circuit_breakers(cluster.circuit_breakers),
    )
    if cluster.outlier_detection is not None:
        result.outlier_detection.CopyFrom(make_outlier_detection(cluster.outlier_detection))
    if cluster.health_check is not None:
        result.health_checks.append(make_health_check(cluster.health_check, cluster.protocol))
    result.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].CopyFrom(
        message_to_any(make_http_protocol_options(cluster.protocol))
    )
    if cluster.tls is not None:
        result.transport_socket.CopyFrom(make_tls_transport_socket(cluster.tls, cluster.protocol))
    return result


def find_cluster(cfg: config.MeshConfig, name: str, model: config.Model) -> config.Cluster:
    """The config cluster ``name`` that ``model`` refers to, or a :class:`TranslateError`."""
    for cluster in cfg.clusters:
        if cluster.name == name:
            return cluster
    raise TranslateError(f"model {model.name!r} refers to unknown cluster {name!r}")


def _fallback_clusters(cfg: config.MeshConfig) -> Iterator[cluster_pb2.Cluster]:
    for derived_as, model, view in fallback_views(cfg):
        for backend in view.backends:
            name = fallback_cluster_name(backend.cluster, derived_as)
            yield make_cluster(find_cluster(cfg, backend.cluster, model), name)


def make_clusters(cfg: config.MeshConfig) -> list[cluster_pb2.Cluster]:
    """Every Envoy cluster: one per config cluster, then the derived fallback clusters."""
    return [*(make_cluster(c) for c in cfg.clusters), *_fallback_clusters(cfg)]
