"""extproc CPU per answer: streamed (SSE) against JSON, by answer length, per tenant kind.

DESIGN decision 4 says extproc's CPU must not grow with an answer's length unless a guard
scans it. Two tenants of one gateway show both sides: ``no_answer_guard`` (response
phases off: Python sees the request, and the access-log entry, never the answer) and
``answer_guard`` (``pii: {prompts: redact, answers: redact}``: the request switches the
response phases on with ``mode_override`` and every chunk of the answer is a gRPC message).

The upstream is the model simulator with a small inter-token latency (``--itl``, 1 ms by
default), not nginx with a fixed body: each token then leaves the model as its own write,
as from a real model server, so Envoy hands extproc one SSE event per message (checked:
``extproc_msgs_per_answer``); a whole stream written at once reaches extproc in one or
two messages and would hide the per-event cost. The simulator also honours the
``stream_options.include_usage`` that extproc forces, so the usage that Envoy reads from
the stream and its access log delivers is the real thing (checked against what the
client saw). ``max_tokens`` sets the length: N tokens are N content events, plus the
role, finish, usage and ``[DONE]`` events.

CPU is the extproc process tree's on-CPU time over a batch of answers (from the kernel's
per-thread ``schedstat``, ns; psutil's 10 ms ticks reported beside it), less what the
process burns idle over the same wall time (measured first), divided by the answers.
"""

from __future__ import annotations

import dataclasses
import http.client
import itertools
import json
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psutil

from bench._meters import (
    Completions,
    cpu_delta,
    cpu_seconds,
    envoy_stats,
    precise_cpu_seconds,
)
from smesh.envoy_process import EnvoyProcess

__all__ = ["AnswerTenant", "Answers", "answer_figures", "run_answer_cases"]

CHAT = "/v1/chat/completions"
ENVOY_STATS = r"ext_proc\.(stream_msgs_sent|streams_started)$"
# Envoy's access log flushes every 50 ms: wait this long after a batch for its entries.
SETTLE_S = 0.3
# The idle rate is measured after this long without requests (a load run's stragglers —
# access-log batches, thread wind-down — cost ~10 ms/s for a second or two) over IDLE_S.
QUIET_S = 2.0
IDLE_S = 3.0


@dataclass
class AnswerTenant:
    """A tenant whose answers are measured: label, ``authorization`` header, completions."""

    label: str
    authorization: str
    completions: Completions


@dataclass(frozen=True)
class Answers:
    """Where and how: the gateway, its extproc, the model, batch size and concurrency."""

    port: int
    envoy: EnvoyProcess
    extproc: psutil.Process
    model: str
    lengths: tuple[int, ...]
    per_case: int
    concurrency: int
    reps: int
    prompt: str = "Write a long story about a lighthouse keeper and the sea."
    results: dict[tuple[str, int, bool], list[dict[str, Any]]] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    status: int
    events: int
    completion_tokens: int
    problem: str
    seconds: float = 0.0


def _body(model: str, prompt: str, tokens: int, stream: bool) -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": tokens,
        "stream": stream,
    }
    return json.dumps(body).encode()


def _read(response: http.client.HTTPResponse, stream: bool) -> Answer:
    payload = response.read()
    if response.status != 200:
        return Answer(response.status, 0, 0, f"status {response.status}: {payload[:200]!r}")
    if not stream:
        usage = json.loads(payload).get("usage") or {}
        tokens = int(usage.get("completion_tokens", 0))
        return Answer(200, 0, tokens, "" if usage else "no usage in the answer")
    data = [line[5:].strip() for line in payload.split(b"\n") if line.startswith(b"data:")]
    if not data or data[-1] != b"[DONE]":
        return Answer(200, len(data), 0, "the stream does not end with [DONE]")
    usage = next((u for d in data[-2::-1] if (u := json.loads(d).get("usage"))), None)
    if usage is None:
        return Answer(200, len(data), 0, "no usage event in the stream")
    return Answer(200, len(data), int(usage.get("completion_tokens", 0)), "")


def _drive(
    answers: Answers, authorization: str, tokens: int, stream: bool, count: int
) -> list[Answer]:
    """``count`` answers over ``answers.concurrency`` keep-alive connections."""
    body = _body(answers.model, answers.prompt, tokens, stream)
    headers = {"content-type": "application/json", "authorization": authorization}
    tickets = itertools.count()
    lock = threading.Lock()

    def client() -> list[Answer]:
        connection = http.client.HTTPConnection("127.0.0.1", answers.port, timeout=60)
        got: list[Answer] = []
        try:
            while True:
                with lock:
                    if next(tickets) >= count:
                        return got
                started = time.perf_counter()
                connection.request("POST", CHAT, body, headers)
                answer = _read(connection.getresponse(), stream)
                got.append(dataclasses.replace(answer, seconds=time.perf_counter() - started))
        finally:
            connection.close()

    workers = min(answers.concurrency, count)
    with ThreadPoolExecutor(workers, thread_name_prefix="answers") as pool:
        batches = [pool.submit(client) for _ in range(workers)]
        return [a for batch in batches for a in batch.result()]


def idle_cpu_rate(extproc: psutil.Process, seconds: float = IDLE_S) -> float:
    """On-CPU seconds per second the extproc tree spends with no request in flight."""
    time.sleep(QUIET_S)
    before, started = precise_cpu_seconds(extproc), time.monotonic()
    time.sleep(seconds)
    after = precise_cpu_seconds(extproc)
    return cpu_delta(before, after) / (time.monotonic() - started)


def _stat(stats: dict[str, int], suffix: str) -> int:
    return sum(v for k, v in stats.items() if k.endswith(suffix))


