"""The tenant and model policy extproc enforces, compiled once per config version.

extproc reads it through :class:`PolicySource`. Today the source is the mesh YAML
(:class:`FilePolicySource`, hot-reloaded like xds does); when the smesh.v1 policy
resources arrive over ADS, only the source changes — ``current()`` stays the interface.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from watchfiles import watch

from smesh.config.loader import ConfigError, load_config
from smesh.config.schema import MeshConfig, Model, Tenant
from smesh.contract import residency_key

__all__ = ["FilePolicySource", "Policy", "PolicySource", "StaticPolicySource"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Policy:
    """Lookups the hot path needs, precomputed (no scans per request)."""

    config: MeshConfig
    tenants_by_key: Mapping[str, Tenant]
    tenants_by_name: Mapping[str, Tenant]
    models: Mapping[str, Model]  # canonical names and aliases
    model_regions: Mapping[str, frozenset[str]]  # canonical name -> regions it can run in
    catalog: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # tenant -> model ids

    @classmethod
    def from_config(cls, config: MeshConfig) -> Policy:
        regions = {c.name: c.region for c in config.clusters}
        models: dict[str, Model] = {}
        model_regions: dict[str, frozenset[str]] = {}
        for model in config.models:
            for name in model.names:
                models[name] = model
            clusters = [b.cluster for b in model.backends] + list(model.fallback)
            model_regions[model.name] = frozenset(r for c in clusters if (r := regions.get(c)))
        by_key = {
            digest.removeprefix("sha256:"): tenant
            for tenant in config.tenants
            for digest in tenant.api_keys
        }
        policy = cls(
            config=config,
            tenants_by_key=by_key,
            tenants_by_name={t.name: t for t in config.tenants},
            models=models,
            model_regions=model_regions,
        )
        catalog = {
            tenant.name: tuple(
                name
                for model in config.models
                if policy.may_use(tenant, model)
                for name in model.names
            )
            for tenant in config.tenants
        }
        return dataclasses.replace(policy, catalog=catalog)

    def tenant_for_key(self, api_key: str) -> Tenant | None:
        """The tenant owning ``api_key``; only SHA-256 digests are stored or compared."""
        return self.tenants_by_key.get(hashlib.sha256(api_key.encode()).hexdigest())

    def may_use(self, tenant: Tenant, model: Model) -> bool:
        """Listed for the tenant and (for a residency-bound tenant) runnable in its regions."""
        if "*" not in tenant.models and not set(model.names) & set(tenant.models):
            return False
        return self.in_regions(tenant, model)

    def in_regions(self, tenant: Tenant, model: Model) -> bool:
        if tenant.regions is None:
            return True
        return bool(self.model_regions[model.name] & set(tenant.regions))

    @staticmethod
    def residency(tenant: Tenant) -> str | None:
        return None if tenant.regions is None else residency_key(tenant.regions)


class PolicySource(Protocol):
    def current(self) -> Policy: ...

    def close(self) -> None: ...


class StaticPolicySource:
    """A fixed policy (tests, benchmarks)."""

    def __init__(self, config: MeshConfig) -> None:
        self._policy = Policy.from_config(config)

    def current(self) -> Policy:
        return self._policy

    def close(self) -> None:
        pass


class FilePolicySource:
    """The mesh YAML, reloaded on every valid save; an invalid save keeps the last policy."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).resolve()
        self._policy = Policy.from_config(load_config(self.path))  # fails loudly at start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="policy-watch", daemon=True)
        self._thread.start()

    def current(self) -> Policy:
        return self._policy

    def reload(self) -> bool:
        try:
            self._policy = Policy.from_config(load_config(self.path))
        except ConfigError as exc:
            for line in exc.lines:
                log.error("invalid config, keeping the last good policy: %s", line)
            return False
        log.info("policy reloaded from %s", self.path)
        return True

    def _watch(self) -> None:
        target = str(self.path)
        for _ in watch(
            self.path.parent,
            watch_filter=lambda _change, path: path == target,
            debounce=100,
            step=20,
            stop_event=self._stop,
            rust_timeout=500,
        ):
            self.reload()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
