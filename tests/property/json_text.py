"""Raw JSON text and bytes for the property tests: what a dict cannot express.

Duplicate keys, lone-surrogate escapes, numbers no double holds, raw control characters and
bytes that are not UTF-8 are exactly what a parser must survive, so bodies are built as text
(and bytes), never from Python objects. Also here: byte edits of a valid input (cheap to
draw, so the slow run can afford tens of thousands) and the values a protobuf ``Struct``
holds (metadata, JWT claims).
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from hypothesis import strategies as st

from tests.property.gateway import EMAIL

__all__ = [
    "NOT_UTF8",
    "NUMBERS",
    "array",
    "dumps",
    "encode",
    "json_values",
    "mutated",
    "obj",
    "struct_values",
    "texts",
    "words",
]

_ESCAPES = (
    "\\ud800",  # lone high surrogate
    "\\udc00",  # lone low surrogate
    "\\ud800\\u0041",  # high surrogate then not a low one
    "\\ud83d\\ude00",  # a valid pair
    "\\u0000",
    "\\x41",  # not a JSON escape
    "\\uZZZZ",
    "\\",
    "\x01",  # a raw control character
    "\\/",
    '\\"',
)
NUMBERS = (
    "0",
    "-0",
    "1e400",
    "-1e400",
    "1e-400",
    "01",
    "1.",
    ".5",
    "NaN",
    "Infinity",
    "-Infinity",
    "1E+2",
    "18446744073709551616",
    "18446744073709551615",
    "9223372036854775807",
    "-9223372036854775809",
    "2.5",
    "1" * 400,
)
# Bytes that are not UTF-8: a stray continuation, overlongs, an encoded surrogate, past U+10FFFF,
# a sequence cut short, bytes that never occur.
NOT_UTF8 = (
    b"\x80",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xe2\x82",
    b"\xff",
    b"\xfe",
)


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def array(items: list[str]) -> str:
    return "[" + ",".join(items) + "]"


def obj(pairs: list[tuple[str, str]]) -> str:
    """An object from (raw key text, raw value text) pairs: keys may repeat."""
    return "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}"


# -- raw JSON text --------------------------------------------------------------------------

# Keys a request or a content part may carry, and any key at all.
_KEYS = (
    "model",
    "messages",
    "prompt",
    "input",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "type",
    "text",
    "content",
    "role",
)
texts = st.text(max_size=20)
words = st.lists(st.one_of(st.text(max_size=12), st.just(EMAIL)), max_size=5).map(" ".join)
_strings = st.one_of(
    texts.map(dumps),
    st.lists(
        st.one_of(texts.map(lambda s: dumps(s)[1:-1]), st.sampled_from(_ESCAPES)), max_size=6
    ).map(lambda parts: '"' + "".join(parts) + '"'),
)
_numbers = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats().map(lambda f: repr(f) if math.isfinite(f) else str(f)),
    st.sampled_from(NUMBERS),
)
_scalars = st.one_of(st.sampled_from(("true", "false", "null")), _numbers, _strings)
_keys = st.one_of(st.sampled_from(_KEYS).map(dumps), _strings)


def _extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.lists(children, max_size=4).map(array),
        st.lists(st.tuples(_keys, children), max_size=4).map(obj),
    )


json_values = st.recursive(_scalars, _extend, max_leaves=10)


def encode(text: str) -> bytes:
    # A lone surrogate in generated text becomes its (invalid) UTF-8 bytes, as a buggy client sends.
    return text.encode("utf-8", "surrogatepass")


@st.composite
def mutated(draw: st.DrawFn, seed: bytes, tokens: tuple[bytes, ...]) -> bytes:
    """``seed`` after 1..4 edits at arbitrary places."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.integers(0, 4))
        at = draw(st.integers(0, 2**16)) % (len(data) + 1)
        if kind == 0:
            data[at:at] = draw(st.sampled_from(tokens))
        elif kind == 1:
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif kind == 2:
            del data[at : at + draw(st.integers(1, 16))]
        elif kind == 3:
            start = draw(st.integers(0, 2**16)) % (len(data) + 1)
            data[at:at] = data[start : start + draw(st.integers(1, 32))]
        elif at < len(data):
            data[at] = draw(st.integers(0, 255))
    return bytes(data)


# -- access-log entries ---------------------------------------------------------------------


def struct_values(finite: bool) -> st.SearchStrategy[Any]:
    """What a metadata Struct holds: numbers are doubles (NaN and infinities unless ``finite``).

    Mostly a scalar; sometimes a small list or struct of them, nested.
    """
    numbers = st.floats(allow_nan=not finite, allow_infinity=not finite)
    scalars = st.one_of(
        st.none(), st.booleans(), numbers, st.integers(-(2**53), 2**53), st.text(max_size=12)
    )
    nested = st.recursive(
        scalars,
        lambda c: st.one_of(
            st.lists(c, max_size=4), st.dictionaries(st.text(max_size=8), c, max_size=3)
        ),
        max_leaves=6,
    )
    return st.one_of(scalars, scalars, nested)
