"""The simulator's aiohttp application: routes, admission, pacing, failure injection.

Every model request goes: read and validate the body (bad input is a 4xx OpenAI
error) → maybe inject a failure → wait for a generation slot (queued requests are
``vllm:num_requests_waiting``) → deliver the planned answer, paced by ``ttft``/``itl``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import orjson
from aiohttp import web

from smesh.sim import answers
from smesh.sim.metrics import CONTENT_TYPE_LATEST, SimMetrics
from smesh.sim.protocol import (
    GenerationRequest,
    RequestError,
    decode_body,
    error_body,
    parse_chat,
    parse_completion,
    parse_embeddings,
)
from smesh.sim.settings import SimSettings

__all__ = ["MAX_BODY_BYTES", "SimState", "make_app", "sim_state"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024
# A request may ask for its answer in pieces of this many bytes (tests of chunking).
CHUNK_HEADER = "x-sim-chunk-bytes"
_JSON = "application/json"


class SimState:
    """Per-app mutable state: metrics, the generation slots and the failure dice."""

    def __init__(self, settings: SimSettings) -> None:
        self.settings = settings
        self.metrics = SimMetrics(settings.max_concurrency, settings.model_names)
        self.slots = asyncio.Semaphore(settings.max_concurrency)
        self.rng = random.Random(settings.seed)  # noqa: S311 - failure dice, not cryptography
        self.closing = asyncio.Event()  # set on shutdown: hung "timeout" requests give up

    @asynccontextmanager
    async def slot(self, model: str) -> AsyncIterator[None]:
        """Hold one generation slot; count the wait in the waiting gauge."""
        if self.slots.locked():
            self.metrics.queued(model, 1)
            try:
                await self.slots.acquire()
            finally:
                self.metrics.queued(model, -1)
        else:
            await self.slots.acquire()
        self.metrics.generating(model, 1)
        try:
            yield
        finally:
            self.slots.release()
            self.metrics.generating(model, -1)


_STATE_KEY = web.AppKey("smesh_sim_state", SimState)


def sim_state(app: web.Application) -> SimState:
    """The :class:`SimState` of an app built by :func:`make_app` (tests read metrics)."""
    return app[_STATE_KEY]


def _json_response(body: bytes, status: int = 200, **headers: str) -> web.Response:
    return web.Response(body=body, status=status, headers={"Content-Type": _JSON, **headers})


async def _sleep_until(deadline: float) -> None:
    delay = deadline - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)


async def _inject_failure(request: web.Request, state: SimState) -> web.StreamResponse | None:
    """With probability ``failure_rate``, fail the way ``failure_kind`` says."""
    settings = state.settings
    if settings.failure_rate <= 0 or state.rng.random() >= settings.failure_rate:
        return None
    kind = settings.failure_kind
    if kind == "429":
        body = error_body("simulated rate limit", "rate_limit_error", "rate_limit_exceeded")
        return _json_response(body, 429, **{"Retry-After": str(settings.retry_after_s)})
    if kind == "timeout":
        # Far past any sane client timeout. Cancelled when the client hangs up; cut short
        # on shutdown so a deliberately hung request never delays a stop.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.closing.wait(), settings.timeout_sleep_s)
        return _json_response(error_body("simulated timeout", "server_error", "timeout"), 504)
    if kind == "reset":
        transport = request.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            # Linger 0 makes close() send RST, so the peer sees a reset, not a clean FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if transport is not None:
            transport.abort()
        return web.Response(status=500)  # never delivered: the connection is gone
    return _json_response(error_body("simulated failure", "server_error", "internal_error"), 500)


async def _write_in_pieces(response: web.StreamResponse, body: bytes, size: int) -> None:
    """``body`` in ``size``-byte writes, each drained and followed by a yield to the loop."""
    for start in range(0, len(body), size):
        await response.write(body[start : start + size])
        await asyncio.sleep(0.0002)  # let each piece leave as its own segment


async def _deliver_json(
    request: web.Request,
    state: SimState,
    gen: answers.Generation,
    arrived: float,
    chunk_bytes: int = 0,
) -> web.StreamResponse:
    settings = state.settings
    loop = asyncio.get_running_loop()
    async with state.slot(gen.request.model):
        first_token_at = loop.time() + settings.ttft
        await _sleep_until(first_token_at + max(gen.steps - 1, 0) * settings.itl)
    state.metrics.observe(
        gen.request.model,
        prompt_tokens=gen.prompt_tokens,
        completion_tokens=gen.completion_tokens,
        ttft_s=first_token_at - arrived,
        e2e_s=loop.time() - arrived,
    )
    body = answers.json_body(gen)
    if not chunk_bytes:
        return _json_response(body)
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = len(body)
    await response.prepare(request)
    await _write_in_pieces(response, body, chunk_bytes)
    await response.write_eof()
    return response


async def _deliver_stream(
    request: web.Request,
    state: SimState,
    gen: answers.Generation,
    arrived: float,
    chunk_bytes: int = 0,
) -> web.StreamResponse:
    settings = state.settings
    loop = asyncio.get_running_loop()
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    async with state.slot(gen.request.model):
        await response.prepare(request)
        first_token_at = loop.time() + settings.ttft
        await _sleep_until(first_token_at)
        ttft_s = loop.time() - arrived
        frames = [answers.first_frame(gen), answers.step_frame(gen, 0)]
        if chunk_bytes:
            frames.extend(answers.step_frame(gen, step) for step in range(1, gen.steps))
            frames.append(answers.final_frames(gen))
            await _write_in_pieces(response, b"".join(frames), chunk_bytes)
        elif settings.itl <= 0:  # nothing to pace: one write is the same bytes, far cheaper
            frames.extend(answers.step_frame(gen, step) for step in range(1, gen.steps))
            frames.append(answers.final_frames(gen))
            await response.write(b"".join(frames))
        else:
            await response.write(b"".join(frames))
            for step in range(1, gen.steps):
                await _sleep_until(first_token_at + step * settings.itl)
                await response.write(answers.step_frame(gen, step))
            await response.write(answers.final_frames(gen))
    await response.write_eof()
    state.metrics.observe(
        gen.request.model,
        prompt_tokens=gen.prompt_tokens,
        completion_tokens=gen.completion_tokens,
        ttft_s=ttft_s,
        e2e_s=loop.time() - arrived,
    )
    return response


def _generation_handler(
    parse: Callable[[Mapping[str, Any], SimSettings], GenerationRequest],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        state = request.app[_STATE_KEY]
        arrived = asyncio.get_running_loop().time()
        parsed = parse(decode_body(await request.read()), state.settings)
        failure = await _inject_failure(request, state)
        if failure is not None:
            return failure
        gen = answers.plan_generation(parsed, state.settings)
        chunk_bytes = state.settings.chunk_bytes
        asked = request.headers.get(CHUNK_HEADER, "")
        if asked.isdigit() and 0 < int(asked) <= 1 << 20:
            chunk_bytes = int(asked)  # one request's own chunking: tests sweep sizes
        if parsed.stream:
            return await _deliver_stream(request, state, gen, arrived, chunk_bytes)
        return await _deliver_json(request, state, gen, arrived, chunk_bytes)

    return handle


async def _embeddings(request: web.Request) -> web.StreamResponse:
    state = request.app[_STATE_KEY]
    arrived = asyncio.get_running_loop().time()
    parsed = parse_embeddings(decode_body(await request.read()), state.settings)
    failure = await _inject_failure(request, state)
    if failure is not None:
        return failure
    async with state.slot(parsed.model):
        await asyncio.sleep(state.settings.ttft)
        body, prompt_tokens = answers.embeddings_body(parsed)
    elapsed = asyncio.get_running_loop().time() - arrived
    state.metrics.observe(
        parsed.model, prompt_tokens=prompt_tokens, completion_tokens=0, ttft_s=None, e2e_s=elapsed
    )
    return _json_response(body)


async def _models(request: web.Request) -> web.Response:
    settings = request.app[_STATE_KEY].settings
    names = settings.model_names or (settings.default_model,)
    created = int(time.time())
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": "smesh-sim"}
        for name in names
    ]
    return _json_response(orjson.dumps({"object": "list", "data": data}))


async def _on_shutdown(app: web.Application) -> None:
    app[_STATE_KEY].closing.set()


async def _health(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[_STATE_KEY].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@web.middleware
async def _openai_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Answer every refusal as an OpenAI JSON error; never leak a traceback."""
    try:
        return await handler(request)
    except RequestError as exc:
        return _json_response(exc.body(), exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kept = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        message = f"{exc.reason}: {request.method} {request.path}"
        code = exc.reason.lower().replace(" ", "_")
        return _json_response(
            error_body(message, "invalid_request_error", code), exc.status, **kept
        )
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        log.exception("simulator failed on %s %s", request.method, request.path)
        return _json_response(error_body("internal error", "server_error", "internal_error"), 500)


def make_app(settings: SimSettings) -> web.Application:
    """Build the simulator app for ``settings`` (serve it with any aiohttp runner).

    :func:`smesh.sim.server.serve` runs it with ``handler_cancellation=True`` so that a
    client hanging up cancels its handler (the "timeout" failure's long sleep included);
    other runners should pass the same.
    """
    app = web.Application(middlewares=[_openai_errors], client_max_size=MAX_BODY_BYTES)
    app[_STATE_KEY] = SimState(settings)
    app.on_shutdown.append(_on_shutdown)
    app.router.add_post("/v1/chat/completions", _generation_handler(parse_chat))
    app.router.add_post("/v1/completions", _generation_handler(parse_completion))
    app.router.add_post("/v1/embeddings", _embeddings)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    return app
