"""The audit log: the chain format, every kind of tampering, rotation, slots, crashes, locks."""

from __future__ import annotations

import gc
import hashlib
import hmac
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from smesh.extproc.audit import (
    GENESIS,
    TRUNCATED,
    AuditError,
    AuditKeyError,
    AuditLockedError,
    AuditLog,
    VerifyResult,
    load_or_create_key,
    read_key,
    rotated_files,
    rotated_path,
    verify,
)
from smesh.extproc.audit.chain import encode_fields, make_line
from smesh.extproc.audit.files import TAIL_CHUNK, last_line

KEY = bytes(range(32))
ATTACKER_KEY = b"not the key, but an attacker's guess"
OUT_OF_PLACE = "(a record was removed, inserted or reordered)"
BAD_MAC = (
    "MAC does not match (the record was rewritten without the key, or this is not the log's key)"
)


def record(i: int) -> dict[str, Any]:
    """A request record as extproc writes it (no content, only counts)."""
    return {
        "time": 1_700_000_000.0 + i,
        "request_id": f"req-{i:04d}",
        "tenant": "acme",
        "model": "gpt-sim",
        "cluster": "eu-1",
        "decision": "allow",
        "guards": ["pii"],
        "entities": {"EMAIL": 1, "IBAN": 0},
        "tokens": {"prompt": 10 + i, "completion": 5},
        "cost": 0.00125,
        "latency_ms": 12.5,
    }


def write_records(path: Path, count: int, *, start: int = 0, rotate_bytes: int = 100 << 20) -> None:
    """Append records start..start+count-1 through a fresh writer, and close it."""
    with AuditLog(path, KEY, rotate_bytes=rotate_bytes) as log:
        for i in range(start, start + count):
            ticket = log.reserve()
            assert ticket is not None
            ticket.write(record(i))
    assert log.dropped == 0


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def field(line: bytes, name: str) -> Any:
    return orjson.loads(line)[name]


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


@pytest.fixture
def five(log_path: Path) -> Path:
    """A log of five records."""
    write_records(log_path, 5)
    return log_path


# -- the format -------------------------------------------------------------------------


def test_an_intact_log_verifies_with_and_without_the_key(five: Path) -> None:
    """Five records written and closed: verify is ok either way, and counts them."""
    assert verify(five, KEY) == VerifyResult(ok=True, records=5, files=1, error=None)
    assert verify(five, None) == VerifyResult(ok=True, records=5, files=1, error=None)


def test_lines_are_the_documented_chain(five: Path) -> None:
    """seq/prev first, the caller's fields sorted, then mac over the head and hash over mac."""
    lines = lines_of(five)
    first = orjson.loads(lines[0])
    assert list(first) == ["seq", "prev", *sorted(record(0)), "mac", "hash"]
    assert (first["seq"], first["prev"]) == (1, GENESIS)
    assert {k: first[k] for k in record(0)} == record(0)
    for number, line in enumerate(lines, 1):
        raw = line.rstrip(b"\n")
        authenticated = raw[: raw.index(b',"mac":')] + b"}"
        linked = raw[: raw.index(b',"hash":')] + b"}"
        assert field(line, "seq") == number
        assert field(line, "mac") == hmac.new(KEY, authenticated, hashlib.sha256).hexdigest()
        assert field(line, "hash") == hashlib.sha256(linked).hexdigest()
        if number > 1:
            assert field(line, "prev") == field(lines[number - 2], "hash")


# -- tampering --------------------------------------------------------------------------


