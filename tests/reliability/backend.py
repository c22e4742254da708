"""A recording model server: what reached a model server, byte for byte.

It answers the OpenAI endpoints the gateway forwards (chat completions, completions,
embeddings; JSON, and SSE with a final usage chunk when ``stream_options.include_usage``
is true) and appends one JSON line per request to a record file *before* answering:
method, raw path (query included), every header as received (repeats kept, in order),
the body (its first 4 KiB, its length and SHA-256) and what a JSON parser makes of it
(valid or not, and every top-level ``"model"`` key in order, so a duplicate key is seen).
The file survives ``kill -9``, so a fault test still knows what reached a server it killed.

Usage is exact for the gateway's reservation: ``prompt_tokens`` is counted the way extproc
estimates a prompt (the builtin tokenizer) and ``completion_tokens`` is the request's
``max_tokens``, so an admitted request's usage equals its reservation.

Run as ``python -m tests.reliability.backend --port P --records FILE --name NAME``;
:class:`RecordingBackend` starts, kills, restarts and reads it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from smesh.config.schema import Tokenizer
from smesh.extproc.tokens import estimate_prompt_tokens, load_counter
from smesh.ports import free_port, wait_http
from smesh.sim.tokenizer import filler_pieces

__all__ = ["Record", "RecordingBackend", "records_of"]

REPO = Path(__file__).resolve().parents[2]
CONTROL_PREFIX = "/__backend/"
BODY_KEPT = 4 << 10
STREAM_PIECES = 8  # content deltas per streamed answer (each one token)
DEFAULT_COMPLETION = 16  # completion tokens when a request names no max_tokens


@dataclass(frozen=True)
class Record:
    """One request as a model server received it."""

    seq: int
    backend: str
    t: float
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes  # the first BODY_KEPT bytes
    body_len: int
    json: str  # "object", "not-object", "invalid", "too-deep", "empty"
    models: tuple[Any, ...]  # every top-level "model" value, in order

    def header(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive), in the order received."""
        wanted = name.lower()
        return [v for k, v in self.headers if k.lower() == wanted]

    @property
    def test_id(self) -> str:
        values = self.header("x-test-id")
        return values[0] if values else ""


def _parse(body: bytes) -> tuple[str, list[Any], Any]:
    """What a strict JSON reader makes of ``body``: kind, top-level model values, object."""
    if not body:
        return "empty", [], None
    objects: list[list[tuple[str, Any]]] = []

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        objects.append(pairs)
        return dict(pairs)

    try:
        value = json.loads(body.decode("utf-8"), object_pairs_hook=hook)
    except RecursionError:
        return "too-deep", [], None
    except ValueError:  # UnicodeDecodeError and JSONDecodeError
        return "invalid", [], None
    if not isinstance(value, dict):
        return "not-object", [], None
    top = objects[-1]  # the outermost object is the last one the hook builds
    return "object", [v for k, v in top if k == "model"], value


# -- the server process --------------------------------------------------------------------


def _usage(path: str, body: dict[str, Any]) -> dict[str, int]:

    prompt = estimate_prompt_tokens(path, body, load_counter(Tokenizer()))
    if path.endswith("/embeddings"):
        return {"prompt_tokens": prompt, "total_tokens": prompt}
    cap = body.get("max_completion_tokens", body.get("max_tokens"))
    completion = cap if isinstance(cap, int) and not isinstance(cap, bool) else DEFAULT_COMPLETION
    completion = max(0, min(completion, 10**9))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _pieces(count: int) -> tuple[str, ...]:

    return filler_pieces(max(1, min(count, STREAM_PIECES)))


def _error(status: int, message: str) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": "backend"}}
    return web.json_response(body, status=status)


async def _answer(request: web.Request, name: str, seq: int, body: bytes) -> web.StreamResponse:
    path = request.path
    kind, _models, parsed = _parse(body)
    if not path.startswith("/v1/") or path.rsplit("/", 1)[-1] not in {
        "completions",
        "embeddings",
    }:
        return _error(404, f"backend {name}: no endpoint {path[:100]}")
    if kind != "object":
        return _error(400, f"backend {name}: body is {kind}")
    model = parsed.get("model")
    model = model if isinstance(model, str) else str(model)
    usage = _usage(path, parsed)
    created = int(time.time())
    headers = {"x-backend": name}
    if path.endswith("/embeddings"):
        inputs = parsed.get("input")
        count = len(inputs) if isinstance(inputs, list) else 1
        data = [
            {"object": "embedding", "index": i, "embedding": [0.0, 0.5, 1.0]} for i in range(count)
        ]
        listing = {"object": "list", "model": model, "data": data, "usage": usage}
        return web.json_response(listing, headers=headers)
    chat = path.endswith("/chat/completions")
    ident = f"{'chatcmpl' if chat else 'cmpl'}-{name}-{seq}"
    if parsed.get("stream") is True:
        return await _stream(request, parsed, ident, model, created, chat, usage, headers)
    text = "".join(_pieces(usage["completion_tokens"]))
    choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    answer: dict[str, Any] = {
        "id": ident,
        "object": "chat.completion" if chat else "text_completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage,
    }
    return web.json_response(answer, headers=headers)


