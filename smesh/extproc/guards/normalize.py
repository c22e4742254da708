"""Text normalisation shared by the injection detector and the banned-term matcher.

Detectors match ASCII-ish skeletons, so every disguise that leaves the text readable to a
person (or a model) must fold to the same skeleton: compatibility forms (fullwidth,
mathematical alphanumerics, ligatures, circled letters) via NFKD; accents and stacked
"Zalgo" marks dropped; Cyrillic/Greek/Armenian/small-capital look-alikes mapped to the
Latin letters they imitate; case folded; zero-width, bidi and other invisible format
characters removed; Unicode tag characters (invisible copies of ASCII, used to smuggle
instructions) decoded to the ASCII they encode; whitespace runs collapsed.

Non-Latin text is folded too (Cyrillic er becomes Latin p even in Russian): both sides
of every comparison go through the same function, so a Russian banned term still matches
Russian text. All functions are pure and linear in the length of the input.
"""

from __future__ import annotations

import re
import unicodedata

import re2

__all__ = [
    "collapse_whitespace",
    "deleet",
    "despace",
    "fold",
    "has_disguise",
    "has_leet",
    "normalize",
    "rot13",
]

# An England/Scotland/Wales flag is U+1F3F4 followed by tag letters and CANCEL TAG: the
# only legitimate use of tag characters. Its tags are dropped; any others are decoded.
_FLAG_TAGS = re.compile("\U0001f3f4[\U000e0020-\U000e007e]+\U000e007f")

_TAG_RUN = re.compile("[\U000e0020-\U000e007e]+")
_TAGS_TO_ASCII = {cp: cp - 0xE0000 for cp in range(0xE0020, 0xE007F)}
# Line and paragraph separators that str.split() would treat as plain spaces.
_BREAKS = (("\x85", "\n"), ("\u2028", "\n"), ("\u2029", "\n\n"))

# Dropped after NFKD, in one pass: invisible format characters, and the combining marks
# of the generic diacritic blocks (accents, Zalgo stacks). Marks of scripts that need
# them (Devanagari vowel signs, Hebrew points...) are kept.
_DROP = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u3164\ufeff\uffa0"
    "\u200b-\u200f"  # zero-width space/non-joiner/joiner, LRM, RLM
    "\u202a-\u202e"  # bidi embeddings and overrides
    "\u2060-\u2064"  # word joiner, invisible operators
    "\u2066-\u2069"  # bidi isolates
    "\ufe00-\ufe0f\U000e0100-\U000e01ef"  # variation selectors
    "\U000e0001\U000e007f"  # LANGUAGE TAG, CANCEL TAG
    "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]+"  # marks
)