@pytest.mark.parametrize("key", [KEY, None], ids=["with-key", "without-key"])
def test_every_one_byte_edit_of_a_record_names_its_line(five: Path, key: bytes | None) -> None:
    """Flipping any single byte of line 3 (newline included) fails verify at line 3."""
    lines = lines_of(five)
    target = lines[2]
    for offset in range(len(target)):
        edited = bytearray(target)
        edited[offset] ^= 0x01
        five.write_bytes(b"".join([*lines[:2], bytes(edited), *lines[3:]]))
        result = verify(five, key)
        assert not result.ok, f"byte {offset} ({chr(target[offset])!r}) edited unnoticed"
        assert result.error is not None
        assert result.error.startswith(f"{five}:3: "), (offset, result.error)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b'"seq":3,', b'"seq": 3,'),
        (b'"tenant":"acme"', b'"tenant":"acme","tenant":"acme"'),
        (b'"tenant":"acme"', b'"tenant":"\\u0061cme"'),
        (b'"cost":0.00125', b'"cost":1.25e-3'),
    ],
    ids=["whitespace", "duplicate-key", "escaped-letter", "float-spelling"],
)
def test_an_equivalent_but_non_canonical_line_is_an_edit(
    five: Path, old: bytes, new: bytes
) -> None:
    """Bytes that parse to the same values but are not the canonical line still fail."""
    lines = lines_of(five)
    assert old in lines[2]
    lines[2] = lines[2].replace(old, new)
    assert orjson.loads(lines[2]) == orjson.loads(lines_of(five)[2])
    five.write_bytes(b"".join(lines))
    assert verify(five, None).error == f"{five}:3: not in canonical form (the line was edited)"


def _removed(lines: list[bytes]) -> list[bytes]:
    return lines[:2] + lines[3:]


def _swapped(lines: list[bytes]) -> list[bytes]:
    return [*lines[:2], lines[3], lines[2], *lines[4:]]


def _duplicated(lines: list[bytes]) -> list[bytes]:
    return [*lines[:4], lines[1], *lines[4:]]


def _forged(lines: list[bytes]) -> list[bytes]:
    """A record made like the writer would, linked after line 2, with a guessed key."""
    line, _ = make_line(encode_fields(record(99)), 3, field(lines[1], "hash"), ATTACKER_KEY)
    return [*lines[:2], line, *lines[2:]]


@pytest.mark.parametrize(
    ("tamper", "key", "error"),
    [
        (_removed, KEY, f"3: seq 4 where 3 belongs {OUT_OF_PLACE}"),
        (_removed, None, f"3: seq 4 where 3 belongs {OUT_OF_PLACE}"),
        (_swapped, None, f"3: seq 4 where 3 belongs {OUT_OF_PLACE}"),
        (_duplicated, None, f"5: seq 2 where 5 belongs {OUT_OF_PLACE}"),
        (_forged, KEY, f"3: {BAD_MAC}"),
        # Without the key a well-made forgery is only caught where it pushes the next one.
        (_forged, None, f"4: seq 3 where 4 belongs {OUT_OF_PLACE}"),
    ],
    ids=[
        "removed",
        "removed-no-key",
        "swapped",
        "duplicated",
        "forged-inserted",
        "forged-inserted-no-key",
    ],
)
def test_moved_records_name_the_first_bad_line(
    five: Path,
    tamper: Callable[[list[bytes]], list[bytes]],
    key: bytes | None,
    error: str,
) -> None:
    """A removed, swapped, repeated or inserted record fails verify at the first bad line."""
    five.write_bytes(b"".join(tamper(lines_of(five))))
    assert verify(five, key).error == f"{five}:{error}"


def test_an_old_prev_is_caught_even_with_the_right_seq(five: Path) -> None:
    """Line 3 re-made with the right seq but linked to line 1 fails on its prev."""
    lines = lines_of(five)
    line, _ = make_line(encode_fields(record(2)), 3, field(lines[0], "hash"), KEY)
    five.write_bytes(b"".join([*lines[:2], line, *lines[3:]]))
    assert verify(five, KEY).error == (
        f"{five}:3: prev is not the hash of the record before it {OUT_OF_PLACE}"
    )


def test_a_truncated_last_line_is_reported_as_such(five: Path) -> None:
    """A last line cut short (a killed writer) fails with the distinct truncation reason."""
    data = five.read_bytes()
    five.write_bytes(data[: len(data) - 40])
    result = verify(five, KEY)
    assert result == VerifyResult(False, 4, 1, f"{five}:5: {TRUNCATED}")


