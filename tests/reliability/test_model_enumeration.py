"""A tenant cannot learn which models other tenants have.

For tenant alpha, a model that exists but belongs to another tenant (or to none) and a
model that does not exist are refused alike: same status (404), same code
(``model_not_found``), same message apart from the name asked for.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.reliability.client import Answer, Call, send
from tests.reliability.mesh import Mesh

pytestmark = pytest.mark.integration

UNKNOWN = "no-such-model"
BODIES = {
    "/v1/chat/completions": lambda m: {"model": m, "messages": [{"role": "user", "content": "x"}]},
    "/v1/completions": lambda m: {"model": m, "prompt": "x"},
    "/v1/embeddings": lambda m: {"model": m, "input": "x"},
}


def ask(mesh: Mesh, path: str, model: str) -> Answer:
    headers = (("authorization", f"Bearer {mesh.keys['alpha']}"),)
    if path == "/v1/models":
        return send(mesh.port, Call("GET", f"/v1/models/{model}", headers))
    body = json.dumps(BODIES[path](model)).encode()
    return send(
        mesh.port, Call("POST", path, (*headers, ("content-type", "application/json")), body)
    )


def shape(answer: Answer, model: str) -> tuple[Any, ...]:
    """Status, type, code and message with the asked-for name blanked out."""
    body = answer.json()
    error = body.get("error", {}) if isinstance(body, dict) else {}
    message = str(error.get("message", answer.body[:200]))
    return answer.status, error.get("type"), error.get("code"), message.replace(model, "<model>")


@pytest.mark.parametrize("path", [*BODIES, "/v1/models"])
@pytest.mark.parametrize(
    "hidden", ["beta-chat", "beta-gpt", "orphan-chat"], ids=["other", "other-alias", "no-owner"]
)
def test_other_tenants_model_looks_like_no_model(mesh: Mesh, path: str, hidden: str) -> None:
    """Another tenant's model and a missing model give the same 404 model_not_found answer."""
    theirs, missing = (
        shape(ask(mesh, path, hidden), hidden),
        shape(ask(mesh, path, UNKNOWN), UNKNOWN),
    )
    assert missing[:3] == (404, "invalid_request_error", "model_not_found"), missing
    assert theirs == missing, f"{hidden!r} answers {theirs}, a missing model {missing}"
