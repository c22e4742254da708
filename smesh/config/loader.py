"""Load ``mesh.yaml`` into a :class:`MeshConfig`, or explain exactly what is wrong.

Every error names the file, the line and the field, one per line::

    mesh.yaml:14: models[0].backends[1].weight: must be >= 0

The YAML is composed (not just parsed) so that each value keeps the line it came from;
pydantic's error locations are then mapped back to those lines. A loaded config keeps
that map (:class:`LocatedConfig`), so checks that run later — extproc compiling its
policy, loading tokenizers — report their problems at the same ``file:line``.

An empty document (an empty save, a file of comments) is an error, not "no listeners":
applying it would take the gateway offline. Watchers read with :func:`read_settled`, so
a file caught in the middle of a write is read again until two reads agree.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from smesh.config.references import ConfigIssue, check_references
from smesh.config.schema import MeshConfig

__all__ = [
    "ConfigError",
    "LocatedConfig",
    "load_config",
    "load_located",
    "parse_config",
    "parse_located",
    "read_settled",
]

Loc = tuple[str | int, ...]


class ConfigError(Exception):
    """The config is invalid; ``lines`` holds one ``file:line: field: message`` per issue."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


@dataclass
class _Located:
    """Plain Python data plus the line of every path in it."""

    data: Any = None
    lines: dict[Loc, int] = field(default_factory=dict)
    issues: list[ConfigIssue] = field(default_factory=list)


_CONSTRUCTOR = yaml.SafeLoader("")


def _scalar(node: yaml.ScalarNode) -> Any:
    """Resolve a scalar as ``yaml.safe_load`` would (ints, bools, null, timestamps...)."""
    return _CONSTRUCTOR.construct_object(node, deep=True)


def _walk(node: yaml.Node, loc: Loc, out: _Located) -> Any:
    out.lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            # Keys are field names: keep their text. YAML 1.1 would turn `on:` (retries.on),
            # `yes:` or `no:` into booleans and the field would be "missing".
            if isinstance(key_node, yaml.ScalarNode):
                key: Any = key_node.value
            else:
                key = _walk(key_node, (*loc, "<key>"), out)
            if key in result:
                out.issues.append(ConfigIssue((*loc, str(key)), "duplicate key"))
                out.lines[(*loc, str(key))] = key_node.start_mark.line + 1
                continue
            result[key] = _walk(value_node, (*loc, str(key)), out)
            # A block value starts on the line after its key; operators look for the key.
            out.lines[(*loc, str(key))] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_walk(item, (*loc, i), out) for i, item in enumerate(node.value)]
    assert isinstance(node, yaml.ScalarNode)
    return _scalar(node)


def _compose(text: str) -> _Located | None:
    """The document with its line map; ``None`` when it holds nothing (empty, comments)."""
    out = _Located()
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    if node is None or (isinstance(node, yaml.ScalarNode) and _scalar(node) is None):
        return None  # nothing, comments only, or a bare "---"
    out.data = _walk(node, (), out)
    return out


def _format_loc(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(document)"


def _line_of(loc: Loc, lines: dict[Loc, int]) -> int:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return 1


def _pydantic_issues(exc: ValidationError) -> Iterable[ConfigIssue]:
    for err in exc.errors(include_url=False):
        # Pydantic puts union/validator tags ("function-before[...]") into locations.
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        message = err["msg"].removeprefix("Value error, ")
        if "api_keys" in loc:
            # A plaintext key pasted here is a secret: never echo the value (logs, /status).
            message = (
                "not a key hash: expected sha256:<64 hex digits> (value not shown; "
                "`smesh key new TENANT` prints the line to paste)"
            )
        elif err["type"] == "extra_forbidden":
            message = "unknown field"
        elif err["type"] == "missing":
            message = "required field is missing"
        elif err["type"] == "string_pattern_mismatch":
            pattern = err.get("ctx", {}).get("pattern", "")
            message = f"{err['input']!r} does not match the expected form {pattern}"
        elif err["type"] in {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}:
            message = message.replace("Input should be greater than or equal to", "must be >=")
            message = message.replace("Input should be less than or equal to", "must be <=")
        yield ConfigIssue(loc, message)


@dataclass(frozen=True)
class LocatedConfig:
    """A valid config and where each of its values came from."""

    config: MeshConfig
    source: str
    lines: dict[Loc, int]

    def locate(self, issues: Iterable[ConfigIssue]) -> list[str]:
        """``file:line: field: message`` for each issue, in file order."""
        return _format_issues(self.source, issues, self.lines)

    def error(self, issues: Iterable[ConfigIssue]) -> ConfigError:
        return ConfigError(self.locate(issues))


def _format_issues(source: str, issues: Iterable[ConfigIssue], lines: dict[Loc, int]) -> list[str]:
    return [
        f"{source}:{_line_of(i.path, lines)}: {_format_loc(i.path)}: {i.message}"
        for i in sorted(issues, key=lambda i: _line_of(i.path, lines))
    ]


def parse_located(text: str, source: str = "<config>") -> LocatedConfig:
    """Validate YAML text; raise :class:`ConfigError` listing every issue."""
    try:
        located = _compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise ConfigError([f"{source}:{line}: YAML syntax: {exc.problem or exc}"]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}:1: YAML: {exc}"]) from exc
    if located is None:
        raise ConfigError(
            [f"{source}:1: (document): the config is empty (no listeners, models or tenants)"]
        )
    if not isinstance(located.data, dict):
        raise ConfigError([f"{source}:1: (document): must be a mapping of sections"])
    issues = list(located.issues)
    config: MeshConfig | None = None
    try:
        config = MeshConfig.model_validate(located.data)
    except ValidationError as exc:
        issues.extend(_pydantic_issues(exc))
    if config is not None:
        issues.extend(check_references(config))
    if issues:
        raise ConfigError(_format_issues(source, issues, located.lines))
    assert config is not None
    return LocatedConfig(config, source, located.lines)


def parse_config(text: str, source: str = "<config>") -> MeshConfig:
    """Validate YAML text; raise :class:`ConfigError` listing every issue."""
    return parse_located(text, source).config


def read_settled(path: Path, settle_s: float = 0.05, timeout_s: float = 2.0) -> str:
    """The file's text once two reads ``settle_s`` apart agree (a save is not mid-write).

    Editors and scripts write in several steps (truncate, then write; write in chunks);
    a watcher woken by the first step would otherwise apply half a file. Raises
    :class:`ConfigError` when the file cannot be read, is not UTF-8, or keeps changing
    for ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    try:
        text = path.read_bytes()
        while True:
            time.sleep(settle_s)
            again = path.read_bytes()
            if again == text:
                return text.decode("utf-8")
            if time.monotonic() > deadline:
                raise ConfigError([f"{path}:1: (document): still being written after {timeout_s}s"])
            text = again
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}:1: cannot read: {exc}"]) from exc


def load_located(path: str | Path, settle_s: float = 0.0) -> LocatedConfig:
    """Read and validate a mesh config file (re-reading until it settles when ``settle_s``)."""
    path = Path(path)
    if settle_s > 0:
        text = read_settled(path, settle_s)
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([f"{path}:1: cannot read: {exc}"]) from exc
    return parse_located(text, source=str(path))


def load_config(path: str | Path, settle_s: float = 0.0) -> MeshConfig:
    """Read and validate a mesh config file."""
    return load_located(path, settle_s).config