async def _stream(
    request: web.Request,
    parsed: dict[str, Any],
    ident: str,
    model: str,
    created: int,
    chat: bool,
    usage: dict[str, int],
    headers: dict[str, str],
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"content-type": "text/event-stream", **headers})
    await response.prepare(request)
    kind = "chat.completion.chunk" if chat else "text_completion"

    async def event(choices: list[Any], extra: dict[str, Any] | None = None) -> None:
        chunk = {"id": ident, "object": kind, "created": created, "model": model}
        chunk["choices"] = choices
        chunk.update(extra or {})
        await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")

    for piece in _pieces(usage["completion_tokens"]):
        delta = {"delta": {"content": piece}} if chat else {"text": piece}
        await event([{"index": 0, "finish_reason": None, **delta}])
    await event(
        [{"index": 0, "finish_reason": "stop", **({"delta": {}} if chat else {"text": ""})}]
    )
    options = parsed.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        await event([], {"usage": usage})
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def serve(port: int, records: Path, name: str) -> None:
    """Serve on 127.0.0.1:``port`` until SIGTERM/SIGINT, appending records to ``records``."""
    sys.setrecursionlimit(10_000)  # parse the 1,000-level bodies the gateway may forward
    _usage("/v1/embeddings", {"input": "warm up"})  # load the tokenizer before serving
    out = records.open("ab", buffering=0)
    seq = sum(1 for _ in records.open("rb"))

    async def handle(request: web.Request) -> web.StreamResponse:
        nonlocal seq
        if request.path.startswith(CONTROL_PREFIX):
            return web.Response(text="ok")
        body = await request.read()
        kind, models, _ = _parse(body)
        record: dict[str, Any] = {
            "seq": seq,
            "backend": name,
            "t": time.time(),
            "method": request.method,
            "path": request.raw_path,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.raw_headers],
            "body": base64.b64encode(body[:BODY_KEPT]).decode(),
            "body_len": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "json": kind,
            "models": models,
        }
        seq += 1
        out.write(json.dumps(record).encode() + b"\n")  # one write: whole lines only
        return await _answer(request, name, record["seq"], body)

    async def main() -> None:
        app = web.Application(client_max_size=128 << 20)
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(
            app,
            access_log=None,
            max_line_size=1 << 20,
            max_field_size=1 << 20,
            max_headers=10_000,
        )
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
        print(f"recording backend {name} on 127.0.0.1:{port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())


# -- the test-side handle ------------------------------------------------------------------


@dataclass
class RecordingBackend:
    """A recording backend child process; restartable on the same port and record file."""

    name: str
    log_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    _offset: int = 0
    _cache: list[Record] = field(default_factory=list)

    @property
    def record_file(self) -> Path:
        return self.log_dir / f"backend-{self.name}-{self.port}.jsonl"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RecordingBackend:
        self.record_file.touch()
        log = (self.log_dir / f"backend-{self.name}-{self.port}.log").open("ab")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.reliability.backend",
                "--port",
                str(self.port),
                "--records",
                str(self.record_file),
                "--name",
                self.name,
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        try:
            wait_http(f"{self.url}{CONTROL_PREFIX}health", timeout=30)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; safe to call twice."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """``kill -9``: no goodbye to open connections."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def records(self, since: int = 0) -> list[Record]:
        """Every record with ``seq >= since`` (records of earlier runs of this port included)."""
        with self.record_file.open("rb") as file:
            file.seek(self._offset)
            data = file.read()
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        for line in complete.splitlines():
            self._cache.append(_record(json.loads(line)))
        return [r for r in self._cache if r.seq >= since]

    def count(self) -> int:
        """How many requests it has recorded so far (the next record's ``seq``)."""
        return len(self.records())


def _record(raw: dict[str, Any]) -> Record:
    return Record(
        seq=raw["seq"],
        backend=raw["backend"],
        t=raw["t"],
        method=raw["method"],
        path=raw["path"],
        headers=tuple((k, v) for k, v in raw["headers"]),
        body=base64.b64decode(raw["body"]),
        body_len=raw["body_len"],
        json=raw["json"],
        models=tuple(raw["models"]),
    )


def records_of(backends: Iterable[RecordingBackend], marks: Mapping[str, int]) -> list[Record]:
    """Records of several backends since the counts in ``marks`` (name → seq)."""
    return [r for b in backends for r in b.records(marks.get(b.name, 0))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--records", type=Path, required=True)
    parser.add_argument("--name", default="backend")
    args = parser.parse_args()
    serve(args.port, args.records, args.name)


if __name__ == "__main__":
    main()
