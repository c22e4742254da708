"""`smesh audit verify` as a subprocess, and the writer's lock across processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from smesh.extproc.audit import AuditLog, load_or_create_key

pytestmark = pytest.mark.integration

SMESH = [sys.executable, "-m", "smesh.cli"]


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "audit.key"
    load_or_create_key(path)
    return path


@pytest.fixture
def log(tmp_path: Path, key_file: Path) -> Path:
    """A closed log of five records."""
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, load_or_create_key(key_file)) as writer:
        for i in range(5):
            ticket = writer.reserve()
            assert ticket is not None
            ticket.write({"request_id": f"req-{i}", "tenant": "acme", "decision": "allow"})
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SMESH, "audit", "verify", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_an_intact_log_exits_0_with_the_ok_line(log: Path, key_file: Path) -> None:
    """A good log: exit 0 and `FILE: ok, 5 records` with the MACs checked."""
    done = run(str(log), "--key-file", str(key_file))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{log}: ok, 5 records in 1 file(s) (hashes, links and MACs checked)\n"


def test_a_one_byte_edit_exits_1_naming_the_line(log: Path, key_file: Path) -> None:
    """One changed byte in record 3: exit 1 and `FILE:3:` on stdout."""
    lines = log.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b"req-2", b"req-7")
    log.write_bytes(b"".join(lines))
    done = run(str(log), "--key-file", str(key_file))
    assert done.returncode == 1
    assert done.stdout == f"{log}:3: hash does not match the record (the record was edited)\n"


def test_without_a_key_it_says_only_links_were_checked(log: Path) -> None:
    """No --key-file: still ok, and the line says a whole rewrite would pass."""
    done = run(str(log))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{log}: ok, 5 records in 1 file(s) (hashes and links only")


def test_an_unreadable_key_file_exits_2(log: Path, tmp_path: Path) -> None:
    """A missing key file is a usage error (2), not a verdict on the log."""
    done = run(str(log), "--key-file", str(tmp_path / "missing.key"))
    assert done.returncode == 2
    assert f"{tmp_path / 'missing.key'}: cannot read the audit key" in done.stderr


def test_a_second_process_cannot_write_a_locked_log(log: Path, key_file: Path) -> None:
    """While this process writes the log, another process's AuditLog is refused."""
    opener = (
        "import sys; from pathlib import Path; from smesh.extproc.audit import AuditLog; "
        "AuditLog(Path(sys.argv[1]), b'k' * 32)"
    )
    with AuditLog(log, load_or_create_key(key_file)):
        done = subprocess.run(
            [sys.executable, "-c", opener, str(log)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert f"AuditLockedError: {log}: another writer (pid {os.getpid()})" in done.stderr
