"""``verify``: walk a log and its rotated predecessors, and name the first bad line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from smesh.extproc.audit.chain import GENESIS, BadRecord, check_line, rotated_files, rotated_path

__all__ = ["TRUNCATED", "VerifyResult", "verify"]

TRUNCATED = (
    "truncated record (no newline at the end: the writer was killed mid-write, or the file was cut)"
)
_OUT_OF_PLACE = "(a record was removed, inserted or reordered)"


@dataclass(frozen=True)
class VerifyResult:
    """What :func:`verify` found; ``error`` is ``FILE:LINE: reason`` for the first bad line."""

    ok: bool
    records: int
    files: int
    error: str | None = None


def verify(path: Path, key: bytes | None) -> VerifyResult:
    """Check ``path`` after its rotated predecessors, oldest first, as one chain.

    Without ``key`` only the hashes and their links are checked, which catches any edit
    except a consistent rewrite of everything from the edit onwards; with ``key`` every
    record's MAC is checked too, which catches that rewrite. A missing ``path`` with
    rotated files present is not an error: a writer killed between renaming and
    reopening leaves exactly that, and it reads as a cut at the end (undetectable anyway).
    """
    # Each file with the name of a rotated file missing just before it (None: in order).
    files: list[tuple[Path, str | None]] = []
    for expected, (index, rotated) in enumerate(rotated_files(path), 1):
        gap = rotated_path(path, expected).name if index != expected else None
        files.append((rotated, gap))
    if path.exists():
        files.append((path, None))
    if not files:
        return VerifyResult(False, 0, 0, f"{path}: no such audit log")

    records = 0
    prev = GENESIS
    for file, gap in files:
        if gap is not None:
            return VerifyResult(False, records, len(files), f"{file}:1: {gap} is missing")
        with file.open("rb") as lines:
            for number, line in enumerate(lines, 1):
                try:
                    prev = _follow(line, key, records + 1, prev)
                except BadRecord as exc:
                    return VerifyResult(False, records, len(files), f"{file}:{number}: {exc}")
                records += 1
    return VerifyResult(True, records, len(files))


def _follow(line: bytes, key: bytes | None, seq: int, prev: str) -> str:
    """The hash of ``line`` if it is a good record ``seq`` after ``prev``; else BadRecord."""
    if not line.endswith(b"\n"):
        raise BadRecord(TRUNCATED)
    link = check_line(line[:-1], key)
    if link.seq != seq:
        raise BadRecord(f"seq {link.seq} where {seq} belongs {_OUT_OF_PLACE}")
    if link.prev != prev:
        raise BadRecord(f"prev is not the hash of the record before it {_OUT_OF_PLACE}")
    return link.hash
