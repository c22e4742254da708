"""What a request does with the PII found in it: redact, hash, block, log, or nothing.

A ``Redactor`` lives for one request. Placeholders are numbered per entity type and the
same value keeps the same number, so the model can still tell "two different people" from
"the same person twice" without seeing either. ``with_action`` gives the answer side the
same numbering under another action, and ``restore`` maps the prompt's placeholders back
in the answer, for the same caller only.

Which placeholders ``restore`` maps back: those issued by the redactor made with
``Redactor(...)`` (the prompt side). Those a ``with_action`` copy issues (PII the model
produced itself) stay redacted, and so do placeholders the model invents or numbers that
were never issued.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from smesh.config.schema import PiiAction
from smesh.extproc.guards.pii import Finding, PiiDetector

__all__ = ["PLACEHOLDER", "Redactor"]

# What a numbered placeholder looks like: <EMAIL_1>, <EMPLOYEE_ID_12>.
PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]{0,31})_([1-9][0-9]{0,5})>")
_HASH_CHARS = 10  # 40 bits of HMAC-SHA256: stable pseudonyms, collisions negligible per tenant


@dataclass(slots=True)
class _Mapping:
    """Numbering shared by one request's redactors."""

    numbers: dict[tuple[str, str], str] = field(default_factory=dict)  # (entity, value) -> token
    issued: Counter[str] = field(default_factory=Counter)  # entity -> last number issued
    restorable: dict[str, str] = field(default_factory=dict)  # token -> original value


class Redactor:
    """Per-request state: placeholders numbered per type; the same value gets the same number
    within a request."""

    __slots__ = ("_action", "_blocked", "_detector", "_key", "_mapping", "_prompt_side", "counts")

    def __init__(
        self, detector: PiiDetector, action: PiiAction, hash_key: bytes | None = None
    ) -> None:
        if action == "hash" and not hash_key:
            raise ValueError("PII action hash needs a key (an unkeyed hash can be reversed)")
        self._detector = detector
        self._action: PiiAction = action
        self._key = hash_key
        self._mapping = _Mapping()
        self._prompt_side = True
        self._blocked = False
        self.counts: Counter[str] = Counter()

    @property
    def detector(self) -> PiiDetector:
        return self._detector

    @property
    def action(self) -> PiiAction:
        return self._action

    @property
    def blocked(self) -> bool:
        """The action is block and something was found."""
        return self._blocked

    def with_action(self, action: PiiAction) -> Redactor:
        """Same mapping and numbering, another action, its own counts (the answer side)."""
        other = Redactor(self._detector, action, self._key)
        other._mapping = self._mapping
        other._prompt_side = False
        return other

    def apply(self, text: str) -> str:
        """The text as the action leaves it; off scans nothing."""
        if self._action == "off" or not text:
            return text
        return self.rewrite(text, self._detector.find(text))

    def rewrite(self, text: str, findings: Sequence[Finding]) -> str:
        """Apply the action to findings already made (the stream scanner finds them in context)."""
        if self._action == "off" or not findings:
            return text
        for f in findings:
            self.counts[f.entity] += 1
        if self._action == "block":
            self._blocked = True
            return text
        if self._action == "log":
            return text
        token = self._numbered if self._action == "redact" else self._hashed
        pieces: list[str] = []
        pos = 0
        for f in findings:
            pieces.append(text[pos : f.start])
            pieces.append(token(f.entity, text[f.start : f.end]))
            pos = f.end
        pieces.append(text[pos:])
        return "".join(pieces)

    def restore(self, text: str) -> str:
        """Map the prompt side's placeholders back; anything else stays as it is."""
        values = self._mapping.restorable
        if not values or "<" not in text:
            return text
        return PLACEHOLDER.sub(lambda m: values.get(m.group(), m.group()), text)

    def _numbered(self, entity: str, value: str) -> str:
        mapping = self._mapping
        token = mapping.numbers.get((entity, value))
        if token is None:
            mapping.issued[entity] += 1
            token = f"<{entity}_{mapping.issued[entity]}>"
            mapping.numbers[entity, value] = token
            if self._prompt_side:
                mapping.restorable[token] = value
        return token

    def _hashed(self, entity: str, value: str) -> str:
        assert self._key is not None  # checked in __init__
        message = f"{entity}\0{value}".encode("utf-8", "surrogatepass")
        digest = hmac.new(self._key, message, hashlib.sha256).hexdigest()
        return f"<{entity}:{digest[:_HASH_CHARS]}>"
