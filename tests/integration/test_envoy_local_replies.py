"""Envoy's own error replies reach clients as OpenAI JSON; replies already in JSON pass as is.

A real Envoy fed by ``smesh xds``, model simulators behind it, and a stand-in ext_proc
server (a gRPC servicer that passes everything through, or answers an ImmediateResponse
with ``x-smesh-error`` when a test header asks for one) — extproc itself is not under
test here, the Envoy configuration around it is. Also proves data residency end to end:
a region-restricted request never reaches another region's simulator.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc
from envoy.type.v3 import http_status_pb2

from smesh.contract import ERROR_HEADER, MODEL_HEADER, RESIDENCY_HEADER
from smesh.envoy_process import EnvoyProcess
from smesh.ports import free_port
from tests.integration.harness import (
    Simulator,
    Xds,
    chat,
    start_envoy,
    start_simulator,
    wait_until,
)
from tests.integration.sim_fixtures import metric_value

pytestmark = pytest.mark.integration

REPLY_HEADER = "x-test-reply"  # ask the stand-in processor for an ImmediateResponse
DELAY_HEADER = "x-test-delay"  # ask it to sleep before answering the request headers
# Envoy drops client copies of x-smesh-* before any filter: the stand-in processor sets
# the routing headers from these, as extproc sets them from the body.
SET_PREFIX = "x-test-set-"
MAX_BODY_BYTES = 64 << 10


class PassThroughProcessor(ep_grpc.ExternalProcessorServicer):
    """Continues every phase; answers an ImmediateResponse (our JSON) when asked to."""

    def Process(
        self, request_iterator: Iterator[ep.ProcessingRequest], context: grpc.ServicerContext
    ) -> Iterator[ep.ProcessingResponse]:
        for request in request_iterator:
            phase = request.WhichOneof("request")
            if phase == "request_headers":
                headers = {
                    h.key: h.raw_value.decode() or h.value
                    for h in request.request_headers.headers.headers
                }
                time.sleep(float(headers.get(DELAY_HEADER, "0")))
                if REPLY_HEADER in headers:
                    yield ep.ProcessingResponse(
                        immediate_response=_immediate(int(headers[REPLY_HEADER]))
                    )
                    return
                yield ep.ProcessingResponse(request_headers=_set_routing_headers(headers))
            elif phase == "request_body":
                yield ep.ProcessingResponse(request_body=ep.BodyResponse())
            elif phase == "response_headers":
                yield ep.ProcessingResponse(response_headers=ep.HeadersResponse())
            elif phase == "response_body":
                yield ep.ProcessingResponse(response_body=ep.BodyResponse())


def _set_routing_headers(headers: dict[str, str]) -> ep.HeadersResponse:
    """``x-test-set-x-smesh-model: m`` becomes ``x-smesh-model: m``; the route is re-picked."""
    response = ep.HeadersResponse()
    common = response.response
    for key, value in headers.items():
        if key.startswith(SET_PREFIX):
            common.header_mutation.set_headers.append(
                base_pb2.HeaderValueOption(
                    header=base_pb2.HeaderValue(
                        key=key.removeprefix(SET_PREFIX), raw_value=value.encode()
                    )
                )
            )
    common.clear_route_cache = True
    return response


def _immediate(status: int) -> ep.ImmediateResponse:
    body = {"error": {"message": "refused by extproc", "type": "x", "code": "stub_refusal"}}
    return ep.ImmediateResponse(
        status=http_status_pb2.HttpStatus(code=status),
        body=json.dumps(body).encode(),
        headers=ep.HeaderMutation(
            set_headers=[
                base_pb2.HeaderValueOption(
                    header=base_pb2.HeaderValue(key=key, raw_value=value.encode())
                )
                for key, value in (("content-type", "application/json"), (ERROR_HEADER, "1"))
            ]
        ),
    )


@contextmanager
def running_processor() -> Iterator[int]:
    """The stand-in processor on a free loopback port."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    ep_grpc.add_ExternalProcessorServicer_to_server(PassThroughProcessor(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(0)


