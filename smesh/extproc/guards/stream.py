"""Hold-back scanning of one streamed answer: text deltas in, text safe to send out.

Redacting each delta alone misses an entity split across deltas ("jo" + "hn@x.com"), and
buffering the whole answer makes time-to-first-token the whole generation time. So the
scanner releases text only once nothing can still be forming across the boundary:

- the last ``HOLD`` characters are always held (the longest start of a multi-word entity
  that is not yet a match: a PEM marker, a cue and a name, a spaced IBAN or phone);
- so is the last word (an email or key can be arbitrarily long without a space);
- so is every candidate match, validated or not, that ends inside that tail (it may still
  grow), and an unterminated private-key block from its BEGIN line;
- the cut never falls inside a candidate or a word, so a restore placeholder (<EMAIL_1>)
  is never split.

Findings are made on the held text plus ``CONTEXT`` released characters before it, so cues
("SSN", "call me at", "Dear") still count. The result equals redacting the whole answer at
once, for any chunking (tests/unit/test_guards_stream.py proves it with hypothesis).

Bounds: at most ``CAP`` characters are held. Past it (a private-key block or a key-like
token longer than that) the scanner fails safe: the candidate's text so far becomes one
placeholder and the rest of it, up to its end, is dropped, never released. A custom pattern
that matches more than ``HOLD`` characters across spaces is only caught within a chunk
window, and an ``ner:`` model sees the released window, not the whole answer.
"""

from __future__ import annotations

from smesh.extproc.guards.pii import Analysis, Finding, key_body_end
from smesh.extproc.guards.redact import Redactor

__all__ = ["StreamScanner"]

# The longest stretch that can still start or change a finding: a PEM BEGIN line (up to
# ~80 characters before it matches), a quoted password of up to 64 characters after its key,
# a cue and a name with particles.
HOLD = 96
CONTEXT = 64  # cues are looked for up to 40 characters before an entity
BATCH = 24  # scan again only after this many more characters: amortises the scan over chunks
CAP = 8192  # an RSA-4096 private key is ~3.2 KB of PEM
_SPACES = (" ", "\n", "\t", "\r")