def _rechain(lines: list[bytes], start: int, edit: Callable[[dict[str, Any]], None]) -> list[bytes]:
    """What an attacker without the key can do: edit line `start` and re-hash all after it."""
    out = lines[:start]
    prev = field(lines[start - 1], "hash") if start else GENESIS
    for number, line in enumerate(lines[start:], start + 1):
        fields = orjson.loads(line)
        for name in ("seq", "prev", "mac", "hash"):
            del fields[name]
        if number == start + 1:
            edit(fields)
        new, prev = make_line(encode_fields(fields), number, prev, ATTACKER_KEY)
        out.append(new)
    return out


def test_a_wholesale_rewrite_passes_without_the_key_and_fails_with_it(five: Path) -> None:
    """Re-hashing everything after an edit fools the key-less check but not the MACs."""
    five.write_bytes(b"".join(_rechain(lines_of(five), 1, lambda f: f.update(tenant="other"))))
    assert verify(five, None) == VerifyResult(True, 5, 1, None)
    assert verify(five, KEY).error == f"{five}:2: {BAD_MAC}"


def test_a_missing_log_is_an_error(log_path: Path) -> None:
    """verify on a path with no log and no rotated files fails and says so."""
    assert verify(log_path, KEY) == VerifyResult(False, 0, 0, f"{log_path}: no such audit log")


# -- rotation ---------------------------------------------------------------------------


@pytest.fixture
def rotated(log_path: Path) -> Path:
    """40 records with rotation at 4096 bytes: audit.jsonl.000001 … and audit.jsonl."""
    write_records(log_path, 40, rotate_bytes=4096)
    assert len(rotated_files(log_path)) >= 3
    return log_path


def test_rotation_happens_at_the_size_and_the_chain_continues(rotated: Path) -> None:
    """Files stop short of rotate_bytes, are numbered oldest first, and link end to start."""
    files = [p for _, p in rotated_files(rotated)] + [rotated]
    count = len(files) - 1
    assert [p.name for p in files] == [
        *(f"audit.jsonl.{i:06d}" for i in range(1, count + 1)),
        "audit.jsonl",
    ]
    seq = 0
    for older, newer in itertools.pairwise(files):
        first_of_newer = lines_of(newer)[0]
        assert older.stat().st_size <= 4096 < older.stat().st_size + len(first_of_newer)
        assert field(first_of_newer, "prev") == field(lines_of(older)[-1], "hash")
    for file in files:
        for line in lines_of(file):
            seq += 1
            assert field(line, "seq") == seq
    assert verify(rotated, KEY) == VerifyResult(True, 40, len(files), None)


def test_a_deleted_rotated_file_is_named(rotated: Path) -> None:
    """Removing audit.jsonl.000002 fails at the first line of the file after the gap."""
    rotated_path(rotated, 2).unlink()
    assert (
        verify(rotated, KEY).error == f"{rotated_path(rotated, 3)}:1: audit.jsonl.000002 is missing"
    )


def test_a_deleted_oldest_rotated_file_is_named(rotated: Path) -> None:
    """Removing audit.jsonl.000001 fails at the first line of audit.jsonl.000002."""
    rotated_path(rotated, 1).unlink()
    assert (
        verify(rotated, KEY).error == f"{rotated_path(rotated, 2)}:1: audit.jsonl.000001 is missing"
    )


def test_a_deleted_and_renumbered_rotated_file_breaks_the_chain(rotated: Path) -> None:
    """Deleting .000002 and renaming .000003 into its place fails at the renamed file."""
    first_seq = field(lines_of(rotated_path(rotated, 3))[0], "seq")
    expected = field(lines_of(rotated_path(rotated, 2))[0], "seq")
    rotated_path(rotated, 3).replace(rotated_path(rotated, 2))
    assert verify(rotated, KEY).error == (
        f"{rotated_path(rotated, 2)}:1: seq {first_seq} where {expected} belongs {OUT_OF_PLACE}"
    )