# Look-alikes that NFKD leaves alone, after Unicode's confusables.txt, restricted to the
# letters that pass for Latin ones in running text. Upper case maps to upper case so that
# casefolding afterwards is uniform.
_LOOKALIKES = {
    # Cyrillic
    "\u0430": "a", "\u0435": "e", "\u043a": "k", "\u043c": "m", "\u043e": "o",
    "\u0440": "p", "\u0441": "c", "\u0442": "t", "\u0443": "y", "\u0445": "x",
    "\u0456": "i", "\u0458": "j", "\u0455": "s", "\u0501": "d", "\u04bb": "h",
    "\u051b": "q", "\u051d": "w", "\u04cf": "l", "\u04af": "y", "\u0461": "w",
    "\u0475": "v", "\u050d": "g", "\u0410": "A", "\u0412": "B", "\u0415": "E",
    "\u041a": "K", "\u041c": "M", "\u041d": "H", "\u041e": "O", "\u0420": "P",
    "\u0421": "C", "\u0422": "T", "\u0423": "Y", "\u0425": "X", "\u0405": "S",
    "\u0406": "I", "\u0408": "J", "\u0500": "D", "\u04ae": "Y", "\u04c0": "l",
    "\u051a": "Q", "\u051c": "W",
    # Greek
    "\u03b1": "a", "\u03b2": "b", "\u03b3": "y", "\u03b5": "e", "\u03b9": "i",
    "\u03ba": "k", "\u03bd": "v", "\u03bf": "o", "\u03c1": "p", "\u03c4": "t",
    "\u03c5": "u", "\u03c7": "x", "\u03c9": "w", "\u03f2": "c", "\u03f3": "j",
    "\u0391": "A", "\u0392": "B", "\u0395": "E", "\u0396": "Z", "\u0397": "H",
    "\u0399": "I", "\u039a": "K", "\u039c": "M", "\u039d": "N", "\u039f": "O",
    "\u03a1": "P", "\u03a4": "T", "\u03a5": "Y", "\u03a7": "X", "\u03f9": "C",
    # Armenian
    "\u0585": "o", "\u057d": "u", "\u0570": "h", "\u0578": "n", "\u0581": "g",
    "\u0566": "q", "\u0561": "w",
    # Latin letters outside ASCII: IPA, small capitals, dotless i
    "\u0261": "g", "\u0131": "i", "\u0237": "j", "\u0251": "a", "\u0269": "i",
    "\u026a": "i", "\u029f": "l", "\u0274": "n", "\u0280": "r", "\u028f": "y",
    "\u029c": "h", "\u0262": "g", "\u0299": "b", "\u1d00": "a", "\u1d04": "c",
    "\u1d05": "d", "\u1d07": "e", "\u1d0a": "j", "\u1d0b": "k", "\u1d0d": "m",
    "\u1d0f": "o", "\u1d18": "p", "\u1d1b": "t", "\u1d1c": "u", "\u1d20": "v",
    "\u1d21": "w", "\u1d22": "z", "\ua730": "f", "\ua731": "s", "\u01c0": "l",
    "\u0254": "c", "\u2113": "l", "\u02bc": "'",
    # Quotation marks and dashes, which vary by keyboard and locale
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
    "\u00ab": '"', "\u00bb": '"', "\u2010": "-", "\u2011": "-", "\u2012": "-",
    "\u2013": "-", "\u2014": "-", "\u2015": "-", "\u2212": "-",
}  # fmt: skip
_FOLD_TABLE = str.maketrans(_LOOKALIKES)
_NON_ASCII_RUN = re.compile(r"[^\x00-\x7f]+")

# A run of at least three single letters or digits, each separated by the same separator
# character: "i g n o r e", "i.g.n.o.r.e", "1-g-n-0-r-3". Words are not single
# characters, so ordinary prose never forms such a run of more than a short initialism.
# Searches here and below use RE2: linear, and several times faster than re on this.
# One alternative per separator: a run keeps its separator, so in "i.g.n.o.r.e a.l.l" the
# space still parts the words.
_SEPARATORS = " .-*·•~/"
_SPACED_RUN = re2.compile(
    "|".join(rf"\b[^\W_](?:{re.escape(sep)}[^\W_]\b){{2,}}" for sep in _SEPARATORS)
)
_SPACED_SEPARATOR = re.compile(f"[{re.escape(_SEPARATORS)}]")

# Byte tables over UTF-8: ASCII bytes never occur inside a multi-byte sequence, so
# translating them leaves every other character intact, at C speed.
_LEET_TABLE = bytes.maketrans(b"01345789@$|+", b"oieastbgaslt")
# A letter next to a digit or symbol that leetspeak uses ("1gn0r3", "pr3v"): numbers on
# their own ("in 2024") need no leetspeak view.
_LEET_HINT = re2.compile(r"[a-z][0-9@$|+]|[0-9@$|+][a-z]")
_ROT13_TABLE = bytes.maketrans(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    b"nopqrstuvwxyzabcdefghijklmNOPQRSTUVWXYZABCDEFGHIJKLM",
)

_LATIN = "a-zA-Z"
_LOOKALIKE_SCRIPTS = "\u0370-\u03ff\u0400-\u052f\u0530-\u058f"
_INVISIBLE_CLASS = "\u200b-\u200f\u2060-\u2064\ufeff\u034f\u180e"
# Evidence of deliberate disguise in raw text: an invisible character inside a Latin word
# (pasted text has them between words or as soft hyphens; emoji joiners and the ZWNJ of
# Persian or Indic scripts sit between non-Latin characters), a word mixing Latin with
# Cyrillic/Greek/Armenian letters, tag characters, or fullwidth/mathematical letters.
_DISGUISE = re2.compile(
    f"[{_LATIN}{_LOOKALIKE_SCRIPTS}][{_INVISIBLE_CLASS}]+[{_LATIN}{_LOOKALIKE_SCRIPTS}]"
    f"|[{_LATIN}][{_LOOKALIKE_SCRIPTS}]|[{_LOOKALIKE_SCRIPTS}][{_LATIN}]"
    "|[\U000e0020-\U000e007e]|[\uff21-\uff3a\uff41-\uff5a]|[\U0001d400-\U0001d7ff]"
)


