"""PERSON candidates: a cue (a title, "my name is", "Dear", "regards,", ...) or a first name
from the shipped lists, followed by capitalised words and name particles; the lists decide
which of them are names."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import re2

from smesh.extproc.guards.pii_scan import Finding

__all__ = ["PERSON_PATTERN", "TITLE_BYTES", "NameLists", "Persons"]

# --- Candidate patterns (RE2 syntax, UTF-8 bytes). ------------------------------------------
_TITLES = ("Mr", "Mrs", "Ms", "Miss", "Mx", "Dr", "Prof", "Sir", "Dame", "Herr", "Frau", "Mme",
           "Mlle", "Sra", "Srta", "Dhr", "Mevr")  # fmt: skip
_STRONG_CUES = ("my name is", "my name's", "signed,", "signed", "ich heiße", "ich heisse",
                "je m'appelle", "me llamo", "mi chiamo", "mijn naam is")  # fmt: skip
TITLE_BYTES = tuple(b" " + t.encode() for t in _TITLES)
_CLOSING_CUES = ("dear", "regards,", "sincerely,", "thanks,", "cheers,", "best,", "name:")
_APOS = "\u2019"  # the typographic apostrophe, as in O\u2019Brien
_WEAK_CUES = ("hi", "hello", "hey", "i am", "i'm", f"i{_APOS}m", "je suis", "soy", "sono", "ik ben")
_PARTICLES = ("'t", f"{_APOS}t", "van", "von", "der", "den", "de", "del", "della", "di", "da",
              "du", "des", "la", "le", "ter", "ten", "zu", "y", "dos", "das", "do", "bin", "al",
              "el")  # fmt: skip
_NAME = rf"\p{{Lu}}[\p{{L}}'{_APOS}]*(?:-\p{{Lu}}[\p{{L}}'{_APOS}]*)?"
_MORE_TOKENS = rf"[ \t]{{1,3}}(?:(?:{'|'.join(_PARTICLES)})[ \t]{{1,3}}){{0,3}}{_NAME}"


def _cue_alternation(escape: Callable[[str], str]) -> str:
    titles = "|".join(_TITLES)
    phrases = "|".join(escape(c) for c in (*_STRONG_CUES, *_CLOSING_CUES, *_WEAK_CUES))
    return rf"(?:\b(?:{titles})\.?|\bSr\.|(?i:\b(?:{phrases})))"


PERSON_PATTERN = rf"{_cue_alternation(re2.escape)}[ \t\r\n]{{1,3}}{_NAME}(?:{_MORE_TOKENS})*|{_NAME}(?:{_MORE_TOKENS})+"  # noqa: E501

# --- Python-side helpers: all anchored or bounded, so each runs in linear time. ------------
_CUE = re.compile(_cue_alternation(re.escape) + r"[ \t\r\n]{1,3}")
_NAME_WORD = re.compile(rf"[^\W\d_][\w'{_APOS}]*(?:-[^\W\d_][\w'{_APOS}]*)?")


@dataclass(frozen=True, slots=True)
class NameLists:
    """First names and surnames (``data/names.json``) and the everyday words among them."""

    first: frozenset[str]
    last: frozenset[str]
    common: frozenset[str]
    places: frozenset[str] = frozenset()

    @classmethod
    def load(cls) -> NameLists:
        raw = resources.files("smesh.extproc.guards.data").joinpath("names.json").read_text()
        data: dict[str, Any] = json.loads(raw)
        return cls(*(frozenset(data[k]) for k in ("first", "last", "common", "places")))


class Persons:
    """Names inside one PERSON candidate: a cue, then capitalised words and particles."""

    __slots__ = ("names", "text")

    def __init__(self, text: str, names: NameLists) -> None:
        self.text = text
        self.names = names

    def run(self, start: int, end: int) -> list[Finding]:
        text, names = self.text, self.names
        cue = _CUE.match(text, start, end)
        words: list[tuple[int, int, str, bool]] = []  # start, end, word, is_particle
        for m in _NAME_WORD.finditer(text, cue.end() if cue else start, end):
            word = m.group().replace(_APOS, "'")
            stop = m.end()
            if word.endswith(("'s", "'")):  # possessive: "Connor's"
                trimmed = word[:-2] if word.endswith("'s") else word[:-1]
                stop -= len(word) - len(trimmed)
                word = trimmed
            words.append((m.start(), stop, word, word[:1].islower()))
        out: list[Finding] = []
        i = 0
        if cue is not None and words and not words[0][3]:
            first = words[0][2]
            kind = _cue_kind(cue.group().strip().lower())
            known = first in names.first or first in names.last
            if first in _TITLES:
                ok = False
            elif kind == "closing":
                ok = known
            elif kind == "weak":
                ok = first in names.first and first not in names.common
            else:
                ok = True
            if ok:
                i = self.extend(words, 0, out, lenient=kind == "strong")
        while i < len(words):
            _, _, word, particle = words[i]
            if particle:
                i += 1
            elif word in _TITLES and i + 1 < len(words) and not words[i + 1][3]:
                i = self.extend(words, i + 1, out, lenient=True)
            elif word in names.first:
                i = self.extend(words, i, out, need_pair=True)
            else:
                i += 1
        return out

    def extend(
        self,
        words: list[tuple[int, int, str, bool]],
        i: int,
        out: list[Finding],
        *,
        need_pair: bool = False,
        lenient: bool = False,
    ) -> int:
        """Take words[i] and the known names after it; returns the next index to look at.

        After a title or "my name is", one more capitalised word that is not in the lists
        counts too (a surname the lists lack: "Dr Priya Raghunathan")."""
        names = self.names
        taken = [i]
        k = i + 1
        while k < len(words):
            if words[k][3]:  # a particle counts only when a name follows it
                k += 1
                continue
            word = words[k][2]
            if word not in names.first and word not in names.last:
                if not lenient or word in names.common or word in _TITLES:
                    break
                lenient = False
            taken.append(k)
            k += 1
        if need_pair:
            if words[taken[-1]][2] in names.places:
                taken.pop()  # "Charlotte Street" is a street
            if len(taken) < 2 or all(words[t][2] in names.common for t in taken):
                return i + 1
        out.append(Finding("PERSON", words[taken[0]][0], words[taken[-1]][1]))
        return taken[-1] + 1


def _cue_kind(cue: str) -> str:
    cue = cue.rstrip(". \t\r\n").replace(_APOS, "'")
    if cue in _CLOSING_CUES or cue + "," in _CLOSING_CUES:
        return "closing"
    if cue in _WEAK_CUES:
        return "weak"
    return "strong"  # titles and "my name is"
