"""Prompt-injection and jailbreak scoring: weighted rules, optionally maxed with a local model.

Why rules: no injection classifier runs offline as shipped (FINDINGS.md), and a rule that
fires can be named in the audit log. Each rule belongs to one *signal* (see ``SIGNALS``)
and carries a weight. A passage scores ``1 - prod(1 - w)`` over the rules that fired in
it, so one strong rule (an instruction override, 0.8) crosses the default threshold 0.5
alone, while weak ones (a bare "no filters", 0.35; a ``[system]`` tag, 0.45) only block
together; a request scores as its most suspicious passage. A request is an injection
when ``score >= threshold``.

What is scanned, each view in one pass of a multi-pattern engine (:class:`RuleSet`:
Hyperscan; single RE2 regexes where it is missing), all linear in the input:

1. the normalised text (:mod:`.normalize`: look-alikes, invisible characters, case);
2. the same with spaced-out letters joined and leetspeak undone ("1 g n 0 r 3");
3. ROT13 of the text (only when the first view holds a ROT13-encoded keyword), and what
   base64, hex and %-escaped runs of the raw text decode to (nested once more).

Hits found only in views 2-3 count when they amount to an injection on their own, and add
the ``obfuscation`` or ``encoded_payload`` signal; so does a disguise (homoglyphs,
invisible characters) around a hit in view 1. A quoted attack phrase in a text that
discusses attacks ("how do I block 'ignore previous instructions'?") counts at half
weight. Raw prompt text is never logged or kept: verdicts hold only numbers and names.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import itertools
import math
import re
import threading
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import re2

from smesh.config.schema import InjectionGuard
from smesh.extproc.guards.injection_model import OnnxScorer
from smesh.extproc.guards.injection_rules import HINT, RULES, Rule
from smesh.extproc.guards.normalize import (
    collapse_whitespace,
    deleet,
    despace,
    fold,
    has_disguise,
    has_leet,
    normalize,
    rot13,
)

__all__ = [
    "RULES",
    "SIGNALS",
    "InjectionDetector",
    "InjectionVerdict",
    "Rule",
    "RuleSet",
    "decoded_payloads",
]

SIGNALS = (
    "instruction_override",
    "system_prompt_extraction",
    "roleplay_escalation",
    "fake_role_tag",
    "addressed_to_model",
    "exfiltration",
    "encoded_payload",
    "obfuscation",
    "model",
)
OBFUSCATION_WEIGHT = 0.3
ENCODED_WEIGHT = 0.6
META_DAMPING = 0.5
NEARBY = 300  # characters between two hits of one passage
MAX_SPANS = 1000  # matches of one rule in one view that are placed into passages
_DAMPABLE = frozenset({"instruction_override", "system_prompt_extraction", "roleplay_escalation"})


@dataclass(frozen=True, slots=True)
class InjectionVerdict:
    """The score of one request (0..1) and the names of the signals that fired."""

    score: float
    signals: tuple[str, ...]


# A text that discusses attacks: a quoted attack phrase in it is probably a quotation.
_META = re2.compile(
    r"\b(?:prompt injections?|injection attacks?|jailbreak(?:s|ing)?\W+(?:attacks?|prompts?"
    r"|techniques?)|red\W?team\w*|security|classif\w+|detect\w*|defen[cs]\w*|mitigat\w*"
    r"|protect\w*|prevent\w*|filter(?:s|ing)|keywords?|examples?|papers?|blog|unit tests?"
    r"|test cases?|datasets?|inyeccion de prompts?|prompt-injection|injection de prompt)\b"
)
_QUOTES = frozenset("\"'")  # after folding, every quotation mark is one of these

_B64_RUN = re2.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")
_HEX_RUN = re2.compile(
    r"(?:[0-9a-fA-F]{2}){8,}|(?:[0-9a-fA-F]{2}[ :,]){7,}[0-9a-fA-F]{2}|(?:\\x[0-9a-fA-F]{2}){8,}"
)
_PCT_RUN = re2.compile(r"(?:%[0-9a-fA-F]{2}){6,}")
_HEX_SEPARATORS = re.compile(r"\\x|[ :,]")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f\ufffd]")
_DECODE_DEPTH = 2


def decoded_payloads(text: str, depth: int = _DECODE_DEPTH) -> list[str]:
    """The readable texts that base64, hex and %-escaped runs in ``text`` decode to.

    Linear: the runs do not overlap, so what they decode to is shorter than the input
    (per level of nesting, and nesting stops at ``depth``). Binary payloads (hashes,
    images, keys) do not decode to UTF-8 text and are skipped.
    """
    found: list[str] = []
    for match in _B64_RUN.finditer(text):
        run = match.group()
        if run.islower() or run.isupper() or run.isdigit():
            continue  # a long word or hex: base64 of text mixes cases
        bare = run.rstrip("=")
        altchars = b"-_" if "-" in bare or "_" in bare else None
        try:
            raw = base64.b64decode(bare + "=" * (-len(bare) % 4), altchars=altchars)
        except (binascii.Error, ValueError):
            continue
        if (decoded := _as_text(raw)) is not None:
            found.append(decoded)
    for match in _HEX_RUN.finditer(text):
        if (decoded := _as_text(bytes.fromhex(_HEX_SEPARATORS.sub("", match.group())))) is not None:
            found.append(decoded)
    found += [urllib.parse.unquote(m.group()) for m in _PCT_RUN.finditer(text)]
    if depth > 1:
        found += [inner for outer in list(found) for inner in decoded_payloads(outer, depth - 1)]
    return found


def _as_text(raw: bytes) -> str | None:
    """Decoded bytes as text, or None when they are not readable UTF-8."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(text) < 4 or len(_CONTROL.findall(text)) * 10 > len(text):
        return None
    return text


