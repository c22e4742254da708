"""The package layout DESIGN.md promises: xds and extproc are peers that never import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "smesh"


def _imports(package: str) -> set[tuple[str, str]]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add((str(path.relative_to(ROOT)), node.module))
            elif isinstance(node, ast.Import):
                found.update((str(path.relative_to(ROOT)), a.name) for a in node.names)
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("xds", "smesh.extproc"),
        ("extproc", "smesh.xds"),
        ("config", "smesh.xds"),
        ("config", "smesh.extproc"),
    ],
    ids=["xds-not-extproc", "extproc-not-xds", "config-not-xds", "config-not-extproc"],
)
def test_peers_never_import_each_other(package: str, forbidden: str) -> None:
    """Shared things (config schema, header names, error bodies) live below both peers."""
    bad = sorted(
        f"{where} imports {module}"
        for where, module in _imports(package)
        if module == forbidden or module.startswith(forbidden + ".")
    )
    assert bad == []