class StreamScanner:
    """Streamed answer text of ONE choice: text deltas in, text safe to release out."""

    __slots__ = (
        "_buf",
        "_ctx",
        "_marks",
        "_next_scan",
        "_redactor",
        "_restore",
        "_swallow",
        "_word_at",
    )

    def __init__(self, redactor: Redactor, restore: bool = False) -> None:
        self._redactor = redactor
        self._restore = restore
        self._buf = ""  # held text
        self._ctx = ""  # the end of what was released: left context for cues
        self._marks: list[int] = []  # where in _ctx each release began
        self._word_at = 0  # where the last word of the held text starts
        self._next_scan = HOLD + 1  # the first text goes out as soon as it can
        self._swallow: str | None = None  # "word" or "key": the rest of a capped entity

    @property
    def held(self) -> int:
        """Characters currently held back."""
        return len(self._buf)

    def feed(self, text: str) -> str:
        """What may be sent to the client now (already redacted / restored)."""
        if not text or self._redactor.blocked:
            return ""
        if self._redactor.action == "off" and not self._restore:
            return text  # nothing to scan, nothing to map back
        at = len(self._buf)
        self._buf += text
        space = max(text.rfind(s) for s in _SPACES)
        if space >= 0:
            self._word_at = at + space + 1
        if self._swallow is not None:
            return self._swallow_rest(final=False)
        if len(self._buf) < self._next_scan:
            return ""
        return self._release(final=False)

    def flush(self) -> str:
        """End of stream: everything held back, redacted."""
        if self._redactor.blocked:
            self._buf = ""
            return ""
        if self._swallow is not None:
            return self._swallow_rest(final=True)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        redactor = self._redactor
        region = self._ctx + self._buf
        base = len(self._ctx)
        if redactor.action == "off":
            analysis = Analysis([], [], None)
        else:
            analysis = redactor.detector.analyse(region)
        if final:
            cut = len(region)
        else:
            cut = _safe_cut(region, base, base + self._word_at, analysis)
            if cut <= base and len(self._buf) > CAP:
                return self._cap(region, base, analysis)
        if cut <= base:
            self._next_scan = len(self._buf) + BATCH
            return ""
        findings = [  # none crosses base by construction; clipping is the safety net
            Finding(f.entity, max(f.start, base) - base, f.end - base)
            for f in analysis.findings
            if f.end > base and f.end <= cut
        ]
        return self._emit(region, base, cut, findings)

    def _emit(self, region: str, base: int, cut: int, findings: list[Finding]) -> str:
        released = region[base:cut]
        self._buf = region[cut:]
        self._word_at = max(0, self._word_at - (cut - base))
        self._next_scan = max(HOLD, len(self._buf)) + BATCH
        self._keep_context(region[base:cut])
        out = self._redactor.rewrite(released, findings)
        if self._redactor.blocked:
            self._buf = ""
            return ""
        return self._redactor.restore(out) if self._restore else out

    def _keep_context(self, released: str) -> None:
        """Keep at least CONTEXT released characters, starting where a release began: a
        release point has no candidate across it, so scanning from there parses the text
        as scanning from the start would (a cut mid-word could, say, turn the tail of a
        JWT and the digits after it into an IBAN candidate)."""
        self._marks.append(len(self._ctx))
        self._ctx += released
        keep = 0
        for i, mark in enumerate(self._marks):
            if len(self._ctx) - mark >= CONTEXT:
                keep = i
        drop = self._marks[keep]
        if drop:
            self._ctx = self._ctx[drop:]
            self._marks = [m - drop for m in self._marks[keep:]]

    def _cap(self, region: str, base: int, analysis: Analysis) -> str:
        """Fail safe: the held entity became too long; its text so far becomes one placeholder."""
        cut = len(region) - HOLD
        spans = [(f.start, f.end, f.entity) for f in analysis.findings]
        spans += [(s, e, "SECRET") for s, e in analysis.candidates]
        if analysis.open_from is not None:
            spans.append((analysis.open_from, len(region), "SECRET"))
        crossing = [(s, e, n) for s, e, n in spans if s < cut < e and e > base]
        findings = [
            Finding(f.entity, f.start - base, f.end - base)
            for f in analysis.findings
            if f.start >= base and f.end <= cut
        ]
        if crossing:
            start = max(base, min(s for s, _, _ in crossing))
            entity = next(n for s, _, n in sorted(crossing) if max(base, s) == start)
            findings = [f for f in findings if f.end <= start - base]
            findings.append(Finding(entity, start - base, cut - base))
            opened = analysis.open_from is not None and analysis.open_from < cut
            self._swallow = "key" if opened else "word"
        out = self._emit(region, base, cut, findings)
        if self._swallow is not None:
            out += self._swallow_rest(final=False)
        return out

    def _swallow_rest(self, final: bool) -> str:
        """Drop the rest of a capped entity: to the end of its word, or of its key block."""
        buf = self._buf
        stop = _key_end(buf) if self._swallow == "key" else _word_end(buf)
        if stop < 0:  # still inside: drop what arrived, keep enough for an END marker to form
            self._buf = "" if final or self._swallow == "word" else buf[-64:]
            self._word_at = 0
            if final:
                self._swallow = None
            return ""
        self._swallow = None
        self._buf = buf[stop:]
        self._word_at = max(0, self._word_at - stop)
        self._ctx = ""
        self._marks = []
        self._next_scan = HOLD + BATCH
        if final:
            return self._release(final=True)
        return self._release(final=False) if len(self._buf) >= self._next_scan else ""


def _word_end(text: str) -> int:
    spaces = [i for i in (text.find(s) for s in _SPACES) if i >= 0]
    return min(spaces) if spaces else -1


def _key_end(text: str) -> int:
    """Where a key block cut mid-line ends: after its END line, or before a line of prose."""
    end = text.find("-----END")
    if end >= 0:
        close = text.find("PRIVATE KEY-----", end)
        if close >= 0:
            return close + len("PRIVATE KEY-----")
    breaks = [i + len(b) for b in ("\n", "\\n") if (i := text.find(b)) >= 0]
    # The first line is the rest of a line already dropped; judge the lines after it.
    stop = key_body_end(text, min(breaks)) if breaks else None
    if stop is None or (end >= 0 and stop >= end):
        return -1
    return stop


def _safe_cut(region: str, base: int, word_at: int, analysis: Analysis) -> int:
    """The furthest point up to which nothing can change when more text arrives."""
    n = len(region)
    cut = min(n - HOLD, word_at)
    if analysis.open_from is not None:
        cut = min(cut, analysis.open_from)
    spans = [(f.start, f.end) for f in analysis.findings]
    spans += analysis.candidates
    for s, e in spans:
        if e > n - HOLD:
            cut = min(cut, s)  # may still grow, or its validation may still change
    while cut > base:
        snapped = max(region.rfind(s, base, cut) for s in _SPACES) + 1
        snapped = max(snapped, base)
        for s, e in spans:
            if s < snapped < e:
                snapped = min(snapped, s)
        if snapped == cut:
            break
        cut = snapped
    return cut
