"""Run the simulator: one process, or N worker processes sharing a port.

Workers each bind the same port with ``SO_REUSEPORT`` and the kernel spreads
connections among them, so the simulator is never a benchmark's bottleneck. The parent
only starts, watches and stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import queue
import signal
import socket
import threading
from collections.abc import Callable
from multiprocessing.queues import Queue
from types import FrameType

from aiohttp import web

from smesh.sim.app import make_app
from smesh.sim.settings import SimSettings

__all__ = ["STOP_GRACE_S", "run_server", "run_workers", "serve"]

STOP_GRACE_S = 2.0  # in-flight requests get this long to finish on SIGINT/SIGTERM
_READY_TIMEOUT_S = 60.0


async def serve(
    settings: SimSettings,
    host: str,
    port: int,
    *,
    reuse_port: bool = False,
    on_ready: Callable[[str, int], None] | None = None,
    stop: asyncio.Event | None = None,
    grace_s: float = STOP_GRACE_S,
) -> None:
    """Serve until ``stop`` is set, or until SIGINT/SIGTERM when no event is given.

    ``on_ready(host, port)`` is called once the socket listens (``port`` 0 picks one).
    On stop, in-flight requests get ``grace_s`` seconds before they are cancelled.
    """
    loop = asyncio.get_running_loop()
    if stop is None:
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(
        make_app(settings),
        access_log=None,
        handler_cancellation=True,  # a client that hangs up cancels its handler
        shutdown_timeout=grace_s,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
        await site.start()
        bound_port = int(runner.addresses[0][1])
        if on_ready is not None:
            on_ready(host, bound_port)
        await stop.wait()
    finally:
        await runner.cleanup()


def _announce(host: str, port: int) -> None:
    print(f"smesh-sim listening on http://{host}:{port}", flush=True)


def run_server(settings: SimSettings, host: str, port: int) -> int:
    """Serve in this process, print the ready line, stop on SIGINT/SIGTERM."""
    asyncio.run(serve(settings, host, port, on_ready=_announce))
    return 0


def _worker_main(settings: SimSettings, host: str, port: int, ready: Queue[int]) -> None:
    def report(_host: str, bound_port: int) -> None:
        ready.put(bound_port)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(settings, host, port, reuse_port=True, on_ready=report))


def _reserve_port(host: str) -> socket.socket:
    """Bind (not listen) a ``SO_REUSEPORT`` socket to pick a free port workers can share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, 0))
    return sock


def run_workers(settings: SimSettings, host: str, port: int, workers: int) -> int:
    """Run ``workers`` processes on one port; print the ready line once all listen."""
    reserved = _reserve_port(host) if port == 0 else None
    if reserved is not None:
        port = int(reserved.getsockname()[1])
    stopping = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    context = multiprocessing.get_context("spawn")
    ready: Queue[int] = context.Queue()
    procs = [
        context.Process(
            target=_worker_main, args=(settings, host, port, ready), name=f"smesh-sim-{index}"
        )
        for index in range(workers)
    ]
    try:
        for proc in procs:
            proc.start()
        started = 0
        while started < workers and not stopping.is_set():
            try:
                ready.get(timeout=0.2)
                started += 1
            except queue.Empty:  # no news yet: stop waiting if a worker died
                if any(proc.exitcode is not None for proc in procs):
                    return 1
        if reserved is not None:
            reserved.close()
        if stopping.is_set():
            return 0
        _announce(host, port)
        while not stopping.wait(0.5):
            if any(proc.exitcode is not None for proc in procs):
                return 1
        return 0
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: the worker drains and exits
        for proc in procs:
            proc.join(STOP_GRACE_S + 3)
            if proc.is_alive():
                proc.kill()
                proc.join()
        ready.close()
        ready.join_thread()
        if reserved is not None:
            reserved.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
