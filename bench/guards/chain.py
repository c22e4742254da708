"""The whole guard chain per 4 KB prompt, side by side with guards off, in one run.

Run: ``.venv/bin/python -m bench.guards`` (every guard benchmark) or
``.venv/bin/python -m bench.guards.chain``.

One JSON line per figure, ``{"bench": "guards", "figure": ..., "value": ...}``:

- ``chain_us_per_4kb``: median µs of the guard step alone (``guard_prompt``: banned terms
  with 100 terms, injection scoring, PII detection and redaction with every built-in
  entity) on one 4 KB chat prompt, per ``text``: ``english_prose`` (Faker paragraphs: the
  common case) and ``corpus_mix`` (PII corpus cases run together: an entity every ~60
  characters, a bad case).
- ``request_us_per_4kb``: median µs of extproc's whole request work in-process (headers
  and body phases, protobuf parse and serialise included; no gRPC), per ``tenant``:
  ``unguarded`` and ``guarded`` (the same policy), same ``text``. Their difference is
  what a guard adds to a request's CPU; ``bench.extproc_overhead`` measures the same
  through Envoy (``gateway_guard`` vs ``gateway``).
"""

from __future__ import annotations

import json
import random
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from faker import Faker

from bench.guards.pii import _cases, _texts, _timings_us
from smesh.config.loader import parse_config
from smesh.extproc.budget import MemoryBudgetStore
from smesh.extproc.guarding import guard_prompt
from smesh.extproc.keys import hash_api_key
from smesh.extproc.policy import Policy
from smesh.extproc.processor import Deps, Processor
from smesh.extproc.servicer import ExternalProcessorService
from smesh.extproc.telemetry import Telemetry
from smesh.extproc.tokens import CHAT_PATH

KEYS = {
    "unguarded": "sk-bench-unguarded-0123456789abcdef",
    "guarded": "sk-bench-guarded-0123456789abcdef",
}


def emit(figure: str, value: float, **labels: Any) -> None:
    print(json.dumps({"bench": "guards", "figure": figure, **labels, "value": value}), flush=True)


def policy(terms: Sequence[str]) -> Policy:
    quoted = ", ".join(json.dumps(term) for term in terms)
    config = f"""
extproc: {{}}
guards:
  - name: full
    pii: {{prompts: redact}}
    injection: {{action: flag}}
    banned_terms: {{terms: [{quoted}], action: block}}
tenants:
  - {{name: unguarded, api_keys: ["{hash_api_key(KEYS["unguarded"])}"]}}
  - {{name: guarded, guard: full, api_keys: ["{hash_api_key(KEYS["guarded"])}"]}}
models:
  - {{name: bench, backends: [{{cluster: up}}]}}
clusters:
  - {{name: up, endpoints: ["127.0.0.1:1"]}}
"""
    return Policy.from_config(parse_config(config))


def body(text: str) -> dict[str, Any]:
    return {"model": "bench", "messages": [{"role": "user", "content": text}], "max_tokens": 16}


def median_us(call: Callable[[str], object], texts: Sequence[str]) -> float:
    return round(statistics.median(_timings_us(call, texts)), 1)


def request_call(pol: Policy, tenant: str) -> Callable[[str], object]:
    """One request through the processor and the servicer's protobuf handling."""
    deps = Deps(budgets=MemoryBudgetStore(), telemetry=Telemetry())
    headers = ep.ProcessingRequest()
    for key, value in (
        (":path", CHAT_PATH),
        (":method", "POST"),
        ("authorization", f"Bearer {KEYS[tenant]}"),
        ("content-type", "application/json"),
        ("x-request-id", "5d3c1f2a-1111-2222-3333-444455556666"),
    ):
        headers.request_headers.headers.headers.add(key=key, raw_value=value.encode())
    head = headers.SerializeToString()
    handle = ExternalProcessorService._handle

    def call(text: str) -> object:
        processor = Processor(deps, pol)
        first = handle(processor, ep.ProcessingRequest.FromString(head))
        message = ep.ProcessingRequest()
        message.request_body.body = orjson.dumps(body(text))
        message.request_body.end_of_stream = True
        second = handle(processor, ep.ProcessingRequest.FromString(message.SerializeToString()))
        assert first is not None and second is not None
        assert not second.HasField("immediate_response"), second.immediate_response.body
        processor.finish()
        return second.SerializeToString()

    return call


def run() -> None:
    rng = random.Random(11)
    fake = Faker("en_US")
    fake.seed_instance(11)
    words = sorted({fake.word() for _ in range(400)} - {""})
    terms = [f"zz{word}qx" for word in words[:50]] + [f"project {w}qx" for w in words[50:100]]
    pol = policy(terms)
    guard = pol.guard_of(pol.config.tenants[1])
    assert guard is not None
    texts = {
        "english_prose": _texts([fake.paragraph(nb_sentences=5) for _ in range(200)], rng),
        "corpus_mix": _texts([c["text"] for c in _cases()], rng),
    }
    for name, prompts in texts.items():
        emit(
            "chain_us_per_4kb",
            median_us(lambda t: guard_prompt(guard, CHAT_PATH, body(t)), prompts),
            text=name,
        )
        for tenant in ("unguarded", "guarded"):
            us = median_us(request_call(pol, tenant), prompts)
            emit("request_us_per_4kb", us, text=name, tenant=tenant)


if __name__ == "__main__":
    run()