def measure_batch(
    answers: Answers, tenant: AnswerTenant, tokens: int, stream: bool, idle: float
) -> dict[str, Any]:
    """One batch: CPU, messages and completions per answer; raises on a bad answer."""
    _drive(answers, tenant.authorization, tokens, stream, min(2, answers.per_case))  # warm the path
    time.sleep(SETTLE_S)
    stats0, done0 = envoy_stats(answers.envoy, ENVOY_STATS), tenant.completions()
    rough0, cpu0 = cpu_seconds(answers.extproc), precise_cpu_seconds(answers.extproc)
    started = time.monotonic()
    got = _drive(answers, tenant.authorization, tokens, stream, answers.per_case)
    wall = time.monotonic() - started
    time.sleep(SETTLE_S)
    cpu1, rough1 = precise_cpu_seconds(answers.extproc), cpu_seconds(answers.extproc)
    elapsed = time.monotonic() - started
    stats1, done1 = envoy_stats(answers.envoy, ENVOY_STATS), tenant.completions()
    bad = [a.problem for a in got if a.problem]
    if bad:
        kind = "streamed" if stream else "JSON"
        raise RuntimeError(f"{tenant.label} {kind} {tokens} tokens: {bad[0]} ({len(bad)} bad)")
    n = len(got)
    busy = cpu_delta(cpu0, cpu1) - idle * elapsed
    msgs = _stat(stats1, "stream_msgs_sent") - _stat(stats0, "stream_msgs_sent")
    return {
        "extproc_cpu_us_per_answer": busy / n * 1e6,
        "extproc_cpu_us_per_answer_psutil": cpu_delta(rough0, rough1) / n * 1e6,
        "extproc_msgs_per_answer": msgs / n,
        "sse_events_per_answer": sum(a.events for a in got) / n,
        "completion_tokens_per_answer": sum(a.completion_tokens for a in got) / n,
        "als_entries_per_answer": (done1["entries"] - done0["entries"]) / n,
        "als_usage_per_answer": (done1["usage"] - done0["usage"]) / n,
        "als_output_tokens_per_answer": (
            done1.get("output_tokens", 0.0) - done0.get("output_tokens", 0.0)
        )
        / n,
        "answer_ms": statistics.median(a.seconds for a in got) * 1000,
        "batch_s": wall,
    }


def _schedule(
    answers: Answers, tenants: list[AnswerTenant]
) -> Iterator[tuple[AnswerTenant, int, bool]]:
    """Interleaved: for each length, every tenant streamed and JSON; reversed on odd reps."""
    for rep in range(answers.reps):
        cases = [
            (tenant, tokens, stream)
            for tokens in answers.lengths
            for tenant in tenants
            for stream in (True, False)
        ]
        yield from cases if rep % 2 == 0 else cases[::-1]


def run_answer_cases(
    answers: Answers, tenants: list[AnswerTenant], progress: Callable[[str], None]
) -> float:
    """Every case ``answers.reps`` times into ``answers.results``; the idle rate used."""
    idle = idle_cpu_rate(answers.extproc)
    for tenant, tokens, stream in _schedule(answers, tenants):
        progress(f"answers {tenant.label} {tokens} tokens {'SSE' if stream else 'JSON'}")
        result = measure_batch(answers, tenant, tokens, stream, idle)
        answers.results.setdefault((tenant.label, tokens, stream), []).append(result)
    return idle


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def answer_figures(
    answers: Answers, tenants: list[AnswerTenant], idle: float, common: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """One line per case, then stream-vs-JSON ratios and µs per SSE event."""
    where = {"model_itl_ms": common.get("model_itl_ms"), "concurrency": answers.concurrency}
    yield {"figure": "extproc_idle_cpu_us_per_s", "value": round(idle * 1e6, 1), **where}
    for tenant in tenants:
        for tokens in answers.lengths:
            for stream in (True, False):
                runs = answers.results.get((tenant.label, tokens, stream))
                if not runs:
                    continue
                line: dict[str, Any] = {
                    "case": f"answers_{tenant.label}",
                    "answer": "sse" if stream else "json",
                    "max_tokens": tokens,
                    "answers": answers.per_case * len(runs),
                }
                for key in runs[0]:
                    line[key] = round(_median(runs, key), 2)
                yield {**line, **where}
    for tenant in tenants:
        per_event: list[tuple[float, float]] = []
        for tokens in answers.lengths:
            sse = answers.results.get((tenant.label, tokens, True))
            js = answers.results.get((tenant.label, tokens, False))
            if not sse or not js:
                continue
            cpu_sse = _median(sse, "extproc_cpu_us_per_answer")
            cpu_json = _median(js, "extproc_cpu_us_per_answer")
            events = _median(sse, "sse_events_per_answer")
            line = {"case": f"answers_{tenant.label}", "max_tokens": tokens, **where}
            ratio = round(cpu_sse / cpu_json, 3) if cpu_json > 0 else None
            yield {"figure": "stream_vs_json_cpu_ratio", **line, "value": ratio}
            extra = (cpu_sse - cpu_json) / events if events else None
            yield {
                "figure": "us_per_sse_event",
                **line,
                "value": round(extra, 1) if extra is not None else None,
                "sse_events": events,
            }
            per_event.append((events, cpu_sse))
        if len(per_event) >= 2:
            (e0, c0), (e1, c1) = per_event[0], per_event[-1]
            slope = (c1 - c0) / (e1 - e0) if e1 != e0 else None
            yield {
                "figure": "us_per_sse_event_marginal",
                "case": f"answers_{tenant.label}",
                "between_max_tokens": [answers.lengths[0], answers.lengths[-1]],
                "value": round(slope, 1) if slope is not None else None,
                **where,
            }
