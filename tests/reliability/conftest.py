"""The shared gateway of the reliability suite, and the figures summary.

One gateway serves the isolation, hygiene, enumeration, fuzz and slow-client tests
(budgets and faults start their own): three tenants with their own models, a fuzz
tenant with a token budget, two recording backends, and a second listener with a short
``request_headers_timeout``. Tests tell their records apart by ``Mesh.mark()``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from smesh.ports import free_port
from tests.reliability.mesh import Mesh, recorded_gateway
from tests.reliability.report import FIGURES

MESH = """
listeners:
  - {{name: gateway, port: {port}}}
  - {{name: strict, port: {strict_port}, request_headers_timeout: 2s}}
extproc:
  port: {extproc_port}
tenants:
  - name: alpha
    api_keys: ["{keys[alpha]}"]
    models: [alpha-chat, shared-embed]
  - name: beta
    api_keys: ["{keys[beta]}"]
    models: [beta-gpt, shared-embed]     # an alias grants its model
  - name: gamma
    api_keys: ["{keys[gamma]}"]
    models: [gamma-chat]
    budgets: {{tokens_per_minute: 1000000000}}
  - name: fuzz
    api_keys: ["{keys[fuzz]}"]
    models: [alpha-chat, shared-embed]
    budgets: {{tokens_per_minute: 1000000000000}}
models:
  - {{name: alpha-chat, aliases: [alpha-gpt], backends: [{{cluster: one}}], max_tokens: 16}}
  - {{name: beta-chat, aliases: [beta-gpt], backends: [{{cluster: two}}], max_tokens: 16}}
  - {{name: gamma-chat, backends: [{{cluster: two}}], max_tokens: 16}}
  - {{name: shared-embed, backends: [{{cluster: one}}]}}
  - {{name: orphan-chat, backends: [{{cluster: one}}]}}   # no tenant may use it
clusters:
  - {{name: one, endpoints: ["127.0.0.1:{backend[one]}"]}}
  - {{name: two, endpoints: ["127.0.0.1:{backend[two]}"]}}
"""

TENANTS = ["alpha", "beta", "gamma", "fuzz"]
# What each tenant may use (canonical model names), as MESH says.
ALLOWED = {
    "alpha": {"alpha-chat", "shared-embed"},
    "beta": {"beta-chat", "shared-embed"},
    "gamma": {"gamma-chat"},
    "fuzz": {"alpha-chat", "shared-embed"},
}
# Every name a client may send for a model → the model.
CANONICAL = {
    "alpha-chat": "alpha-chat",
    "alpha-gpt": "alpha-chat",
    "beta-chat": "beta-chat",
    "beta-gpt": "beta-chat",
    "gamma-chat": "gamma-chat",
    "shared-embed": "shared-embed",
    "orphan-chat": "orphan-chat",
}
BACKEND_OF = {
    "alpha-chat": "one",
    "beta-chat": "two",
    "gamma-chat": "two",
    "shared-embed": "one",
    "orphan-chat": "one",
}


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """The shared gateway; ``mesh.extra["strict_port"]`` is the 2 s headers-timeout listener."""
    tmp = tmp_path_factory.mktemp("reliability-mesh")
    with recorded_gateway(tmp, MESH, TENANTS, ["one", "two"], strict_port=free_port()) as mesh:
        yield mesh


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Every figure measured in this run, one JSON line each."""
    if FIGURES:
        terminalreporter.section("reliability figures")
        for line in FIGURES:
            terminalreporter.write_line(json.dumps(line))
