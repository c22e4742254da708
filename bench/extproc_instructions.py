"""extproc's own per-request work in CPU instructions: a figure this VM's drift cannot move.

Run: ``.venv/bin/python -m bench.extproc_instructions [--requests 2000]`` (needs valgrind:
``apt-get install -y valgrind``; about 5 minutes, mostly imports under valgrind).

Wall-clock figures on this 2-core VM drift up to 2x between runs (README, Measurements),
more than a change to the request path moves them. Instructions do not drift: each case
runs in a child process under ``valgrind --tool=callgrind`` twice, with 0 and with N
iterations, and the difference divided by N is that case's instructions per iteration
(imports, policy compile and warm-up cancel out). Cases, each in-process, no gRPC:

- ``request_key_auth``: both request phases of a key-auth tenant through the servicer's
  protobuf handling (parse the two ProcessingRequests, decide, serialise the responses),
  a 4 KB chat prompt, as :func:`bench.guards.chain.request_call` runs them;
- ``request_budget``: the same for a tenant with a token budget (reserve on the memory
  store, the reservation in the forwarded metadata);
- ``access_log_entry``: one Envoy access-log entry of such a request, parsed, settled
  and metered (batches of 17, as Envoy sends them under load here).

Instructions are not time: live, the same code runs ~3x slower than in a tight loop
(cold caches between grpc.aio's, Envoy's and wrk's work), so compare cases and commits
with this, and measure throughput with :mod:`bench.extproc_overhead`.

Prints one JSON line per case: ``{"bench": "extproc_instructions", "case": ...,
"instructions": ..., "iterations": N}``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

from bench.guards.chain import KEYS, request_call
from smesh.config.loader import parse_config
from smesh.contract import REQUEST_NAMESPACE, USAGE_NAMESPACE
from smesh.extproc.budget import MemoryBudgetStore
from smesh.extproc.completion import CompletionSink, completion_of
from smesh.extproc.keys import hash_api_key
from smesh.extproc.policy import Policy, StaticPolicySource
from smesh.extproc.telemetry import Telemetry

BENCH = "extproc_instructions"
CASES = ("request_key_auth", "request_budget", "access_log_entry")
BATCH = 17  # access-log entries per gRPC message under load here (bench.extproc_overhead)
_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def _policy() -> Policy:
    """bench.guards.chain's tenants: ``unguarded`` with key auth only, ``guarded`` (here)
    with a token budget far above any load."""
    config = f"""
extproc: {{}}
tenants:
  - {{name: unguarded, api_keys: ["{hash_api_key(KEYS["unguarded"])}"]}}
  - name: guarded
    api_keys: ["{hash_api_key(KEYS["guarded"])}"]
    budgets: {{tokens_per_minute: 1000000000000}}
models:
  - {{name: bench, backends: [{{cluster: up}}]}}
clusters:
  - {{name: up, endpoints: ["127.0.0.1:1"]}}
"""
    return Policy.from_config(parse_config(config))


def _prompt() -> str:
    words = "the quick brown fox jumps over the lazy dog while the cat sleeps "
    return (words * (4096 // len(words) + 1))[:4096]


def _workload(case: str) -> Callable[[int], None]:
    """The case's loop: ``run(n)`` does n iterations (set-up and warm-up done here)."""
    policy = _policy()
    prompt = _prompt()
    if case == "access_log_entry":
        return _access_log_workload(policy, prompt)
    call = request_call(policy, "unguarded" if case == "request_key_auth" else "guarded")
    call(prompt)

    def run(n: int) -> None:
        for _ in range(n):
            call(prompt)

    return run


def _access_log_workload(policy: Policy, prompt: str) -> Callable[[int], None]:
    # The metadata extproc forwards for a budget request, as Envoy's access log returns it.
    forwarded = ep.ProcessingResponse.FromString(request_call(policy, "guarded")(prompt))
    entry = accesslog_pb2.HTTPAccessLogEntry()
    common = entry.common_properties
    common.metadata.filter_metadata[REQUEST_NAMESPACE].CopyFrom(
        forwarded.dynamic_metadata.fields[REQUEST_NAMESPACE].struct_value
    )
    usage = common.metadata.filter_metadata[USAGE_NAMESPACE].fields
    usage["prompt_tokens"].number_value = 1024
    usage["completion_tokens"].number_value = 16
    common.upstream_cluster = "up"
    common.start_time.GetCurrentTime()
    common.time_to_first_downstream_tx_byte.nanos = 800_000
    common.time_to_last_downstream_tx_byte.nanos = 900_000
    entry.request.request_id = "5d3c1f2a-1111-2222-3333-444455556666"
    entry.response.response_code.value = 200
    raw = entry.SerializeToString()
    sink = CompletionSink(StaticPolicySource(policy), MemoryBudgetStore(), Telemetry())

    def run(n: int) -> None:
        for start in range(0, n, BATCH):
            entries = [
                accesslog_pb2.HTTPAccessLogEntry.FromString(raw)
                for _ in range(min(BATCH, n - start))
            ]
            completions = [c for e in entries if (c := completion_of(e))]
            assert len(completions) == len(entries)
            sink.handle(completions)

    run(BATCH)
    return run


def _child(case: str, iterations: int) -> None:
    _workload(case)(iterations)


def _instructions(case: str, iterations: int) -> int:
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "bench.extproc_instructions",
        "--child",
        case,
        "--requests",
        str(iterations),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    match = _COLLECTED.search(done.stderr)
    if match is None:
        raise RuntimeError(f"callgrind printed no total for {case}: {done.stderr[-500:]}")
    return int(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2040, help="iterations per case")
    parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.requests)
        return 0
    if shutil.which("valgrind") is None:
        print(json.dumps({"bench": BENCH, "skipped": "valgrind is not installed"}))
        return 0
    runs = [(case, n) for case in CASES for n in (0, args.requests)]
    with ThreadPoolExecutor(max_workers=2) as pool:  # the two cores
        totals = dict(zip(runs, pool.map(lambda run: _instructions(*run), runs), strict=True))
    for case in CASES:
        per = (totals[(case, args.requests)] - totals[(case, 0)]) / args.requests
        line = {"bench": BENCH, "case": case, "instructions": round(per)}
        print(json.dumps({**line, "iterations": args.requests}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
