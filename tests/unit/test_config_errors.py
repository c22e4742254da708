"""Config errors name file, line and field; valid files load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smesh.cli import main
from smesh.config.loader import ConfigError, load_config, parse_config

VALID = """\
listeners:
  - {name: gateway, port: 10000}
models:
  - name: chat
    aliases: [gpt-4o-mini]
    backends:
      - {cluster: a, weight: 90}
      - {cluster: b, weight: 10}
    fallback: [c]
    timeout: 30s
clusters:
  - {name: a, endpoints: ["127.0.0.1:8001"], region: eu}
  - {name: b, endpoints: [{address: 127.0.0.1, port: 8002}]}
  - {name: c, simulate: {port: 9000, ttft: 20ms}}
"""


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="mesh.yaml")
    return caught.value.lines


def test_valid_config_loads() -> None:
    """A config using canary weights, fallback and simulation loads with parsed durations."""
    config = parse_config(VALID)
    assert config.models[0].timeout == 30.0
    assert config.clusters[2].simulate is not None
    assert config.clusters[2].simulate.ttft == pytest.approx(0.02)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("weight: 10}", "weight: -1}", "mesh.yaml:8: models[0].backends[1].weight: must be >= 0"),
        ("timeout: 30s", "timeout: soon", "mesh.yaml:10: models[0].timeout: must be a duration"),
        ("port: 10000", "port: 70000", "mesh.yaml:2: listeners[0].port: must be <= 65535"),
        (
            "region: eu}",
            "region: eu, colour: red}",
            "mesh.yaml:12: clusters[0].colour: unknown field",
        ),
        (
            "{cluster: b, weight: 10}",
            "{cluster: zz, weight: 10}",
            "mesh.yaml:8: models[0].backends[1].cluster: unknown cluster 'zz'",
        ),
        (
            "fallback: [c]",
            "fallback: [a]",
            "mesh.yaml:9: models[0].fallback[0]: cluster 'a' is already a backend",
        ),
        (
            "aliases: [gpt-4o-mini]",
            "aliases: [chat]",
            "mesh.yaml:5: models[0].aliases[0]: 'chat' already names a model",
        ),
        (
            "- {name: b, endpoints: [{address: 127.0.0.1, port: 8002}]}",
            "- {name: b}",
            "mesh.yaml:13: clusters[1]: needs endpoints",
        ),
        (
            'endpoints: ["127.0.0.1:8001"]',
            'endpoints: ["nowhere"]',
            "mesh.yaml:12: clusters[0].endpoints[0]: must be host:port",
        ),
        (
            "- {cluster: a, weight: 90}\n      - {cluster: b, weight: 10}",
            "- {cluster: a, weight: 0}\n      - {cluster: b, weight: 0}",
            "mesh.yaml:6: models[0].backends: at least one backend needs a weight",
        ),
    ],
    ids=[
        "negative-weight",
        "bad-duration",
        "port-range",
        "unknown-field",
        "unknown-cluster",
        "fallback-is-backend",
        "alias-clash",
        "no-endpoints",
        "bad-endpoint",
        "zero-weights",
    ],
)
def test_error_names_file_line_and_field(old: str, new: str, expected: str) -> None:
    """Each mistake is reported as file:line: field: message."""
    assert old in VALID
    lines = errors(VALID.replace(old, new))
    assert any(line.startswith(expected) for line in lines), lines


def test_yaml_boolean_words_as_keys_stay_field_names() -> None:
    """`on:` (retries.on) is a field name, not YAML 1.1's boolean true."""
    text = VALID.replace(
        "    timeout: 30s", "    timeout: 30s\n    retries: {attempts: 1, on: [5xx]}"
    )
    assert parse_config(text).models[0].retries.on == ("5xx",)


def test_yaml_syntax_error_has_a_line() -> None:
    """Broken YAML names the line where parsing failed."""
    lines = errors(
        VALID.replace("  - {name: gateway, port: 10000}", "  - {name: gateway, port: [10000}")
    )
    assert lines[0].startswith("mesh.yaml:2: YAML syntax")


def test_duplicate_keys_are_errors() -> None:
    """YAML silently keeps the last duplicate key; we refuse it instead."""
    lines = errors(VALID.replace("    timeout: 30s", "    timeout: 30s\n    timeout: 5s"))
    assert any(
        line.startswith("mesh.yaml:11: models[0].timeout: duplicate key") for line in lines
    ), lines


def test_every_issue_is_reported_at_once() -> None:
    """Two independent mistakes give two lines."""
    text = VALID.replace("weight: 10}", "weight: -1}").replace("port: 10000", "port: 0")
    assert len(errors(text)) == 2


def test_non_mapping_document() -> None:
    """A file that is a list, not sections, is one clear error."""
    assert errors("- a\n- b\n") == ["mesh.yaml:1: (document): must be a mapping of sections"]


def test_validate_command_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`smesh validate` prints the error lines and exits 1; a good file exits 0."""
    good = tmp_path / "mesh.yaml"
    good.write_text(VALID)
    assert main(["validate", str(good)]) == 0
    assert "ok" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(VALID.replace("weight: 10}", "weight: -1}"))
    assert main(["validate", str(bad)]) == 1
    assert f"{bad}:8: models[0].backends[1].weight: must be >= 0" in capsys.readouterr().out


def test_unreadable_file(tmp_path: Path) -> None:
    """A missing file is a located error, not a traceback."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_render_prints_envoy_resources(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`smesh render` prints the four resource types as JSON, with the canary weights."""
    path = tmp_path / "mesh.yaml"
    path.write_text(VALID)
    assert main(["render", str(path)]) == 0
    out = capsys.readouterr().out
    rendered = json.loads(out)
    assert set(rendered) == {"Cluster", "ClusterLoadAssignment", "Listener", "RouteConfiguration"}
    weights = rendered["RouteConfiguration"][0]["virtual_hosts"][0]["routes"][0]["route"]
    assert [c["weight"] for c in weights["weighted_clusters"]["clusters"]] == [90, 10]


@pytest.mark.parametrize(
    ("jwks", "message"),
    [("not json", "jwks is not valid JSON"), ('{"keys": []}', 'non-empty "keys" list')],
    ids=["not-json", "no-keys"],
)
def test_inline_jwks_is_checked(jwks: str, message: str) -> None:
    """A JWKS Envoy would reject is a config error with its line, not a NACK later."""
    text = f"extproc: {{}}\njwt:\n  issuer: x\n  jwks: '{jwks}'\n"
    lines = errors(text)
    assert lines[0].startswith("mesh.yaml:4: jwt.jwks:") and message in lines[0], lines
