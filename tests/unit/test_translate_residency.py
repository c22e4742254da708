"""Tests for smesh.xds.translate.residency and the routes, clusters and endpoints it adds."""

from __future__ import annotations

import json
from typing import Any

from envoy.config.route.v3 import route_components_pb2 as rc_pb2

from smesh.config import schema as config
from smesh.contract import MODEL_HEADER, RESIDENCY_HEADER
from smesh.xds.resources import CLUSTER, ENDPOINT, ROUTE
from smesh.xds.snapshot import Snapshot, check_consistency
from smesh.xds.translate import translate
from smesh.xds.translate.residency import residency_keys, residency_name, restrict_model
from smesh.xds.translate.routes import make_route_configuration
from tests.unit.builders import mesh, sample_config


def _restricted(*tenants: dict[str, Any]) -> config.MeshConfig:
    """The sample mesh (vllm-a in eu-west, tgi-b in eu-central) with these tenants."""
    document = sample_config().model_dump(mode="json", exclude_defaults=True)
    document["extproc"] = {}
    document["tenants"] = list(tenants)
    return mesh(**document)


def _regions() -> config.MeshConfig:
    return _restricted(
        {"name": "bank", "regions": ["eu-west", "eu-central"]},
        {"name": "west", "regions": ["eu-west"]},
        {"name": "also-bank", "regions": ["eu-central", "eu-west"]},
        {"name": "open"},
    )


def _routes(cfg: config.MeshConfig) -> dict[str, rc_pb2.Route]:
    [vhost] = make_route_configuration(cfg).virtual_hosts
    return {route.name: route for route in vhost.routes}


def _clusters_of(route: rc_pb2.Route) -> list[tuple[str, int]]:
    action = route.route
    if action.cluster:
        return [(action.cluster, 1)]
    return [(c.name, c.weight.value) for c in action.weighted_clusters.clusters]


def _model(**fields: Any) -> config.Model:
    return config.Model.model_validate({"name": "m", **fields})


CLUSTERS = {
    c.name: c
    for c in (
        config.Cluster.model_validate({"name": "a", "region": "eu", "endpoints": ["10.0.0.1:1"]}),
        config.Cluster.model_validate({"name": "b", "region": "us", "endpoints": ["10.0.0.2:1"]}),
        config.Cluster.model_validate({"name": "c", "region": "eu", "endpoints": ["10.0.0.3:1"]}),
        config.Cluster.model_validate({"name": "d", "endpoints": ["10.0.0.4:1"]}),
    )
}


def test_keys_are_distinct_sorted_region_sets_in_tenant_order() -> None:
    """Tenants with the same set share a key; unrestricted tenants have none."""
    assert residency_keys(_regions()) == ["eu-central+eu-west", "eu-west"]
    assert residency_keys(_restricted({"name": "open"})) == []


def test_restrict_keeps_allowed_backends_with_their_weights() -> None:
    """Backends outside the regions are dropped; the rest keep their weights."""
    model = _model(backends=[{"cluster": "a", "weight": 3}, {"cluster": "b"}, {"cluster": "c"}])
    allowed = restrict_model(model, ["eu"], CLUSTERS)
    assert allowed is not None
    assert [(b.cluster, b.weight) for b in allowed.backends] == [("a", 3), ("c", 1)]
    assert allowed.names == model.names


def test_restrict_filters_fallbacks_too() -> None:
    """Fallbacks outside the regions (or with no region) are dropped, order kept."""
    model = _model(backends=[{"cluster": "a"}], fallback=["b", "d", "c"])
    allowed = restrict_model(model, ["eu"], CLUSTERS)
    assert allowed is not None
    assert allowed.fallback == ("c",)


def test_restrict_promotes_the_first_allowed_fallback() -> None:
    """No allowed backend but an allowed fallback: that fallback becomes the backend."""
    model = _model(backends=[{"cluster": "b"}], fallback=["d", "a", "c"])
    allowed = restrict_model(model, ["eu"], CLUSTERS)
    assert allowed is not None
    assert [b.cluster for b in allowed.backends] == ["a"]
    assert allowed.fallback == ("c",)


def test_restrict_treats_only_parked_backends_as_none() -> None:
    """Allowed backends that all have weight 0 get no traffic, so a fallback is promoted."""
    model = _model(backends=[{"cluster": "b"}, {"cluster": "a", "weight": 0}], fallback=["c"])
    allowed = restrict_model(model, ["eu"], CLUSTERS)
    assert allowed is not None
    assert [b.cluster for b in allowed.backends] == ["c"]


def test_restrict_allows_nothing_when_no_cluster_is_in_the_regions() -> None:
    """Nothing in the regions: no restricted view at all."""
    model = _model(backends=[{"cluster": "b"}], fallback=["d"])
    assert restrict_model(model, ["eu"], CLUSTERS) is None


