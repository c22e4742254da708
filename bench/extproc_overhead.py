"""ext_proc overhead: the same load through Envoy without and with ``smesh extproc``.

Run: ``.venv/bin/python -m bench.extproc_overhead [--duration 8] [--quick]``.

One run starts, side by side on this machine (loopback only, temp dir, every child
stopped in ``finally``):

- an upstream that answers every POST with a fixed OpenAI chat completion (with
  ``usage``): nginx, one worker process, from a config written here; when nginx is not
  installed, the model simulator (``smesh.sim --ttft 0 --itl 0 --workers 1``) instead,
  and every JSON line says ``"upstream": "smesh.sim"``;
- gateway ``without_extproc``: ``smesh xds`` + Envoy, routing by ``x-smesh-model``;
- gateway ``with_extproc``: ``smesh xds`` + Envoy + ``smesh extproc --workers 1`` (ext_proc
  filter on the listener; model from the JSON body, API key in ``Authorization``). Its
  config has two tenants: ``bench`` without budgets (case ``with_extproc``) and
  ``bench-budget`` with budgets far above the load (case ``with_extproc_budget``: every
  request reserves and settles in the memory budget store);
- gateway ``with_extproc_workers2``: the same with ``--workers 2`` and no budgets (extproc
  refuses budgets in a per-process memory store with several workers); concurrency > 1 only.

All Envoys are the same binary with the same ``--concurrency`` (``SMESH_ENVOY_CONCURRENCY``,
default 2). A validation pass first checks every gateway answers 200 with ``usage`` and,
through extproc, the ``x-smesh-overhead-ms`` header, so no error response is ever timed.
Load is ``wrk --latency`` with a Lua script POSTing a chat body with a 1 KB or 4 KB prompt
at concurrency 1 and 32: a warm-up run, then the timed run. Cases are interleaved, and the
order is reversed on every other repetition; figures are medians over repetitions.
extproc CPU-µs per request is psutil user+system time of the extproc process and its
children over the timed run divided by the requests wrk completed (Envoy's likewise);
``extproc_streams_per_req`` is Envoy's ``cluster.smesh_extproc.upstream_rq_total`` delta
over the same requests (1.0 means every request went through extproc).

Prints one JSON line per figure, then ``throughput_ratio`` (with / without),
``added_p50_ms`` and ``added_p99_ms`` per extproc case, prompt size and concurrency. On a
small, shared machine wrk, Envoy, nginx and extproc compete for the same cores: compare
figures from one run, not across machines.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil

from bench.sim_throughput import start_sim
from smesh.children import stop_process
from smesh.envoy_process import EnvoyProcess
from smesh.ports import free_port, wait_http
from smesh.xds.resources import EXTPROC_CLUSTER
from tests.integration.gateway import Gateway, start_gateway
from tests.integration.harness import Xds, start_envoy

BENCH = "extproc_overhead"
CHAT = "/v1/chat/completions"
MODEL = "bench"
OVERHEAD_HEADER = "x-smesh-overhead-ms"
UPSTREAM_REPLY = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1700000000,
    "model": MODEL,
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "ok"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 256, "completion_tokens": 1, "total_tokens": 257},
}
NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_buffer_size 64k;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type application/json;
            return 200 '{reply}';
        }}
    }}
}}
"""
BUDGETS = "{requests_per_minute: 1000000000, tokens_per_minute: 1000000000000}"
ENVOY_STATS = (
    f"^cluster\\.{EXTPROC_CLUSTER}\\.upstream_rq_total$|ext_proc|"
    "^http\\.gateway\\.downstream_rq_5xx$"
)


# -- processes ---------------------------------------------------------------------------------


