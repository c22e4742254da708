"""xDS convergence: YAML save → Envoy serves the new model, and → N ADS clients ACK it.

Run: ``.venv/bin/python -m bench.xds_convergence [--clients 100] [--rounds 10]``.

One run starts a model simulator, ``smesh xds`` (subprocess, config in a temp dir), one
real Envoy, and a separate process holding N :class:`~smesh.xds.client.AdsClient` streams
in one asyncio loop. Each round appends model ``m{i}`` to the YAML (atomic rename) and
measures, from the rename: (a) the first 200 from Envoy for ``x-smesh-model: m{i}`` (404
before), (b) the moment the last of the N clients ACKed a route table holding route
``m{i}`` (both processes use ``time.time()`` on one machine). Rounds run first with no
bench clients (only Envoy), then with N. xds CPU (user+system) per round and RSS with 0
vs N clients are read with psutil. Everything is loopback and bounded; children are
stopped in ``finally``. Prints one JSON line per figure. The file watcher's batching
(``debounce=100`` ms is its cap; it yields after 20 ms without a further change) is part
of every save→serve time, reported as measured.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

import psutil
from envoy.config.route.v3 import route_pb2

from smesh.children import stop_process
from smesh.envoy_process import EnvoyProcess, render_bootstrap
from smesh.ports import free_port, wait_http
from smesh.xds.client import AdsClient
from smesh.xds.resources import ADS_ORDER, ROUTE

NOTE = (
    "from the YAML rename; includes the file watcher's batching (watchfiles debounce=100 ms"
    " is a cap: it yields once 20 ms pass with no further change)"
)
ROUND_TIMEOUT = 15.0


# -- the client process ----------------------------------------------------------------------


async def run_clients(target: str, count: int, max_seconds: float) -> None:
    """N AdsClients; report when all of them ACKed each new route name; stop on stdin EOF."""
    first_seen: dict[str, list[float]] = {}
    known: set[str] = set()
    ready = False

    def on_ack(client: AdsClient, response: Any) -> None:
        if response.type_url != ROUTE:
            return
        now = time.time()
        seen: set[str] = getattr(client, "bench_seen", set())
        for table in client.resources[ROUTE].values():
            assert isinstance(table, route_pb2.RouteConfiguration)
            for vhost in table.virtual_hosts:
                for route in vhost.routes:
                    if route.name in seen:
                        continue
                    seen.add(route.name)
                    if not ready or route.name in known:
                        continue
                    times = first_seen.setdefault(route.name, [])
                    times.append(now)
                    if len(times) == count:
                        known.add(route.name)
                        report({"route": route.name, "first": min(times), "last": max(times)})
        client.bench_seen = seen  # type: ignore[attr-defined]

    clients = [AdsClient(target, f"bench-client-{k}", on_ack=on_ack) for k in range(count)]
    tasks = [asyncio.create_task(c.run()) for c in clients]
    loop = asyncio.get_running_loop()
    try:
        await asyncio.gather(
            *(c.wait_for(lambda c: all(c.resources[t] for t in ADS_ORDER), 60) for c in clients)
        )
        ready = True
        report({"ready": count})
        eof = loop.run_in_executor(None, sys.stdin.readline)
        await asyncio.wait([eof, *tasks], timeout=max_seconds, return_when="FIRST_COMPLETED")
    finally:
        for client in clients:
            client.close()
        await asyncio.gather(*tasks, return_exceptions=True)


def report(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


# -- the driver ------------------------------------------------------------------------------


def mesh_yaml(gateway_port: int, sim_port: int, models: list[str]) -> str:
    entries = "".join(f"  - {{name: {m}, backends: [{{cluster: sim}}]}}\n" for m in models)
    return (
        f"listeners:\n  - {{name: gateway, port: {gateway_port}}}\nmodels:\n{entries}"
        f'clusters:\n  - {{name: sim, endpoints: ["127.0.0.1:{sim_port}"]}}\n'
    )


def save(path: Path, text: str) -> float:
    """An atomic save, as editors do; returns the time the new file became visible."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return time.time()


def start(stack: ExitStack, argv: list[str], log: Path, **kwargs: Any) -> subprocess.Popen[str]:
    with log.open("ab") as out:
        kwargs.setdefault("stdout", out)
        process = subprocess.Popen(argv, stderr=out, text=True, **kwargs)

    stack.callback(stop_process, process)
    return process


def wait_served(port: int, model: str, timeout: float) -> float:
    """Poll Envoy until ``model`` answers 200 (404 before); returns the time of that 200."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
    headers = {"content-type": "application/json", "x-smesh-model": model}
    deadline = time.monotonic() + timeout
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        while time.monotonic() < deadline:
            try:
                connection.request("POST", "/v1/chat/completions", body, headers)
                response = connection.getresponse()
                response.read()
                if response.status == 200:
                    return time.time()
                if response.status != 404:
                    raise RuntimeError(f"{model}: unexpected HTTP {response.status}")
            except (OSError, http.client.HTTPException):
                connection.close()
            time.sleep(0.001)
    finally:
        connection.close()
    raise TimeoutError(f"Envoy did not serve {model} within {timeout}s")


def summary(values_s: list[float]) -> dict[str, float]:
    ms = sorted(v * 1000 for v in values_s)
    p90 = statistics.quantiles(ms, n=10, method="inclusive")[8] if len(ms) > 1 else ms[0]
    return {
        "median": round(statistics.median(ms), 1),
        "p90": round(p90, 1),
        "min": round(ms[0], 1),
        "max": round(ms[-1], 1),
    }


def emit(figure: str, **fields: Any) -> None:
    report({"bench": "xds_convergence", "figure": figure, **fields})


class Lines:
    """JSON lines from a child's stdout, read by a thread (so waits can time out)."""

    def __init__(self, stream: IO[str]) -> None:
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(json.loads(line))
        self._queue.put(None)

    def get(self, timeout: float) -> dict[str, Any]:
        item = self._queue.get(timeout=timeout)
        if item is None:
            raise RuntimeError("the client process exited; see its log")
        return item


