"""``envoy.service.ext_proc.v3.ExternalProcessor/Process``: protobuf in, decisions out.

The servicer only loops on the stream: it turns each ProcessingRequest into a call on a
per-request :class:`Processor` and the returned decision into a ProcessingResponse. End of
stream and cancellation are normal returns; the processor settles in ``finish``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc
from google.protobuf import json_format

from smesh.contract import JWT_FILTER, JWT_PAYLOAD_KEY
from smesh.extproc.errors import GatewayError
from smesh.extproc.processor import Continue, Decision, Processor, Reply

__all__ = ["ExternalProcessorService"]

log = logging.getLogger(__name__)

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def _headers(message: ep.HttpHeaders) -> dict[str, str]:
    # Envoy fills raw_value (bytes) and leaves value empty (FINDINGS.md).
    return {
        h.key: h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value
        for h in message.headers.headers
    }


def _jwt_claims(request: ep.ProcessingRequest) -> Mapping[str, Any] | None:
    namespace = request.metadata_context.filter_metadata.get(JWT_FILTER)
    if namespace is None or JWT_PAYLOAD_KEY not in namespace.fields:
        return None
    claims: dict[str, Any] = json_format.MessageToDict(
        namespace.fields[JWT_PAYLOAD_KEY].struct_value
    )
    return claims


def _header_option(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, raw_value=value.encode()), append_action=_OVERWRITE
    )


def _common(decision: Continue, request_phase: bool) -> ep.CommonResponse:
    common = ep.CommonResponse()
    for key, value in decision.set_headers.items():
        common.header_mutation.set_headers.append(_header_option(key, value))
    common.header_mutation.remove_headers.extend(decision.remove_headers)
    if decision.body is not None:
        common.body_mutation.body = decision.body
    if request_phase and decision.clear_route_cache:
        common.clear_route_cache = True
    return common


def _immediate(reply: Reply) -> ep.ProcessingResponse:
    response = ep.ProcessingResponse()
    immediate = response.immediate_response
    immediate.status.code = reply.status  # proto3 enums are open: any HTTP status fits
    immediate.body = reply.body
    for key, value in reply.headers.items():
        immediate.headers.set_headers.append(_header_option(key, value))
    return response


def _respond(phase: str, decision: Decision) -> ep.ProcessingResponse:
    if isinstance(decision, Reply):
        return _immediate(decision)
    response = ep.ProcessingResponse()
    common = _common(decision, request_phase=phase.startswith("request"))
    getattr(response, phase).response.CopyFrom(common)
    return response


class ExternalProcessorService(ep_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    """One Process stream per HTTP request; a fresh Processor for each."""

    def __init__(self, new_processor: Callable[[], Processor]) -> None:
        self._new_processor = new_processor

    def Process(
        self, request_iterator: Iterator[ep.ProcessingRequest], context: grpc.ServicerContext
    ) -> Iterator[ep.ProcessingResponse]:
        processor = self._new_processor()
        # Envoy's ext_proc call carries its span context as gRPC metadata: our span is its child.
        metadata = context.invocation_metadata() if context is not None else ()
        processor.state.traceparent = next((v for k, v in metadata if k == "traceparent"), "")
        try:
            for request in request_iterator:
                started = time.perf_counter()
                response = self._handle(processor, request)
                processor.state.overhead_s += time.perf_counter() - started
                if response is not None:
                    yield response
        except grpc.RpcError:
            pass  # Envoy cancelled the stream (client gone): a normal end
        finally:
            processor.finish()

    @staticmethod
    def _handle(
        processor: Processor, request: ep.ProcessingRequest
    ) -> ep.ProcessingResponse | None:
        phase = request.WhichOneof("request")
        try:
            if phase == "request_headers":
                message = request.request_headers
                decision: Decision = processor.request_headers(
                    _headers(message), _jwt_claims(request), message.end_of_stream
                )
            elif phase == "request_body":
                decision = processor.request_body(request.request_body.body)
            elif phase == "response_headers":
                decision = processor.response_headers(_headers(request.response_headers))
            elif phase == "response_body":
                body = request.response_body
                decision = processor.response_body(body.body, body.end_of_stream)
            else:  # trailers are not requested by our processing mode
                return None
        except GatewayError as err:
            decision = Reply.error(err)
        except Exception:
            # Fail closed with a clean 500 rather than Envoy's opaque ext_proc error.
            log.exception("extproc failed in %s", phase)
            decision = Reply.error(GatewayError(500, "internal_error", "the gateway failed"))
        return _respond(phase, decision)
