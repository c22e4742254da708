"""Data residency: which clusters a region-restricted tenant's requests may reach.

A tenant with ``regions`` must never be served outside them. extproc sets
:data:`~smesh.xds.resources.RESIDENCY_HEADER` to ``residency_key(tenant.regions)``; for
each distinct key and each model, the route table gets a route ahead of the model's
general one that matches that header and only reaches clusters whose ``region`` is in
the set. Those routes are plain Envoy routes, so retries, fallback and 503s behave as
on the general route — only over fewer clusters.

This module decides the restricted view of a model (:func:`restrict_model`): backends
and fallbacks filtered to the allowed regions, weights kept; with no allowed backend the
first allowed fallback is promoted; with nothing allowed there is no view (the route
answers 403). Derived fallback clusters of a view are named after
:func:`residency_name`, so they never share a name (or a priority list) with the general
model's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from smesh.config import schema as config
from smesh.contract import residency_key

__all__ = [
    "ResidencyRoute",
    "fallback_views",
    "residency_keys",
    "residency_name",
    "residency_routes",
    "restrict_model",
]


def residency_name(model: str, key: str) -> str:
    """The route (and derived-cluster) name of ``model`` restricted to ``key``'s regions.

    ``~`` cannot appear in a model, cluster or region name, so this never equals a
    model's own name nor another model's restricted name.
    """
    return f"{model}~{key}"


def residency_keys(cfg: config.MeshConfig) -> list[str]:
    """The distinct RESIDENCY_HEADER values of region-restricted tenants, in tenant order."""
    keys: dict[str, None] = {}
    for tenant in cfg.tenants:
        if tenant.regions is not None:
            keys.setdefault(residency_key(tenant.regions), None)
    return list(keys)


def restrict_model(
    model: config.Model, regions: Iterable[str], clusters: Mapping[str, config.Cluster]
) -> config.Model | None:
    """``model`` limited to clusters in ``regions``; ``None`` when none of them is allowed.

    A backend with weight 0 gets no traffic, so allowed backends whose weights sum to 0
    count as none, and the first allowed fallback is promoted to the only backend.
    """
    allowed = set(regions)

    def in_region(name: str) -> bool:
        cluster = clusters.get(name)
        return cluster is not None and cluster.region in allowed

    backends = tuple(b for b in model.backends if in_region(b.cluster))
    fallback = tuple(name for name in model.fallback if in_region(name))
    if sum(b.weight for b in backends) <= 0:
        if not fallback:
            return None
        backends, fallback = (config.Backend(cluster=fallback[0]),), fallback[1:]
    return model.model_copy(update={"backends": backends, "fallback": fallback})


@dataclass(frozen=True)
class ResidencyRoute:
    """One model restricted to one region set: ``allowed`` is ``None`` when nothing is."""

    key: str
    model: config.Model
    allowed: config.Model | None

    @property
    def name(self) -> str:
        return residency_name(self.model.name, self.key)


def residency_routes(cfg: config.MeshConfig, model: config.Model) -> list[ResidencyRoute]:
    """``model`` under every residency key of ``cfg`` (empty when no tenant is restricted).

    An empty region set allows nothing; it gets no route of its own and is refused by
    the catch-all residency route, like any key this table does not know.
    """
    clusters = {cluster.name: cluster for cluster in cfg.clusters}
    return [
        ResidencyRoute(key, model, restrict_model(model, key.split("+"), clusters))
        for key in residency_keys(cfg)
        if key
    ]


def fallback_views(cfg: config.MeshConfig) -> Iterator[tuple[str, config.Model, config.Model]]:
    """``(derived_as, model, view)`` for every view whose backends get derived fallback clusters.

    A view is the model itself, then each of its region-restricted versions (own names,
    only the allowed priorities). Clusters and endpoints both walk this one list.
    """
    for model in cfg.models:
        views = [(model.name, model)]
        views += [(r.name, r.allowed) for r in residency_routes(cfg, model) if r.allowed]
        for derived_as, view in views:
            if view.fallback:
                yield derived_as, model, view
