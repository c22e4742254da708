"""What a benchmark reads off the processes it runs: CPU, Envoy stats, completions seen.

Completions are the access-log side of decision 4: after a request, Envoy's gRPC access
log brings its entry (with the usage Envoy captured) to extproc. ``smesh extproc`` counts
them in its Prometheus metrics (``gen_ai.server.request.duration`` once per entry,
``gen_ai.client.token.usage`` once per entry that had usage); the floor servicer counts them
itself and serves the counts as JSON.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import psutil

from smesh.envoy_process import EnvoyProcess

__all__ = [
    "Completions",
    "cpu_delta",
    "cpu_seconds",
    "envoy_stats",
    "extproc_completions",
    "floor_completions",
    "precise_cpu_seconds",
]

# entries: access-log entries handled; usage: of those, entries with usage;
# output_tokens: completion tokens they reported (extproc only).
Completions = Callable[[], dict[str, float]]

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def cpu_seconds(process: psutil.Process | None) -> dict[int, float]:
    """user+system seconds of ``process`` and its living descendants, by pid."""
    if process is None:
        return {}
    seen: dict[int, float] = {}
    try:
        family = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    for proc in family:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        seen[proc.pid] = times.user + times.system
    return seen


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def envoy_stats(envoy: EnvoyProcess | None, pattern: str) -> dict[str, int]:
    """Envoy's counters whose names match the regex ``pattern`` (used ones only)."""
    if envoy is None:
        return {}
    raw = envoy.admin(f"/stats?usedonly&filter={quote(pattern, safe='')}").decode()
    stats: dict[str, int] = {}
    for line in raw.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            stats[name] = int(value)
    return stats


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback)
        text: str = response.read().decode()
        return text


def extproc_completions(metrics_urls: list[str], tenant: str) -> Completions:
    """Completions ``smesh extproc`` recorded for ``tenant``, summed over its workers."""

    def read() -> dict[str, float]:
        counts = {"entries": 0.0, "usage": 0.0, "output_tokens": 0.0}
        for url in metrics_urls:
            for line in _get(url).splitlines():
                match = _SAMPLE.match(line)
                if match is None:
                    continue
                name, labels = match[1], dict(_LABEL.findall(match[2] or ""))
                if labels.get("tenant") != tenant:
                    continue
                value = float(match[3])
                if name == "gen_ai_server_request_duration_seconds_count":
                    counts["entries"] += value
                elif labels.get("gen_ai_token_type") != "output":
                    continue
                elif name == "gen_ai_client_token_usage_count":
                    counts["usage"] += value
                elif name == "gen_ai_client_token_usage_sum":
                    counts["output_tokens"] += value
        return counts

    return read


def floor_completions(stats_urls: list[str]) -> Completions:
    """Access-log entries the floor servicer received, summed over its workers."""

    def read() -> dict[str, float]:
        counts = {"entries": 0.0, "usage": 0.0}
        for url in stats_urls:
            seen = json.loads(_get(url))
            counts["entries"] += float(seen.get("als_entries", 0))
            counts["usage"] += float(seen.get("als_usage", 0))
        return counts

    return read


def _thread_ns(pid: int) -> int:
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the thread ended between listing and reading
    return total


def precise_cpu_seconds(process: psutil.Process | None) -> dict[int, float]:
    """On-CPU seconds of ``process``'s tree, by pid, to the nanosecond, from ``schedstat``.

    psutil's user+system come in clock ticks (10 ms), too coarse for a batch of a few
    answers that cost ~1 ms each. The kernel's per-thread ``schedstat`` runtime is exact,
    but a thread that has ended takes its time with it: right for thread pools that never
    shrink (grpcio's, Envoy's), and the psutil figure is reported beside it as a check.
    Falls back to :func:`cpu_seconds` where ``/proc/PID/task/*/schedstat`` is missing.
    """
    if process is None:
        return {}
    if not Path(f"/proc/{process.pid}/task").is_dir():
        return cpu_seconds(process)
    try:
        family = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    return {proc.pid: _thread_ns(proc.pid) / 1e9 for proc in family}
