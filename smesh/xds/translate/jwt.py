"""JWT translation: the ``jwt`` config section → Envoy's ``jwt_authn`` HTTP filter.

Envoy verifies the token (signature against a local JWKS, issuer, audiences, expiry) and
writes the verified payload into dynamic metadata under
:data:`~smesh.xds.resources.JWT_PAYLOAD_KEY`; the ext_proc filter forwards that namespace,
so extproc reads the tenant claim without ever parsing a token.

API-key callers send ``Authorization: Bearer <key>`` too, so a bearer value that is not a
valid JWT must not be refused here: the rule accepts "the provider, or missing/failed".
The request then reaches extproc without a verified payload, and extproc treats the value
as an API key (401 when unknown).
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import empty_pb2

from smesh.config import schema as config
from smesh.contract import JWT_FILTER, JWT_PAYLOAD_KEY
from smesh.xds.translate._convert import message_to_any

__all__ = ["JWT_PROVIDER", "make_jwt_filter", "make_jwt_provider"]

JWT_PROVIDER = "smesh"


def make_jwt_provider(jwt: config.Jwt) -> jwt_pb2.JwtProvider:
    """One provider: issuer, audiences, local JWKS, payload to metadata, token kept off upstream."""
    if jwt.jwks is not None:
        jwks = base_pb2.DataSource(inline_string=jwt.jwks)
    else:
        jwks = base_pb2.DataSource(filename=jwt.jwks_file)
    return jwt_pb2.JwtProvider(
        issuer=jwt.issuer,
        audiences=list(jwt.audiences),
        local_jwks=jwks,
        # ``forward: false`` strips a verified token before the request goes upstream.
        forward=False,
        from_headers=[jwt_pb2.JwtHeader(name="authorization", value_prefix="Bearer ")],
        payload_in_metadata=JWT_PAYLOAD_KEY,
    )


def make_jwt_filter(jwt: config.Jwt) -> hcm_pb2.HttpFilter:
    """The jwt_authn filter: verify a bearer JWT when there is one, never refuse for lack of it."""
    either = jwt_pb2.JwtRequirement(
        requires_any=jwt_pb2.JwtRequirementOrList(
            requirements=[
                jwt_pb2.JwtRequirement(provider_name=JWT_PROVIDER),
                jwt_pb2.JwtRequirement(allow_missing_or_failed=empty_pb2.Empty()),
            ]
        )
    )
    authentication = jwt_pb2.JwtAuthentication(
        providers={JWT_PROVIDER: make_jwt_provider(jwt)},
        rules=[jwt_pb2.RequirementRule(match=rc_pb2.RouteMatch(prefix="/"), requires=either)],
    )
    return hcm_pb2.HttpFilter(name=JWT_FILTER, typed_config=message_to_any(authentication))
