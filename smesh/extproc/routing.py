"""Which model a request may reach, and the model list a tenant sees.

A model the tenant may not use (another tenant's, or outside its regions) is answered
exactly like one that does not exist — 404 ``model_not_found``, as OpenAI does — so a
tenant cannot enumerate other tenants' models. The real reason is kept on the error
(``reason``) for the audit record and the refusal metric.
"""

from __future__ import annotations

import orjson

from smesh.config.schema import Model, Tenant
from smesh.extproc.errors import GatewayError
from smesh.extproc.policy import Policy

__all__ = ["model_list", "resolve_model"]


def _not_found(name: str, reason: str) -> GatewayError:
    return GatewayError(
        404,
        "model_not_found",
        f"The model {name[:200]!r} does not exist or you do not have access to it.",
        reason=reason,
    )


def resolve_model(policy: Policy, tenant: Tenant, name: str) -> Model:
    """The model ``name`` (or alias) names, if ``tenant`` may use it; else a 404."""
    model = policy.models.get(name)
    if model is None:
        raise _not_found(name, "model_not_found")
    if not policy.may_use(tenant, model):
        raise _not_found(name, policy.refusal_reason(tenant, model))
    return model


def model_list(policy: Policy, tenant: Tenant, method: str, path: str) -> bytes:
    """``GET /v1/models`` or ``/v1/models/ID`` from the tenant's own catalog."""
    if method != "GET":
        raise GatewayError(405, "method_not_allowed", "/v1/models takes GET")
    names = policy.catalog.get(tenant.name, ())
    entries = [{"id": n, "object": "model", "created": 0, "owned_by": "smesh"} for n in names]
    if path.rstrip("/") == "/v1/models":
        return orjson.dumps({"object": "list", "data": entries})
    wanted = path.removeprefix("/v1/models/")
    entry = next((e for e in entries if e["id"] == wanted), None)
    if entry is None:
        raise _not_found(wanted, "model_not_found")
    return orjson.dumps(entry)
