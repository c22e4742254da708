"""Local replies: errors Envoy itself answers, rewritten into the OpenAI-style JSON error.

Envoy answers some requests without an upstream response: 413 past the body limit, 503
with no healthy host / a failed connect / an open circuit breaker, 504 on an upstream
timeout, 500/504 when ext_proc fails closed, 401 from jwt_authn. Its plain-text bodies
become ``{"error": {"message", "type", "code"}}`` with ``content-type:
application/json``; the status is kept, and the message is Envoy's own text (``no
healthy upstream``), which names no tenant and no prompt.

Envoy routes *every* local reply through these mappers, including the ones that already
carry our JSON: the route table's ``direct_response`` errors and extproc's
ImmediateResponses. extproc adds the response header :data:`ERROR_HEADER` to each of
its replies, and Envoy marks a route's direct response with the response code details
``direct_response``; each mapper matches only replies with neither. The access-log
``header_filter`` looks at *request* headers, so the test on the reply itself is a CEL
``extension_filter`` (``response.headers``, ``response.code_details``). There is
no catch-all ``body_format``: a reply that no mapper matches is left exactly as it was.
"""

from __future__ import annotations

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import base_pb2, substitution_format_string_pb2
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import struct_pb2

from smesh.contract import ERROR_HEADER
from smesh.xds.translate._convert import message_to_any

__all__ = [
    "LOCAL_REPLY_ERRORS",
    "make_error_body_format",
    "make_local_reply_config",
    "not_our_reply_filter",
]

# Set on every reply whose body is already our JSON error (direct_response routes,
# extproc ImmediateResponses); the local-reply mappers leave such replies alone.

# The response code details Envoy gives a route's ``direct_response``: every one in our
# table is already a JSON error.
DIRECT_RESPONSE_DETAILS = "direct_response"
CEL_FILTER = "envoy.access_loggers.extension_filters.cel"
# Status filters read a runtime key first; nothing sets these, so the defaults apply.
_RUNTIME_PREFIX = "smesh.local_reply"

# status (None: any other error) → OpenAI error ``type`` and ``code``, first match wins.
LOCAL_REPLY_ERRORS: tuple[tuple[int | None, str, str], ...] = (
    (401, "authentication_error", "invalid_token"),
    (413, "invalid_request_error", "request_too_large"),
    (500, "api_error", "gateway_error"),
    (503, "service_unavailable", "upstream_unavailable"),
    (504, "timeout", "upstream_timeout"),
    (None, "api_error", "gateway_error"),
)
# Envoy's reply text is the message, except for a 500: an ext_proc failure has an empty
# body, and any 500 text would say nothing more to a client.
INTERNAL_ERROR_MESSAGE = "internal gateway error"


def make_error_body_format(
    error_type: str, code: str, message: str = "%LOCAL_REPLY_BODY%"
) -> substitution_format_string_pb2.SubstitutionFormatString:
    """The JSON error body; ``message`` is Envoy's own reply text unless given."""
    body = struct_pb2.Struct()
    body.update({"error": {"message": message, "type": error_type, "code": code}})
    # json_format also sets content-type: application/json.
    return substitution_format_string_pb2.SubstitutionFormatString(json_format=body)


def not_our_reply_filter() -> accesslog_pb2.AccessLogFilter:
    """Matches replies without ERROR_HEADER (CEL: reads the reply's headers, not the request's)."""
    expression = cel_pb2.ExpressionFilter(
        expression=f"!('{ERROR_HEADER}' in response.headers)"
        f" && response.code_details != '{DIRECT_RESPONSE_DETAILS}'"
    )
    return accesslog_pb2.AccessLogFilter(
        extension_filter=accesslog_pb2.ExtensionFilter(
            name=CEL_FILTER, typed_config=message_to_any(expression)
        )
    )


def _status_filter(
    op: accesslog_pb2.ComparisonFilter.Op, status: int
) -> accesslog_pb2.AccessLogFilter:
    return accesslog_pb2.AccessLogFilter(
        status_code_filter=accesslog_pb2.StatusCodeFilter(
            comparison=accesslog_pb2.ComparisonFilter(
                op=op,
                value=base_pb2.RuntimeUInt32(
                    default_value=status, runtime_key=f"{_RUNTIME_PREFIX}.status_{status}"
                ),
            )
        )
    )


def _mapper(status: int | None, error_type: str, code: str) -> hcm_pb2.ResponseMapper:
    if status is None:
        status_filter = _status_filter(accesslog_pb2.ComparisonFilter.GE, 400)
    else:
        status_filter = _status_filter(accesslog_pb2.ComparisonFilter.EQ, status)
    return hcm_pb2.ResponseMapper(
        filter=accesslog_pb2.AccessLogFilter(
            and_filter=accesslog_pb2.AndFilter(filters=[status_filter, not_our_reply_filter()])
        ),
        body_format_override=(
            make_error_body_format(error_type, code, INTERNAL_ERROR_MESSAGE)
            if status == 500
            else make_error_body_format(error_type, code)
        ),
    )


def make_local_reply_config() -> hcm_pb2.LocalReplyConfig:
    """One mapper per known error status, then one for any other error; status kept."""
    return hcm_pb2.LocalReplyConfig(
        mappers=[_mapper(status, kind, code) for status, kind, code in LOCAL_REPLY_ERRORS]
    )
