"""``smesh extproc``: the ext_proc gRPC server process(es).

Server model (measured, FINDINGS.md): a sync grpcio server with a thread pool beat
grpc.aio by 20-40 % on buffered exchanges, so that is the default. A sync server holds a
thread for each open stream, so the pool is sized for the concurrent requests one worker
serves (SSE answers hold their thread for the whole generation). Several worker
processes share the port (SO_REUSEPORT) to use more than one core; they then need a
shared budget store (Redis).
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import gc
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from envoy.service.accesslog.v3 import als_pb2_grpc as als_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from prometheus_client import CollectorRegistry, start_http_server

from smesh.config.loader import load_config
from smesh.config.schema import Audit as AuditConfig
from smesh.config.schema import BudgetStore as BudgetStoreConfig
from smesh.config.schema import Tracing
from smesh.extproc.audit import AuditLog, default_key_path, load_or_create_key
from smesh.extproc.budget import BudgetStore, BudgetUnavailable, MemoryBudgetStore
from smesh.extproc.completion import AccessLogService, AsyncAccessLogService, CompletionSink
from smesh.extproc.policy import FilePolicySource, PolicySource
from smesh.extproc.processor import Deps, Processor
from smesh.extproc.servicer import AsyncExternalProcessorService, ExternalProcessorService
from smesh.extproc.telemetry import Telemetry

__all__ = ["ExtProcSettings", "make_budget_store", "make_server", "run_extproc"]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# Held reservations past their deadline are refunded this often (and on every reserve).
EXPIRE_EVERY_S = 5.0

_OPTIONS = [
    ("grpc.so_reuseport", 1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
]


@dataclass(frozen=True)
class ExtProcSettings:
    config: Path
    address: str = "127.0.0.1"
    port: int = 18080
    workers: int = 1
    threads: int = 256
    metrics_port: int | None = None  # worker i serves Prometheus on metrics_port + i
    tls_cert: Path | None = None
    tls_key: Path | None = None
    server: str = "aio"  # "aio" (one event loop) or "sync" (a thread per stream)


def make_budget_store(config: BudgetStoreConfig) -> BudgetStore:
    if config.kind == "redis":
        from smesh.extproc.redis_budget import RedisBudgetStore  # noqa: PLC0415 (optional dep)

        return RedisBudgetStore(config.url)
    return MemoryBudgetStore()


def make_server(
    policy: PolicySource,
    budgets: BudgetStore,
    telemetry: Telemetry,
    address: str,
    threads: int = 256,
    credentials: grpc.ServerCredentials | None = None,
    audit: AuditLog | None = None,
) -> tuple[grpc.Server, int]:
    """A started extproc server (ext_proc + access log); ``address`` port 0 picks one."""

    deps = Deps(budgets=budgets, telemetry=telemetry, audit=audit)

    def new_processor() -> Processor:
        return Processor(deps, policy.current())

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="extproc"),
        options=_OPTIONS,
        maximum_concurrent_rpcs=threads,
    )
    ep_grpc.add_ExternalProcessorServicer_to_server(ExternalProcessorService(new_processor), server)
    sink = CompletionSink(policy, budgets, telemetry, audit)
    als_grpc.add_AccessLogServiceServicer_to_server(AccessLogService(sink), server)
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    server.start()
    return server, port


async def make_aio_server(
    policy: PolicySource,
    budgets: BudgetStore,
    telemetry: Telemetry,
    address: str,
    credentials: grpc.ServerCredentials | None = None,
    audit: AuditLog | None = None,
) -> tuple[grpc.aio.Server, int]:
    """The same services on ``grpc.aio`` (started; port 0 picks one)."""
    deps = Deps(budgets=budgets, telemetry=telemetry, audit=audit)

    def new_processor() -> Processor:
        return Processor(deps, policy.current())

    server = grpc.aio.server(options=_OPTIONS)
    ep_grpc.add_ExternalProcessorServicer_to_server(
        AsyncExternalProcessorService(new_processor, offload_body=budgets.blocking), server
    )
    sink = CompletionSink(policy, budgets, telemetry, audit)
    als_grpc.add_AccessLogServiceServicer_to_server(AsyncAccessLogService(sink), server)
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    await server.start()
    return server, port


def _tracer_provider(tracing: Tracing | None) -> TracerProvider | None:
    """Spans to the same OTLP collector Envoy exports to (none configured: no spans)."""
    if tracing is None:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,  # only when tracing is on: it pulls in the OTLP protobufs
        )
    except ImportError as exc:
        # xds-protos ships an older copy of opentelemetry/proto/*; if it was installed
        # last it shadows opentelemetry-proto's files (`make` reinstalls them).
        raise RuntimeError(
            "tracing needs opentelemetry-proto's own files: "
            "pip install --force-reinstall --no-deps opentelemetry-proto"
        ) from exc
    provider = TracerProvider(
        resource=Resource.create({"service.name": "smesh-extproc"}),
        sampler=ParentBased(TraceIdRatioBased(tracing.sampling_percent / 100.0)),
    )
    endpoint = f"{tracing.collector.address}:{tracing.collector.port}"
    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
    return provider


def _credentials(settings: ExtProcSettings) -> grpc.ServerCredentials | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    return grpc.ssl_server_credentials(
        [(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())]
    )


def _die_with_parent(parent: int, stop: threading.Event) -> None:
    """A worker must not outlive the process that started it (kill -9 of the parent).

    Orphans would keep serving an old policy on the shared port and hold the metrics
    ports, so a restarted extproc could not start. Linux delivers SIGTERM to the worker
    the moment its parent dies (PR_SET_PDEATHSIG); a watcher thread that polls the parent
    id covers other systems and the race where the parent died before prctl ran.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    def watch() -> None:
        while not stop.wait(0.5):
            if os.getppid() != parent:
                log.error("extproc parent %d is gone; this worker stops", parent)
                stop.set()

    if os.getppid() != parent:
        stop.set()
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _start_metrics(
    port: int, address: str, registry: CollectorRegistry, timeout: float = 10.0
) -> None:
    """Prometheus on ``port``; a port still held by a stopping predecessor is retried."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            start_http_server(port, addr=address, registry=registry)
            return
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _serve_one(settings: ExtProcSettings, index: int, parent: int | None = None) -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if parent is not None:
        _die_with_parent(parent, stop)
    policy = FilePolicySource(settings.config)  # compiled whole: tokenizers load now
    config = policy.current().config
    assert config.extproc is not None
    registry = CollectorRegistry()
    if settings.metrics_port is not None:
        _start_metrics(settings.metrics_port + index, settings.address, registry)
    telemetry = Telemetry(registry, _tracer_provider(config.tracing))
    budgets = make_budget_store(config.extproc.budget_store)
    audit = _audit_log(config.audit, settings.config, index, settings.workers)
    address = f"{settings.address}:{settings.port}"
    credentials = _credentials(settings)

    def serving(port: int) -> None:
        # What was built at start (policy, tokenizers, detectors) never becomes garbage:
        # keep it out of the collector's generations so collections stay short.
        gc.collect()
        gc.freeze()
        print(f"smesh-extproc worker {index} on {settings.address}:{port}", flush=True)

    def expire_until_stopped() -> None:
        while not stop.wait(EXPIRE_EVERY_S):
            try:
                budgets.expire()  # reservations whose access-log entry never came
            except BudgetUnavailable as exc:
                log.warning("could not expire held reservations: %s", exc)

    if settings.server == "aio":

        async def main() -> None:
            server, port = await make_aio_server(
                policy, budgets, telemetry, address, credentials, audit
            )
            serving(port)
            await asyncio.to_thread(expire_until_stopped)
            await server.stop(grace=2)

        asyncio.run(main())
    else:
        server, port = make_server(
            policy, budgets, telemetry, address, settings.threads, credentials, audit
        )
        serving(port)
        expire_until_stopped()
        server.stop(grace=2).wait()
    policy.close()
    budgets.close()
    if audit is not None:
        audit.close()
    telemetry.shutdown()


def _audit_log(
    config: AuditConfig | None, config_file: Path, index: int, workers: int
) -> AuditLog | None:
    """This worker's audit log (one file per worker: a chain has one writer).

    Relative paths are relative to the config file's directory, not the working directory.
    """
    if config is None:
        return None
    base = config_file.resolve().parent
    path = base / config.path
    key_path = base / config.key_file if config.key_file else default_key_path(path)
    if workers > 1:
        path = path.with_name(f"{path.stem}.w{index}{path.suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = load_or_create_key(key_path)
    return AuditLog(path, key, rotate_bytes=config.rotate_bytes, queue_size=config.queue_size)


def run_extproc(settings: ExtProcSettings) -> int:
    """Serve until SIGINT/SIGTERM; 1 on a config that cannot run."""
    config = load_config(settings.config)
    if config.extproc is None:
        print(f"{settings.config}: no extproc section", flush=True)
        return 1
    budgeted = any(
        t.budgets.requests_per_minute or t.budgets.tokens_per_minute or t.budgets.tokens_per_day
        for t in config.tenants
    )
    if settings.workers > 1 and config.extproc.budget_store.kind == "memory" and budgeted:
        print(
            f"{settings.config}: extproc.budget_store: --workers {settings.workers} needs "
            "kind: redis (memory budgets would be per process)",
            flush=True,
        )
        return 1
    if settings.workers == 1:
        _serve_one(settings, 0)
        return 0
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_serve_one, args=(settings, i, os.getpid()), daemon=True)
        for i in range(settings.workers)
    ]
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    for worker in workers:
        worker.start()
    while not stop.wait(0.5):
        if not all(w.is_alive() for w in workers):
            log.error("an extproc worker died; stopping")
            break
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.join(5)
        if worker.is_alive():
            worker.kill()
    return 0 if stop.is_set() else 1
