"""The writer's hold on its files: the exclusive lock, and the chain's end on disk."""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

from smesh.extproc.audit.chain import GENESIS, BadRecord, Link, check_line, rotated_files
from smesh.extproc.audit.errors import AuditError, AuditLockedError

__all__ = ["TAIL_CHUNK", "last_line", "resume", "take_lock"]

TAIL_CHUNK = 64 << 10


def take_lock(path: Path) -> int:
    """An exclusive ``flock`` on ``<path>.lock``, held as long as the returned fd is open.

    A separate lock file, because rotation renames the log: a lock on the log's own
    inode would move with the rename and leave the new file unguarded.
    """
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise AuditLockedError(
            f"{path}: another writer (pid {holder}) holds {lock_path.name}; every extproc "
            "worker needs its own audit path"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def last_line(fd: int, size: int) -> tuple[bytes | None, int]:
    """The file's last whole line (no newline) and the offset just past it.

    Reads backwards in chunks, so resuming costs about one record, not the whole file.
    """
    buf = b""
    pos = size
    end = -1
    while pos > 0:
        step = min(TAIL_CHUNK, pos)
        pos -= step
        buf = os.pread(fd, step, pos) + buf
        if end < 0:
            newline = buf.rfind(b"\n")
            if newline < 0:
                continue
            end = pos + newline + 1
        start = buf.rfind(b"\n", 0, end - pos - 1)
        if start >= 0:
            return buf[start + 1 : end - pos - 1], end
    if end < 0:
        return None, 0
    return buf[: end - 1], end


def resume(fd: int, path: Path, key: bytes, logger: logging.Logger) -> tuple[int, str, int]:
    """``(seq, hash, size)`` to continue the chain of ``path`` (open, locked, as ``fd``).

    The last whole record of the file, or of its newest rotated predecessor when the file
    has none, must check out with ``key``. A torn line after it is completed when only
    its newline is missing, and cut off otherwise.
    """
    size = os.fstat(fd).st_size
    raw, end = last_line(fd, size)
    if raw is not None:
        link = _check_tail(raw, path, path, key)
        seq, prev = link.seq, link.hash
    else:
        seq, prev = _predecessor_tail(path, key)
    if end == size:
        return seq, prev, size
    torn = os.pread(fd, size - end, end)
    completed = _follows(torn, seq, prev, key)
    if completed is not None:
        # Killed between the record and its newline: the record is whole, keep it.
        os.write(fd, b"\n")
        return completed.seq, completed.hash, size + 1
    logger.warning(
        "audit: %s: discarded %d bytes of a torn last record (a writer was killed "
        "mid-write); continuing after record %d",
        path,
        size - end,
        seq,
    )
    os.ftruncate(fd, end)
    return seq, prev, end


def _follows(raw: bytes, seq: int, prev: str, key: bytes) -> Link | None:
    try:
        link = check_line(raw, key)
    except BadRecord:
        return None
    return link if link.seq == seq + 1 and link.prev == prev else None


def _check_tail(raw: bytes, file: Path, log: Path, key: bytes) -> Link:
    try:
        return check_line(raw, key)
    except BadRecord as exc:
        raise AuditError(
            f"{file}: the last record does not check out ({exc}); run "
            f"`smesh audit verify {log}` before writing to this log again"
        ) from None


def _predecessor_tail(path: Path, key: bytes) -> tuple[int, str]:
    rotated = rotated_files(path)
    if not rotated:
        return 0, GENESIS
    newest = rotated[-1][1]
    fd = os.open(newest, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        raw, end = last_line(fd, size)
    finally:
        os.close(fd)
    if raw is None or end != size:
        raise AuditError(f"{newest}: does not end in a whole record; cannot continue its chain")
    link = _check_tail(raw, newest, path, key)
    return link.seq, link.hash
