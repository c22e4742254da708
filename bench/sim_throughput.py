"""Model-simulator throughput: requests/s and latency at concurrency 32, 1 and 2 workers.

Run: ``.venv/bin/python -m bench.sim_throughput [--duration 5] [--concurrency 32]``.
The simulator runs as a subprocess with ttft=0 and itl=0; the client is one asyncio
aiohttp process on the same machine, so on a small box it shares the cores and is
often the bottleneck itself. Prints one JSON line per figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from typing import Any

import aiohttp

CHAT = "/v1/chat/completions"
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Summarise the weather report for the north region."},
]
CASES: dict[str, dict[str, Any]] = {
    "chat": {"model": "bench", "messages": MESSAGES, "max_tokens": 16},
    "chat_stream": {
        "model": "bench",
        "messages": MESSAGES,
        "max_tokens": 16,
        "stream": True,
        "stream_options": {"include_usage": True},
    },
}


def start_sim(workers: int) -> tuple[subprocess.Popen[str], str]:
    argv = [sys.executable, "-m", "smesh.sim", "--port", "0", "--ttft", "0", "--itl", "0"]
    argv += ["--workers", str(workers)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("smesh-sim listening on "):
        process.kill()
        raise RuntimeError(f"simulator did not start: {line!r}")
    return process, line.removeprefix("smesh-sim listening on ")


async def drive(url: str, body: dict[str, Any], concurrency: int, duration: float) -> list[float]:
    """Closed loop: ``concurrency`` clients send back to back; returns latencies (s)."""
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base_url=url, connector=connector) as session:

        async def client(until: float, record: bool) -> None:
            while (start := time.perf_counter()) < until:
                async with session.post(CHAT, json=body) as response:
                    payload = await response.read()
                    assert response.status == 200, payload[:200]
                if record:
                    latencies.append(time.perf_counter() - start)

        warmup_end = time.perf_counter() + 0.5
        await asyncio.gather(*(client(warmup_end, False) for _ in range(concurrency)))
        end = time.perf_counter() + duration
        await asyncio.gather(*(client(end, True) for _ in range(concurrency)))
    return latencies


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    for workers in args.workers:
        process, url = start_sim(workers)
        try:
            for case, body in CASES.items():
                start = time.perf_counter()
                latencies = asyncio.run(drive(url, body, args.concurrency, args.duration))
                elapsed = time.perf_counter() - start - 0.5
                figure = {
                    "bench": "sim_throughput",
                    "case": case,
                    "workers": workers,
                    "concurrency": args.concurrency,
                    "req_per_s": round(len(latencies) / elapsed, 1),
                    "p50_ms": round(quantile(latencies, 0.50) * 1000, 2),
                    "p99_ms": round(quantile(latencies, 0.99) * 1000, 2),
                }
                print(json.dumps(figure), flush=True)
        finally:
            process.terminate()
            process.wait(15)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
