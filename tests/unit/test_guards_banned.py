"""Banned terms: whole words, normalised, with the decisions the module docstring lists."""

from __future__ import annotations

import time

import pytest

from smesh.config.schema import BannedTerms
from smesh.extproc.guards.banned import BannedTermMatcher

TERMS = ("ass", "Project Nightingale", "机密", "c++", "anal")


@pytest.fixture(scope="module")
def matcher() -> BannedTermMatcher:
    return BannedTermMatcher.from_config(BannedTerms(terms=TERMS))


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("what an ass.", ["ass"]),
        ("ASS!", ["ass"]),
        ("this class is an assessment of bass", []),
        ("Project  NIGHTINGALE", ["Project Nightingale"]),
        ("pr\u03bfject nightingale", ["Project Nightingale"]),
        ("project\u200bnightingale", ["Project Nightingale"]),
        ("ProjectNightingale", ["Project Nightingale"]),
        ("project-nightingale", ["Project Nightingale"]),
        ("project_nightingale", ["Project Nightingale"]),
        ("project\nnightingale", ["Project Nightingale"]),
        ("projects nightingale", []),
        ("p r o j e c t   n i g h t i n g a l e", ["Project Nightingale"]),
        ("pr0j3ct n1ght1ng4le", ["Project Nightingale"]),
        ("@ss", ["ass"]),
        ("这是机密文件", ["机密"]),
        ("I write c++ daily", ["c++"]),
        ("an Al Jazeera report", []),
        ("a s s", ["ass"]),
        ("it was 5 ss", []),
    ],
    ids=[
        "word",
        "upper-case",
        "inside-words",
        "double-space-upper",
        "greek-omicron",
        "zero-width-gap",
        "camel-case",
        "hyphen",
        "underscore",
        "newline",
        "different-word",
        "spaced-letters",
        "leetspeak",
        "leet-symbol",
        "chinese-inside-sentence",
        "symbols-in-term",
        "single-word-not-across-gap",
        "spaced-single-word",
        "digits-alone-not-leet",
    ],
)
def test_find_matches_whole_normalised_words(
    matcher: BannedTermMatcher, text: str, found: list[str]
) -> None:
    """Each decision of the module docstring, one text each."""
    assert matcher.find(text) == found


def test_terms_come_back_as_configured_in_order_of_first_appearance(
    matcher: BannedTermMatcher,
) -> None:
    """Order by first position in the text; a term seen twice is reported once."""
    text = "c++ and PROJECT NIGHTINGALE, then c++ again, then an ass"
    assert matcher.find(text) == ["c++", "Project Nightingale", "ass"]


def test_terms_found_only_after_deobfuscation_follow_the_plain_ones() -> None:
    """Plain hits first, in order; then those that needed leetspeak undone."""
    matcher = BannedTermMatcher(("alpha", "bravo"))
    assert matcher.find("br4v0 then alpha") == ["alpha", "bravo"]


def test_overlapping_terms_are_both_found() -> None:
    """A term inside a longer term is its own hit."""
    matcher = BannedTermMatcher(("nightingale", "project nightingale"))
    assert matcher.find("about project nightingale") == ["project nightingale", "nightingale"]


def test_equivalent_terms_report_the_first_configured() -> None:
    """Terms equal once normalised are one term."""
    matcher = BannedTermMatcher(("Nightingale", "NIGHTINGALE", "nightingale"))
    assert matcher.find("the nightingale sings") == ["Nightingale"]


def test_a_term_empty_once_normalised_is_a_config_error() -> None:
    """A term of invisible characters or separators alone would match nothing."""
    with pytest.raises(ValueError, match=r"banned_terms\.terms\[1\] '\\u200b': empty"):
        BannedTermMatcher(("fine", "\u200b"))


def test_from_config_keeps_terms_and_action() -> None:
    """The matcher carries the policy's action for the pipeline."""
    matcher = BannedTermMatcher.from_config(BannedTerms(terms=("x",), action="flag"))
    assert (matcher.terms, matcher.action) == (("x",), "flag")


@pytest.mark.parametrize(
    "text",
    ["ass " * (1 << 18), "a s " * (1 << 18), "class" * (1 << 18), "\u0430" * (1 << 20)],
    ids=["repeated-term", "spaced", "near-misses", "cyrillic"],
)
def test_one_megabyte_is_matched_quickly(matcher: BannedTermMatcher, text: str) -> None:
    """One automaton pass per view: 1 MB of adversarial text in well under a second."""
    start = time.perf_counter()
    matcher.find(text)
    assert time.perf_counter() - start < 3.0
