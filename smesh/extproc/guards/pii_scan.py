"""What every PII check shares: a finding, and the text being validated with the findings
so far."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Finding", "Scan", "word_char"]


@dataclass(frozen=True, slots=True)
class Finding:
    entity: str  # "EMAIL", "PHONE", ..., or a custom name
    start: int  # character offsets into the scanned str
    end: int


def word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


class Scan:
    """One text being validated and its findings (one instance per ``analyse`` call); the
    checks of each entity family are mixins over it."""

    __slots__ = ("found", "text")

    def __init__(self, text: str, found: list[Finding]) -> None:
        self.text = text
        self.found = found

    def before(self, i: int) -> str:
        return self.text[i - 1] if i > 0 else " "

    def after(self, i: int) -> str:
        return self.text[i] if i < len(self.text) else " "

    def emit(self, entity: str, start: int, end: int) -> None:
        self.found.append(Finding(entity, start, end))