def test_no_restricted_tenant_leaves_the_table_as_it_was() -> None:
    """Without region-restricted tenants the routes are exactly the unrestricted ones."""
    [restricted] = make_route_configuration(_restricted({"name": "open"})).virtual_hosts
    [plain] = make_route_configuration(sample_config()).virtual_hosts
    assert list(restricted.routes) == list(plain.routes)


def test_residency_routes_come_before_the_model_route() -> None:
    """Per model: one route per region set, the refusal for other sets, then the general route."""
    [vhost] = make_route_configuration(_regions()).virtual_hosts
    names = [route.name for route in vhost.routes]
    assert names[:4] == [
        "llama-3-70b~eu-central+eu-west",
        "llama-3-70b~eu-west",
        "llama-3-70b~region_not_allowed",
        "llama-3-70b",
    ]
    assert names[-2:] == ["~model_not_found", "~model_required"]


def test_residency_route_matches_model_and_residency_header() -> None:
    """The route matches the model header (aliases included) and the exact residency key."""
    route = _routes(_regions())["llama-3-70b~eu-west"]
    model_match, residency_match = route.match.headers
    assert model_match == _routes(_regions())["llama-3-70b"].match.headers[0]
    assert model_match.name == MODEL_HEADER
    assert residency_match.name == RESIDENCY_HEADER
    assert residency_match.string_match.exact == "eu-west"


def test_residency_route_reaches_only_allowed_clusters() -> None:
    """llama (vllm-a eu-west 90, canary no region 10) restricted to eu-west: vllm-a only."""
    route = _routes(_regions())["llama-3-70b~eu-west"]
    assert _clusters_of(route) == [("vllm-a", 1)]
    assert route.route.timeout == _routes(_regions())["llama-3-70b"].route.timeout


def test_residency_fallback_uses_its_own_derived_clusters() -> None:
    """mistral restricted to both EU regions: own derived cluster, retries move priorities."""
    route = _routes(_regions())["mistral-7b~eu-central+eu-west"]
    derived = "vllm-a~" + residency_name("mistral-7b", "eu-central+eu-west")
    assert _clusters_of(route) == [(derived, 1)]
    assert (
        route.route.retry_policy.retry_priority.name == "envoy.retry_priorities.previous_priorities"
    )


def test_residency_without_allowed_fallback_drops_the_priority_retry() -> None:
    """mistral restricted to eu-west: its fallbacks are elsewhere, so the plain cluster serves."""
    route = _routes(_regions())["mistral-7b~eu-west"]
    assert _clusters_of(route) == [("vllm-a", 1)]
    assert not route.route.retry_policy.HasField("retry_priority")


def test_nothing_allowed_answers_403_json() -> None:
    """qwen (sim, no region; tgi-b parked) has nothing in eu-west: 403 region_not_allowed."""
    route = _routes(_regions())["qwen~eu-west"]
    assert route.direct_response.status == 403
    error = json.loads(route.direct_response.body.inline_string)["error"]
    assert error["code"] == "region_not_allowed"
    assert "eu-west" in error["message"]


def test_unknown_residency_value_is_refused_not_served() -> None:
    """A residency value with no route of its own gets 403 instead of the general route."""
    route = _routes(_regions())["qwen~region_not_allowed"]
    assert route.direct_response.status == 403
    [model_match, residency_match] = route.match.headers
    assert model_match.name == MODEL_HEADER
    assert (residency_match.name, residency_match.present_match) == (RESIDENCY_HEADER, True)


def test_empty_region_set_is_refused_everywhere() -> None:
    """A tenant with regions: [] has no route of its own; the refusal route catches it."""
    names = list(_routes(_restricted({"name": "nowhere", "regions": []})))
    assert "qwen~region_not_allowed" in names
    assert not any(name.startswith("qwen~") and "region_not_allowed" not in name for name in names)


def test_derived_residency_clusters_hold_only_allowed_priorities() -> None:
    """The residency fallback cluster has vllm-a at priority 0 and tgi-b at 1, nothing else."""
    resources = translate(_regions())
    name = "vllm-a~" + residency_name("mistral-7b", "eu-central+eu-west")
    assert name in resources[CLUSTER]
    assignment = resources[ENDPOINT][name]
    levels = [(loc.priority, loc.locality.sub_zone) for loc in assignment.endpoints]
    assert levels == [(0, "vllm-a"), (1, "tgi-b")]


def test_residency_snapshot_is_consistent() -> None:
    """Every cluster a residency route names exists, with its endpoints."""
    resources = translate(_regions())
    assert check_consistency(Snapshot.build(resources)) == []
    assert ROUTE in resources
