"""The targets of bench.extproc_overhead: upstreams, Envoy alone, the floor, the gateway.

Each ``start_*`` starts its processes under an ExitStack (stopped, whatever fails) and
returns a :class:`Target`: where a client sends requests, with which headers, and what to
meter (Envoy, the ext_proc servicer's process tree, the access-log entries it received).
:func:`validate` and :func:`check_access_log` are the checks every target passes first.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench._meters import Completions, extproc_completions, floor_completions
from bench.sim_throughput import start_sim
from smesh.children import stop_process
from smesh.contract import MODEL_HEADER, OVERHEAD_HEADER
from smesh.envoy_process import EnvoyProcess
from smesh.ports import free_port, wait_http
from tests.integration.gateway import Gateway, start_gateway
from tests.integration.harness import Xds, start_envoy

__all__ = [
    "CHAT",
    "MODEL",
    "SIM_MODEL",
    "TENANTS",
    "Target",
    "check_access_log",
    "extproc_target",
    "start_extproc_gateway",
    "start_floor",
    "start_litellm",
    "start_plain",
    "start_upstream",
    "validate",
]

CHAT = "/v1/chat/completions"
MODEL = "bench"
SIM_MODEL = "sim"
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
GUARDS = """\
guards:
  - name: prompt-guard
    pii: {prompts: redact}
    injection: {action: block}
  - name: answer-guard
    pii: {prompts: redact, answers: redact}
"""
# Tenant name → its extra YAML lines; every tenant has one API key.
TENANTS = {
    "bench": "",
    "bench-budget": "    budgets: {tokens_per_minute: 1000000000000}\n",
    "bench-guard": "    guard: prompt-guard\n",
    "bench-answers": "    guard: answer-guard\n",
}


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
    """One case: a port, the headers a client sends there, what to meter."""

    case: str
    port: int
    headers: dict[str, str]
    envoy: EnvoyProcess | None = None
    extproc: psutil.Process | None = None  # the ext_proc servicer's process tree
    completions: Completions | None = None
    extproc_workers: int = 0
    budget: bool = False
    guard: bool = False
    min_concurrency: int = 1
    path: str = CHAT
    results: dict[tuple[int, int], list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def via_extproc(self) -> bool:
        return self.extproc is not None


def models_yaml(upstream: int, sim: int | None = None) -> str:
    text = f"models:\n  - name: {MODEL}\n    backends:\n      - cluster: up\n"
    if sim is not None:
        text += f"  - name: {SIM_MODEL}\n    backends:\n      - cluster: sim\n"
    text += f"clusters:\n  - name: up\n    endpoints: ['127.0.0.1:{upstream}']\n"
    text += "    outlier_detection: null\n"
    if sim is not None:
        text += f"  - name: sim\n    endpoints: ['127.0.0.1:{sim}']\n    outlier_detection: null\n"
    return text


def _xds_envoy(stack: ExitStack, tmp: Path, mesh: str, node: str) -> EnvoyProcess:
    config = tmp / "mesh.yaml"
    config.write_text(mesh)
    xds = Xds(config, tmp / "xds.log")
    stack.callback(xds.stop)
    xds.start()
    envoy = start_envoy(tmp, xds, node_id=node)
    stack.callback(envoy.stop)
    return envoy


def start_plain(stack: ExitStack, tmp: Path, upstream: int) -> Target:
    tmp.mkdir()
    port = free_port()
    mesh = f"listeners:\n  - name: gateway\n    port: {port}\n" + models_yaml(upstream)
    envoy = _xds_envoy(stack, tmp, mesh, "bench-plain")
    return Target("envoy_alone", port, {MODEL_HEADER: MODEL}, envoy=envoy)


def start_floor(
    stack: ExitStack, tmp: Path, upstream: int, workers: int = 1, aio: bool = False
) -> Target:
    """The floor servicer, and xds + Envoy translating an ``extproc:`` section that points at it."""
    tmp.mkdir()
    ext_port, port, stats_port = free_port(), free_port(), _free_ports(workers)
    stats_ports = [stats_port + i for i in range(workers)]  # worker i serves its counts there
    argv = [sys.executable, "-m", "bench._floor_servicer", "--port", str(ext_port)]
    argv += ["--stats-port", str(stats_port), "--model", MODEL, "--workers", str(workers)]
    if aio:
        argv.append("--aio")
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    stack.callback(stop_process, process)
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("floor listening on"):
        raise RuntimeError(f"the floor servicer did not start: {line!r}")
    mesh = f"listeners:\n  - name: gateway\n    port: {port}\n"
    mesh += f"extproc:\n  port: {ext_port}\n" + models_yaml(upstream)
    envoy = _xds_envoy(stack, tmp, mesh, f"bench-floor-{workers}")
    # The same header shape as a gateway client's: Envoy sends it to ext_proc either way.
    headers = {"authorization": f"Bearer sk-{secrets.token_urlsafe(32)}"}
    completions = floor_completions([f"http://127.0.0.1:{p}/" for p in stats_ports])
    return Target(
        ("floor_aio" if aio else "floor")
        if workers == 1
        else f"floor_workers{workers}" + ("_aio" if aio else ""),
        port,
        headers,
        envoy,
        psutil.Process(process.pid),
        completions,
        extproc_workers=workers,
        min_concurrency=1 if workers == 1 else 2,
    )


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports."""
    while True:
        first = free_port()
        if all(_is_free(first + i) for i in range(1, count)):
            return first


