"""The floor: a do-nothing ext_proc servicer in the gateway's mode, plus an access-log sink.

Run: ``.venv/bin/python -m bench._floor_servicer --port N --stats-port M [--workers W]``;
it prints ``floor listening on N`` once every worker serves.

It is what ``smesh extproc`` would cost if its own logic were free: the same grpcio sync
server (thread pool, server options), the same two services on one port, and answers
that change nothing except what routing needs. On the body phase it sets the model
header with ``clear_route_cache`` (Envoy drops client copies of ``x-smesh-*`` and
re-matches the route on it, as with the gateway) and the ``smesh.request`` metadata
(tenant, overhead) that the gateway also sets: Envoy's access-log filter forwards only
requests that carry it, and the vhost writes ``x-smesh-overhead-ms`` from it, so Envoy does
the same work behind the floor as behind the gateway. Response phases are answered
unchanged if a mode override ever asks for them (the floor never does).

The access-log service counts what arrives — messages, entries, entries with usage
(``smesh.usage`` metadata) — and serves the counts as JSON on ``--stats-port``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc
from google.protobuf import struct_pb2

from smesh.contract import MODEL_HEADER, REQUEST_NAMESPACE, USAGE_NAMESPACE

__all__ = ["FloorAccessLog", "FloorProcessor", "body_response", "serve"]

TENANT = "floor"
# smesh extproc's server options and default pool size (smesh/extproc/server.py), so that
# the only difference between the floor and the gateway is the Python in the handlers.
OPTIONS = [
    ("grpc.so_reuseport", 1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
]
THREADS = 256


def body_response(model: str) -> ep.ProcessingResponse:
    """The body phase: route on ``model`` (header + clear_route_cache), record the tenant."""
    response = ep.ProcessingResponse()
    common = response.request_body.response
    common.header_mutation.set_headers.append(
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=MODEL_HEADER, raw_value=model.encode()),
            append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
        )
    )
    common.clear_route_cache = True
    fields = struct_pb2.Struct()
    fields.update({"tenant": TENANT, "model": model, "overhead_ms": 0.0})
    response.dynamic_metadata.fields[REQUEST_NAMESPACE].struct_value.CopyFrom(fields)
    return response


_UNCHANGED = {
    "request_headers": ep.ProcessingResponse(request_headers=ep.HeadersResponse()),
    "response_headers": ep.ProcessingResponse(response_headers=ep.HeadersResponse()),
    "response_body": ep.ProcessingResponse(response_body=ep.BodyResponse()),
}


class Counts:
    """Thread-safe counters (one lock; taken once per gRPC message, not per entry)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, int] = {}

    def add(self, **deltas: int) -> None:
        with self._lock:
            for key, delta in deltas.items():
                self._values[key] = self._values.get(key, 0) + delta

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)