def test_swapped_rotated_files_break_the_chain(rotated: Path) -> None:
    """Swapping the contents of .000001 and .000002 fails at the first line of .000001."""
    one, two = rotated_path(rotated, 1), rotated_path(rotated, 2)
    second_seq = field(lines_of(two)[0], "seq")
    one.rename(rotated.with_name("tmp"))
    two.rename(one)
    rotated.with_name("tmp").rename(two)
    assert verify(rotated, KEY).error == f"{one}:1: seq {second_seq} where 1 belongs {OUT_OF_PLACE}"


# -- slots and tickets ------------------------------------------------------------------


def test_reserve_refuses_when_every_slot_is_taken_until_one_frees(log_path: Path) -> None:
    """queue_size outstanding tickets: reserve() is None; a write or a cancel frees a slot."""
    with AuditLog(log_path, KEY, queue_size=3) as log:
        tickets = [log.reserve() for _ in range(3)]
        assert all(t is not None for t in tickets)
        assert log.reserve() is None
        first, second, third = tickets
        assert first is not None and second is not None and third is not None
        first.write(record(0))
        assert log.flush()
        fourth = log.reserve()
        assert fourth is not None
        assert log.reserve() is None
        second.cancel()
        fifth = log.reserve()
        assert fifth is not None
        for ticket, i in ((third, 1), (fourth, 2), (fifth, 3)):
            ticket.write(record(i))
    assert log.dropped == 0
    assert verify(log_path, KEY) == VerifyResult(True, 4, 1, None)


def test_a_ticket_writes_once(log_path: Path) -> None:
    """A second write is ignored, and so is a write after cancel."""
    with AuditLog(log_path, KEY) as log:
        ticket = log.reserve()
        cancelled = log.reserve()
        assert ticket is not None and cancelled is not None
        ticket.write(record(0))
        ticket.write(record(1))
        cancelled.cancel()
        cancelled.write(record(2))
    assert [field(line, "request_id") for line in lines_of(log_path)] == ["req-0000"]


def test_an_abandoned_ticket_frees_its_slot_and_leaves_a_record(log_path: Path) -> None:
    """A ticket collected while open writes a ticket_abandoned record and frees its slot."""
    with AuditLog(log_path, KEY, queue_size=1, clock=lambda: 1234.5) as log:
        ticket = log.reserve()
        assert ticket is not None
        assert log.reserve() is None
        del ticket
        gc.collect()
        assert log.flush()
        again = log.reserve()
        assert again is not None
        again.cancel()
    assert log.abandoned == 1
    (line,) = lines_of(log_path)
    assert (field(line, "audit"), field(line, "reserved_at")) == ("ticket_abandoned", 1234.5)


def test_a_bad_record_raises_and_keeps_the_ticket_open(log_path: Path) -> None:
    """A chain field name (ValueError) or a non-JSON value (TypeError) leaves the slot held."""
    with AuditLog(log_path, KEY) as log:
        ticket = log.reserve()
        assert ticket is not None
        with pytest.raises(ValueError, match=r"reserved field\(s\) \['hash', 'seq'\]"):
            ticket.write({"seq": 1, "hash": "x", "tenant": "acme"})
        with pytest.raises(TypeError):
            ticket.write({"tenant": object()})
        ticket.write(record(0))
    assert len(lines_of(log_path)) == 1
    assert log.abandoned == 0


def test_records_reach_the_file_without_close_or_flush(log_path: Path) -> None:
    """A written record shows up in the file promptly while the log stays open."""
    with AuditLog(log_path, KEY) as log:
        ticket = log.reserve()
        assert ticket is not None
        ticket.write(record(7))
        deadline = time.monotonic() + 5
        while b"req-0007" not in log_path.read_bytes():
            assert time.monotonic() < deadline, "the record never reached the file"
            time.sleep(0.005)


