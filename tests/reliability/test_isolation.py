"""Tenant isolation: every way of presenting a key, with every model value, on every endpoint.

About 2,500 requests through the real gateway, each carrying spoofed ``x-smesh-*``
headers, a cookie and a proxy credential. The answers and what the recording backends
received must show: no tenant served a model it may not use, nothing unauthenticated
upstream, the gateway's own tenant/model headers (never the client's) upstream and
routing on them, no client credential upstream, and an OpenAI error body on every
refusal.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest

from tests.reliability.backend import Record
from tests.reliability.client import Answer, Call, error_problem, run_calls
from tests.reliability.conftest import ALLOWED, BACKEND_OF, CANONICAL
from tests.reliability.mesh import Mesh
from tests.reliability.report import figure

pytestmark = pytest.mark.integration

TENANTS = ["alpha", "beta", "gamma"]
GARBAGE_KEY = "sk-smesh-" + "A" * 43

# How a request presents tenant T's key (variant → whether it may authenticate as T, and
# only as T; False: it must never be served).
VARIANTS: dict[str, bool] = {
    "none": False,
    "garbage": False,
    "bearer": True,
    "bearer-lower": True,
    "bearer-upper": True,
    "extra-whitespace": True,
    "two-authorization-headers": False,  # two credentials: which one counts is a guess
    "basic": True,
    "api-key-header": True,
    "query-string": False,  # keys in URLs end up in logs: never a credential
    "empty-bearer": False,
    "bearer-no-space": False,
}


def key_headers(variant: str, key: str, other: str) -> tuple[tuple[str, str], ...]:
    """The credential headers of ``variant`` for ``key``."""
    match variant:
        case "garbage":
            return (("authorization", f"Bearer {GARBAGE_KEY}"),)
        case "bearer":
            return (("authorization", f"Bearer {key}"),)
        case "bearer-lower":
            return (("authorization", f"bearer {key}"),)
        case "bearer-upper":
            return (("authorization", f"BEARER {key}"),)
        case "extra-whitespace":
            return (("authorization", f"Bearer    {key}   "),)
        case "two-authorization-headers":
            return (("authorization", f"Bearer {key}"), ("authorization", f"Bearer {other}"))
        case "basic":
            return (("authorization", "Basic " + base64.b64encode(key.encode()).decode()),)
        case "api-key-header":
            return (("api-key", key),)
        case "empty-bearer":
            return (("authorization", "Bearer "),)
        case "bearer-no-space":
            return (("authorization", f"Bearer{key}"),)
    return ()


NAMES = list(CANONICAL)  # every tenant's models and aliases, and the orphan
MODEL_VALUES: list[Any] = [
    *NAMES,
    "no-such-model",
    123,
    ["alpha-chat"],
    "",
    None,
    "m" * 10_240,
    "模型-ü-🙂",
]


def _chat(model: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


def _completion(model: Any) -> dict[str, Any]:
    return {"model": model, "prompt": "hi"}


def _embedding(model: Any) -> dict[str, Any]:
    return {"model": model, "input": ["hi"]}


POST_ENDPOINTS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "/v1/chat/completions": _chat,
    "/v1/completions": _completion,
    "/v1/embeddings": _embedding,
}
PATH_TRICKS = [
    "/v1/../v1/chat/completions",
    "//v1/chat/completions",
    "/v1%2Fchat%2Fcompletions",
    "/v1/chat/completions/",
    "/v1/chat/completions?stream=true&model=orphan-chat",
    "/V1/CHAT/COMPLETIONS",
    "/v1/./chat/completions",
]


@dataclass(frozen=True)
class Case:
    """What one request was: whose key, presented how, asking what."""

    test_id: str
    owner: str
    variant: str
    endpoint: str  # "chat/completions", "completions", "embeddings", "models", "model", "trick"
    model: Any  # the model value sent (body or /v1/models/NAME)
    spoofed: tuple[tuple[str, str], ...]

    @property
    def identity(self) -> str | None:
        """The only tenant this request may be served as (None: must not be served)."""
        return self.owner if VARIANTS[self.variant] else None

    @property
    def canonical(self) -> str | None:
        return CANONICAL.get(self.model) if isinstance(self.model, str) else None

    @property
    def allowed(self) -> bool:
        """Whether the key's owner may use the requested model."""
        return self.identity is not None and self.canonical in ALLOWED[self.owner]


