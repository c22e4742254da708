"""The audit log's HMAC key: a file of random bytes, readable by its owner only."""

from __future__ import annotations

import os
from pathlib import Path

from smesh.extproc.audit.errors import AuditKeyError

__all__ = ["KEY_BYTES", "MIN_KEY_BYTES", "default_key_path", "load_or_create_key", "read_key"]

KEY_BYTES = 32
# HMAC-SHA256 keys shorter than this are guessable in principle; refuse them rather
# than sign a log that only looks tamper-evident.
MIN_KEY_BYTES = 16


def default_key_path(log: Path) -> Path:
    """Where a key is made when the config names none: next to the log (``audit.jsonl.key``)."""
    return log.with_name(log.name + ".key")


def read_key(path: Path) -> bytes:
    """The key in ``path`` (all of its bytes); :class:`AuditKeyError` when unusable."""
    try:
        key = path.read_bytes()
    except OSError as exc:
        raise AuditKeyError(f"{path}: cannot read the audit key: {exc.strerror}") from exc
    if len(key) < MIN_KEY_BYTES:
        raise AuditKeyError(
            f"{path}: an audit key needs at least {MIN_KEY_BYTES} bytes, this file has {len(key)}"
        )
    return key


def load_or_create_key(path: Path) -> bytes:
    """The key in ``path``; when there is none, 32 new random bytes in a new 0600 file.

    The file is written under a temporary name and linked into place, so a concurrent
    starter (another worker) either wins the link or reads the complete winner's key.
    """
    if path.exists():
        return read_key(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, os.urandom(KEY_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return read_key(path)
