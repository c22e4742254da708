"""Route translation: the models of a mesh config → the one shared ``RouteConfiguration``.

extproc reads the model from the JSON body and sets :data:`~smesh.xds.resources.MODEL_HEADER`,
then clears the route cache; this table picks the route on that header. Each model gets
one route (its name and aliases), whose action spreads traffic over its backends by
weight (canary) with Envoy-native retries. A model with ``fallback`` points at derived
clusters whose lower priorities hold the fallback endpoints, and its retries move to the
next priority. Two catch-all routes after the models answer unknown or missing models
with the OpenAI-style JSON error, without going upstream.

Region-restricted tenants (see :mod:`~smesh.xds.translate.residency`) get, ahead of each
model's route, one route per region set that also matches
:data:`~smesh.xds.resources.RESIDENCY_HEADER` and reaches only that set's clusters (403
when there are none), then a route that refuses any other residency value: a request
that carries the header never falls through to the unrestricted route.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import (
    previous_priorities_config_pb2,
)
from envoy.type.matcher.v3 import regex_pb2, string_pb2

from smesh.config import schema as config
from smesh.contract import (
    GUARD_HEADER,
    MODEL_HEADER,
    OVERHEAD_HEADER,
    REQUEST_NAMESPACE,
    RESIDENCY_HEADER,
    error_body,
)
from smesh.xds.resources import ROUTE_CONFIG_NAME, fallback_cluster_name
from smesh.xds.translate._convert import int_to_uint32, message_to_any, seconds_to_duration
from smesh.xds.translate.extproc import (
    EXT_PROC_FILTER,
    MAX_BUFFERED_ANSWER_BYTES,
    make_fail_open_override,
)
from smesh.xds.translate.residency import ResidencyRoute, residency_keys, residency_routes

__all__ = [
    "MODEL_NOT_FOUND_ROUTE",
    "MODEL_REQUIRED_ROUTE",
    "UPSTREAM_REMOVED_HEADERS",
    "VIRTUAL_HOST_NAME",
    "make_model_route",
    "make_residency_route",
    "make_retry_policy",
    "make_route_configuration",
    "model_header_matcher",
    "re2_escape",
]

VIRTUAL_HOST_NAME = "smesh"
# Client headers the router never forwards: the gateway's credentials and the client's
# session cookies and proxy credentials, which no model server needs.
UPSTREAM_REMOVED_HEADERS = ("authorization", "api-key", "cookie", "proxy-authorization")
# Answer headers Envoy fills from what extproc recorded about the request.
ANSWER_HEADERS_FROM_METADATA = ((OVERHEAD_HEADER, "overhead_ms"), (GUARD_HEADER, "flags"))
# "~" cannot appear in a model name, so these route names never clash with a model's.
MODEL_NOT_FOUND_ROUTE = "~model_not_found"
MODEL_REQUIRED_ROUTE = "~model_required"
# Suffix of each model's route refusing residency values this table has no route for.
REGION_NOT_ALLOWED_SUFFIX = "~region_not_allowed"

PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"
PREVIOUS_PRIORITIES = "envoy.retry_priorities.previous_priorities"
# How often the router re-picks a host that the previous-hosts predicate rejected. Least
# request prefers a dead endpoint (it has no requests in flight), so with two endpoints
# one pick in four lands on the same dead host again: 3 attempts lost 1-3 requests per
# outage of one of two replicas (tests/reliability), 10 leave 0.75^10 ≈ 6 % per retry.
HOST_SELECTION_RETRY_MAX_ATTEMPTS = 10

_RE2_SPECIAL = frozenset("\\.+*?()|[]{}^$")


def re2_escape(text: str) -> str:
    """Escape RE2 metacharacters (only those: RE2 rejects some escapes Python's would add)."""
    return "".join(f"\\{ch}" if ch in _RE2_SPECIAL else ch for ch in text)


def model_header_matcher(model: config.Model) -> rc_pb2.HeaderMatcher:
    """Exact match on the model name, or an anchored RE2 alternation when it has aliases."""
    if not model.aliases:
        matcher = string_pb2.StringMatcher(exact=model.name)
    else:
        pattern = "^(" + "|".join(re2_escape(name) for name in model.names) + ")$"
        matcher = string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=pattern))
    return rc_pb2.HeaderMatcher(name=MODEL_HEADER, string_match=matcher)


