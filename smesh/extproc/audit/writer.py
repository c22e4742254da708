"""The audit writer: reservations on the request path, one thread that appends lines.

A request takes a slot with :meth:`AuditLog.reserve` when it starts and fills it with
:meth:`AuditTicket.write` when it ends. Slots bound the records in memory: a slot is held
from ``reserve`` until its line is in the file, so when the disk stalls the slots run out
and the caller refuses new requests (503) instead of serving them unaudited. ``write``
only serialises the record and puts it on a queue; it never waits for the disk.

The writer thread takes whatever is queued (up to :data:`MAX_BATCH` records), appends it
with one ``write(2)`` and wakes again as soon as more arrives, so a record reaches the
file (the page cache) within milliseconds. ``fsync`` happens at rotation and at close:
a killed process loses nothing already written; a power cut may lose the last records.
A failed write is undone (``ftruncate`` back to the last whole line) and retried with
backoff, holding its slots meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from smesh.extproc.audit.chain import encode_fields, make_line, rotated_files, rotated_path
from smesh.extproc.audit.files import resume, take_lock
from smesh.extproc.audit.key import MIN_KEY_BYTES

__all__ = ["MAX_BATCH", "AuditLog", "AuditTicket"]

MAX_BATCH = 1024
RETRY_FIRST_S = 0.01
RETRY_MAX_S = 1.0
_OPEN_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC

_T = TypeVar("_T")


@dataclass(frozen=True)
class _Abandoned:
    """The record written for a ticket that was garbage-collected while still open."""

    fields: bytes


@dataclass(frozen=True)
class _Flush:
    event: threading.Event


class _Stop:
    """Put by ``close``: write what came before, then end the thread."""


class _GiveUp(Exception):
    """``close`` ran out of time while the writer was retrying a failing disk."""


_Item = bytes | _Abandoned | _Flush | _Stop


class AuditTicket:
    """One reserved slot: exactly one record (or none, if cancelled) for one request."""

    __slots__ = ("_log", "_open", "_reserved_at")

    def __init__(self, log: AuditLog, reserved_at: float) -> None:
        self._log = log
        self._reserved_at = reserved_at
        # `list.pop` is atomic: of concurrent write/cancel/__del__ calls exactly one
        # claims the slot, without a lock per ticket.
        self._open = [True]

    def _claim(self) -> bool:
        try:
            self._open.pop()
        except IndexError:
            return False
        return True

    def write(self, record: Mapping[str, Any]) -> None:
        """Queue ``record`` for the log; later calls are ignored. Never waits for the disk.

        Raises ``ValueError`` (a reserved field name) or ``TypeError`` (a value JSON cannot
        hold) before claiming the slot: those are caller bugs, and the ticket stays open.
        """
        fields = encode_fields(record)
        if self._claim():
            self._log._submit(fields)

    def cancel(self) -> None:
        """Release the slot without a record (the request never started)."""
        if self._claim():
            self._log._release(1)

    def __del__(self) -> None:
        # A caller bug (neither written nor cancelled) must not hold the slot forever,
        # and a reserved request leaves a trace rather than nothing.
        if self._open and self._claim():
            self._log._abandon(self._reserved_at)


class AuditLog:
    """A hash-chained, keyed JSONL audit log with one writer thread (see the package doc)."""

    def __init__(
        self,
        path: Path,
        key: bytes,
        rotate_bytes: int = 100 << 20,
        queue_size: int = 10_000,
        *,
        clock: Callable[[], float] = time.time,
        logger: logging.Logger | None = None,
    ) -> None:
        if rotate_bytes < 1 or queue_size < 1:
            raise ValueError(f"rotate_bytes ({rotate_bytes}) and queue_size ({queue_size}) >= 1")
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"an audit key needs at least {MIN_KEY_BYTES} bytes, not {len(key)}")
        self._path = path
        self._key = key
        self._rotate_bytes = rotate_bytes
        self._queue_size = queue_size
        self._clock = clock
        self._logger = logger or logging.getLogger(__name__)

        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._outstanding = 0
        self._closed = False
        self._give_up = threading.Event()
        self._dropped = 0
        self._abandoned = 0
        self._written = 0
        self._in_hand = 0

        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = take_lock(path)
        try:
            self._fd = os.open(path, _OPEN_FLAGS, 0o640)
            try:
                self._seq, self._prev, self._size = resume(self._fd, path, key, self._logger)
            except BaseException:
                os.close(self._fd)
                raise
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._head = (self._seq, self._prev)
        rotated = rotated_files(path)
        self._next_index = rotated[-1][0] + 1 if rotated else 1
        self._thread = threading.Thread(
            target=self._run, name=f"audit-writer {path.name}", daemon=True
        )
        self._thread.start()

    # -- the request path -------------------------------------------------------------

    def reserve(self) -> AuditTicket | None:
        """A slot for one record, or ``None`` when all are taken (or the log is closed)."""
        with self._lock:
            if self._closed or self._outstanding >= self._queue_size:
                return None
            self._outstanding += 1
        return AuditTicket(self, self._clock())

    def _submit(self, fields: bytes) -> None:
        with self._lock:
            if self._closed:
                self._dropped += 1
                self._logger.error("audit: a record written after close was dropped")
                return
            # Under the lock, so that every accepted record is queued before close's stop.
            self._queue.put(fields)

    def _release(self, slots: int) -> None:
        with self._lock:
            self._outstanding -= slots

    def _abandon(self, reserved_at: float) -> None:
        # Called from __del__: no locks (SimpleQueue.put is reentrant-safe).
        fields = encode_fields({"audit": "ticket_abandoned", "reserved_at": reserved_at})
        self._queue.put(_Abandoned(fields))

    # -- the caller's controls ----------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def dropped(self) -> int:
        """Records that never reached the file (written after close, or lost at a dead disk)."""
        return self._dropped

    @property
    def abandoned(self) -> int:
        """Tickets collected while open; each left a ``ticket_abandoned`` record."""
        return self._abandoned

    @property
    def written(self) -> int:
        """Records this instance appended."""
        return self._written

    @property
    def head(self) -> tuple[int, str]:
        """``(seq, hash)`` of the last record in the file: export it to anchor the tail."""
        return self._head

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every record queued before this call is in the file."""
        event = threading.Event()
        with self._lock:
            if self._closed:
                return not self._thread.is_alive()
            self._queue.put(_Flush(event))
        return event.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, fsync, release the lock; later writes count as dropped."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(_Stop())
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._logger.error("audit: %s: gave up writing after %.1fs", self._path, timeout)
            self._give_up.set()
            self._thread.join(1.0)

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the writer thread --------------------------------------------------------------

    def _run(self) -> None:
        try:
            stop = False
            while not stop:
                batch = [self._queue.get()]
                stop = self._write_batch(self._drain(batch))
            # Tickets collected after close may still have queued their markers.
            self._write_batch(self._drain([]))
        except _GiveUp:
            lost = self._in_hand
            while batch := self._drain([]):
                lost += sum(isinstance(item, bytes | _Abandoned) for item in batch)
            with self._lock:
                self._dropped += lost
        except Exception:
            # Slots stay taken, so requests are refused rather than served unaudited.
            self._logger.exception("audit: %s: the writer failed", self._path)
        finally:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
            os.close(self._fd)
            os.close(self._lock_fd)

    def _drain(self, batch: list[_Item]) -> list[_Item]:
        while len(batch) < MAX_BATCH:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _write_batch(self, batch: list[_Item]) -> bool:
        """Append the batch's records (rotating as needed); True when it held the stop."""
        chunk: list[bytes] = []
        chunk_bytes = 0
        flushes: list[threading.Event] = []
        stop = False
        abandoned = 0
        self._in_hand = sum(isinstance(item, bytes | _Abandoned) for item in batch)
        for item in batch:
            if isinstance(item, _Flush):
                flushes.append(item.event)
                continue
            if isinstance(item, _Stop):
                stop = True
                continue
            if isinstance(item, _Abandoned):
                abandoned += 1
                fields = item.fields
            else:
                fields = item
            line, digest = make_line(fields, self._seq + 1, self._prev, self._key)
            end = self._size + chunk_bytes
            if end > 0 and end + len(line) > self._rotate_bytes:
                self._append(chunk)
                chunk, chunk_bytes = [], 0
                self._rotate()
            chunk.append(line)
            chunk_bytes += len(line)
            self._seq += 1
            self._prev = digest
        self._append(chunk)
        if abandoned:
            self._logger.warning(
                "audit: %d ticket(s) were neither written nor cancelled", abandoned
            )
        records = sum(isinstance(item, bytes | _Abandoned) for item in batch)
        with self._lock:
            self._outstanding -= records
            self._abandoned += abandoned
        for event in flushes:
            event.set()
        return stop

    def _append(self, lines: list[bytes]) -> None:
        if not lines:
            return
        data = b"".join(lines)
        self._retrying("writing", lambda: self._write_all(data))
        self._size += len(data)
        self._written += len(lines)
        self._in_hand -= len(lines)
        # Called before the next line is counted, so seq/prev are the chunk's last line.
        self._head = (self._seq, self._prev)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:
            # Never leave a torn line behind a retry: cut back to the last whole one.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise

    def _rotate(self) -> None:
        """audit.jsonl → audit.jsonl.<next index>; a new audit.jsonl continues the chain."""
        target = rotated_path(self._path, self._next_index)
        self._retrying("syncing before rotation", lambda: os.fsync(self._fd))
        self._retrying(f"renaming to {target.name}", lambda: os.rename(self._path, target))
        fd = self._retrying(
            "opening after rotation", lambda: os.open(self._path, _OPEN_FLAGS, 0o640)
        )
        os.close(self._fd)
        self._fd, self._size = fd, 0
        self._next_index += 1
        _fsync_dir(self._path.parent)

    def _retrying(self, what: str, action: Callable[[], _T]) -> _T:
        """``action()``, retried with backoff on OSError; slots stay held meanwhile."""
        delay = RETRY_FIRST_S
        while True:
            try:
                return action()
            except OSError as exc:
                self._logger.error(
                    "audit: %s: %s failed (%s); retrying in %.2fs while requests wait for "
                    "audit slots",
                    self._path,
                    what,
                    exc,
                    delay,
                )
            if self._give_up.wait(delay):
                raise _GiveUp
            delay = min(delay * 2, RETRY_MAX_S)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot sync a directory; the rename itself is atomic
    finally:
        os.close(fd)