def start_extproc_gateway(
    stack: ExitStack,
    tmp: Path,
    upstream: int,
    workers: int,
    tenants: list[str],
    sim: int | None = None,
    extproc_args: tuple[str, ...] = (),
) -> Gateway:
    """Envoy + xds + ``smesh extproc --workers N`` with ``tenants`` (from TENANTS)."""
    tmp.mkdir()

    def render(port: int, extproc_port: int, key_hashes: dict[str, str]) -> str:
        mesh = f"listeners:\n  - name: gateway\n    port: {port}\n"
        mesh += f"extproc:\n  port: {extproc_port}\n"
        if any("guard:" in TENANTS[t] for t in tenants):
            mesh += GUARDS
        mesh += "tenants:\n"
        for tenant in tenants:
            mesh += f"  - name: {tenant}\n    api_keys: ['{key_hashes[tenant]}']\n"
            mesh += TENANTS[tenant]
        return mesh + models_yaml(upstream, sim)

    gateway = start_gateway(
        tmp, render, tenants, extproc_workers=[workers], extproc_args=extproc_args
    )
    stack.callback(gateway.stop)
    return gateway


def extproc_target(gateway: Gateway, case: str, tenant: str) -> Target:
    extproc = gateway.extprocs[0]
    assert extproc.process is not None
    urls = [f"http://127.0.0.1:{extproc.metrics_port + i}/metrics" for i in range(extproc.workers)]
    return Target(
        case,
        gateway.port,
        {"authorization": f"Bearer {gateway.keys[tenant]}"},
        gateway.envoy,
        psutil.Process(extproc.process.pid),
        extproc_completions(urls, tenant),
        extproc_workers=extproc.workers,
        budget="budgets:" in TENANTS[tenant],
        guard="guard:" in TENANTS[tenant],
        min_concurrency=1 if extproc.workers == 1 else 2,
    )


def start_litellm(
    stack: ExitStack, tmp: Path, upstream: int, command: Path | None = None
) -> Target:
    """LiteLLM's proxy (one worker, no database) on the same upstream.

    It refuses to start without a strong master key, which is then the client's key; its
    model cost map is read from its own package (the machine has no internet).
    """
    tmp.mkdir()
    port = free_port()
    master_key = f"sk-{secrets.token_urlsafe(32)}"
    config = tmp / "litellm.yaml"
    config.write_text(
        f"model_list:\n  - model_name: {MODEL}\n    litellm_params:\n"
        f"      model: openai/{MODEL}\n      api_base: http://127.0.0.1:{upstream}/v1\n"
        f"      api_key: sk-bench\ngeneral_settings:\n  master_key: {master_key}\n"
    )
    litellm = str(command) if command else str(Path(sys.executable).with_name("litellm"))
    argv = [litellm, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--num_workers", "1"]
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    with (tmp / "litellm.log").open("ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    stack.callback(stop_process, process)
    wait_http(f"http://127.0.0.1:{port}/health/liveliness", timeout=120)
    return Target("litellm_proxy", port, {"authorization": f"Bearer {master_key}"})


# -- validation --------------------------------------------------------------------------------


def validate(target: Target, body: bytes, count: int) -> None:
    """``count`` requests answer 200 with usage (and the overhead header through ext_proc)."""
    connection = http.client.HTTPConnection("127.0.0.1", target.port, timeout=10)
    headers = {"content-type": "application/json", **target.headers}
    try:
        for _ in range(count):
            connection.request("POST", target.path, body, headers)
            response = connection.getresponse()
            payload = response.read()
            problem = ""
            if response.status != 200:
                problem = f"status {response.status}"
            elif "usage" not in json.loads(payload):
                problem = "no usage in the answer"
            elif target.via_extproc and response.getheader(OVERHEAD_HEADER) is None:
                problem = f"no {OVERHEAD_HEADER} header: ext_proc is not on the path"
            elif target.case == "envoy_alone" and response.getheader(OVERHEAD_HEADER):
                problem = f"{OVERHEAD_HEADER} header without ext_proc"
            if problem:
                raise RuntimeError(f"{target.case}: {problem}: {payload[:300]!r}")
    finally:
        connection.close()


def check_access_log(target: Target, before: dict[str, float], requests: int) -> dict[str, Any]:
    """Whether ``requests`` access-log entries, each with usage, reached the servicer."""
    assert target.completions is not None
    deadline = time.monotonic() + 5.0
    while True:
        now = target.completions()
        entries, usage = now["entries"] - before["entries"], now["usage"] - before["usage"]
        if (entries >= requests and usage >= requests) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    line: dict[str, Any] = {"check": "access_log", "case": target.case}
    line |= {"requests": requests, "entries": int(entries), "with_usage": int(usage)}
    if entries != requests or usage != requests:
        line["problem"] = "access-log entries or their usage missing (or extra)"
    return line