def fold(text: str) -> str:
    """Fold ``text`` to its matching skeleton without touching whitespace.

    Kept separate from :func:`normalize` because :func:`despace` needs the original gaps:
    in "i g n o r e   a l l" the wide gap is what separates the two words.
    """
    if text.isascii():
        return text.lower()
    if len(text.encode("utf-16-le", "surrogatepass")) > 2 * len(text):  # beyond the BMP
        text = _FLAG_TAGS.sub("\U0001f3f4", text)
        text = _TAG_RUN.sub(lambda m: m.group().translate(_TAGS_TO_ASCII), text)
    text = _DROP.sub("", unicodedata.normalize("NFKD", text))
    # Only the characters still outside ASCII can be look-alikes; translating just those
    # runs is several times faster than translating the whole text.
    # Case is folded before the look-alike table too, so a capital whose lower case is a
    # look-alike (Ω → ω → w) ends where its lower case ends: normalising is idempotent.
    text = text.casefold()
    text = _NON_ASCII_RUN.sub(lambda m: m.group().translate(_FOLD_TABLE), text).casefold()
    if text.isascii():
        return text
    for separator, replacement in _BREAKS:
        if separator in text:
            text = text.replace(separator, replacement)
    return unicodedata.normalize("NFC", text)


def collapse_whitespace(text: str) -> str:
    """Collapse each whitespace run to a blank line, a newline or a space, by what it held.

    Line and paragraph breaks survive because some attacks are only recognisable at the
    start of a line (a forged ``SYSTEM:`` turn) and the injection scorer treats paragraphs
    as separate passages; the width of a gap never matters.
    """
    if "\n" not in text:
        return " ".join(text.split())
    out: list[str] = []
    blank = False
    for line in text.split("\n"):
        if not (line := " ".join(line.split())):
            blank = bool(out)
            continue
        if out:
            out.append("\n\n" if blank else "\n")
        out.append(line)
        blank = False
    return "".join(out)


def normalize(text: str) -> str:
    """NFKC-like folding, look-alikes to ASCII, invisible characters out, gaps collapsed."""
    return collapse_whitespace(fold(text))


def despace(text: str) -> str:
    """Join runs of single characters: "i g n o r e" → "ignore", "i.g.n.o.r.e" → "ignore".

    Apply to :func:`fold` output: a gap wider than one separator still splits words.
    """
    if _SPACED_RUN.search(text) is None:
        return text
    joined: str = _SPACED_RUN.sub(lambda m: _SPACED_SEPARATOR.sub("", m.group()), text)
    return joined


def deleet(text: str) -> str:
    """Map leetspeak digits and symbols to the letters they stand for: "1gn0r3" → "ignore".

    Numbers in ordinary text become nonsense words, so use the result only as an extra
    view to scan, never in place of the text.
    """
    return _bytes_translate(text, _LEET_TABLE)


def has_leet(text: str) -> bool:
    """Whether folded ``text`` has a letter next to a leetspeak digit or symbol."""
    return _LEET_HINT.search(text) is not None


def rot13(text: str) -> str:
    """ROT13 of the ASCII letters; other characters unchanged."""
    return _bytes_translate(text, _ROT13_TABLE)


def has_disguise(text: str) -> bool:
    """Whether raw ``text`` shows a deliberate disguise that :func:`fold` undoes.

    Invisible characters inside Latin words, Latin mixed with look-alike letters in one
    word, Unicode tag characters, fullwidth or mathematical letters. On its own this is no
    attack (Japanese text uses fullwidth letters); it strengthens one that is found.
    """
    return _DISGUISE.search(_FLAG_TAGS.sub("", text)) is not None


def _bytes_translate(text: str, table: bytes) -> str:
    return text.encode("utf-8", "surrogatepass").translate(table).decode("utf-8", "surrogatepass")
