"""Who is calling: the tenant of a request, from a verified JWT claim or an API key.

Pure: a policy version and the request headers in, a tenant (or a 401) out. Envoy's
jwt_authn has already verified any token and forwarded its payload; extproc never
parses a token itself. Keys are looked up by SHA-256 digest only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from smesh.config.schema import Tenant
from smesh.extproc.errors import GatewayError
from smesh.extproc.policy import Policy

__all__ = ["api_key", "authenticate"]


def api_key(headers: Mapping[str, str]) -> str:
    """``Authorization: Bearer KEY`` (scheme case-insensitive), else the ``api-key`` header."""
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return headers.get("api-key", "").strip()


def authenticate(
    policy: Policy, headers: Mapping[str, str], jwt_claims: Mapping[str, Any] | None
) -> Tenant:
    """The calling tenant; :class:`GatewayError` 401 when there is none."""
    jwt = policy.config.jwt
    if jwt is not None and jwt_claims is not None:
        name = jwt_claims.get(jwt.tenant_claim)
        tenant = policy.tenants_by_name.get(name) if isinstance(name, str) else None
        if tenant is None:
            raise GatewayError(401, "unknown_tenant", "the token names no known tenant")
        return tenant
    key = api_key(headers)
    if not key:
        raise GatewayError(401, "missing_api_key", "send an API key: Authorization: Bearer KEY")
    tenant = policy.tenant_for_key(key)
    if tenant is None:
        raise GatewayError(401, "invalid_api_key", "the API key is not valid")
    return tenant
