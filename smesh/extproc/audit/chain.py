"""The audit line format and the rotation naming, as pure functions.

A record's line, for the caller's fields ``F`` (serialised with sorted keys, no chain
field among them)::

    B    = {"seq":S,"prev":P,F…}                         what the key authenticates
    MAC  = HMAC-SHA256(key, B)                           hex
    M    = {"seq":S,"prev":P,F…,"mac":MAC}               what the chain links
    H    = SHA-256(M)                                    hex
    line = {"seq":S,"prev":P,F…,"mac":MAC,"hash":H}\\n

``S`` counts from 1 across rotated files; ``P`` is the ``H`` of the record before
(:data:`GENESIS` for the first). Every byte of a line except ``H`` itself is under
``H``, so a one-byte edit anywhere is caught without the key; only the MAC needs it.

A line is checked by parsing it, re-serialising the parsed values, and requiring the
same bytes: whitespace, key order, escapes and duplicate keys cannot change unnoticed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import orjson

__all__ = [
    "CHAIN_FIELDS",
    "GENESIS",
    "BadRecord",
    "Link",
    "check_line",
    "encode_fields",
    "make_line",
    "rotated_files",
    "rotated_path",
]

GENESIS = "0" * 64
CHAIN_FIELDS = frozenset({"seq", "prev", "mac", "hash"})
ROTATED_DIGITS = 6
_HEX64 = re.compile(r"[0-9a-f]{64}")


class BadRecord(ValueError):
    """One line that does not check out; the message is the reason verify prints."""


@dataclass(frozen=True)
class Link:
    """The chain fields of a record that checked out."""

    seq: int
    prev: str
    hash: str


def encode_fields(record: Mapping[str, Any]) -> bytes:
    """The caller's fields as canonical JSON (sorted keys); refuses the chain's own names."""
    clash = CHAIN_FIELDS.intersection(record)
    if clash:
        raise ValueError(f"audit record uses reserved field(s) {sorted(clash)}")
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def _authenticated(fields: bytes, seq: int, prev: str) -> bytes:
    head = b'{"seq":%d,"prev":"%s"' % (seq, prev.encode())
    if fields == b"{}":
        return head + b"}"
    return head + b"," + fields[1:]


def _linked(body: bytes, mac: str) -> bytes:
    return body[:-1] + b',"mac":"%s"}' % mac.encode()


def _line(linked: bytes, digest: str) -> bytes:
    return linked[:-1] + b',"hash":"%s"}' % digest.encode()


def make_line(fields: bytes, seq: int, prev: str, key: bytes) -> tuple[bytes, str]:
    """The line (with its newline) for ``fields`` at ``seq`` after ``prev``, and its hash."""
    body = _authenticated(fields, seq, prev)
    linked = _linked(body, hmac.digest(key, body, "sha256").hex())
    digest = hashlib.sha256(linked).hexdigest()
    return _line(linked, digest) + b"\n", digest


def _is_hex64(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def check_line(raw: bytes, key: bytes | None) -> Link:
    """The chain fields of one line (no newline); raises :class:`BadRecord` with the reason.

    Checks the line on its own: canonical form, its hash, and its MAC when ``key`` is
    given. Whether it follows the record before it is the caller's check.
    """
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRecord("not valid JSON") from None
    if not isinstance(parsed, dict):
        raise BadRecord("not a JSON object")
    seq, prev, mac, digest = (parsed.pop(name, None) for name in ("seq", "prev", "mac", "hash"))
    if not (
        type(seq) is int and seq >= 1 and _is_hex64(prev) and _is_hex64(mac) and _is_hex64(digest)
    ):
        raise BadRecord("missing or malformed chain fields (seq, prev, mac, hash)")
    try:
        fields = orjson.dumps(parsed, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        raise BadRecord("not in canonical form (the line was edited)") from None
    body = _authenticated(fields, seq, prev)
    linked = _linked(body, mac)
    if _line(linked, digest) != raw:
        raise BadRecord("not in canonical form (the line was edited)")
    if not hmac.compare_digest(hashlib.sha256(linked).hexdigest(), digest):
        raise BadRecord("hash does not match the record (the record was edited)")
    if key is not None and not hmac.compare_digest(hmac.digest(key, body, "sha256").hex(), mac):
        raise BadRecord(
            "MAC does not match (the record was rewritten without the key, or this is not "
            "the log's key)"
        )
    return Link(seq, prev, digest)


def rotated_path(path: Path, index: int) -> Path:
    """The ``index``-th rotated predecessor of ``path``: ``audit.jsonl.000001`` (oldest)."""
    return path.with_name(f"{path.name}.{index:0{ROTATED_DIGITS}d}")


def rotated_files(path: Path) -> list[tuple[int, Path]]:
    """The rotated predecessors of ``path`` that exist, oldest first, with their index."""
    pattern = re.compile(re.escape(path.name) + rf"\.(\d{{{ROTATED_DIGITS},}})")
    try:
        names = [entry.name for entry in path.parent.iterdir()]
    except FileNotFoundError:
        return []
    found = [(int(m.group(1)), path.with_name(n)) for n in names if (m := pattern.fullmatch(n))]
    return sorted(found)