def bench(clients: int, rounds: int, tmp: Path) -> None:
    with ExitStack() as stack:
        python = sys.executable
        sim = start(
            stack,
            [python, "-m", "smesh.sim", "--port", "0", "--ttft", "0", "--itl", "0"],
            tmp / "sim.log",
            stdout=subprocess.PIPE,
        )
        assert sim.stdout is not None
        sim_port = int(sim.stdout.readline().strip().rsplit(":", 1)[-1])
        gateway, xds_port, admin_port = free_port(), free_port(), free_port()
        config = tmp / "mesh.yaml"
        models = ["warmup"]
        save(config, mesh_yaml(gateway, sim_port, models))
        xds_argv = [python, "-m", "smesh.cli", "--log-level", "WARNING", "xds"]
        xds_argv += ["--config", str(config), "--port", str(xds_port)]
        xds = start(stack, [*xds_argv, "--admin-port", str(admin_port)], tmp / "xds.log")
        wait_http(f"http://127.0.0.1:{admin_port}/healthz", timeout=20)
        envoy_admin = free_port()
        bootstrap = tmp / "bootstrap.yaml"
        bootstrap.write_text(render_bootstrap(xds_port, envoy_admin, "bench-envoy"))
        envoy = EnvoyProcess(bootstrap, envoy_admin, 7000 + xds_port % 1000, tmp / "envoy.log")
        stack.callback(envoy.stop)
        envoy.start().wait_ready(30)
        wait_served(gateway, "warmup", 10)
        proc = psutil.Process(xds.pid)

        def run_rounds(label: int) -> tuple[list[float], list[float], float]:
            served: list[float] = []
            acked: list[float] = []
            cpu = proc.cpu_times()
            for _ in range(rounds):
                model = f"m{len(models)}"
                models.append(model)
                t0 = save(config, mesh_yaml(gateway, sim_port, models))
                served.append(wait_served(gateway, model, ROUND_TIMEOUT) - t0)
                if label:
                    while (line := client_lines.get(ROUND_TIMEOUT)).get("route") != model:
                        pass
                    acked.append(line["last"] - t0)
                time.sleep(0.2)  # let stragglers settle before the next save
            after = proc.cpu_times()
            cpu_s = (after.user + after.system) - (cpu.user + cpu.system)
            return served, acked, cpu_s

        served0, _, cpu0 = run_rounds(0)
        rss0 = proc.memory_info().rss
        worker_argv = [python, "-m", "bench.xds_convergence", "--worker", f"127.0.0.1:{xds_port}"]
        worker = start(
            stack,
            [*worker_argv, "--clients", str(clients)],
            tmp / "clients.log",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        stack.callback(lambda: worker.stdin and worker.stdin.close())
        assert worker.stdout is not None
        client_lines = Lines(worker.stdout)
        connect_start = time.time()
        assert client_lines.get(120) == {"ready": clients}
        connected_s = time.time() - connect_start
        time.sleep(1.0)  # let the initial pushes and ACKs finish
        rss_n = proc.memory_info().rss
        served_n, acked_n, cpu_n = run_rounds(clients)

    emit("envoy_serves_ms", clients=0, rounds=rounds, **summary(served0), note=NOTE)
    emit("envoy_serves_ms", clients=clients, rounds=rounds, **summary(served_n), note=NOTE)
    emit("clients_acked_ms", clients=clients, rounds=rounds, **summary(acked_n), note=NOTE)
    emit("clients_connect_s", clients=clients, value=round(connected_s, 2))
    for n, cpu in ((0, cpu0), (clients, cpu_n)):
        emit(
            "xds_cpu_ms_per_round",
            clients=n,
            value=round(cpu * 1000 / rounds, 1),
            note="xds user+system CPU per round (push to Envoy and clients, plus idle time)",
        )
    emit("xds_rss_mb", clients=0, value=round(rss0 / 2**20, 1))
    emit("xds_rss_mb", clients=clients, value=round(rss_n / 2**20, 1))
    emit("rss_kb_per_client", clients=clients, value=round((rss_n - rss0) / 1024 / clients, 1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--worker", metavar="TARGET", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(run_clients(args.worker, args.clients, max_seconds=600))
        return 0
    with tempfile.TemporaryDirectory(prefix="smesh-bench-") as tmp:
        try:
            bench(args.clients, args.rounds, Path(tmp))
        except BaseException:
            for log in sorted(Path(tmp).glob("*.log")):
                sys.stderr.write(f"--- {log.name} (tail)\n{log.read_text()[-2000:]}\n")
            raise
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
