"""Fixtures that start real processes (simulators, xds, Envoy) and always stop them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Simulator, start_simulator


@pytest.fixture
def simulators(tmp_path: Path) -> Iterator[list[Simulator]]:
    """Two simulators (the test decides which cluster each one backs)."""
    sims = [start_simulator(tmp_path), start_simulator(tmp_path)]
    yield sims
    for sim in sims:
        sim.stop()
