"""The figure the property suite reports: how many generated inputs ran, as one JSON line.

``pytest tests/property`` runs the CI part (a few hundred inputs per test, seconds);
``pytest -m slow tests/property`` the long run (over 100,000 inputs, minutes), which
``SMESH_PROPERTY_SCALE=0.1`` shortens. Tests that fail name bugs not fixed yet
(``checks.KNOWN_BUGS``).
"""

from __future__ import annotations

import json

import pytest

from tests.property.checks import SKIPPED
from tests.property.gateway import INPUTS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """``{"suite": "property", "figure": "inputs", "value": N, ...}`` after the run.

    ``value``: generated inputs that ran through every check; ``tests``: per test;
    ``skipped_known_bugs``: inputs a slow run discarded because they hit a known bug.
    """
    if not INPUTS:
        return
    line = {
        "suite": "property",
        "figure": "inputs",
        "value": sum(INPUTS.values()),
        "tests": dict(sorted(INPUTS.items())),
        "skipped_known_bugs": dict(sorted(SKIPPED.items())),
    }
    terminalreporter.section("property figures")
    terminalreporter.write_line(json.dumps(line))