@dataclass
class Gateway:
    port: int
    envoy: EnvoyProcess

    def post(
        self, model: str | None, content: str = "hi", headers: dict[str, str] | None = None
    ) -> httpx.Response:
        wanted = {MODEL_HEADER: model} if model else {}
        wanted.update(headers or {})
        sent = {(SET_PREFIX + k if k.startswith("x-smesh-") else k): v for k, v in wanted.items()}
        return httpx.post(
            f"http://127.0.0.1:{self.port}/v1/chat/completions",
            json=chat(model or "", content),
            headers=sent,
            timeout=20,
        )


@contextmanager
def running_gateway(tmp: Path, mesh_yaml: str, ready_model: str | None) -> Iterator[Gateway]:
    """xds serving ``mesh_yaml`` (``{port}`` filled in) and an Envoy it configured."""
    port = free_port()
    config = tmp / "mesh.yaml"
    config.write_text(mesh_yaml.replace("{port}", str(port)))
    xds = Xds(config, tmp / "xds.log")
    envoy: EnvoyProcess | None = None
    try:
        xds.start()
        envoy = start_envoy(tmp, xds)
        gateway = Gateway(port, envoy)
        if ready_model is not None:
            wait_until(lambda: gateway.post(ready_model).status_code == 200, timeout=15)
        yield gateway
    finally:
        if envoy is not None:
            envoy.stop()
        xds.stop()


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> Any:
    """The response is ``status`` with an OpenAI-style JSON error body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code"}
    if code is not None:
        assert error["code"] == code, error
    return error


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway with a live processor: a healthy, a dead and a slow upstream."""
    tmp = tmp_path_factory.mktemp("local-replies")
    sim = start_simulator(tmp)
    slow = start_simulator(tmp, "--ttft", "5")
    dead = free_port()
    try:
        with running_processor() as processor:
            mesh = f"""
listeners: [{{name: gateway, port: {{port}}}}]
extproc: {{port: {processor}, max_body_bytes: {MAX_BODY_BYTES}, message_timeout: 1s}}
models:
  - {{name: ok, backends: [{{cluster: sim}}], retries: {{attempts: 0}}}}
  - {{name: down, backends: [{{cluster: dead}}], retries: {{attempts: 0}}}}
  - {{name: slow, backends: [{{cluster: slow}}], timeout: 1s, retries: {{attempts: 0}}}}
clusters:
  - {{name: sim, endpoints: ["127.0.0.1:{sim.port}"]}}
  - {{name: dead, endpoints: ["127.0.0.1:{dead}"]}}
  - {{name: slow, endpoints: ["127.0.0.1:{slow.port}"]}}
"""
            with running_gateway(tmp, mesh, ready_model="ok") as gw:
                yield gw
    finally:
        sim.stop()
        slow.stop()


def test_direct_response_errors_pass_unchanged(gateway: Gateway) -> None:
    """The route table's own 404/400 JSON bodies are not rewritten by the mappers."""
    unknown = gateway.post("no-such-model")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/json"
    assert unknown.text == (
        '{"error":{"message":"model not found (header x-smesh-model)",'
        '"type":"invalid_request_error","code":"model_not_found"}}'
    )
    assert_openai_error(gateway.post(None), 400, "model_required")


@pytest.mark.parametrize("status", [401, 403, 413, 503])
def test_extproc_immediate_responses_pass_unchanged(gateway: Gateway, status: int) -> None:
    """An ImmediateResponse with x-smesh-error keeps its body, even on statuses Envoy maps."""
    response = gateway.post("ok", headers={REPLY_HEADER: str(status)})
    error = assert_openai_error(response, status, "stub_refusal")
    assert error["message"] == "refused by extproc"


def test_body_over_the_limit_is_413_json(gateway: Gateway) -> None:
    """Past max_body_bytes (below Envoy's 1 MiB default) the client gets 413 JSON at once."""
    assert gateway.post("ok", content="x" * (MAX_BODY_BYTES - 4096)).status_code == 200
    assert_openai_error(gateway.post("ok", content="x" * (MAX_BODY_BYTES + 1)), 413)
    started = time.monotonic()
    error = assert_openai_error(gateway.post("ok", content="x" * (16 << 20)), 413)
    assert time.monotonic() - started < 10
    assert error["code"] == "request_too_large"


