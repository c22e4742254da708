"""Mutation fuzz through Envoy: malformed requests get clean refusals, never a crash.

Seeded (``SMESH_FUZZ_SEED`` overrides the seed; it is printed with the counts). CI runs
500 cases; ``pytest -m slow`` runs 10,000. Every case must be answered within the
timeout, never with a 5xx, never with a Python traceback or exception name, and every
refusal is an OpenAI JSON error. What reached a backend must be a JSON object from the
fuzz tenant with a single ``"model"`` key naming a model that tenant may use, and
extproc must still be alive and serving at the end.
"""

from __future__ import annotations

import os
import random
from collections import Counter

import pytest

from tests.reliability.client import Call, error_problem, python_internals, run_calls
from tests.reliability.conftest import ALLOWED, CANONICAL
from tests.reliability.mesh import Mesh
from tests.reliability.mutations import Mutant, mutate
from tests.reliability.report import figure

pytestmark = pytest.mark.integration

TIMEOUT_S = 15.0
FUZZ_NAMES = {name for name, model in CANONICAL.items() if model in ALLOWED["fuzz"]}


def fuzz(mesh: Mesh, cases: int, seed: int) -> None:
    rng = random.Random(seed)
    mutants = [mutate(rng) for _ in range(cases)]
    calls = [_call(mesh, i, m) for i, m in enumerate(mutants)]
    mark = mesh.mark()
    answers = run_calls(mesh.port, calls, workers=6, timeout=TIMEOUT_S)
    records = mesh.records(mark)

    problems: list[tuple[str, str]] = []  # (what went wrong / mutant kind, example)
    for index, (mutant, answer) in enumerate(zip(mutants, answers, strict=True)):
        where = f"fuzz-{index} {answer.call.path}"
        if answer.status <= 0:
            problems.append((f"no answer/{mutant.kind}", f"{where}: {answer.error}"))
        elif answer.status >= 500:
            problems.append((f"5xx/{mutant.kind}", f"{where}: {answer.body[:150]!r}"))
        elif not answer.ok and (problem := error_problem(answer)):
            problems.append((f"not an OpenAI error/{mutant.kind}", f"{where}: {problem}"))
        if not answer.ok and (leak := python_internals(answer.body)):
            problems.append((f"Python internals/{mutant.kind}", f"{where}: {leak!r}"))
    kinds = {f"fuzz-{i}": m.kind for i, m in enumerate(mutants)}
    for record in records:
        kind, where = kinds.get(record.test_id, "unknown"), f"{record.test_id} upstream"
        if record.header("x-smesh-tenant") != ["fuzz"]:
            tenant = record.header("x-smesh-tenant")
            problems.append((f"upstream tenant/{kind}", f"{where}: x-smesh-tenant {tenant}"))
        if record.json not in {"object", "too-deep"}:
            problems.append((f"upstream body not JSON/{kind}", f"{where}: {record.json}"))
        elif record.json == "object" and (
            len(record.models) != 1 or record.models[0] not in FUZZ_NAMES
        ):
            models = [str(m)[:30] for m in record.models]
            problems.append((f"upstream model keys/{kind}", f"{where}: {models}"))

    alive = mesh.gateway.extprocs[0].process
    assert alive is not None
    after = mesh.chat("alpha", "alpha-chat")
    statuses = Counter(a.status for a in answers)
    by_problem = Counter(what for what, _ in problems)
    figure(
        "fuzz_cases",
        len(answers),
        seed=seed,
        by_status=dict(sorted(statuses.items())),
        upstream=len(records),
        by_kind=dict(sorted(Counter(m.kind for m in mutants).items())),
    )
    figure("fuzz_problems", len(problems), seed=seed, by_problem=dict(sorted(by_problem.items())))
    figure("fuzz_5xx", sum(n for s, n in statuses.items() if s >= 500), seed=seed)
    figure("fuzz_no_answer", sum(n for s, n in statuses.items() if s <= 0), seed=seed)
    assert alive.poll() is None, "extproc died during the fuzz"
    assert after.status == 200, f"after the fuzz a valid request got {after.status}"
    examples = dict(reversed(problems))  # the first example of each problem
    assert not problems, (
        f"{len(problems)} problems (seed {seed}): {dict(by_problem)}\n"
        + "\n".join(f"{what}: {example}" for what, example in sorted(examples.items()))
    )


def _call(mesh: Mesh, index: int, mutant: Mutant) -> Call:
    headers: list[tuple[str, str | bytes]] = [
        ("authorization", f"Bearer {mesh.keys['fuzz']}"),
        ("x-test-id", f"fuzz-{index}"),
    ]
    if mutant.content_type is not None:
        headers.append(("content-type", mutant.content_type))
    headers.extend(mutant.headers)
    return Call("POST", mutant.path, tuple(headers), mutant.body)


def _seed(default: int) -> int:
    return int(os.environ.get("SMESH_FUZZ_SEED", default))


def test_fuzz_500_cases(mesh: Mesh) -> None:
    """500 seeded mutants: no 5xx, no hang, no traceback, JSON refusals, clean upstream bodies."""
    fuzz(mesh, 500, _seed(20261204))


@pytest.mark.slow
def test_fuzz_10000_cases(mesh: Mesh) -> None:
    """10,000 seeded mutants (another seed than CI's), the same assertions."""
    fuzz(mesh, 10_000, _seed(1_000_003))
