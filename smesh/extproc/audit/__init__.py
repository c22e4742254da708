"""The tamper-evident audit log: one keyed, hash-chained JSONL record per request.

Format
------
One line per record: the caller's fields (time, request id, tenant, model, cluster,
decision, guards fired, entity counts, tokens, cost, latency; never raw content) with
sorted keys, framed by the chain's own fields::

    {"seq":7,"prev":"<hash of record 6>",<caller's fields>,"mac":"<hex>","hash":"<hex>"}

``mac`` is HMAC-SHA256(key) over the line up to the end of the caller's fields, and
``hash`` SHA-256 over the line up to the end of ``mac`` (each closed with ``}``);
``prev`` is the previous record's ``hash`` (64 zeros for record 1); ``seq`` counts from 1
across all files (details in :mod:`~smesh.extproc.audit.chain`). A line must be exactly
the canonical serialisation of its parsed values, so no byte of it can change without
changing a checked value. A ticket that was neither written nor cancelled leaves
``{"audit":"ticket_abandoned","reserved_at":<unix time>}`` as its record.

Use: ``ticket = log.reserve()`` when a request starts (``None``: refuse it with 503),
``ticket.write(record)`` when it ends (or ``ticket.cancel()``), ``log.close()`` at exit.
Make the :class:`AuditLog` in the process that writes (after any fork).

Rotation
--------
Before a record would take ``audit.jsonl`` past ``rotate_bytes``, the file is fsynced and
renamed to ``audit.jsonl.000001`` (then ``.000002`` …: oldest first, six digits or more),
and a new ``audit.jsonl`` continues the chain (its first ``prev`` is the last ``hash`` of
the file before). ``verify audit.jsonl`` walks ``.000001 … .00000N`` then ``audit.jsonl``
as one chain; a gap in the numbering, or a removed, swapped or renumbered file, breaks it.
The writer also keeps ``audit.jsonl.lock`` (an exclusive ``flock``: one writer per file);
a key made by default lives in ``audit.jsonl.key`` (:func:`default_key_path`).

Threat model
------------
An attacker who can rewrite the log files but does not hold the key

* cannot edit, insert, remove or reorder a record, nor remove, swap or renumber a
  rotated file, without ``verify`` with the key naming the first line that changed:
  every record's MAC covers its ``seq`` and ``prev``, and ``prev`` commits to everything
  before it. Without the key ``verify`` still catches every edit that leaves later hashes
  alone (accidents, naive edits), but a rewrite that recomputes every hash from the edit
  onwards passes: only the MAC needs the secret.
* CAN cut records off the end (the newest records, the newest files, or the whole log):
  nothing after the cut is left to disagree. Anchor the tail outside the host, e.g. by
  exporting :attr:`AuditLog.head` (``seq`` and ``hash``) to metrics or a remote log.
* CAN swap whole logs written under one key (two workers' files), or put back an older
  copy (a cut, again). Give every log its own key or anchor its head to tell them apart.
* CAN read everything: the log is signed, not encrypted; records carry no content.

Anyone holding the key can forge a valid log, so keep the key out of reach of whoever
can write the log (``key_file`` on another volume or a secret mount, mode 0600); the
default key next to the log only protects against people who can write but not read.

Crashes
-------
A writer killed mid-``write`` leaves a torn last line. ``verify`` reports it as an error
(:data:`TRUNCATED`): a torn line cannot be told apart from a cut, and the operator should
see either. The next writer on that file continues after the last whole record: it cuts
the torn bytes (logging how many) — or, when only the newline is missing and the record
checks out, completes it. Cutting loses nothing an attacker could not already remove (a
cut at the end is undetectable anyway). The writer reads only the tail to resume.

Exceptions::

    AuditError             the log cannot be opened or continued (a bad last record)
    ├── AuditLockedError   another writer holds the file's lock
    └── AuditKeyError      the key file cannot be read or is too short
"""

from __future__ import annotations

from smesh.extproc.audit.chain import GENESIS, rotated_files, rotated_path
from smesh.extproc.audit.errors import AuditError, AuditKeyError, AuditLockedError
from smesh.extproc.audit.key import default_key_path, load_or_create_key, read_key
from smesh.extproc.audit.verifier import TRUNCATED, VerifyResult, verify
from smesh.extproc.audit.writer import AuditLog, AuditTicket

__all__ = [
    "GENESIS",
    "TRUNCATED",
    "AuditError",
    "AuditKeyError",
    "AuditLockedError",
    "AuditLog",
    "AuditTicket",
    "VerifyResult",
    "default_key_path",
    "load_or_create_key",
    "read_key",
    "rotated_files",
    "rotated_path",
    "verify",
]
