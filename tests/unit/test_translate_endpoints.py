"""Tests for smesh.xds.translate.endpoints."""

from __future__ import annotations

import pytest
from envoy.config.endpoint.v3 import endpoint_pb2

from smesh.config import schema as config
from smesh.xds.translate import TranslateError
from smesh.xds.translate.endpoints import make_load_assignments, resolve_endpoints
from tests.unit.builders import mesh, sample_config


def _hosts(cla: endpoint_pb2.ClusterLoadAssignment) -> list[tuple[int, str, int, int]]:
    return [
        (
            locality.priority,
            lb.endpoint.address.socket_address.address,
            lb.endpoint.address.socket_address.port_value,
            lb.load_balancing_weight.value,
        )
        for locality in cla.endpoints
        for lb in locality.lb_endpoints
    ]


def _assignments(
    simulated: dict[str, tuple[config.Endpoint, ...]] | None = None,
) -> dict[str, endpoint_pb2.ClusterLoadAssignment]:
    cfg = sample_config()
    return {
        cla.cluster_name: cla
        for cla in make_load_assignments(cfg, resolve_endpoints(cfg, simulated))
    }


def test_static_endpoints_as_configured() -> None:
    """Static clusters resolve to their configured endpoints, weights included."""
    resolved = resolve_endpoints(sample_config())
    assert [(e.address, e.port, e.weight) for e in resolved["vllm-a"]] == [
        ("10.0.0.1", 8000, 1),
        ("10.0.0.2", 8000, 3),
    ]


def test_simulated_cluster_uses_port_range() -> None:
    """A simulated cluster with simulate.port gets one localhost port per replica."""
    resolved = resolve_endpoints(sample_config())
    assert [(e.address, e.port) for e in resolved["sim"]] == [
        ("127.0.0.1", 9100),
        ("127.0.0.1", 9101),
    ]


def test_simulated_addresses_win_over_port() -> None:
    """Addresses of running simulators replace the configured simulate.port."""
    running = (config.Endpoint(address="127.0.0.1", port=41000),)
    resolved = resolve_endpoints(sample_config(), {"sim": running})
    assert resolved["sim"] == running


def test_simulated_cluster_without_address_is_an_error() -> None:
    """A simulated cluster with neither simulate.port nor running addresses raises."""
    cfg = mesh(clusters=[{"name": "sim", "simulate": {}}])
    with pytest.raises(TranslateError, match=r"'sim'.*simulate\.port.*smesh up"):
        resolve_endpoints(cfg)


def test_hostname_endpoint_is_an_error() -> None:
    """EDS needs IP addresses, so a hostname endpoint raises naming the cluster."""
    cfg = mesh(clusters=[{"name": "dns", "endpoints": ["vllm.svc:8000"]}])
    with pytest.raises(TranslateError, match=r"'dns'.*vllm\.svc:8000"):
        resolve_endpoints(cfg)


def test_plain_cluster_is_one_weighted_locality_at_priority_zero() -> None:
    """A plain cluster has one locality (region, sub-zone = cluster) with weight 1 at priority 0."""
    cla = _assignments()["vllm-a"]
    [locality] = cla.endpoints
    assert locality.priority == 0
    assert locality.load_balancing_weight.value == 1
    assert locality.locality.region == "eu-west"
    assert locality.locality.sub_zone == "vllm-a"
    assert _hosts(cla) == [(0, "10.0.0.1", 8000, 1), (0, "10.0.0.2", 8000, 3)]


def test_cluster_without_region_has_empty_region() -> None:
    """A cluster with no region gets an empty region string."""
    [locality] = _assignments()["vllm-canary"].endpoints
    assert locality.locality.region == ""
    assert locality.locality.sub_zone == "vllm-canary"


def test_one_assignment_per_envoy_cluster() -> None:
    """Assignments exist for every config cluster and every derived fallback cluster."""
    assert list(_assignments()) == [
        "vllm-a",
        "vllm-canary",
        "tgi-b",
        "sim",
        "secure",
        "vllm-a~mistral-7b",
    ]


def test_fallback_cluster_puts_fallbacks_at_lower_priorities() -> None:
    """The derived cluster holds the backend at priority 0 and each fallback one level lower."""
    cla = _assignments()["vllm-a~mistral-7b"]
    assert [(loc.priority, loc.locality.sub_zone) for loc in cla.endpoints] == [
        (0, "vllm-a"),
        (1, "tgi-b"),
        (2, "sim"),
    ]
    assert all(loc.load_balancing_weight.value == 1 for loc in cla.endpoints)
    assert _hosts(cla) == [
        (0, "10.0.0.1", 8000, 1),
        (0, "10.0.0.2", 8000, 3),
        (1, "10.0.2.1", 8080, 1),
        (2, "127.0.0.1", 9100, 1),
        (2, "127.0.0.1", 9101, 1),
    ]


def test_missing_resolution_is_an_error() -> None:
    """make_load_assignments raises when a cluster's endpoints were not resolved."""
    with pytest.raises(TranslateError, match="vllm-a"):
        make_load_assignments(sample_config(), {})
