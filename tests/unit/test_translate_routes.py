"""Tests for smesh.xds.translate.routes."""

from __future__ import annotations

import json
import re

import pytest
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.filters.http.ext_proc.v3 import ext_proc_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import (
    previous_priorities_config_pb2,
)

from smesh.config import schema as config
from smesh.contract import MODEL_HEADER
from smesh.xds.resources import ROUTE_CONFIG_NAME
from smesh.xds.translate import make_http_filters
from smesh.xds.translate.extproc import EXT_PROC_FILTER
from smesh.xds.translate.routes import make_route_configuration, re2_escape
from tests.unit.builders import mesh, sample_config


def _routes() -> dict[str, rc_pb2.Route]:
    table = make_route_configuration(sample_config())
    [vhost] = table.virtual_hosts
    return {route.name: route for route in vhost.routes}


def test_one_table_one_virtual_host_for_every_domain() -> None:
    """The table is named ROUTE_CONFIG_NAME and has one virtual host matching any domain."""
    table = make_route_configuration(sample_config())
    assert table.name == ROUTE_CONFIG_NAME
    [vhost] = table.virtual_hosts
    assert list(vhost.domains) == ["*"]


def test_model_routes_come_first_then_the_two_error_routes() -> None:
    """One route per model in config order, then model-not-found, then model-required."""
    [vhost] = make_route_configuration(sample_config()).virtual_hosts
    assert [r.name for r in vhost.routes] == [
        "llama-3-70b",
        "mistral-7b",
        "qwen",
        "~model_not_found",
        "~model_required",
    ]


def test_model_without_aliases_matches_header_exactly() -> None:
    """A model with no aliases matches the model header by exact string."""
    [header] = _routes()["mistral-7b"].match.headers
    assert header.name == MODEL_HEADER
    assert header.string_match.exact == "mistral-7b"
    assert _routes()["mistral-7b"].match.prefix == "/"


def test_aliases_match_an_anchored_escaped_regex() -> None:
    """Name and aliases match through one anchored RE2 alternation with metacharacters escaped."""
    [header] = _routes()["llama-3-70b"].match.headers
    pattern = header.string_match.safe_regex.regex
    assert pattern == r"^(llama-3-70b|llama|meta/llama-3\.1\+70b)$"
    assert re.fullmatch(pattern, "meta/llama-3.1+70b")
    assert not re.fullmatch(pattern, "meta/llama-3x1+70b")
    assert not re.fullmatch(pattern, "llama-3-70b-instruct")


@pytest.mark.parametrize(
    ("text", "escaped"),
    [("a.b", r"a\.b"), ("x+y", r"x\+y"), ("org/m:v@1-2_3", "org/m:v@1-2_3")],
    ids=["dot", "plus", "plain-punctuation-untouched"],
)
def test_re2_escape_only_escapes_metacharacters(text: str, escaped: str) -> None:
    """RE2 escaping touches only regex metacharacters."""
    assert re2_escape(text) == escaped


def test_canary_backends_become_weighted_clusters() -> None:
    """Several backends split traffic by their configured weights."""
    action = _routes()["llama-3-70b"].route
    weights = {c.name: c.weight.value for c in action.weighted_clusters.clusters}
    assert weights == {"vllm-a": 90, "vllm-canary": 10}


def test_zero_weight_backend_stays_listed() -> None:
    """A weight-0 backend is kept with weight 0 (Envoy accepts it while the total is positive)."""
    action = _routes()["qwen"].route
    weights = {c.name: c.weight.value for c in action.weighted_clusters.clusters}
    assert weights == {"sim": 1, "tgi-b": 0}


def test_single_backend_routes_to_one_cluster() -> None:
    """One backend routes straight to its cluster."""
    cfg = mesh(
        models=[{"name": "m", "backends": [{"cluster": "c"}]}],
        clusters=[{"name": "c", "endpoints": ["10.0.0.1:80"]}],
    )
    [vhost] = make_route_configuration(cfg).virtual_hosts
    assert vhost.routes[0].route.cluster == "c"


def test_fallback_model_routes_to_derived_cluster_and_moves_priority() -> None:
    """A model with fallback uses the derived cluster and retries on the next priority."""
    action = _routes()["mistral-7b"].route
    assert action.cluster == "vllm-a~mistral-7b"
    priority = action.retry_policy.retry_priority
    assert priority.name == "envoy.retry_priorities.previous_priorities"
    config = previous_priorities_config_pb2.PreviousPrioritiesConfig()
    assert priority.typed_config.Unpack(config)
    assert config.update_frequency == 1