def test_concurrent_requests_each_leave_exactly_one_record(log_path: Path) -> None:
    """8 threads x 250 reserve/write pairs: 2000 records, one per request id, a valid chain."""

    def requests(log: AuditLog, worker: int) -> None:
        for i in range(250):
            ticket = log.reserve()
            assert ticket is not None
            ticket.write(record(worker * 1000 + i))

    with AuditLog(log_path, KEY, rotate_bytes=64 << 10) as log:
        threads = [threading.Thread(target=requests, args=(log, w)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert (log.dropped, log.written) == (0, 2000)
    result = verify(log_path, KEY)
    assert (result.ok, result.records) == (True, 2000)
    files = [p for _, p in rotated_files(log_path)] + [log_path]
    ids = [field(line, "request_id") for f in files for line in lines_of(f)]
    assert len(set(ids)) == 2000


def test_after_close_nothing_is_reserved_and_late_writes_are_dropped(log_path: Path) -> None:
    """close() ends reservations; a ticket written after close counts in dropped."""
    log = AuditLog(log_path, KEY)
    late = log.reserve()
    assert late is not None
    log.close()
    assert log.reserve() is None
    late.write(record(0))
    assert log.dropped == 1
    assert log_path.read_bytes() == b""


# -- restarts and crashes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", (None, 0)),
        (b"torn", (None, 0)),
        (b"one\n", (b"one", 4)),
        (b"one\ntwo\n", (b"two", 8)),
        (b"one\ntwo\ntor", (b"two", 8)),
        (b"one\n" + b"x" * (TAIL_CHUNK + 10) + b"\n", (b"x" * (TAIL_CHUNK + 10), TAIL_CHUNK + 15)),
        (b"one\ntwo\n" + b"t" * (2 * TAIL_CHUNK), (b"two", 8)),
    ],
    ids=["empty", "only-torn", "one", "two", "torn-after-two", "longer-than-chunk", "long-torn"],
)
def test_last_line_finds_the_last_whole_line_from_the_end(
    tmp_path: Path, data: bytes, expected: tuple[bytes | None, int]
) -> None:
    """The tail reader returns the last newline-terminated line and the offset after it."""
    path = tmp_path / "tail"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert last_line(fd, len(data)) == expected
    finally:
        os.close(fd)


def test_a_restarted_writer_continues_the_chain(five: Path) -> None:
    """A second writer on the same file goes on from seq 6 after the last hash."""
    last_hash = field(lines_of(five)[-1], "hash")
    write_records(five, 2, start=5)
    lines = lines_of(five)
    assert (field(lines[5], "seq"), field(lines[5], "prev")) == (6, last_hash)
    assert verify(five, KEY) == VerifyResult(True, 7, 1, None)


def test_head_is_the_last_record(five: Path) -> None:
    """head names the seq and hash of the file's last record, also right after a resume."""
    with AuditLog(five, KEY) as log:
        assert log.head == (5, field(lines_of(five)[-1], "hash"))
        ticket = log.reserve()
        assert ticket is not None
        ticket.write(record(5))
        assert log.flush()
        assert log.head == (6, field(lines_of(five)[-1], "hash"))


