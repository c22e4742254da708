"""Rules that span the whole mesh config: unique names, and every reference resolves.

They return located issues instead of raising, so that every problem in a file is
reported at once (the loader maps each path to its file and line).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import re2

from smesh.config.schema import BUILTIN_ENTITIES, Guard, MeshConfig

__all__ = ["ConfigIssue", "check_references"]


@dataclass(frozen=True)
class ConfigIssue:
    """One problem, at a path into the document (``("models", 0, "backends", 1)``)."""

    path: tuple[str | int, ...]
    message: str


def _duplicates(section: str, items: tuple[Any, ...], key: str) -> Iterator[ConfigIssue]:
    seen: dict[Any, int] = {}
    for i, item in enumerate(items):
        value = getattr(item, key)
        if value in seen:
            yield ConfigIssue(
                (section, i, key), f"duplicate {key} {value!r} (first at {section}[{seen[value]}])"
            )
        seen.setdefault(value, i)


def check_references(cfg: MeshConfig) -> list[ConfigIssue]:
    """Document-wide rules: names unique, every reference resolves."""
    issues = [
        *_duplicates("listeners", cfg.listeners, "name"),
        *_duplicates("listeners", cfg.listeners, "port"),
        *_duplicates("tenants", cfg.tenants, "name"),
        *_duplicates("models", cfg.models, "name"),
        *_duplicates("clusters", cfg.clusters, "name"),
        *_duplicates("grpc_services", cfg.grpc_services, "name"),
        *_duplicates("guards", cfg.guards, "name"),
    ]
    if not cfg.listeners:
        issues.append(
            ConfigIssue(
                ("listeners",), "at least one listener is needed (Envoy would serve nothing)"
            )
        )
    for g, guard in enumerate(cfg.guards):
        issues.extend(_guard_issues(("guards", g), guard))
    clusters = {c.name: c for c in cfg.clusters}
    listener_names = {listener.name for listener in cfg.listeners}
    for g, service in enumerate(cfg.grpc_services):
        where: tuple[str | int, ...] = ("grpc_services", g)
        if service.name in listener_names:
            issues.append(
                ConfigIssue((*where, "name"), f"{service.name!r} already names a listener")
            )
        target = clusters.get(service.cluster)
        if target is None:
            issues.append(ConfigIssue((*where, "cluster"), f"unknown cluster {service.cluster!r}"))
        elif target.protocol != "http2":
            issues.append(
                ConfigIssue(
                    (*where, "cluster"),
                    f"cluster {service.cluster!r} must be protocol: http2 (gRPC)",
                )
            )
    model_names: dict[str, tuple[str | int, ...]] = {}
    for m, model in enumerate(cfg.models):
        for a, alias in enumerate(model.aliases):
            where = ("models", m, "aliases", a)
            if alias in model_names or alias == model.name:
                issues.append(ConfigIssue(where, f"{alias!r} already names a model"))
            model_names.setdefault(alias, where)
        model_names.setdefault(model.name, ("models", m, "name"))
        used: set[str] = set()
        for b, backend in enumerate(model.backends):
            if backend.cluster not in clusters:
                issues.append(
                    ConfigIssue(
                        ("models", m, "backends", b, "cluster"),
                        f"unknown cluster {backend.cluster!r}",
                    )
                )
            if backend.cluster in used:
                issues.append(
                    ConfigIssue(
                        ("models", m, "backends", b, "cluster"),
                        f"cluster {backend.cluster!r} listed twice",
                    )
                )
            used.add(backend.cluster)
        for f, name in enumerate(model.fallback):
            where = ("models", m, "fallback", f)
            if name not in clusters:
                issues.append(ConfigIssue(where, f"unknown cluster {name!r}"))
            elif name in used:
                issues.append(
                    ConfigIssue(where, f"cluster {name!r} is already a backend or fallback")
                )
            else:
                for backend in model.backends:
                    primary = clusters.get(backend.cluster)
                    if primary is not None and primary.tls != clusters[name].tls:
                        issues.append(
                            ConfigIssue(
                                where,
                                f"fallback {name!r} must use the same tls settings as backend "
                                f"{backend.cluster!r} (they share one Envoy cluster)",
                            )
                        )
            used.add(name)
    issues.extend(_tenant_issues(cfg, set(model_names)))
    return issues


def _tenant_issues(cfg: MeshConfig, model_names: set[str]) -> list[ConfigIssue]:
    """Tenants need extproc; keys belong to one tenant; regions, guards and models exist."""
    issues: list[ConfigIssue] = []
    if cfg.tenants and cfg.extproc is None:
        issues.append(
            ConfigIssue(
                ("tenants",), "tenants need an extproc section (nothing would enforce them)"
            )
        )
    if cfg.jwt is not None and cfg.extproc is None:
        issues.append(ConfigIssue(("jwt",), "jwt needs an extproc section"))
    key_owner: dict[str, str] = {}
    for t, tenant in enumerate(cfg.tenants):
        for k, digest in enumerate(tenant.api_keys):
            owner = key_owner.setdefault(digest, tenant.name)
            if owner != tenant.name or tenant.api_keys.index(digest) != k:
                # One key, two tenants: which one a request belongs to would be arbitrary.
                issues.append(
                    ConfigIssue(
                        ("tenants", t, "api_keys", k),
                        f"this key hash is already listed for tenant {owner!r}",
                    )
                )
    regions = {c.region for c in cfg.clusters}
    for t, tenant in enumerate(cfg.tenants):
        for r, region in enumerate(tenant.regions or ()):
            if region not in regions:
                issues.append(
                    ConfigIssue(("tenants", t, "regions", r), f"no cluster is in region {region!r}")
                )
        guard_names = {g.name for g in cfg.guards}
        if tenant.guard is not None and tenant.guard not in guard_names:
            issues.append(
                ConfigIssue(("tenants", t, "guard"), f"unknown guard policy {tenant.guard!r}")
            )
        for i, name in enumerate(tenant.models):
            if name != "*" and name not in model_names:
                issues.append(ConfigIssue(("tenants", t, "models", i), f"unknown model {name!r}"))
    return issues


def _guard_issues(where: tuple[str | int, ...], guard: Guard) -> Iterator[ConfigIssue]:
    """Entity names that exist, custom patterns RE2 accepts, a key when hashing."""
    pii = guard.pii
    if pii is None:
        return
    custom_names = [c.name for c in pii.custom]
    for c, custom in enumerate(pii.custom):
        at = (*where, "pii", "custom", c)
        if custom.name in BUILTIN_ENTITIES:
            yield ConfigIssue((*at, "name"), f"{custom.name!r} is a built-in entity")
        elif custom_names.index(custom.name) != c:
            yield ConfigIssue((*at, "name"), f"duplicate custom entity {custom.name!r}")
        try:
            # RE2 runs in linear time: no pattern an operator writes can backtrack
            # catastrophically; what RE2 cannot run (backreferences, lookaround) is refused.
            compiled = re2.compile(custom.pattern)
        except re2.error as exc:
            yield ConfigIssue((*at, "pattern"), f"not a valid RE2 pattern: {exc}")
            continue
        if compiled.search("") is not None:
            yield ConfigIssue((*at, "pattern"), "matches the empty string")
    known = set(BUILTIN_ENTITIES) | set(custom_names)
    for e, name in enumerate(pii.entities):
        if name not in known:
            yield ConfigIssue(
                (*where, "pii", "entities", e),
                f"unknown entity {name!r} (built-in: {', '.join(BUILTIN_ENTITIES)}; "
                "or declare it under custom)",
            )
    if "hash" in (pii.prompts, pii.answers) and pii.hash_key_file is None:
        yield ConfigIssue(
            (*where, "pii", "hash_key_file"),
            "action hash needs hash_key_file (an unkeyed hash of a phone number can be "
            "reversed by guessing)",
        )
    if pii.restore and pii.prompts != "redact":
        yield ConfigIssue(
            (*where, "pii", "restore"), "restore needs prompts: redact (placeholders to restore)"
        )