def _spoofed(owner: str, model: Any) -> tuple[tuple[str, str], ...]:
    canonical = CANONICAL.get(model) if isinstance(model, str) else None
    # Spoof a model served by the *other* backend, so a routing change would show.
    spoof_model = "orphan-chat" if BACKEND_OF.get(canonical or "") == "two" else "gamma-chat"
    return (
        ("x-smesh-model", spoof_model),
        ("x-smesh-tenant", "beta" if owner != "beta" else "alpha"),
        ("x-smesh-residency", "spoofed-region"),
        ("x-smesh-error", "spoofed-error"),
        ("x-smesh-overhead-ms", "-1"),
        ("cookie", "session=spoofed-cookie"),
        ("proxy-authorization", "Basic c3Bvb2Y6c3Bvb2Y="),
    )


def build_calls(keys: dict[str, str]) -> tuple[list[Call], dict[str, Case]]:
    calls: list[Call] = []
    cases: dict[str, Case] = {}
    ids = itertools.count()

    def add(owner: str, variant: str, endpoint: str, model: Any, path: str, body: Any) -> None:
        test_id = f"iso-{next(ids)}"
        spoofed = _spoofed(owner, model)
        other = keys[TENANTS[(TENANTS.index(owner) + 1) % len(TENANTS)]]
        if variant == "query-string":
            path += ("&" if "?" in path else "?") + f"api_key={keys[owner]}&key={keys[owner]}"
        headers = (
            *key_headers(variant, keys[owner], other),
            ("content-type", "application/json"),
            ("x-test-id", test_id),
            *spoofed,
        )
        method, data = ("GET", b"") if body is None else ("POST", json.dumps(body).encode())
        calls.append(Call(method, path, headers, data))
        cases[test_id] = Case(test_id, owner, variant, endpoint, model, spoofed)

    for owner, variant in itertools.product(TENANTS, VARIANTS):
        for model in MODEL_VALUES:
            for path, make in POST_ENDPOINTS.items():
                add(owner, variant, path.removeprefix("/v1/"), model, path, make(model))
            if isinstance(model, str):
                add(owner, variant, "model", model, "/v1/models/" + quote(model, safe=""), None)
        add(owner, variant, "models", None, "/v1/models", None)
        for trick, model in itertools.product(PATH_TRICKS, (min(ALLOWED[owner]), "orphan-chat")):
            add(owner, variant, "trick", model, trick, _chat(model))
    return calls, cases


@dataclass
class Matrix:
    answers: list[tuple[Case, Answer]]
    records: list[Record]
    cases: dict[str, Case]


@pytest.fixture(scope="module")
def matrix(mesh: Mesh) -> Matrix:
    """Run every case once; the tests below judge the answers and the records."""
    calls, cases = build_calls(mesh.keys)
    mark = mesh.mark()
    answers = run_calls(mesh.port, calls, workers=8, timeout=15)
    records = mesh.records(mark)
    by_status = Counter(a.status for a in answers)
    figure("isolation_requests", len(answers), by_status=dict(sorted(by_status.items())))
    figure("isolation_upstream_records", len(records))
    paired = [(cases[_test_id(a.call)], a) for a in answers]
    return Matrix(paired, records, cases)


def _test_id(call: Call) -> str:
    return next(str(v) for k, v in call.headers if k == "x-test-id")


def _model_ids(answer: Answer) -> set[str]:
    """The model ids a catalog answer shows: a list's entries, or the one model's id."""
    body = answer.json()
    if not isinstance(body, dict):
        return set()
    data = body.get("data")
    entries = data if isinstance(data, list) else [body]
    return {m["id"] for m in entries if isinstance(m, dict) and isinstance(m.get("id"), str)}


def _allowed_names(tenant: str) -> set[str]:
    return {name for name, model in CANONICAL.items() if model in ALLOWED[tenant]}


def _served_wrongly(case: Case, answer: Answer) -> str | None:
    """Why a 2xx answer to ``case`` must not have been given, or None."""
    if case.identity is None:
        return "served without a valid credential"
    if case.endpoint in {"models", "model"}:
        extra = _model_ids(answer) - _allowed_names(case.owner)
        if extra:
            return f"catalog shows {sorted(extra)[:5]}"
        if case.endpoint == "models" or case.model == "":  # "/v1/models/" is the list
            return None
    if not case.allowed:
        return f"served model {str(case.model)[:40]!r}, not {case.owner}'s"
    return None