def test_a_torn_last_line_is_cut_and_the_chain_continues(
    five: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A killed writer's partial line fails verify until the next writer cuts it."""
    whole = five.read_bytes()
    torn = make_line(encode_fields(record(5)), 6, field(lines_of(five)[-1], "hash"), KEY)[0]
    five.write_bytes(whole + torn[:50])
    assert verify(five, KEY).error == f"{five}:6: {TRUNCATED}"
    write_records(five, 1, start=6)
    assert "discarded 50 bytes of a torn last record" in caplog.text
    assert five.read_bytes().startswith(whole)
    assert field(lines_of(five)[-1], "request_id") == "req-0006"
    assert verify(five, KEY) == VerifyResult(True, 6, 1, None)


def test_a_record_missing_only_its_newline_is_kept(five: Path) -> None:
    """Killed between a whole record and its newline: the next writer completes the line."""
    whole = five.read_bytes()
    five.write_bytes(whole[:-1])
    assert verify(five, KEY).error == f"{five}:5: {TRUNCATED}"
    AuditLog(five, KEY).close()
    assert five.read_bytes() == whole


def test_resume_finds_a_last_record_longer_than_its_read_chunk(log_path: Path) -> None:
    """A last record of 150 kB (over the 64 KiB tail chunk) is found whole on restart."""
    big = {**record(0), "guards": ["g" * 100] * 1500}
    with AuditLog(log_path, KEY) as log:
        for _ in range(2):
            ticket = log.reserve()
            assert ticket is not None
            ticket.write(big)
    assert len(lines_of(log_path)[-1]) > 150_000
    write_records(log_path, 1, start=1)
    assert verify(log_path, KEY) == VerifyResult(True, 3, 1, None)


def test_a_restart_with_another_key_refuses_to_start(five: Path) -> None:
    """The last record must check out with the writer's key, or the writer does not start."""
    with pytest.raises(AuditError) as caught:
        AuditLog(five, ATTACKER_KEY)
    assert str(caught.value).startswith(f"{five}: the last record does not check out ({BAD_MAC})")
    write_records(five, 1, start=5)  # the refused writer left the lock free


def test_a_restart_after_rotation_without_a_live_file_continues(rotated: Path) -> None:
    """Killed between rename and the new file: the chain continues from the newest rotated."""
    files = len(rotated_files(rotated)) + 1
    rotated.rename(rotated_path(rotated, files))
    write_records(rotated, 2, start=40)
    assert field(lines_of(rotated)[0], "seq") == 41
    assert verify(rotated, KEY) == VerifyResult(True, 42, files + 1, None)


def test_a_second_writer_on_one_file_is_refused(log_path: Path) -> None:
    """The flock: a second AuditLog on the same path raises until the first closes."""
    log = AuditLog(log_path, KEY)
    with pytest.raises(AuditLockedError, match=rf"another writer \(pid {os.getpid()}\)"):
        AuditLog(log_path, KEY)
    log.close()
    AuditLog(log_path, KEY).close()


_FAILING_DISK = """
import json, logging, resource, signal, sys, time
from pathlib import Path
from smesh.extproc.audit import AuditLog

logging.basicConfig()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
log = AuditLog(Path(sys.argv[1]), bytes(range(32)), queue_size=20)
resource.setrlimit(resource.RLIMIT_FSIZE, (2000, hard))
accepted = 0
# A healthy disk takes 1000 records in well under a second; a full one takes 20 more.
deadline = time.monotonic() + 1.0
while accepted < 1000 and time.monotonic() < deadline:
    ticket = log.reserve()
    if ticket is None:
        time.sleep(0.01)
        continue
    ticket.write({"request_id": accepted, "pad": "x" * 100})
    accepted += 1
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
log.close(timeout=20)
print(json.dumps({"accepted": accepted, "dropped": log.dropped}))
"""


def test_a_failing_disk_holds_slots_and_loses_nothing(log_path: Path) -> None:
    """Writes past a file-size limit fail: reserve() runs dry; once writable, all get written."""
    done = subprocess.run(
        [sys.executable, "-c", _FAILING_DISK, str(log_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    # At most ~12 records fit in 2000 bytes; then 20 wait for the disk and reserve() refuses.
    assert 20 <= outcome["accepted"] < 40
    assert outcome["dropped"] == 0
    assert "writing failed ([Errno 27] File too large); retrying" in done.stderr
    assert verify(log_path, KEY) == VerifyResult(True, outcome["accepted"], 1, None)


# -- the key ----------------------------------------------------------------------------


def test_a_new_key_is_32_bytes_in_a_0600_file_and_is_read_back(tmp_path: Path) -> None:
    """load_or_create_key makes the file once (mode 0600) and returns the same key after."""
    path = tmp_path / "keys" / "audit.key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_key(path) == key == read_key(path)
    assert [p.name for p in path.parent.iterdir()] == ["audit.key"]


def test_short_and_missing_key_files_are_refused(tmp_path: Path) -> None:
    """A key file under 16 bytes, or none at all, is an AuditKeyError naming the file."""
    short = tmp_path / "short.key"
    short.write_bytes(b"0123456789")
    with pytest.raises(AuditKeyError, match=rf"{short}: an audit key needs at least 16 bytes"):
        read_key(short)
    with pytest.raises(AuditKeyError, match=rf"{tmp_path / 'none.key'}: cannot read the audit key"):
        read_key(tmp_path / "none.key")