def make_retry_policy(model: config.Model) -> rc_pb2.RetryPolicy | None:
    """Retries from config, never on the same host twice; ``None`` when retries are off."""
    retries = model.retries
    if retries.attempts == 0 or not retries.on:
        return None
    policy = rc_pb2.RetryPolicy(
        retry_on=",".join(retries.on),
        num_retries=int_to_uint32(retries.attempts),
        retry_host_predicate=[
            rc_pb2.RetryPolicy.RetryHostPredicate(
                name=PREVIOUS_HOSTS,
                typed_config=message_to_any(previous_hosts_pb2.PreviousHostsPredicate()),
            )
        ],
        host_selection_retry_max_attempts=HOST_SELECTION_RETRY_MAX_ATTEMPTS,
    )
    if retries.per_try_timeout is not None:
        policy.per_try_timeout.CopyFrom(seconds_to_duration(retries.per_try_timeout))
    if model.fallback:
        # A failed try excludes the priority it used, so the retry lands on the fallback.
        policy.retry_priority.CopyFrom(
            rc_pb2.RetryPolicy.RetryPriority(
                name=PREVIOUS_PRIORITIES,
                typed_config=message_to_any(
                    previous_priorities_config_pb2.PreviousPrioritiesConfig(update_frequency=1)
                ),
            )
        )
    return policy


def _backend_cluster(model: config.Model, backend: config.Backend, derived_as: str) -> str:
    if model.fallback:
        return fallback_cluster_name(backend.cluster, derived_as)
    return backend.cluster


def _route_action(model: config.Model, derived_as: str) -> rc_pb2.RouteAction:
    action = rc_pb2.RouteAction(timeout=seconds_to_duration(model.timeout))
    if len(model.backends) == 1:
        action.cluster = _backend_cluster(model, model.backends[0], derived_as)
    else:
        # Weight-0 backends stay in the list: Envoy accepts 0 (no traffic) as long as the
        # total is positive, which the config model guarantees; that keeps a parked
        # canary's cluster visible in stats.
        action.weighted_clusters.CopyFrom(
            rc_pb2.WeightedCluster(
                clusters=[
                    rc_pb2.WeightedCluster.ClusterWeight(
                        name=_backend_cluster(model, backend, derived_as),
                        weight=int_to_uint32(backend.weight),
                    )
                    for backend in model.backends
                ]
            )
        )
    retry_policy = make_retry_policy(model)
    if retry_policy is not None:
        action.retry_policy.CopyFrom(retry_policy)
    return action


def make_model_route(model: config.Model) -> rc_pb2.Route:
    """The route for one model: header match, weighted backends, timeout and retries."""
    route = rc_pb2.Route(
        name=model.name,
        match=rc_pb2.RouteMatch(prefix="/", headers=[model_header_matcher(model)]),
        route=_route_action(model, model.name),
    )
    _opt_out_of_fail_closed(route, model)
    return route


def _opt_out_of_fail_closed(route: rc_pb2.Route, model: config.Model) -> None:
    """A model with ``failure_mode_allow``: its route lets requests through if extproc is down."""
    if model.failure_mode_allow:
        route.typed_per_filter_config[EXT_PROC_FILTER].CopyFrom(
            message_to_any(make_fail_open_override())
        )


def _residency_matcher(key: str) -> rc_pb2.HeaderMatcher:
    return rc_pb2.HeaderMatcher(
        name=RESIDENCY_HEADER, string_match=string_pb2.StringMatcher(exact=key)
    )


