"""The README's config reference is a config that validates (docs that cannot rot silently)."""

from __future__ import annotations

import re
from pathlib import Path

from smesh.config.loader import parse_config

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_yaml_blocks_validate() -> None:
    """Every ```yaml block in README.md loads without a single config error."""
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)
    assert blocks
    for block in blocks:
        config = parse_config(block, source="README.md")
        assert config.models and config.clusters
