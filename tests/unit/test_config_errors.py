"""Config errors name file, line and field; valid files load."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from smesh.cli import main
from smesh.config.loader import ConfigError, load_config, parse_config, read_settled

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


@pytest.mark.parametrize(
    "text",
    ["", "\n\n", "# the whole file commented out\n# listeners: []\n", "---\n", "   \n# x\n"],
    ids=["empty", "blank-lines", "comments-only", "bare-document-marker", "spaces-and-comment"],
)
def test_an_empty_document_is_an_error_not_an_empty_mesh(text: str) -> None:
    """An empty save would push no listener and drop the port: it is refused with a location."""
    assert errors(text) == [
        "mesh.yaml:1: (document): the config is empty (no listeners, models or tenants)"
    ]


def test_no_listeners_is_an_error() -> None:
    """`listeners: []` would take the gateway port away: refused."""
    lines = errors(
        VALID.replace("  - {name: gateway, port: 10000}", "  []").replace(
            "listeners:\n  []", "listeners: []"
        )
    )
    assert any(
        line.startswith("mesh.yaml:1: listeners: at least one listener") for line in lines
    ), lines


KEY = "sha256:" + "ab" * 32
TENANTS = f"""\
extproc: {{}}
tenants:
  - {{name: a, api_keys: ["{KEY}"]}}
  - {{name: b, api_keys: ["{KEY}"]}}
"""


def test_one_key_hash_under_two_tenants_is_an_error() -> None:
    """Which tenant a shared key belongs to would be arbitrary: the second listing is located."""
    assert errors(TENANTS) == [
        "mesh.yaml:4: tenants[1].api_keys[0]: this key hash is already listed for tenant 'a'"
    ]


def test_a_plaintext_key_is_never_echoed() -> None:
    """A raw key pasted instead of its hash is reported without its value (logs, /status)."""
    secret = "sk-smesh-Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZg"  # noqa: S105 (a test key)
    lines = errors(f'extproc: {{}}\ntenants:\n  - {{name: a, api_keys: ["{secret}"]}}\n')
    assert len(lines) == 1
    assert lines[0].startswith("mesh.yaml:3: tenants[0].api_keys[0]: not a key hash")
    assert secret not in lines[0] and secret[:12] not in lines[0]


GUARDS = """\
extproc: {}
guards:
  - name: strict
    pii:
      prompts: redact
      entities: [EMAIL, EMPLOYEE_ID]
      custom:
        - {name: EMPLOYEE_ID, pattern: 'EMP-[0-9]{6}'}
    injection: {action: block, threshold: 0.5}
    banned_terms: {terms: ["project nightingale"], action: block}
tenants:
  - {name: a, guard: strict}
"""


def test_a_guard_policy_loads() -> None:
    """The issue's guard shape is valid, and tenants name it."""
    config = parse_config(GUARDS)
    assert config.guards[0].pii is not None
    assert config.guards[0].pii.custom[0].name == "EMPLOYEE_ID"
    assert config.tenants[0].guard == "strict"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("guard: strict}", "guard: lax}", "mesh.yaml:12: tenants[0].guard: unknown guard policy"),
        (
            "entities: [EMAIL, EMPLOYEE_ID]",
            "entities: [EMAIL, PASSPORT]",
            "mesh.yaml:6: guards[0].pii.entities[1]: unknown entity 'PASSPORT'",
        ),
        (
            "pattern: 'EMP-[0-9]{6}'",
            "pattern: '(?<=EMP)-[0-9]+'",
            "mesh.yaml:8: guards[0].pii.custom[0].pattern: not a valid RE2 pattern",
        ),
        (
            "pattern: 'EMP-[0-9]{6}'",
            r"pattern: '(a+)+\1'",
            "mesh.yaml:8: guards[0].pii.custom[0].pattern: not a valid RE2 pattern",
        ),
        (
            "pattern: 'EMP-[0-9]{6}'",
            "pattern: '[0-9]*'",
            "mesh.yaml:8: guards[0].pii.custom[0].pattern: matches the empty string",
        ),
        (
            "prompts: redact",
            "prompts: hash",
            "mesh.yaml:4: guards[0].pii.hash_key_file: action hash needs hash_key_file",
        ),
        ("action: block}\n", "action: shout}\n", "mesh.yaml:10: guards[0].banned_terms.action:"),
    ],
    ids=[
        "unknown-guard",
        "unknown-entity",
        "lookbehind",
        "backreference",
        "empty-match",
        "hash-without-key",
        "bad-action",
    ],
)
def test_guard_mistakes_are_located(old: str, new: str, expected: str) -> None:
    """Unknown names and patterns RE2 cannot run in linear time are file:line errors."""
    assert old in GUARDS
    lines = errors(GUARDS.replace(old, new))
    assert any(line.startswith(expected) for line in lines), lines


def test_read_settled_waits_for_a_write_to_finish(tmp_path: Path) -> None:
    """A file caught mid-write is read again until two reads agree."""
    path = tmp_path / "mesh.yaml"
    path.write_text(VALID[:40])

    def finish() -> None:
        time.sleep(0.03)
        path.write_text(VALID)

    writer = threading.Thread(target=finish)
    writer.start()
    try:
        assert read_settled(path, settle_s=0.05) == VALID
    finally:
        writer.join()


def test_a_bare_off_is_the_off_action() -> None:
    """YAML 1.1 reads `off` as false; for a guard action it means off, as written."""
    config = parse_config(
        GUARDS.replace("prompts: redact", "prompts: off\n      answers: off").replace(
            "injection: {action: block, threshold: 0.5}", "injection: {action: off}"
        )
    )
    pii = config.guards[0].pii
    assert pii is not None and (pii.prompts, pii.answers) == ("off", "off")
    assert config.guards[0].injection is not None and config.guards[0].injection.action == "off"