def _optional(module: str) -> Any | None:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


class RuleSet:
    """The rules compiled for scanning. Compile once per process and share it.

    Hyperscan: every rule in one database, one pass per view (about 20-60 µs per 4 KB),
    about a second to compile. Where Hyperscan is not installed, each rule's RE2 regex is
    searched in turn (compiles at once, several times slower). Not RE2's own set: its
    Python binding drops the out-of-memory status of ``RE2::Set::Match``, so a set that
    exhausts its DFA budget would report "no match" and let an attack through; a single
    RE2 regex falls back to its NFA instead. The spans of the rules that hit always come
    from the RE2 regexes, so both engines give the same verdicts. Thread-safe: Hyperscan
    scratch space is per thread.
    """

    __slots__ = ("_db", "_local", "_regexes", "engine", "rules")

    def __init__(
        self, rules: Sequence[Rule] = RULES, *, engine: Literal["hyperscan", "re2"] | None = None
    ) -> None:
        self.rules = tuple(rules)
        options = re2.Options()
        options.max_mem = 64 << 20  # per regex; past it RE2 falls back to its NFA
        self._regexes = tuple(re2.compile(rule.pattern, options) for rule in self.rules)
        self._local = threading.local()
        self._db: Any = None
        hyperscan = None if engine == "re2" else _optional("hyperscan")
        if engine == "hyperscan" and hyperscan is None:
            raise ValueError("RuleSet engine 'hyperscan': the hyperscan package is not installed")
        self.engine = "re2" if hyperscan is None else "hyperscan"
        if hyperscan is not None:
            multiline = "(?m)"
            self._db = hyperscan.Database()
            self._db.compile(
                expressions=[r.pattern.removeprefix(multiline).encode() for r in self.rules],
                ids=list(range(len(self.rules))),
                elements=len(self.rules),
                flags=[
                    hyperscan.HS_FLAG_SINGLEMATCH
                    | (hyperscan.HS_FLAG_MULTILINE if r.pattern.startswith(multiline) else 0)
                    for r in self.rules
                ],
            )

    def hits(self, view: str) -> set[int]:
        """Indexes of the rules that match somewhere in ``view``."""
        if self._db is None:
            return {i for i, regex in enumerate(self._regexes) if regex.search(view) is not None}
        found: set[int] = set()

        def on_match(rule: int, start: int, end: int, flags: int, context: object) -> None:
            found.add(rule)

        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = importlib.import_module("hyperscan").Scratch(self._db)
        self._db.scan(view.encode("utf-8", "surrogatepass"), on_match, scratch=scratch)
        return found

    def spans(self, index: int, view: str) -> Iterator[tuple[int, int]]:
        """Where rule ``index`` matches in ``view`` (character offsets), the first
        ``MAX_SPANS``: a text that repeats one phrase thousands of times is bounded work,
        and the first occurrences already decide what that rule contributes.
        """
        matches = self._regexes[index].finditer(view)
        return (match.span() for match in itertools.islice(matches, MAX_SPANS))


Weights = dict[int | str, float]