def start_nginx(stack: ExitStack, tmp: Path) -> int:
    prefix = tmp / "nginx"
    prefix.mkdir()
    port = free_port()
    reply = json.dumps(UPSTREAM_REPLY, separators=(",", ":"))
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, port=port, reply=reply))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    with (prefix / "stdout.log").open("ab") as log:
        process = subprocess.Popen(
            [nginx, "-p", str(prefix), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
        )
    stack.callback(stop_process, process)
    wait_http(f"http://127.0.0.1:{port}/", timeout=10)
    return port


def start_upstream(stack: ExitStack, tmp: Path, force_sim: bool) -> tuple[str, int]:
    """(upstream name, port): nginx when installed, else the model simulator."""
    if not force_sim and (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):
        return "nginx", start_nginx(stack, tmp)
    process, url = start_sim(1)
    stack.callback(stop_process, process)
    return "smesh.sim", int(url.rsplit(":", 1)[1].rstrip("/"))


@dataclass
class Target:
    """One case: a gateway port, the headers a client sends there, processes to meter."""

    case: str
    port: int
    headers: dict[str, str]
    envoy: EnvoyProcess | None = None
    extproc: psutil.Process | None = None
    extproc_workers: int = 0
    budget: bool = False
    min_concurrency: int = 1
    results: dict[tuple[int, int], list[dict[str, Any]]] = field(default_factory=dict)


def models_yaml(upstream: int) -> str:
    return (
        f"models:\n  - name: {MODEL}\n    backends:\n      - cluster: up\n"
        f"clusters:\n  - name: up\n    endpoints: ['127.0.0.1:{upstream}']\n"
        "    outlier_detection: null\n"
    )


def start_plain(stack: ExitStack, tmp: Path, upstream: int) -> Target:
    tmp.mkdir()
    port = free_port()
    config = tmp / "mesh.yaml"
    config.write_text(f"listeners:\n  - name: gateway\n    port: {port}\n" + models_yaml(upstream))
    xds = Xds(config, tmp / "xds.log")
    stack.callback(xds.stop)
    xds.start()
    envoy = start_envoy(tmp, xds, node_id="bench-plain")
    stack.callback(envoy.stop)
    return Target("without_extproc", port, {"x-smesh-model": MODEL}, envoy=envoy)


def start_extproc_gateway(
    stack: ExitStack, tmp: Path, upstream: int, workers: int, budget_tenant: bool
) -> Gateway:
    """Envoy + xds + extproc (``--workers``); tenant ``bench``, and ``bench-budget``."""
    tmp.mkdir()
    tenants = ["bench", "bench-budget"] if budget_tenant else ["bench"]

    def render(port: int, extproc_port: int, key_hashes: dict[str, str]) -> str:
        mesh = f"listeners:\n  - name: gateway\n    port: {port}\n"
        mesh += f"extproc:\n  port: {extproc_port}\ntenants:\n"
        mesh += f"  - name: bench\n    api_keys: ['{key_hashes['bench']}']\n"
        if budget_tenant:
            mesh += f"  - name: bench-budget\n    api_keys: ['{key_hashes['bench-budget']}']\n"
            mesh += f"    budgets: {BUDGETS}\n"
        return mesh + models_yaml(upstream)

    gateway = start_gateway(tmp, render, tenants, extproc_workers=[workers])
    stack.callback(gateway.stop)
    return gateway


def extproc_targets(gateway: Gateway, workers: int, budget_tenant: bool) -> list[Target]:
    extproc = gateway.extprocs[0].process
    assert extproc is not None
    proc = psutil.Process(extproc.pid)
    suffix = "" if workers == 1 else f"_workers{workers}"
    min_concurrency = 1 if workers == 1 else 2

    def target(case: str, tenant: str, budget: bool) -> Target:
        headers = {"authorization": f"Bearer {gateway.keys[tenant]}"}
        return Target(
            case, gateway.port, headers, gateway.envoy, proc, workers, budget, min_concurrency
        )

    targets = [target(f"with_extproc{suffix}", "bench", False)]
    if budget_tenant:
        targets.append(target(f"with_extproc_budget{suffix}", "bench-budget", True))
    return targets


# -- load --------------------------------------------------------------------------------------


def chat_body(prompt_kb: int) -> bytes:
    words = "the quick brown fox jumps over the lazy dog while the cat sleeps "
    text = (words * (prompt_kb * 1024 // len(words) + 1))[: prompt_kb * 1024]
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 16}
    return json.dumps(body).encode()


def lua_script(path: Path, body: bytes, headers: dict[str, str]) -> Path:
    lines = ['wrk.method = "POST"', f"wrk.body = [==[{body.decode()}]==]"]
    lines.append('wrk.headers["Content-Type"] = "application/json"')
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match[1]) * _UNITS[match[2]]


def parse_wrk(out: str) -> dict[str, Any]:
    percentiles = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", out, re.M))
    requests = re.search(r"^\s*(\d+) requests in ([\d.]+)(\w+)", out, re.M)
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    if requests is None or rate is None or "50" not in percentiles or "99" not in percentiles:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests": int(requests[1]),
        "req_per_s": float(rate[1]),
        "p50_ms": _ms(percentiles["50"]),
        "p99_ms": _ms(percentiles["99"]),
        "non_2xx": int(non_2xx[1]) if non_2xx else 0,
        "socket_errors": sum(int(n) for n in errors.groups()) if errors else 0,
    }


