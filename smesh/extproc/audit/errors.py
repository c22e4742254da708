"""The audit log's exceptions (the tree is drawn in the package docstring)."""

from __future__ import annotations

__all__ = ["AuditError", "AuditKeyError", "AuditLockedError"]


class AuditError(Exception):
    """The audit log cannot be opened or continued; the message names the file."""


class AuditLockedError(AuditError):
    """Another process (or another :class:`AuditLog` here) is writing this file."""


class AuditKeyError(AuditError):
    """The key file cannot be read or is too short to be a key."""