class InjectionDetector:
    """Immutable, built once per policy version from a shared :class:`RuleSet` (and model)."""

    __slots__ = ("_model", "_rules", "threshold")

    def __init__(
        self, rules: RuleSet, threshold: float = 0.5, model: OnnxScorer | None = None
    ) -> None:
        self._rules = rules
        self._model = model
        self.threshold = threshold

    @classmethod
    def from_config(cls, guard: InjectionGuard, rules: RuleSet | None = None) -> InjectionDetector:
        """Build from policy; pass the process's ``RuleSet`` to skip compiling the rules."""
        model = None
        if guard.model is not None:
            if guard.model.kind != "onnx":
                raise ValueError(
                    f"injection.model.kind {guard.model.kind!r}: only 'onnx' scores injections"
                )
            model = OnnxScorer(guard.model.path)
        return cls(rules or RuleSet(), threshold=guard.threshold, model=model)

    def score(self, texts: Sequence[str]) -> InjectionVerdict:
        """Score the user/tool texts of one request: its most suspicious passage decides.

        Evidence adds up only within a passage: hits in one paragraph less than
        ``NEARBY`` characters apart (chained), or one decoded payload. Two weak hits a
        page apart are two unrelated sentences, not one attack. ``signals`` are those of
        every passage at or over the threshold, else those of the highest-scoring one.
        """
        scored = [(_combine(p.values()), p) for text in texts for p in self._passages(text)]
        score, best = max(scored, key=lambda pair: pair[0], default=(0.0, {}))
        over = [weights for value, weights in scored if value >= self.threshold] or [best]
        fired = {self._signal(key) for weights in over for key in weights}
        if self._model is not None and texts:
            probability = max(self._model.probability(text) for text in texts)
            if probability >= self.threshold:
                fired.add("model")
            score = max(score, probability)
        return InjectionVerdict(score=score, signals=tuple(s for s in SIGNALS if s in fired))

    def _signal(self, key: int | str) -> str:
        return self._rules.rules[key].signal if isinstance(key, int) else key

    def _passages(self, text: str) -> list[Weights]:
        """The passages of one text, from every view, as rule weights."""
        folded = fold(text)
        plain = collapse_whitespace(folded)
        hits = self._rules.hits(plain)
        hint = {i for i in hits if self._rules.rules[i].signal == HINT}
        hits -= hint
        passages = self._clusters(plain, hits, damp=True)
        if passages and has_disguise(text):
            for weights in passages:
                weights["obfuscation"] = OBFUSCATION_WEIGHT
        clean = despace(folded)
        if has_leet(clean):
            clean = deleet(clean)
        if clean != folded:
            passages += self._hidden(collapse_whitespace(clean), hits, "obfuscation")
        if hint:  # ROT13 of the raw text: an attacker's ROT13 leaves accented letters alone
            passages += self._hidden(normalize(rot13(text)), hits, "encoded_payload")
        if payloads := decoded_payloads(text):
            passages += self._hidden(normalize("\n".join(payloads)), set(), "encoded_payload")
        return passages

    def _hidden(self, view: str, known: set[int], signal: str) -> list[Weights]:
        """Passages of a disguised view with new hits, kept if they attack on their own."""
        hits = {i for i in self._rules.hits(view) - known if self._rules.rules[i].signal != HINT}
        weight = OBFUSCATION_WEIGHT if signal == "obfuscation" else ENCODED_WEIGHT
        return [
            weights | {signal: weight}
            for weights in self._clusters(view, hits, damp=False)
            if _combine(weights.values()) >= 0.5
        ]

    def _clusters(self, view: str, hits: set[int], *, damp: bool) -> list[Weights]:
        """Group the matches of ``hits`` in ``view`` into passages of nearby matches."""
        if not hits:
            return []
        meta = damp and _META.search(view) is not None
        spans = sorted(
            (start, end, index, self._weight(index, view, start, meta))
            for index in hits
            for start, end in self._rules.spans(index, view)
        )
        passages: list[Weights] = []
        reach = -NEARBY - 1
        for start, end, index, weight in spans:
            if start > reach + NEARBY or "\n\n" in view[reach:start]:
                passages.append({})
            passages[-1][index] = max(weight, passages[-1].get(index, 0.0))
            reach = max(reach, end)
        return passages

    def _weight(self, index: int, view: str, start: int, meta: bool) -> float:
        """A rule's weight, halved for a quoted phrase in a text that discusses attacks."""
        rule = self._rules.rules[index]
        quoted = not _QUOTES.isdisjoint(view[max(0, start - 2) : start])
        if meta and quoted and rule.signal in _DAMPABLE:
            return rule.weight * META_DAMPING
        return rule.weight


def _combine(weights: Iterable[float]) -> float:
    """``1 - prod(1 - w)``: independent pieces of evidence, each able to decide alone."""
    return 1.0 - math.prod(1.0 - w for w in weights)