def make_residency_route(residency: ResidencyRoute) -> rc_pb2.Route:
    """The model's route for one region set: only allowed clusters, or a 403 if none are."""
    headers = [model_header_matcher(residency.model), _residency_matcher(residency.key)]
    if residency.allowed is None:
        return _json_error_route(
            residency.name,
            403,
            _error_body(
                f"model {residency.model.name!r} has no backend in the regions this tenant "
                f"may use ({residency.key.replace('+', ', ')})",
                "region_not_allowed",
            ),
            headers,
        )
    route = rc_pb2.Route(
        name=residency.name,
        match=rc_pb2.RouteMatch(prefix="/", headers=headers),
        route=_route_action(residency.allowed, residency.name),
    )
    _opt_out_of_fail_closed(route, residency.model)
    return route


def _region_not_allowed_route(model: config.Model) -> rc_pb2.Route:
    # Reached by a residency value with no route above (an empty region set, or extproc
    # ahead of this table after a config change): refuse rather than serve anywhere.
    return _json_error_route(
        model.name + REGION_NOT_ALLOWED_SUFFIX,
        403,
        _error_body(
            f"model {model.name!r} is not available in the regions this tenant may use",
            "region_not_allowed",
        ),
        [
            model_header_matcher(model),
            rc_pb2.HeaderMatcher(name=RESIDENCY_HEADER, present_match=True),
        ],
    )


def _model_routes(cfg: config.MeshConfig, model: config.Model) -> list[rc_pb2.Route]:
    routes = [make_residency_route(r) for r in residency_routes(cfg, model)]
    if residency_keys(cfg):
        routes.append(_region_not_allowed_route(model))
    routes.append(make_model_route(model))
    return routes


def _error_body(message: str, code: str) -> str:
    return error_body(400, code, message).decode()


def _response_header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, value=value),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )


def _json_error_route(
    name: str, status: int, body: str, headers: list[rc_pb2.HeaderMatcher]
) -> rc_pb2.Route:
    return rc_pb2.Route(
        name=name,
        match=rc_pb2.RouteMatch(prefix="/", headers=headers),
        direct_response=rc_pb2.DirectResponseAction(
            status=status, body=base_pb2.DataSource(inline_string=body)
        ),
        response_headers_to_add=[_response_header("content-type", "application/json")],
    )


def make_route_configuration(cfg: config.MeshConfig) -> route_pb2.RouteConfiguration:
    """The shared route table: the routes of each model, then the two JSON error routes."""
    routes = [route for model in cfg.models for route in _model_routes(cfg, model)]
    routes.append(
        _json_error_route(
            MODEL_NOT_FOUND_ROUTE,
            404,
            _error_body(f"model not found (header {MODEL_HEADER})", "model_not_found"),
            [rc_pb2.HeaderMatcher(name=MODEL_HEADER, present_match=True)],
        )
    )
    # Reached only when the header is absent: every request with it matched above.
    routes.append(
        _json_error_route(
            MODEL_REQUIRED_ROUTE,
            400,
            _error_body(
                f"no model given (request body field 'model' or header {MODEL_HEADER})",
                "model_required",
            ),
            [],
        )
    )
    vhost = rc_pb2.VirtualHost(name=VIRTUAL_HOST_NAME, domains=["*"], routes=routes)
    if cfg.extproc is not None:
        # The request body is capped by body_size_limit; the stream's buffer limit (shared
        # by both directions) must hold a whole JSON answer for its usage to be read.
        vhost.request_body_buffer_limit.value = MAX_BUFFERED_ANSWER_BYTES
        # extproc does not see the answer by default: it leaves these in the request's
        # dynamic metadata and Envoy writes them on the answer. Absent, nothing is added.
        vhost.response_headers_to_add.extend(
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(
                    key=name, value=f"%DYNAMIC_METADATA({REQUEST_NAMESPACE}:{key})%"
                ),
                append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
                keep_empty_value=False,
            )
            for name, key in ANSWER_HEADERS_FROM_METADATA
        )
    return route_pb2.RouteConfiguration(
        name=ROUTE_CONFIG_NAME,
        virtual_hosts=[vhost],
        # Credentials never reach a model server, whatever happened before the router
        # (extproc removes them too, but a route that fails open never calls extproc).
        request_headers_to_remove=list(UPSTREAM_REMOVED_HEADERS),
    )