def test_no_tenant_is_served_a_model_it_may_not_use(matrix: Matrix) -> None:
    """No 2xx for a model (or catalog entry) outside the key owner's list, for any variant."""
    wrong = [
        f"{c.test_id} {c.owner}/{c.variant} {c.endpoint} {a.call.path[:60]}: {why}"
        for c, a in matrix.answers
        if a.ok and (why := _served_wrongly(c, a))
    ]
    figure("isolation_cross_tenant_successes", len(wrong))
    assert wrong == [], f"{len(wrong)} wrong 2xx answers, e.g. {wrong[:10]}"


def test_nothing_unauthenticated_or_forbidden_reaches_a_model_server(matrix: Matrix) -> None:
    """Every request a backend received came with a valid key for a model its owner may use."""
    bad = []
    for record in matrix.records:
        case = matrix.cases.get(record.test_id)
        if case is None:
            bad.append(f"record {record.backend}#{record.seq} {record.path} has no known test id")
        elif case.identity is None:
            bad.append(f"{case.test_id} {case.owner}/{case.variant}: unauthenticated upstream")
        elif not case.allowed:
            bad.append(f"{case.test_id} {case.owner}: model {str(case.model)[:40]!r} upstream")
    figure("isolation_unauthenticated_upstream", len(bad))
    assert bad == [], f"{len(bad)} requests reached a backend they should not, e.g. {bad[:10]}"


def test_upstream_tenant_model_and_route_are_the_gateways(matrix: Matrix) -> None:
    """Upstream x-smesh-tenant is the key's owner, x-smesh-model the body's model, routed on it."""
    bad = []
    for record in matrix.records:
        case = matrix.cases.get(record.test_id)
        if case is None or case.canonical is None:
            continue  # reported by the test above
        tenant, model = record.header("x-smesh-tenant"), record.header("x-smesh-model")
        if tenant != [case.owner]:
            bad.append(f"{case.test_id}: x-smesh-tenant {tenant}, key owner {case.owner}")
        if model != [case.canonical]:
            bad.append(f"{case.test_id}: x-smesh-model {model}, asked {case.canonical}")
        if record.backend != BACKEND_OF[case.canonical]:
            bad.append(f"{case.test_id}: {case.canonical} reached backend {record.backend}")
    assert bad == [], f"{len(bad)} mismatches, e.g. {bad[:10]}"


CREDENTIALS = ("authorization", "api-key", "cookie", "proxy-authorization")


def test_client_credentials_never_reach_a_model_server(matrix: Matrix) -> None:
    """No authorization, api-key, cookie or proxy-authorization header upstream."""
    leaked = Counter(
        name for record in matrix.records for name in CREDENTIALS if record.header(name)
    )
    figure("isolation_credential_headers_upstream", sum(leaked.values()), by_header=leaked)
    assert not leaked, f"client credential headers upstream (records with each): {dict(leaked)}"


def test_client_smesh_headers_never_reach_a_model_server(matrix: Matrix) -> None:
    """No client-sent x-smesh-* value upstream; the gateway sets no error/overhead header there."""
    leaked: Counter[str] = Counter()
    for record in matrix.records:
        case = matrix.cases.get(record.test_id)
        spoofed = dict(case.spoofed) if case else {}
        for raw_name, value in record.headers:
            name = raw_name.lower()
            if not name.startswith("x-smesh-"):
                continue
            gateway_set = name in {"x-smesh-tenant", "x-smesh-model"}
            if not gateway_set or value == spoofed.get(name):
                leaked[name] += 1
    figure("isolation_client_smesh_headers_upstream", sum(leaked.values()), by_header=leaked)
    assert not leaked, f"client x-smesh-* headers upstream (count by name): {dict(leaked)}"


def test_every_refusal_is_an_openai_error(matrix: Matrix) -> None:
    """Every non-2xx answer is {"error": {"message", "type", "code"}} JSON."""
    bad = [
        f"{c.test_id} {a.status} {a.call.method} {a.call.path[:60]}: {problem}"
        for c, a in matrix.answers
        if not a.ok and (problem := error_problem(a) if a.status > 0 else a.error)
    ]
    assert bad == [], f"{len(bad)} refusals without an OpenAI error body, e.g. {bad[:10]}"


def test_a_valid_key_for_an_allowed_model_is_served(matrix: Matrix) -> None:
    """The matrix is not vacuous: plain Bearer requests for allowed models all succeed."""
    expected = [
        (c, a)
        for c, a in matrix.answers
        if c.variant == "bearer" and c.allowed and c.endpoint != "trick"
    ]
    failed = [
        f"{c.test_id} {a.call.path[:40]} {c.model}: {a.status}" for c, a in expected if not a.ok
    ]
    assert len(expected) >= 20
    assert failed == [], failed[:10]
