"""ext_proc overhead: Envoy alone, Envoy + a do-nothing servicer (the floor), the gateway.

Run: ``.venv/bin/python -m bench.extproc_overhead [--duration 8] [--quick]``. The default is
the full run (8 s timed runs after 2 s of warm-up, 2 repetitions, 4 KB and 1 KB prompts, 32
answers per streamed case: about 11 minutes); ``--quick`` is 3 s runs, 1 s warm-up, one
repetition, 4 KB only, 16 answers per case (about 2 minutes).

One run starts, side by side on this machine (loopback only, temp dir, every child
stopped in ``finally``):

- an upstream that answers every POST with a fixed OpenAI chat completion (with
  ``usage``): nginx, one worker process, from a config written here; when nginx is not
  installed, the model simulator (``smesh.sim --ttft 0 --itl 0``) instead, and every JSON
  line says ``"upstream": "smesh.sim"``;
- ``envoy_alone``: ``smesh xds`` + Envoy, routing on the client's ``x-smesh-model``;
- ``floor``: ``smesh xds`` + Envoy with the gateway's own translation (an ``extproc:``
  section: ext_proc filter in the gateway's mode — request headers SEND, body BUFFERED,
  no response phases — usage filters, gRPC access log) pointed at
  :mod:`bench._floor_servicer`, a grpcio sync servicer that answers every message
  unchanged except for routing (model header + ``clear_route_cache``, the ``smesh.request``
  metadata the access log filters on). The only difference from the gateway is the Python
  behind the port;
- the gateway, ``smesh xds`` + Envoy + ``smesh extproc --workers 1``, with tenants ``bench``
  (key auth only: case ``gateway``), ``bench-budget`` (a token budget far above the load:
  ``gateway_budget``, every request tokenized, reserved and settled), ``bench-guard`` (a
  guard policy ``pii: {prompts: redact}``, ``injection: {action: block}`` on a prompt
  without PII: ``gateway_guard``), and ``bench-answers`` (answers scanned, for the streamed
  answers below);
- ``floor_workers2`` and ``gateway_workers2``: the floor in two processes sharing the port,
  and ``smesh extproc --workers 2`` with key auth only (memory budgets are refused with
  several workers), each behind its own Envoy; concurrency > 1 only, compared with each
  other;
- a LiteLLM proxy on the same upstream, only where ``litellm`` is installed (never
  installed by this bench): importable here, or its ``litellm`` command given with
  ``--litellm PATH`` (e.g. from a venv of its own); otherwise one JSON line says it was
  skipped.

All Envoys are the same binary with the same ``--concurrency`` (``SMESH_ENVOY_CONCURRENCY``,
default 2). A validation pass first checks that every target answers 200 with ``usage``,
that through ext_proc (floor and gateway) the ``x-smesh-overhead-ms`` header is present,
and reports (``"check": "access_log"``) whether Envoy's access log delivered one entry
with usage per request. Load is ``wrk --latency`` POSTing a chat body with a 4 KB (and 1
KB) prompt at concurrency 1 and 32: a warm-up run, then the timed run. Cases are
interleaved, the order reversed on every other repetition; figures are medians over
repetitions. CPU-µs per request is psutil user+system of the ext_proc process tree (and of
Envoy) over the timed run and the access log's flush after it, divided by the requests wrk
completed; ``extproc_msgs_per_req`` is Envoy's ``ext_proc.stream_msgs_sent`` per request
(2.0 in the gateway's mode); ``als_entries_per_req`` / ``als_usage_per_req`` are access-log
entries (and those with usage) the servicer counted per request.

Streamed answers (:mod:`bench._answer_cpu`): extproc CPU per answer of 50 / 200 / 1,000
tokens, SSE against JSON, for a tenant without and with an answer guard, from the model
simulator pacing one token per ``--itl-ms``.

Prints one JSON line per figure: each case and load point; ``throughput_ratio`` and
``added_p50_ms`` / ``added_p99_ms`` of each ext_proc case against ``envoy_alone`` and of each
gateway case against its floor (``gateway_workers2`` against ``floor_workers2``); the
guard's added latency (``gateway_guard`` against ``gateway``); per-answer figures with
``stream_vs_json_cpu_ratio`` and ``us_per_sse_event``; last, one ``"figure": "goal"`` line
per target with ``met``. On a small shared machine wrk,
Envoy, nginx and the Python processes compete for the same cores: compare figures from one
run, not across machines.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psutil

from bench._answer_cpu import Answers, AnswerTenant, answer_figures, run_answer_cases
from bench._meters import cpu_delta, cpu_seconds, envoy_stats
from bench._targets import (
    MODEL,
    SIM_MODEL,
    TENANTS,
    Target,
    check_access_log,
    extproc_target,
    start_extproc_gateway,
    start_floor,
    start_litellm,
    start_plain,
    start_upstream,
    validate,
)
from bench._wrk import lua_script, parse_wrk, run_wrk
from smesh.xds.resources import EXTPROC_CLUSTER
from tests.integration.gateway import Gateway
from tests.integration.harness import start_simulator

BENCH = "extproc_overhead"
ENVOY_STATS = (
    f"^cluster\\.{EXTPROC_CLUSTER}\\.upstream_rq_total$|ext_proc|"
    "^http\\.gateway\\.downstream_rq_5xx$"
)
# Envoy's access log flushes every 50 ms: this long after a run, every entry has arrived.
SETTLE_S = 0.3
GOALS = {  # figure → (comparison, bound), DESIGN "Performance"
    # The case is key auth + token budget (gateway_budget); key auth alone beside it.
    "gateway_budget_req_per_s_over_floor_c32": (">=", 0.85),
    "gateway_budget_added_p50_ms_over_floor_c1": ("<=", 0.3),
    "gateway_req_per_s_over_floor_c32": (">=", 0.85),
    "gateway_added_p50_ms_over_floor_c1": ("<=", 0.3),
    "gateway_budget_req_per_s_over_litellm_c32": (">=", 20.0),
    "stream_vs_json_cpu_ratio_200_tokens_no_answer_guard": ("<=", 1.5),
    "us_per_sse_event_200_tokens_answer_guard": ("<=", 250.0),
}


# -- load --------------------------------------------------------------------------------------


def chat_body(prompt_kb: int) -> bytes:
    words = "the quick brown fox jumps over the lazy dog while the cat sleeps "
    text = (words * (prompt_kb * 1024 // len(words) + 1))[: prompt_kb * 1024]
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 16}
    return json.dumps(body).encode()


def _stat(stats: dict[str, int], suffix: str) -> int:
    return sum(v for k, v in stats.items() if k.endswith(suffix))


def measure(
    target: Target, url: str, script: Path, concurrency: int, args: argparse.Namespace
) -> dict[str, Any]:
    if args.warmup > 0:
        run_wrk(url, script, concurrency, args.wrk_threads, args.warmup)
        time.sleep(SETTLE_S)  # the warm-up's last requests and access-log entries
    envoy_popen = target.envoy.process if target.envoy else None
    envoy_proc = psutil.Process(envoy_popen.pid) if envoy_popen else None
    stats0 = envoy_stats(target.envoy, ENVOY_STATS)
    done0 = target.completions() if target.completions else {}
    ext0, env0 = cpu_seconds(target.extproc), cpu_seconds(envoy_proc)
    result = parse_wrk(run_wrk(url, script, concurrency, args.wrk_threads, args.duration))
    time.sleep(SETTLE_S)  # the access log's last batch: settling is part of a request's cost
    ext1, env1 = cpu_seconds(target.extproc), cpu_seconds(envoy_proc)
    stats1 = envoy_stats(target.envoy, ENVOY_STATS)
    n = max(result["requests"], 1)
    if target.extproc is not None:
        result["extproc_cpu_us_per_req"] = cpu_delta(ext0, ext1) / n * 1e6
        sent = _stat(stats1, "ext_proc.stream_msgs_sent") - _stat(
            stats0, "ext_proc.stream_msgs_sent"
        )
        result["extproc_msgs_per_req"] = sent / n
    if target.completions is not None:
        done1 = target.completions()
        result["als_entries_per_req"] = (done1["entries"] - done0["entries"]) / n
        result["als_usage_per_req"] = (done1["usage"] - done0["usage"]) / n
    if envoy_proc is not None:
        result["envoy_cpu_us_per_req"] = cpu_delta(env0, env1) / n * 1e6
    grown = {
        k.rsplit(".", 1)[-1]: v - stats0.get(k, 0)
        for k, v in stats1.items()
        if v > stats0.get(k, 0) and _is_error_stat(k)
    }
    result["envoy_error_stats"] = grown
    return result


def _is_error_stat(stat: str) -> bool:
    return any(word in stat for word in ("error", "fail", "timeout", "5xx", "spurious", "allowed"))


def schedule(
    targets: list[Target], points: list[tuple[int, int]], reps: int
) -> Iterator[tuple[Target, int, int]]:
    """Interleaved: every case at one load point, then the next; reversed on odd reps."""
    for rep in range(reps):
        for prompt_kb, concurrency in points:
            order = targets if rep % 2 == 0 else targets[::-1]
            for target in order:
                if concurrency >= target.min_concurrency:
                    yield target, prompt_kb, concurrency


# -- report ------------------------------------------------------------------------------------


Out = Callable[[dict[str, Any]], None]


def emit(line: dict[str, Any]) -> None:
    print(json.dumps(line), flush=True)


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if key in r]
    return round(statistics.median(values), 3) if values else None


PER_RUN = (
    "req_per_s",
    "p50_ms",
    "p99_ms",
    "extproc_cpu_us_per_req",
    "envoy_cpu_us_per_req",
    "extproc_msgs_per_req",
    "als_entries_per_req",
    "als_usage_per_req",
)


def case_lines(target: Target, points: list[tuple[int, int]]) -> Iterator[dict[str, Any]]:
    for prompt_kb, concurrency in points:
        runs = target.results.get((prompt_kb, concurrency))
        if not runs:
            continue
        line: dict[str, Any] = {"bench": BENCH, "case": target.case, "prompt_kb": prompt_kb}
        line |= {"concurrency": concurrency, "extproc_workers": target.extproc_workers}
        line |= {"budget": target.budget, "guard": target.guard}
        line |= {key: _median(runs, key) for key in PER_RUN if _median(runs, key) is not None}
        line["runs_req_per_s"] = [round(r["req_per_s"], 1) for r in runs]
        line["requests"] = sum(r["requests"] for r in runs)
        line["non_2xx"] = sum(r["non_2xx"] for r in runs)
        line["socket_errors"] = sum(r["socket_errors"] for r in runs)
        errors: dict[str, int] = {}
        for r in runs:
            for k, v in r["envoy_error_stats"].items():
                errors[k] = errors.get(k, 0) + v
        line["envoy_error_stats"] = errors
        yield line


def comparisons(
    target: Target, base: Target, points: list[tuple[int, int]]
) -> Iterator[dict[str, Any]]:
    """``throughput_ratio`` and added p50/p99 of ``target`` over ``base``, per load point."""
    for prompt_kb, concurrency in points:
        runs, base_runs = (
            target.results.get((prompt_kb, concurrency)),
            base.results.get((prompt_kb, concurrency)),
        )
        if not runs or not base_runs:
            continue
        where = {"bench": BENCH, "case": target.case, "vs": base.case, "prompt_kb": prompt_kb}
        where["concurrency"] = concurrency
        a, b = _median(runs, "req_per_s"), _median(base_runs, "req_per_s")
        yield {"figure": "throughput_ratio", **where, "value": round(a / b, 4) if a and b else None}
        for q in ("p50", "p99"):
            a, b = _median(runs, f"{q}_ms"), _median(base_runs, f"{q}_ms")
            added = round(a - b, 3) if a is not None and b is not None else None
            yield {"figure": f"added_{q}_ms", **where, "value": added}


def goal_lines(lines: list[dict[str, Any]], main_kb: int) -> Iterator[dict[str, Any]]:
    """The DESIGN targets, each with its figure from this run and whether it is met."""

    def find(figure: str, **where: Any) -> float | None:
        for line in lines:
            if line.get("figure") == figure and all(line.get(k) == v for k, v in where.items()):
                value: float | None = line.get("value")
                return value
        return None

    def rate(case: str) -> float | None:
        for line in lines:
            if (line.get("case"), line.get("prompt_kb"), line.get("concurrency")) == (
                case,
                main_kb,
                32,
            ) and "req_per_s" in line:
                value: float | None = line["req_per_s"]
                return value
        return None

    budget, litellm = rate("gateway_budget"), rate("litellm_proxy")
    values = {
        "gateway_budget_req_per_s_over_floor_c32": find(
            "throughput_ratio",
            case="gateway_budget",
            vs="floor_aio",
            prompt_kb=main_kb,
            concurrency=32,
        ),
        "gateway_budget_added_p50_ms_over_floor_c1": find(
            "added_p50_ms", case="gateway_budget", vs="floor_aio", prompt_kb=main_kb, concurrency=1
        ),
        "gateway_budget_req_per_s_over_litellm_c32": (
            round(budget / litellm, 2) if budget and litellm else None
        ),
        "gateway_req_per_s_over_floor_c32": find(
            "throughput_ratio", case="gateway", vs="floor_aio", prompt_kb=main_kb, concurrency=32
        ),
        "gateway_added_p50_ms_over_floor_c1": find(
            "added_p50_ms", case="gateway", vs="floor_aio", prompt_kb=main_kb, concurrency=1
        ),
        "stream_vs_json_cpu_ratio_200_tokens_no_answer_guard": find(
            "stream_vs_json_cpu_ratio", case="answers_no_answer_guard", max_tokens=200
        ),
        "us_per_sse_event_200_tokens_answer_guard": find(
            "us_per_sse_event", case="answers_answer_guard", max_tokens=200
        ),
    }
    for name, value in values.items():
        op, bound = GOALS[name]
        met = None if value is None else (value >= bound if op == ">=" else value <= bound)
        line = {"bench": BENCH, "figure": "goal", "goal": name, "value": value}
        yield line | {"target": f"{op} {bound}", "met": met}


# -- main --------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, help="seconds timed per run (8; quick 3)")
    parser.add_argument("--warmup", type=float, help="seconds of load before each run (2; quick 1)")
    parser.add_argument("--reps", type=int, help="repetitions, medians reported (2; quick 1)")
    parser.add_argument("--prompt-kb", type=int, nargs="+", help="prompt sizes (4 1; quick 4)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--no-workers2", action="store_true", help="skip extproc --workers 2")
    parser.add_argument("--no-answers", action="store_true", help="skip the streamed answers")
    parser.add_argument("--answer-tokens", type=int, nargs="+", default=[50, 200, 1000])
    parser.add_argument("--answers-per-case", type=int, help="answers per batch (32; quick 16)")
    parser.add_argument("--answer-concurrency", type=int, default=4)
    parser.add_argument("--itl-ms", type=float, default=1.0, help="simulator ms per token")
    parser.add_argument("--sim", action="store_true", help="use the simulator, not nginx")
    parser.add_argument(
        "--litellm", type=Path, default=None, help="a litellm command (its proxy) to compare with"
    )
    parser.add_argument("--quick", action="store_true", help="3 s runs, 1 s warm-up, 1 rep, 4 KB")
    args = parser.parse_args()
    defaults = (
        ("duration", 8.0, 3.0),
        ("warmup", 2.0, 1.0),
        ("reps", 2, 1),
        ("prompt_kb", [4, 1], [4]),
        ("answers_per_case", 32, 16),
    )
    for name, normal, quick in defaults:
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else normal)
    return args


def progress(text: str) -> None:
    print(f"[{BENCH}] {text}", file=sys.stderr, flush=True)


def start_targets(
    stack: ExitStack, tmp: Path, args: argparse.Namespace, out: Out
) -> tuple[str, list[Target], Gateway]:
    """(upstream name, every target for the load runs, the gateway that also serves answers)."""
    upstream_name, upstream = start_upstream(stack, tmp, args.sim)
    sim = None
    if not args.no_answers:
        simulator = start_simulator(tmp, "--itl", str(args.itl_ms / 1000))
        stack.callback(simulator.stop)
        sim = simulator.port
    targets = [
        start_plain(stack, tmp / "plain", upstream),
        start_floor(stack, tmp / "floor", upstream),
        start_floor(stack, tmp / "floor_aio", upstream, aio=True),
    ]
    # smesh extproc serves on grpc.aio by default; the thread-pool server beside it shows
    # the choice, each against the floor on the same kind of server.
    gateway = start_extproc_gateway(stack, tmp / "gateway", upstream, 1, list(TENANTS), sim)
    sync = start_extproc_gateway(
        stack, tmp / "gateway_sync", upstream, 1, ["bench"], extproc_args=("--server", "sync")
    )
    targets += [
        extproc_target(gateway, "gateway", "bench"),
        extproc_target(sync, "gateway_sync", "bench"),
        extproc_target(gateway, "gateway_budget", "bench-budget"),
        extproc_target(gateway, "gateway_guard", "bench-guard"),
    ]
    if not args.no_workers2:
        targets.append(start_floor(stack, tmp / "floor2", upstream, workers=2, aio=True))
        gateway2 = start_extproc_gateway(stack, tmp / "gateway2", upstream, 2, ["bench"])
        targets.append(extproc_target(gateway2, "gateway_workers2", "bench"))
    if args.litellm is None and importlib.util.find_spec("litellm") is None:
        out({"bench": BENCH, "case": "litellm_proxy", "skipped": "litellm is not installed"})
    else:
        try:
            targets.append(start_litellm(stack, tmp / "litellm", upstream, args.litellm))
        except (OSError, TimeoutError, RuntimeError) as exc:
            out({"bench": BENCH, "case": "litellm_proxy", "skipped": f"did not start: {exc}"})
    return upstream_name, targets, gateway


def run_load(
    targets: list[Target], tmp: Path, args: argparse.Namespace, out: Out
) -> list[tuple[int, int]]:
    """Validate every target, then the interleaved wrk runs; the load points run."""
    progress("validating every target")
    bodies = {kb: chat_body(kb) for kb in args.prompt_kb}
    for target in targets:
        before = target.completions() if target.completions else {}
        for body in bodies.values():
            validate(target, body, 20)
        if target.completions is not None:
            out({"bench": BENCH, **check_access_log(target, before, 20 * len(bodies))})
    scripts = {
        (t.case, kb): lua_script(tmp / f"{t.case}-{kb}.lua", bodies[kb], t.headers)
        for t in targets
        for kb in args.prompt_kb
    }
    points = [(kb, c) for kb in args.prompt_kb for c in args.concurrency]
    for target, prompt_kb, concurrency in schedule(targets, points, args.reps):
        progress(f"{target.case} {prompt_kb} KB c={concurrency}")
        url = f"http://127.0.0.1:{target.port}{target.path}"
        result = measure(target, url, scripts[(target.case, prompt_kb)], concurrency, args)
        target.results.setdefault((prompt_kb, concurrency), []).append(result)
    return points


def report_load(
    targets: list[Target], points: list[tuple[int, int]], common: dict[str, Any], out: Out
) -> None:
    for target in targets:
        for line in case_lines(target, points):
            out({**line, **common})
    by_case = {t.case: t for t in targets}
    for target in targets[1:]:
        for line in comparisons(target, by_case["envoy_alone"], points):
            out({**line, **common})
        if target.case.startswith("gateway"):
            # Each against the floor on its own kind of server (aio unless said otherwise);
            # the aio gateway against the thread-pool floor too.
            if target.extproc_workers == 2:
                floors = ["floor_workers2_aio"]
            elif target.case == "gateway_sync":
                floors = ["floor"]
            else:
                floors = ["floor_aio", "floor"]
            for name in floors:
                for line in comparisons(target, by_case[name], points):
                    out({**line, **common})
    for line in comparisons(by_case["gateway_guard"], by_case["gateway"], points):
        out({**line, **common})


def run_answers(gateway: Gateway, args: argparse.Namespace, out: Out) -> None:
    """extproc CPU per streamed and JSON answer, without and with an answer guard."""
    plain = extproc_target(gateway, "answers_no_answer_guard", "bench")
    guarded = extproc_target(gateway, "answers_answer_guard", "bench-answers")
    assert plain.extproc is not None and gateway.envoy is not None
    answers = Answers(
        port=gateway.port,
        envoy=gateway.envoy,
        extproc=plain.extproc,
        model=SIM_MODEL,
        lengths=tuple(sorted(args.answer_tokens)),
        per_case=args.answers_per_case,
        concurrency=args.answer_concurrency,
        reps=args.reps,
    )
    tenants = [
        AnswerTenant(label, target.headers["authorization"], target.completions)
        for label, target in (("no_answer_guard", plain), ("answer_guard", guarded))
        if target.completions is not None
    ]
    idle = run_answer_cases(answers, tenants, progress)
    common = {"reps": args.reps, "cpus": os.cpu_count()}
    for line in answer_figures(answers, tenants, idle, {"model_itl_ms": args.itl_ms}):
        out({"bench": BENCH, **line, **common})


def main() -> int:
    args = parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    started = time.monotonic()
    lines: list[dict[str, Any]] = []

    def out(line: dict[str, Any]) -> None:
        lines.append(line)
        emit(line)

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="smesh-bench-")))
        progress("starting the upstreams, Envoy alone, the floor, the gateways")
        upstream_name, targets, gateway = start_targets(stack, tmp, args, out)
        points = run_load(targets, tmp, args, out)
        common = {
            "upstream": upstream_name,
            "envoy_concurrency": int(os.environ.get("SMESH_ENVOY_CONCURRENCY", "2")),
            "wrk_threads": args.wrk_threads,
            "duration_s": args.duration,
            "reps": args.reps,
            "cpus": os.cpu_count(),
        }
        report_load(targets, points, common, out)
        if not args.no_answers:
            run_answers(gateway, args, out)
        for line in goal_lines(lines, args.prompt_kb[0]):
            emit(line)
    progress(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
