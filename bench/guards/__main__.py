"""``python -m bench.guards``: every guard benchmark, in one run."""

from __future__ import annotations

import importlib


def main() -> None:
    for name in ("pii", "injection", "chain"):
        try:
            module = importlib.import_module(f"bench.guards.{name}")
        except ModuleNotFoundError:
            continue
        module.run()


if __name__ == "__main__":
    main()