def test_upstream_down_is_503_json(gateway: Gateway) -> None:
    """A refused upstream connection is a 503 with Envoy's reason as the message."""
    error = assert_openai_error(gateway.post("down"), 503, "upstream_unavailable")
    assert "connect" in error["message"]


def test_slow_upstream_is_504_json(gateway: Gateway) -> None:
    """A model slower than its route timeout is a 504 JSON error."""
    error = assert_openai_error(gateway.post("slow"), 504, "upstream_timeout")
    assert error["message"] == "upstream request timeout"


def test_slow_processor_is_504_json(gateway: Gateway) -> None:
    """A processor slower than message_timeout fails closed: 504 JSON, nothing upstream."""
    assert_openai_error(gateway.post("ok", headers={DELAY_HEADER: "2"}), 504, "upstream_timeout")


def test_processor_down_fails_closed_with_json(tmp_path: Path) -> None:
    """With no processor listening and failure_mode_allow false, requests get 500 JSON."""
    sim = start_simulator(tmp_path)
    nothing = free_port()
    mesh = f"""
listeners: [{{name: gateway, port: {{port}}}}]
extproc: {{port: {nothing}}}
models: [{{name: ok, backends: [{{cluster: sim}}]}}]
clusters: [{{name: sim, endpoints: ["127.0.0.1:{sim.port}"]}}]
"""
    try:
        with running_gateway(tmp_path, mesh, ready_model=None) as gw:
            wait_until(lambda: gw.post("ok").status_code == 500, timeout=15)
            for model in ("ok", "no-such-model"):
                error = assert_openai_error(gw.post(model), 500, "gateway_error")
                assert error["message"] == "internal gateway error"
    finally:
        sim.stop()


def _served(sim: Simulator) -> float:
    """Chat requests the simulator has answered."""
    text = httpx.get(f"{sim.url}/metrics", timeout=2).text
    try:
        return metric_value(text, "vllm:e2e_request_latency_seconds_count", "chat")
    except KeyError:
        return 0.0


def test_residency_never_leaves_the_allowed_region(tmp_path: Path) -> None:
    """An EU-only request is served in the EU, gets 503 when the EU is down, never the US."""
    eu, us = start_simulator(tmp_path), start_simulator(tmp_path)
    try:
        with running_processor() as processor:
            mesh = f"""
listeners: [{{name: gateway, port: {{port}}}}]
extproc: {{port: {processor}}}
tenants: [{{name: eu-only, regions: [eu]}}]
models:
  - name: chat
    backends: [{{cluster: eu-pool}}]
    fallback: [us-pool]
    retries: {{attempts: 2, "on": [connect-failure, reset, 5xx]}}
  - {{name: us-model, backends: [{{cluster: us-pool}}]}}
clusters:
  - {{name: eu-pool, region: eu, endpoints: ["127.0.0.1:{eu.port}"], outlier_detection: null}}
  - {{name: us-pool, region: us, endpoints: ["127.0.0.1:{us.port}"], outlier_detection: null}}
"""
            with running_gateway(tmp_path, mesh, ready_model="chat") as gw:
                eu_only = {RESIDENCY_HEADER: "eu"}
                assert gw.post("chat", headers=eu_only).status_code == 200
                assert_openai_error(gw.post("us-model", headers=eu_only), 403, "region_not_allowed")
                assert_openai_error(
                    gw.post("chat", headers={RESIDENCY_HEADER: "mars"}), 403, "region_not_allowed"
                )
                eu.stop()
                us_before = _served(us)
                for _ in range(5):
                    assert_openai_error(gw.post("chat", headers=eu_only), 503)
                assert _served(us) == us_before
                # Unrestricted traffic still falls back to the US.
                assert gw.post("chat").status_code == 200
                assert _served(us) == us_before + 1
    finally:
        for sim in (eu, us):
            if sim.process.poll() is None:
                sim.stop()