def wrk(url: str, script: Path, concurrency: int, threads: int, seconds: float) -> str:
    threads = max(1, min(threads, concurrency))
    argv = ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(seconds))}s"]
    argv += ["--latency", "--timeout", "10s", "-s", str(script), url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return done.stdout


def cpu_seconds(process: psutil.Process | None) -> dict[int, float]:
    """user+system seconds of ``process`` and its living descendants, by pid."""
    if process is None:
        return {}
    seen: dict[int, float] = {}
    for proc in [process, *process.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        seen[proc.pid] = times.user + times.system
    return seen


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def envoy_stats(envoy: EnvoyProcess | None) -> dict[str, int]:
    if envoy is None:
        return {}
    raw = envoy.admin(f"/stats?usedonly&filter={quote(ENVOY_STATS, safe='')}").decode()
    stats: dict[str, int] = {}
    for line in raw.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            stats[name] = int(value)
    return stats


def measure(
    target: Target, url: str, script: Path, concurrency: int, args: argparse.Namespace
) -> dict[str, Any]:
    if args.warmup > 0:
        wrk(url, script, concurrency, args.wrk_threads, args.warmup)
        time.sleep(0.3)  # let the warm-up's last requests finish before counting
    envoy_popen = target.envoy.process if target.envoy else None
    envoy_proc = psutil.Process(envoy_popen.pid) if envoy_popen else None
    stats0 = envoy_stats(target.envoy)
    ext0, env0 = cpu_seconds(target.extproc), cpu_seconds(envoy_proc)
    result = parse_wrk(wrk(url, script, concurrency, args.wrk_threads, args.duration))
    ext1, env1 = cpu_seconds(target.extproc), cpu_seconds(envoy_proc)
    stats1 = envoy_stats(target.envoy)
    n = max(result["requests"], 1)
    if target.extproc is not None:
        result["extproc_cpu_us_per_req"] = cpu_delta(ext0, ext1) / n * 1e6
        streams = stats1.get(f"cluster.{EXTPROC_CLUSTER}.upstream_rq_total", 0)
        streams -= stats0.get(f"cluster.{EXTPROC_CLUSTER}.upstream_rq_total", 0)
        result["extproc_streams_per_req"] = streams / n
    if envoy_proc is not None:
        result["envoy_cpu_us_per_req"] = cpu_delta(env0, env1) / n * 1e6
    grown = {
        k.rsplit(".", 1)[-1]: v - stats0.get(k, 0)
        for k, v in stats1.items()
        if v > stats0.get(k, 0) and re.search(r"(error|fail|timeout|5xx|spurious|allowed)", k)
    }
    result["envoy_error_stats"] = grown
    return result


# -- validation --------------------------------------------------------------------------------


def validate(target: Target, body: bytes, count: int) -> None:
    """``count`` requests answer 200 with usage (and the overhead header through extproc)."""
    connection = http.client.HTTPConnection("127.0.0.1", target.port, timeout=10)
    headers = {"content-type": "application/json", **target.headers}
    try:
        for _ in range(count):
            connection.request("POST", CHAT, body, headers)
            response = connection.getresponse()
            payload = response.read()
            problem = ""
            if response.status != 200:
                problem = f"status {response.status}"
            elif "usage" not in json.loads(payload):
                problem = "no usage in the answer"
            elif target.extproc is not None and response.getheader(OVERHEAD_HEADER) is None:
                problem = f"no {OVERHEAD_HEADER} header: extproc is not on the path"
            elif target.extproc is None and response.getheader(OVERHEAD_HEADER) is not None:
                problem = f"{OVERHEAD_HEADER} header without extproc"
            if problem:
                raise RuntimeError(f"{target.case}: {problem}: {payload[:300]!r}")
    finally:
        connection.close()


# -- report ------------------------------------------------------------------------------------


def emit(line: dict[str, Any]) -> None:
    print(json.dumps(line), flush=True)


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if key in r]
    return round(statistics.median(values), 3) if values else None


def report(targets: list[Target], points: list[tuple[int, int]], common: dict[str, Any]) -> None:
    base = targets[0]
    for target in targets:
        for prompt_kb, concurrency in points:
            runs = target.results.get((prompt_kb, concurrency))
            if not runs:
                continue
            line: dict[str, Any] = {
                "bench": BENCH,
                "case": target.case,
                "prompt_kb": prompt_kb,
                "concurrency": concurrency,
                "extproc_workers": target.extproc_workers,
                "budget": target.budget,
            }
            for key in ("req_per_s", "p50_ms", "p99_ms", "extproc_cpu_us_per_req"):
                line[key] = _median(runs, key)
            for key in ("envoy_cpu_us_per_req", "extproc_streams_per_req"):
                line[key] = _median(runs, key)
            line["runs_req_per_s"] = [round(r["req_per_s"], 1) for r in runs]
            line["requests"] = sum(r["requests"] for r in runs)
            line["non_2xx"] = sum(r["non_2xx"] for r in runs)
            line["socket_errors"] = sum(r["socket_errors"] for r in runs)
            errors: dict[str, int] = {}
            for r in runs:
                for k, v in r["envoy_error_stats"].items():
                    errors[k] = errors.get(k, 0) + v
            line["envoy_error_stats"] = errors
            emit({**line, **common})
    for target in targets[1:]:
        for prompt_kb, concurrency in points:
            runs = target.results.get((prompt_kb, concurrency))
            base_runs = base.results.get((prompt_kb, concurrency))
            if not runs or not base_runs:
                continue
            where = {"bench": BENCH, "case": target.case, "prompt_kb": prompt_kb}
            where["concurrency"] = concurrency
            with_, without = _median(runs, "req_per_s"), _median(base_runs, "req_per_s")
            ratio = round(with_ / without, 4) if with_ and without else None
            emit({"figure": "throughput_ratio", **where, "value": ratio, **common})
            for q in ("p50", "p99"):
                a, b = _median(runs, f"{q}_ms"), _median(base_runs, f"{q}_ms")
                added = round(a - b, 3) if a is not None and b is not None else None
                emit({"figure": f"added_{q}_ms", **where, "value": added, **common})


# -- main --------------------------------------------------------------------------------------


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, help="seconds timed per run (8; quick 3)")
    parser.add_argument("--warmup", type=float, help="seconds of load before each run (2; quick 1)")
    parser.add_argument("--reps", type=int, help="repetitions, medians reported (2; quick 1)")
    parser.add_argument("--prompt-kb", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--no-budget", action="store_true", help="skip with_extproc_budget")
    parser.add_argument("--no-workers2", action="store_true", help="skip extproc --workers 2")
    parser.add_argument("--sim", action="store_true", help="use the simulator, not nginx")
    parser.add_argument("--quick", action="store_true", help="3 s runs, 1 s warm-up, 1 rep")
    args = parser.parse_args()
    for name, normal, quick in (("duration", 8.0, 3.0), ("warmup", 2.0, 1.0), ("reps", 2, 1)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else normal)
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    points = [(kb, c) for kb in args.prompt_kb for c in args.concurrency]
    started = time.monotonic()
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="smesh-bench-")))
        upstream_name, upstream = start_upstream(stack, tmp, args.sim)
        targets = [start_plain(stack, tmp / "plain", upstream)]
        gateway = start_extproc_gateway(stack, tmp / "extproc", upstream, 1, not args.no_budget)
        targets += extproc_targets(gateway, 1, not args.no_budget)
        if not args.no_workers2:
            gateway2 = start_extproc_gateway(stack, tmp / "extproc2", upstream, 2, False)
            targets += extproc_targets(gateway2, 2, False)
        bodies = {kb: chat_body(kb) for kb in args.prompt_kb}
        for target in targets:
            for body in bodies.values():
                validate(target, body, 20)
        scripts = {
            (t.case, kb): lua_script(tmp / f"{t.case}-{kb}.lua", bodies[kb], t.headers)
            for t in targets
            for kb in args.prompt_kb
        }
        for target, prompt_kb, concurrency in schedule(targets, points, args.reps):
            url = f"http://127.0.0.1:{target.port}{CHAT}"
            script = scripts[(target.case, prompt_kb)]
            result = measure(target, url, script, concurrency, args)
            target.results.setdefault((prompt_kb, concurrency), []).append(result)
        common = {
            "upstream": upstream_name,
            "envoy_concurrency": int(os.environ.get("SMESH_ENVOY_CONCURRENCY", "2")),
            "wrk_threads": args.wrk_threads,
            "duration_s": args.duration,
            "reps": args.reps,
            "cpus": os.cpu_count(),
        }
        report(targets, points, common)
    print(
        json.dumps({"bench": BENCH, "wall_s": round(time.monotonic() - started, 1)}),
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
