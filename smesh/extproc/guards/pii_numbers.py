"""Runs of digits (phone numbers, credit cards, US SSNs, IPv4 addresses), IPv6 addresses and
IBANs: the candidate patterns and the validators that confirm them."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from itertools import accumulate

import phonenumbers
from stdnum import iban as stdnum_iban

from smesh.extproc.guards.pii_scan import Scan, word_char

__all__ = ["IBAN_PATTERN", "IPV6_PATTERN", "NUMBER_PATTERN", "NumberChecks"]

# --- Candidate patterns (RE2 syntax, UTF-8 bytes). ------------------------------------------
_HEX = "[0-9A-Fa-f]{1,4}"
_V4 = r"\d{1,3}(?:\.\d{1,3}){3}"
IBAN_PATTERN = r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,32}"
IPV6_PATTERN = (
    rf"(?:{_HEX}:){{7}}{_HEX}|(?:{_HEX}:){{1,6}}:(?:{_HEX}:){{0,5}}(?:{_V4}|{_HEX})"
    rf"|::(?:{_HEX}:){{0,6}}(?:{_V4}|{_HEX})|(?:{_HEX}:){{2,7}}:"
)
# A run of at least seven digits with short separators, or a dotted quad.
NUMBER_PATTERN = rf"\+?\(?\d(?:[ \-./()]{{0,3}}\d){{6,}}|{_V4}"

# --- Python-side helpers: all anchored or bounded, so each runs in linear time. ------------
_DIGITS = re.compile(r"\d+")
_EXTENSION = re.compile(r"[ \t]?(?:x|ext\.?|extension)[ \t]?\d{1,6}\b", re.IGNORECASE)
_PHONE_CUE = re.compile(
    r"(?i)\b(?:phone|tel|telephone|mobile|mob|cell|fax|call|text me|sms|whatsapp|contact|"
    r"reach|ring|dial|handy|telefon|t[ée]l[ée]phone|t[ée]l|portable|tel[ée]fono|m[óo]vil|"
    r"cellulare|bel|nummer|number|numero|n[úu]mero|r[üu]ckruf|anrufen|appeler|llamar|chiamare|"
    r"bellen)\b"
)
_TRUNK = re.compile(r"0[1-9]\d{7,9}$")  # 0 + area code: how Europe writes a number at home
_SSN_CUE = re.compile(r"(?i)\b(?:ssn|social security|soc\.? ?sec|ss#|ss no)")
_VERSION_CUE = re.compile(
    r"(?i)\b(?:v|ver|version|versions|release|build|firmware|fw|rev|revision|patch|sdk|"
    r"upgrade to|update to|chapter|section|clause|article|figure|table|step|rule|item|part|"
    r"oid)\W{0,3}$"
)
_GLUED_BEFORE = frozenset(".-/\\#$\u20ac\u00a3\u00a5")  # part of an id, a path or an amount
_DATE = re.compile(r"\d{4}-(?:0?[1-9]|1[0-2])-(?:0?[1-9]|[12]\d|3[01])")
_GLUED_AFTER = frozenset("%$@\u20ac\u00a3\u00a5")
_ISBN_CUE = re.compile(r"(?i)\bisbn(?:-1[03])?\W{0,3}$")
_IBAN_DIGITS = str.maketrans({chr(c): str(c - 55) for c in range(ord("A"), ord("Z") + 1)})
# National formats: (country code, trunk prefix, lengths with the trunk, first digits,
# allowed group sizes or None for "first group of 2-6 digits, at most five groups").
_NATIONAL: tuple[tuple[int, str, range, str, tuple[tuple[int, ...], ...] | None], ...] = (
    (1, "", range(10, 11), "23456789", ((10,), (3, 3, 4), (3, 7))),
    (1, "1", range(11, 12), "1", ((11,), (1, 3, 3, 4), (1, 10))),
    (44, "0", range(10, 12), "0", None),
    (49, "0", range(6, 14), "0", None),
    (33, "0", range(10, 11), "0", None),
    (34, "", range(9, 10), "6789", None),
    (39, "", range(6, 12), "03", None),
    (31, "0", range(10, 11), "0", None),
    (91, "", range(10, 11), "6789", None),
    (91, "0", range(11, 12), "0", None),
)
# Digit counts that some entity can have, by first digit: SSN 9 (no area 9xx), cards
# 13-19 (IINs start with 2-6), and the national formats above.
_LENGTHS = {
    c: frozenset(
        ({9} if c != "9" else set())
        | (set(range(13, 20)) if c in "23456" else set())
        | {n for _, _, lengths, first, _ in _NATIONAL if c in first for n in lengths}
    )
    for c in "0123456789"
}
_LUHN_DOUBLE = {str(d): (d * 2 - 9 if d > 4 else d * 2) for d in range(10)}
_INTERNATIONAL_LENGTHS = frozenset(range(8, 18))  # + or 00, country code, national number
# Visa 4; Mastercard 51-55, 2221-2720; Maestro 50, 56-69; Discover and UnionPay 6; Amex 34,
# 37; JCB 35; Diners 30, 36, 38, 39.
_CARD_PREFIXES = ("4", "5", "6", "22", "23", "24", "25", "26", "27", "30", "34", "35", "36",
                  "37", "38", "39")  # fmt: skip


class NumberChecks(Scan):
    """Validates IBAN, IPv6 and digit-run candidates."""

    __slots__ = ()

    # -- IBAN, IPv6 ---------------------------------------------------------------------
    def iban(self, start: int, end: int) -> None:
        if self.before(start).isalnum():
            return
        positions = [i for i in range(start, end) if self.text[i] != " "]
        compact = "".join(self.text[i] for i in positions)
        for size in range(min(34, len(compact)), 14, -1):
            last = positions[size - 1]
            if self.after(last + 1).isalnum():
                continue  # the IBAN would end inside a longer word
            digits = (compact[4:size] + compact[:4]).translate(_IBAN_DIGITS)
            if int(digits) % 97 == 1 and stdnum_iban.is_valid(compact[:size]):
                self.emit("IBAN", start, last + 1)
                return

    def ipv6(self, start: int, end: int, chunk: str) -> None:
        prev, nxt = self.before(start), self.after(end)
        if word_char(prev) or prev in ":." or word_char(nxt) or nxt == ":":
            return
        if not any(c.isdigit() for c in chunk):
            return
        try:
            ipaddress.IPv6Address(chunk)
        except ValueError:
            return
        self.emit("IP_ADDRESS", start, end)

    # -- runs of digits: SSN, IPv4, card, phone -----------------------------------------
    def number(self, start: int, end: int) -> None:
        """Split a run into digit groups; take the longest entity at each group, left to right."""
        text = self.text
        parts: list[str] = _DIGITS.findall(text, start, end)
        prev = self.before(start)
        first = 1 if (word_char(prev) or prev in _GLUED_BEFORE) else 0
        if sum(map(len, parts[first:])) < 7 and not (first == 0 and len(parts) == 4):
            return  # too few digits for anything but a dotted quad
        if len(parts) == 3 and _DATE.fullmatch(text, start, end) is not None:
            return  # the most common run in prose: a date alone
        if parts[0][:3] in ("978", "979") or "isbn" in text[max(0, start - 12) : start].lower():
            if _ISBN_CUE.search(text, max(0, start - 12), start) is not None:
                return
            if len(parts) in (4, 5) and sum(map(len, parts)) == 13:
                return  # ISBN-13 shape: 978-3-16-148410-0
        matches = list(_DIGITS.finditer(text, start, end))
        run = _Run(
            parts,
            [m.start() for m in matches],
            [m.end() for m in matches],
            [text[matches[k].end() : matches[k + 1].start()] for k in range(len(matches) - 1)],
        )
        total = list(accumulate(map(len, parts), initial=0))
        extension = _EXTENSION.match(text, end)
        nxt = self.after(end)
        glued = extension is None and (word_char(nxt) or nxt in _GLUED_AFTER)
        last = len(run.parts) - 1 - glued
        i = first
        while i <= last:
            if run.date_at(i):
                i += 3
                continue
            lead = run.starts[i]
            if i == 0 and text[start] in "+(":
                lead = start
            elif i > 0 and run.seps[i - 1].endswith("("):
                lead -= 1
            # Windows of at most 7 groups and 19 digits, longest first; a cheap length test
            # per first digit spares the validators on runs like "1 2 3 4 ..." (linear time).
            intl = (i == 0 and text[lead] == "+") or run.parts[i].startswith("00")
            lengths = _INTERNATIONAL_LENGTHS if intl else _LENGTHS[run.parts[i][0]]
            top, limit = i, min(last, i + 6)
            while top < limit and total[top + 2] - total[i] <= 19:
                top += 1
            for j in range(top, i - 1, -1):
                dotted_quad = j - i == 3 and run.seps[i:j] == [".", ".", "."]
                if not dotted_quad and total[j + 1] - total[i] not in lengths:
                    continue
                entity = self.classify(run, i, j, "".join(run.parts[i : j + 1]), lead)
                if entity is not None:
                    stop = run.ends[j]
                    if j == len(run.parts) - 1 and extension is not None and entity == "PHONE":
                        stop = extension.end()
                    self.emit(entity, lead, stop)
                    i = j
                    break
            i += 1

    def classify(self, run: _Run, i: int, j: int, d: str, lead: int) -> str | None:
        """The entity that groups i..j (digits d, starting at text offset lead) form, if any."""
        text = self.text
        sizes = [len(p) for p in run.parts[i : j + 1]]
        inner = run.seps[i:j]
        if len(d) == 9 and (
            (sizes == [3, 2, 4] and inner[0] == inner[1] and inner[0] in ("-", " "))
            or (sizes == [9] and _SSN_CUE.search(text, max(0, lead - 40), lead) is not None)
        ):
            area, group, serial = d[:3], d[3:5], d[5:]
            if area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000":
                return "US_SSN"
        if len(sizes) == 4 and inner == [".", ".", "."]:
            seps = run.seps
            chained = (i > 0 and seps[i - 1] == ".") or (j < len(seps) and seps[j] == ".")
            if chained or _VERSION_CUE.search(text, max(0, lead - 24), lead) is not None:
                return None  # 1.2.3.4.5 or "version 1.2.3.4"
            try:
                ipaddress.IPv4Address(".".join(run.parts[i : j + 1]))
            except ValueError:
                return None
            return "IP_ADDRESS"
        if 13 <= len(d) <= 19 and d.startswith(_CARD_PREFIXES):
            card_groups = not inner or (
                len(set(inner)) == 1 and inner[0] in (" ", "-") and _card_shape(sizes)
            )
            if card_groups and _luhn(d):
                return "CREDIT_CARD"
        if not 7 <= len(d) <= 15 or len(sizes) > 7 or sizes.count(1) > 2 or inner == ["."]:
            return None  # inner == ["."]: a decimal number such as 83.3157385
        plus = text[lead] == "+"
        if plus or d.startswith("00"):
            national = d[2:] if d.startswith("00") and not plus else d
            for k in range(i + 1, j):  # "+44 (0)20 ...": the (0) is dialled only nationally
                if run.parts[k] == "0" and "(" in run.seps[k - 1] and ")" in run.seps[k]:
                    cut = sum(sizes[: k - i]) - (len(d) - len(national))
                    national = national[:cut] + national[cut + 1 :]
                    break
            return "PHONE" if len(national) >= 8 and _international(national) else None
        bare = len(sizes) == 1 and text[lead] != "(" and not _TRUNK.match(d)
        if bare and _PHONE_CUE.search(text, max(0, lead - 40), lead) is None:
            return None  # bare digits: an order number, unless a trunk 0 or a cue says phone
        return "PHONE" if _national(d, sizes) else None


@dataclass(frozen=True, slots=True)
class _Run:
    """A run of digit groups: the groups, where each starts and ends, what separates them."""

    parts: list[str]
    starts: list[int]
    ends: list[int]
    seps: list[str]

    def date_at(self, i: int) -> bool:
        """2024-03-15, 15/03/2024, 3.15.24: three groups with one repeated separator."""
        seps = self.seps
        if i + 2 >= len(self.parts) or seps[i] != seps[i + 1] or seps[i] not in ("-", "/", "."):
            return False
        if (i > 0 and seps[i - 1] == seps[i]) or (i + 2 < len(seps) and seps[i + 2] == seps[i]):
            return False  # 06.12.34.56.78, 10.29.64.133: a longer chain is no date
        a, b, c = self.parts[i : i + 3]
        if len(a) == 4:
            return len(b) <= 2 and len(c) <= 2 and 1 <= int(b) <= 12 and 1 <= int(c) <= 31
        if len(a) <= 2 and len(b) <= 2 and len(c) in (2, 4):
            day_month = 1 <= int(a) <= 31 and 1 <= int(b) <= 12
            month_day = 1 <= int(a) <= 12 and 1 <= int(b) <= 31
            return day_month or month_day
        return False


def _luhn(digits: str) -> bool:
    doubled = sum(map(_LUHN_DOUBLE.__getitem__, digits[-2::-2]))
    return (sum(map(int, digits[-1::-2])) + doubled) % 10 == 0


def _card_shape(sizes: list[int]) -> bool:
    """4-4-4-4 (and a short last group up to 19 digits), Amex 4-6-5, Diners 4-6-4."""
    if sizes[0] != 4:
        return False
    if len(sizes) == 3 and sizes[1] == 6:
        return True
    return all(n == 4 for n in sizes[:-1]) and len(sizes) >= 4


def _is_phone(country: int, national: str) -> bool:
    number = phonenumbers.PhoneNumber(country_code=country, national_number=int(national))
    if national.startswith("0"):
        number.italian_leading_zero = True
        number.number_of_leading_zeros = len(national) - len(national.lstrip("0"))
    return phonenumbers.is_valid_number(number)


def _international(digits: str) -> bool:
    for size in (1, 2, 3):
        if int(digits[:size]) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            national = digits[size:]
            return 4 <= len(national) <= 14 and _is_phone(int(digits[:size]), national)
    return False


def _national(digits: str, sizes: list[int]) -> bool:
    """A number written the way one of the default countries writes it at home."""
    grouped = len(sizes) == 1 or (2 <= sizes[0] <= 6 and len(sizes) <= 5)
    for country, trunk, lengths, first, shapes in _NATIONAL:
        if len(digits) not in lengths or digits[0] not in first or not digits.startswith(trunk):
            continue
        shaped = tuple(sizes) in shapes if shapes is not None else grouped
        if shaped and _is_phone(country, digits[len(trunk) :]):
            return True
    return False
