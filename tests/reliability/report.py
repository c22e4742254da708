"""Figures: one JSON line each, printed when measured and again in pytest's summary."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["FIGURES", "figure"]

FIGURES: list[dict[str, Any]] = []


def figure(name: str, value: Any, **detail: Any) -> None:
    """Record and print ``{"suite": "reliability", "figure": name, "value": value, ...}``."""
    line = {"suite": "reliability", "figure": name, "value": value, **detail}
    FIGURES.append(line)
    print(json.dumps(line, sort_keys=False), flush=True)
