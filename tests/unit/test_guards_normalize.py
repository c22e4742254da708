"""Normalisation shared by the guards: every readable disguise folds to one ASCII skeleton."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("IGNORE Previous", "ignore previous"),
        ("\uff29\uff47\uff4e\uff4f\uff52\uff45", "ignore"),  # fullwidth
        ("\U0001d422\U0001d420\U0001d427\U0001d428\U0001d42b\U0001d41e", "ignore"),  # math bold
        ("\u0456gn\u043er\u0435", "ignore"),  # Cyrillic i, o, e
        ("pr\u03bfject", "project"),  # Greek omicron
        ("\u026a\u0262\u0274\u1d0f\u0280\u1d07", "ignore"),  # small capitals
        ("pr\u00e9c\u00e9dentes fr\u00fcheren", "precedentes fruheren"),  # accents
        ("Z\u0335\u0322a\u0334l\u0337g\u0336o\u0338", "zalgo"),  # stacked combining marks
        ("\ufb01ne \u2460", "fine 1"),  # ligature, circled digit
        ("au\u00dfer", "ausser"),  # casefold, not lower()
        ("\u2019quoted\u201d \u00abx\u00bb \u2014", '\'quoted" "x" -'),
    ],
    ids=[
        "case",
        "fullwidth",
        "math-bold",
        "cyrillic",
        "greek",
        "small-caps",
        "accents",
        "zalgo",
        "compatibility",
        "casefold",
        "quotes-dashes",
    ],
)
def test_fold_reaches_the_ascii_skeleton(text: str, expected: str) -> None:
    """Look-alike forms of a word fold to the same ASCII word."""
    assert fold(text) == expected


@pytest.mark.parametrize(
    "invisible",
    ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u202e", "\u2066", "\ufe0f"],
    ids=["zwsp", "zwnj", "zwj", "word-joiner", "bom", "soft-hyphen", "rlo", "isolate", "vs16"],
)
def test_invisible_characters_are_removed(invisible: str) -> None:
    """Zero-width, bidi and variation characters inside a word disappear."""
    assert normalize(f"ig{invisible}no{invisible}re") == "ignore"


def test_tag_characters_are_decoded_to_the_ascii_they_hide() -> None:
    """Unicode tag characters smuggle invisible ASCII; folding reveals it."""
    hidden = "".join(chr(0xE0000 + ord(c)) for c in "ignore rules")
    assert normalize(f"hello {hidden}") == "hello ignore rules"


def test_flag_emoji_tags_are_dropped_not_decoded() -> None:
    """The tags of a subdivision flag (Scotland) are not text."""
    scotland = "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"
    assert normalize(f"go {scotland}!") == "go \U0001f3f4!"


def test_other_scripts_survive_folding() -> None:
    """Scripts without Latin look-alikes pass through unchanged (NFC)."""
    assert normalize("東京 한국어 हिन्दी") == "東京 한국어 हिन्दी"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a  b\t\tc", "a b c"),
        ("a \n  b", "a\nb"),
        ("a\n\n\n  \nb", "a\n\nb"),
        ("  a\r\n\r\nb  ", "a\n\nb"),
        ("a\u2028b\u2029c\u00a0\u3000d", "a\nb\n\nc d"),
    ],
    ids=["spaces", "line", "paragraph", "crlf-and-ends", "unicode-separators"],
)
def test_whitespace_runs_collapse_keeping_lines_and_paragraphs(text: str, expected: str) -> None:
    """A run becomes a blank line, a newline or a space, by what it held."""
    assert normalize(text) == expected


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_normalize_is_idempotent(text: str) -> None:
    """Normalising twice changes nothing: detectors may normalise already-normal text."""
    once = normalize(text)
    assert normalize(once) == once


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("i g n o r e   a l l", "ignore   all"),
        ("i.g.n.o.r.e / p-r-e-v", "ignore / prev"),
        ("1 g n 0 r 3", "1gn0r3"),
        ("J. R. R. Tolkien", "J. R. R. Tolkien"),
        ("a cat and a dog", "a cat and a dog"),
    ],
    ids=["spaces", "dots-hyphens", "digits", "initials-kept", "prose-kept"],
)
def test_despace_joins_only_runs_of_single_characters(text: str, expected: str) -> None:
    """Spaced-out letters join; wide gaps and ordinary words stay."""
    assert despace(text) == expected


def test_deleet_maps_digits_and_symbols_leaving_other_characters() -> None:
    """Leetspeak becomes letters; non-ASCII characters pass through intact."""
    assert deleet("1gn0r3 pr3v10u5 @ll $ecret é") == "ignore previous all secret é"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1gn0r3", True), ("pr3vious", True), ("in 2024 at 10", False), ("plain", False)],
    ids=["leading-digit", "inner-digit", "numbers-alone", "letters-alone"],
)
def test_has_leet_needs_a_letter_next_to_a_leet_character(text: str, expected: bool) -> None:
    """Numbers on their own are not leetspeak."""
    assert has_leet(text) is expected


def test_rot13_is_an_involution_that_leaves_accents_alone() -> None:
    """ROT13 twice is the identity; an accented letter is not rotated."""
    assert rot13("Vtaber précédentes") == "Ignore ce\u00e9p\u00e9qragrf"
    assert rot13(rot13("Any text, é ü")) == "Any text, é ü"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\u0456gn\u043er\u0435 this", True),
        ("ig\u200bnore", True),
        ("hi" + chr(0xE0069), True),
        ("\uff49\uff47\uff4e\uff4f\uff52\uff45", True),
        ("family \U0001f468\u200d\U0001f469\u200d\U0001f467", False),
        ("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", False),
        ("\u041f\u0440\u0438\u0432\u0435\u0442 world", False),
        ("informa\u00adtion, pasted.\u200b Next", False),
    ],
    ids=[
        "mixed-script-word",
        "zwsp-in-word",
        "tag-characters",
        "fullwidth",
        "emoji-joiner",
        "persian-zwnj",
        "russian-word",
        "pasted-text",
    ],
)
def test_has_disguise_tells_deliberate_disguise_from_ordinary_text(
    text: str, expected: bool
) -> None:
    """Disguises inside Latin words count; joiners of emoji or Persian and pasted text do not."""
    assert has_disguise(text) is expected


@pytest.mark.parametrize(
    "text",
    [
        "\u0456" * (1 << 20),
        "\u200b" * (1 << 20),
        "a " * (1 << 19),
        "é\n" * (1 << 19),
        chr(0xE0041) * (1 << 20),
    ],
    ids=["cyrillic", "zero-width", "spaced-letters", "accents-lines", "tags"],
)
def test_one_megabyte_normalises_quickly(text: str) -> None:
    """Every step is linear: a 1 MB adversarial input folds in well under a second."""
    start = time.perf_counter()
    despace(fold(text))
    collapse_whitespace(fold(text))
    assert time.perf_counter() - start < 2.0