def test_retry_policy_follows_config() -> None:
    """Retry conditions, count and per-try timeout come from config; hosts are not reused."""
    action = _routes()["llama-3-70b"].route
    policy = action.retry_policy
    assert action.timeout.ToSeconds() == 90
    assert policy.retry_on == "5xx,reset"
    assert policy.num_retries.value == 2
    assert policy.per_try_timeout.ToSeconds() == 30
    assert [p.name for p in policy.retry_host_predicate] == [
        "envoy.retry_host_predicates.previous_hosts"
    ]
    assert policy.host_selection_retry_max_attempts == 10
    assert not policy.HasField("retry_priority")


def test_no_retry_policy_when_attempts_is_zero() -> None:
    """attempts: 0 means no retry policy at all."""
    assert not _routes()["qwen"].route.HasField("retry_policy")


def test_default_timeout_is_120s_without_per_try_timeout() -> None:
    """A model with default settings gets the 120 s timeout and no per-try timeout."""
    action = _routes()["mistral-7b"].route
    assert action.timeout.ToSeconds() == 120
    assert not action.retry_policy.HasField("per_try_timeout")


@pytest.mark.parametrize(
    ("name", "status", "code", "present"),
    [
        ("~model_not_found", 404, "model_not_found", True),
        ("~model_required", 400, "model_required", False),
    ],
    ids=["unknown-model-404", "missing-model-400"],
)
def test_error_routes_answer_openai_json(name: str, status: int, code: str, present: bool) -> None:
    """Unknown model → 404, missing model → 400, both as OpenAI-style JSON."""
    route = _routes()[name]
    assert route.direct_response.status == status
    body = json.loads(route.direct_response.body.inline_string)
    assert body["error"]["code"] == code
    assert body["error"]["type"] == "invalid_request_error"
    assert MODEL_HEADER in body["error"]["message"]
    assert [(h.header.key, h.header.value) for h in route.response_headers_to_add] == [
        ("content-type", "application/json")
    ]
    headers = [(h.name, h.present_match) for h in route.match.headers]
    assert headers == ([(MODEL_HEADER, True)] if present else [])


def test_error_body_is_compact_json() -> None:
    """The not-found body is compact JSON with no spaces after separators."""
    body = _routes()["~model_not_found"].direct_response.body.inline_string
    assert body == json.dumps(json.loads(body), separators=(",", ":"))


def test_credentials_and_cookies_never_reach_a_model_server() -> None:
    """The router drops authorization, api-key, cookie and proxy-authorization on every route."""
    table = make_route_configuration(sample_config())
    assert set(table.request_headers_to_remove) == {
        "authorization",
        "api-key",
        "cookie",
        "proxy-authorization",
    }


def _fail_open_config() -> config.MeshConfig:
    document = sample_config().model_dump(mode="json", exclude_defaults=True)
    document["models"][0]["failure_mode_allow"] = True
    document["extproc"] = {"port": 18081}
    return mesh(**document)


def test_only_a_model_that_opts_out_fails_open() -> None:
    """failure_mode_allow is per model: a per-route ext_proc override on that model's route."""
    [vhost] = make_route_configuration(_fail_open_config()).virtual_hosts
    routes = {route.name: route for route in vhost.routes}
    override = ext_proc_pb2.ExtProcPerRoute()
    assert routes["llama-3-70b"].typed_per_filter_config[EXT_PROC_FILTER].Unpack(override)
    assert override.overrides.failure_mode_allow.value is True
    assert EXT_PROC_FILTER not in routes["mistral-7b"].typed_per_filter_config


def test_the_body_model_is_read_before_ext_proc_only_when_a_model_fails_open() -> None:
    """The transform filter routing on the body ahead of ext_proc costs a parse: only if needed."""
    with_opt_out = make_http_filters(_fail_open_config())
    names = [f.name for f in with_opt_out]
    assert names.index("envoy.filters.http.transform") == names.index(EXT_PROC_FILTER) - 1
    document = _fail_open_config().model_dump(mode="json", exclude_defaults=True)
    document["models"][0].pop("failure_mode_allow")
    assert "envoy.filters.http.transform" not in [
        f.name for f in make_http_filters(mesh(**document))
    ]
