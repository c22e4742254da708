"""Banned terms: whole-word matching of a configured term list in one automaton pass.

Terms and text go through the same :func:`~.normalize.fold` (case, accents, look-alikes,
invisible characters), so "Project  NIGHTINGALE" and "pr\\u03bfject nightingale" (Greek
omicron) match the term "project nightingale". Then runs of spaces, hyphens, dots,
slashes and underscores become one space, so "project-nightingale" and
"project_nightingale" match too.

Decisions:

- Whole words only: "ass" does not match "class" or "assess". Characters of scripts
  written without spaces (Chinese, Japanese, Thai...) need no boundary: a Chinese term
  matches inside a Chinese sentence.
- A multi-word term also matches with its words run together ("projectnightingale",
  "ProjectNightingale", "project\\u200bnightingale" whose zero-width space hides the
  gap). A single-word term never matches across a gap: "an al" is not "anal".
- Evasions a reader still reads as the term match as well: letters spaced out
  ("n i g h t i n g a l e", "n.i.g.h.t") and leetspeak ("n1ght1ng4le", "@ss").
- Equivalent terms ("Nightingale", "nightingale") are reported once, as first configured.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import ahocorasick

from smesh.config.schema import BannedTerms
from smesh.extproc.guards.normalize import deleet, despace, fold, has_leet

__all__ = ["BannedTermMatcher"]

# Separators become spaces byte-wise over UTF-8 (no multi-byte sequence holds an ASCII
# byte), then str.split() collapses the runs: both at C speed.
_SEPARATORS = bytes.maketrans(b"-_./", b"    ")
# Scripts written without spaces between words: a term in them needs no word boundary.
_UNSPACED = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uf900-\ufaff\U00020000-\U0002fa1f]"
)


def _canonical(folded: str) -> str:
    """Separator runs to one space: the form both terms and texts are matched in."""
    spaced = folded.encode("utf-8", "surrogatepass").translate(_SEPARATORS)
    return " ".join(spaced.decode("utf-8", "surrogatepass").split())


def _bounded(char: str) -> bool:
    """Whether a term edge on this character needs a word boundary next to it."""
    return char.isalnum() and _UNSPACED.match(char) is None


class BannedTermMatcher:
    """Built once per policy version with a multi-pattern automaton (pyahocorasick)."""

    __slots__ = ("_automaton", "action", "terms")

    def __init__(self, terms: tuple[str, ...], action: str = "block") -> None:
        keys: dict[str, list[int]] = {}
        for index, term in enumerate(terms):
            key = _canonical(fold(term))
            if not key:
                raise ValueError(f"banned_terms.terms[{index}] {term!r}: empty once normalised")
            keys.setdefault(key, []).append(index)
            if " " in key:
                keys.setdefault(key.replace(" ", ""), []).append(index)
        self._automaton = ahocorasick.Automaton()
        for key, indexes in keys.items():
            self._automaton.add_word(key, (len(key), min(indexes)))
        self._automaton.make_automaton()
        self.terms = terms
        self.action = action

    @classmethod
    def from_config(cls, banned: BannedTerms) -> BannedTermMatcher:
        return cls(banned.terms, action=banned.action)

    def find(self, text: str) -> list[str]:
        """The configured terms found in ``text``, deduplicated, in order of first appearance.

        Terms seen in the text as written come first, in order; terms found only once
        spaced-out letters are joined or leetspeak is undone follow, in their order.
        """
        folded = fold(text)
        views = [_canonical(folded)]
        clean = despace(folded)
        if has_leet(clean):
            clean = deleet(clean)
        if clean != folded:
            views.append(_canonical(clean))
        found: dict[int, None] = {}
        for view in views:
            for _, index in sorted(self._matches(view)):
                found.setdefault(index)
        return [self.terms[index] for index in found]

    def _matches(self, view: str) -> Iterator[tuple[int, int]]:
        """(start, term index) of each whole-word match in ``view``."""
        for end, (length, index) in self._automaton.iter(view):
            start = end - length + 1
            if start > 0 and _bounded(view[start]) and _bounded(view[start - 1]):
                continue
            if end + 1 < len(view) and _bounded(view[end]) and _bounded(view[end + 1]):
                continue
            yield start, index