class FloorProcessor(ep_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    """Answers every message unchanged; the body phase routes (see :func:`body_response`)."""

    def __init__(self, model: str, counts: Counts) -> None:
        self._body = body_response(model)
        self._counts = counts

    def Process(
        self, request_iterator: Iterator[ep.ProcessingRequest], context: grpc.ServicerContext
    ) -> Iterator[ep.ProcessingResponse]:
        messages = 0
        try:
            for request in request_iterator:
                messages += 1
                phase = request.WhichOneof("request")
                if phase == "request_body":
                    yield self._body
                elif phase in _UNCHANGED:
                    yield _UNCHANGED[phase]
        except grpc.RpcError:
            pass  # Envoy cancelled the stream
        finally:
            self._counts.add(streams=1, messages=messages)


class FloorAccessLog(als_pb2_grpc.AccessLogServiceServicer):  # type: ignore[misc]
    """Counts access-log entries, and those that carry usage; keeps nothing else."""

    def __init__(self, counts: Counts) -> None:
        self._counts = counts

    def StreamAccessLogs(
        self,
        request_iterator: Iterator[als_pb2.StreamAccessLogsMessage],
        context: grpc.ServicerContext,
    ) -> als_pb2.StreamAccessLogsResponse:
        try:
            for message in request_iterator:
                entries = message.http_logs.log_entry
                usage = sum(
                    USAGE_NAMESPACE in e.common_properties.metadata.filter_metadata for e in entries
                )
                self._counts.add(als_messages=1, als_entries=len(entries), als_usage=usage)
        except grpc.RpcError:
            pass
        return als_pb2.StreamAccessLogsResponse()


class AsyncFloorProcessor(ep_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    """The same answers from a grpc.aio server (one event loop, no thread pool)."""

    def __init__(self, model: str, counts: Counts) -> None:
        self._body = body_response(model)
        self._counts = counts

    async def Process(self, request_iterator: Any, context: Any) -> Any:
        messages = 0
        try:
            async for request in request_iterator:
                messages += 1
                phase = request.WhichOneof("request")
                if phase == "request_body":
                    yield self._body
                elif phase in _UNCHANGED:
                    yield _UNCHANGED[phase]
        finally:
            self._counts.add(streams=1, messages=messages)


class AsyncFloorAccessLog(als_pb2_grpc.AccessLogServiceServicer):  # type: ignore[misc]
    def __init__(self, counts: Counts) -> None:
        self._counts = counts

    async def StreamAccessLogs(self, request_iterator: Any, context: Any) -> Any:
        async for message in request_iterator:
            entries = message.http_logs.log_entry
            usage = sum(
                USAGE_NAMESPACE in e.common_properties.metadata.filter_metadata for e in entries
            )
            self._counts.add(als_messages=1, als_entries=len(entries), als_usage=usage)
        return als_pb2.StreamAccessLogsResponse()


def serve_aio(port: int, stats_port: int, model: str, ready: Callable[[], None]) -> None:
    """One worker on grpc.aio: serve until SIGINT/SIGTERM."""
    counts = Counts()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        server = grpc.aio.server(options=OPTIONS)
        ep_grpc.add_ExternalProcessorServicer_to_server(AsyncFloorProcessor(model, counts), server)
        als_pb2_grpc.add_AccessLogServiceServicer_to_server(AsyncFloorAccessLog(counts), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        stats = _stats_server(stats_port, counts)
        ready()
        await stop.wait()
        stats.shutdown()
        await server.stop(1)

    asyncio.run(main())


def _stats_server(port: int, counts: Counts) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(counts.snapshot()).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, name="floor-stats", daemon=True).start()
    return server


def serve(port: int, stats_port: int, model: str, threads: int, ready: Callable[[], None]) -> None:
    """One worker: serve until SIGINT/SIGTERM; ``ready()`` once it accepts streams."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    counts = Counts()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="floor"),
        options=OPTIONS,
        maximum_concurrent_rpcs=threads,
    )
    ep_grpc.add_ExternalProcessorServicer_to_server(FloorProcessor(model, counts), server)
    als_pb2_grpc.add_AccessLogServiceServicer_to_server(FloorAccessLog(counts), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    stats = _stats_server(stats_port, counts)
    ready()
    stop.wait()
    stats.shutdown()
    server.stop(grace=1).wait()


def _worker(
    port: int, stats_port: int, model: str, threads: int, ready: Any, aio: bool = False
) -> None:
    if aio:
        serve_aio(port, stats_port, model, ready.set)
    else:
        serve(port, stats_port, model, threads, ready.set)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stats-port", type=int, required=True, help="worker i: stats-port + i")
    parser.add_argument("--model", default="bench", help="the model header the body phase sets")
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    parser.add_argument("--aio", action="store_true", help="grpc.aio servers, not thread pools")
    args = parser.parse_args()

    def announce() -> None:
        print(f"floor listening on {args.port}", flush=True)

    if args.aio and args.workers == 1:
        serve_aio(args.port, args.stats_port, args.model, announce)
        return 0
    if args.workers == 1:
        serve(args.port, args.stats_port, args.model, args.threads, announce)
        return 0
    # Like ``smesh extproc --workers N``: spawned processes share the port (SO_REUSEPORT).
    context = multiprocessing.get_context("spawn")
    readies = [context.Event() for _ in range(args.workers)]
    workers = [
        context.Process(
            target=_worker,
            args=(args.port, args.stats_port + i, args.model, args.threads, readies[i], args.aio),
            daemon=True,
        )
        for i in range(args.workers)
    ]
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    for worker in workers:
        worker.start()
    for ready in readies:
        ready.wait(30)
    announce()
    while not stop.wait(0.5):
        if not all(w.is_alive() for w in workers):
            break
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.join(5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
