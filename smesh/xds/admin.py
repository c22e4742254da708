"""The xds admin HTTP endpoint: ``/status`` (JSON), ``/metrics`` (Prometheus), ``/healthz``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from smesh.xds.cache import SnapshotCache
from smesh.xds.status import RegistryCollector

__all__ = ["make_admin_app"]

StatusExtra = Callable[[], dict[str, Any]]


def make_admin_app(cache: SnapshotCache, extra: StatusExtra | None = None) -> web.Application:
    """``extra`` adds source state (config file, last error) to ``/status``."""
    metrics = CollectorRegistry()
    metrics.register(RegistryCollector(cache.registry))

    async def status(_: web.Request) -> web.Response:
        snapshot = cache.snapshot
        body = {
            "snapshot": snapshot.version if snapshot else None,
            **(extra() if extra else {}),
            "nodes": cache.registry.as_dict(),
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def prometheus(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(_: web.Request) -> web.Response:
        ready = cache.snapshot is not None
        return web.Response(status=200 if ready else 503, text="ok" if ready else "no config")

    app = web.Application()
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", prometheus)
    app.router.add_get("/healthz", healthz)
    return app
