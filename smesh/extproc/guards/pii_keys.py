"""PEM private-key blocks: a BEGIN line, base64 and header lines, an END line, also inside
JSON strings (escaped newlines) and cut off at either end."""

from __future__ import annotations

import re

from smesh.extproc.guards.pii_scan import Scan

__all__ = ["KeyChecks", "key_body_end"]

_LINE_BREAK = re.compile(r"\r?\n|(?:\\r)?\\n")  # a newline, or one escaped inside a JSON string
_KEY_LINE = re.compile(r"[ \t]*(?:[A-Za-z0-9+/=]{1,128}|[A-Za-z][A-Za-z-]*:[^\n]{0,200})?[ \t]*\r?")


class KeyChecks(Scan):
    """Pairs the BEGIN and END markers of one text into SECRET findings."""

    __slots__ = ()

    def private_keys(self, begins: list[int], ends: list[tuple[int, int]]) -> int | None:
        """Pair each BEGIN with the END that closes its base64 lines; a block without one
        runs over its base64 lines; an END without a BEGIN takes the lines before it."""
        text = self.text
        open_from: int | None = None
        e = 0
        for k, b in enumerate(begins):
            while e < len(ends) and ends[e][0] < b:
                self.orphan_end(ends[e])
                e += 1
            body = text.index("-----", b + 5) + 5
            stop = key_body_end(text, body)
            next_begin = begins[k + 1] if k + 1 < len(begins) else len(text)
            if e < len(ends) and ends[e][0] < next_begin and stop is not None:
                gap = text[stop : ends[e][0]]
                if not gap.replace("\\n", "").replace("\\r", "").strip():
                    self.emit("SECRET", b, ends[e][1])
                    e += 1
                    continue
            if stop is None:  # the body reaches the end of the text: more may follow
                self.emit("SECRET", b, len(text))
                open_from = b if open_from is None else open_from
            else:
                self.emit("SECRET", b, max(body, len(text[:stop].rstrip())))
        for end in ends[e:]:
            self.orphan_end(end)
        return open_from

    def orphan_end(self, end: tuple[int, int]) -> None:
        """An END marker with no BEGIN (text cut mid-key): the base64 lines before it too."""
        text = self.text
        pos = _line_start(text, end[0])
        if _KEY_LINE.fullmatch(text, pos, end[0]) is None:
            pos = end[0]
        else:
            for _ in range(4096):  # a key has at most a few hundred lines
                if pos == 0:
                    break
                brk = _line_break_before(text, pos)
                line = _line_start(text, brk)
                if _KEY_LINE.fullmatch(text, line, brk) is None:
                    break
                pos = line
        while pos < end[0] and text[pos].isspace():
            pos += 1
        self.emit("SECRET", pos, end[1])


def key_body_end(text: str, pos: int) -> int | None:
    """Where the base64 and header lines of a private key that start at pos end; None when
    they run to the end of the text (more of the key may follow). Lines may also be broken
    by an escaped "\\n", as in a key pasted inside a JSON string."""
    while True:
        brk = _LINE_BREAK.search(text, pos)
        if brk is None:
            return None if _KEY_LINE.fullmatch(text, pos) is not None else pos
        if _KEY_LINE.fullmatch(text, pos, brk.start()) is None:
            return pos
        pos = brk.end()


def _line_start(text: str, pos: int) -> int:
    """Start of the line holding pos, after a newline or an escaped one (lines of a key are
    short, so only the last 512 characters are searched)."""
    low = max(0, pos - 512)
    real = text.rfind("\n", low, pos)
    escaped = text.rfind("\\n", low, pos)
    if real < 0 and escaped < 0:
        return low
    return max(real + 1, escaped + 2 if escaped >= 0 else 0)


def _line_break_before(text: str, line_start: int) -> int:
    """Where the break that ends the line before line_start begins."""
    if text[line_start - 2 : line_start] == "\\n":
        return line_start - 4 if text[line_start - 4 : line_start - 2] == "\\r" else line_start - 2
    return line_start - 2 if text[line_start - 2 : line_start - 1] == "\r" else line_start - 1
