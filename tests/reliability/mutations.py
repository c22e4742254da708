"""Seeded mutations of valid OpenAI requests, for fuzzing the gateway through Envoy.

Each :class:`Mutant` is a complete, valid HTTP/1.1 request (the framing stays valid;
what it carries does not): a body with flipped bytes, cut short, with duplicate keys,
nested hundreds of levels deep, huge, not UTF-8, with lone surrogate escapes, wrong
types or extra fields, empty, under another content type; or odd headers. ``kind``
names what was done, for the counts.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["BASES", "Mutant", "mutate"]

# (path, body): valid requests for the fuzz tenant (alpha-chat and shared-embed allowed).
BASES: list[tuple[str, dict[str, Any]]] = [
    (
        "/v1/chat/completions",
        {
            "model": "alpha-chat",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hello there"},
            ],
            "max_tokens": 8,
            "temperature": 0.5,
        },
    ),
    (
        "/v1/chat/completions",
        {
            "model": "alpha-gpt",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ),
    (
        "/v1/chat/completions",
        {"model": "alpha-chat", "messages": [{"role": "user", "content": "x"}]},
    ),
    ("/v1/completions", {"model": "alpha-chat", "prompt": "once upon", "max_tokens": 8}),
    ("/v1/completions", {"model": "alpha-gpt", "prompt": ["a", "b"], "stream": True}),
    ("/v1/embeddings", {"model": "shared-embed", "input": ["a", "b"]}),
    ("/v1/embeddings", {"model": "shared-embed", "input": "single"}),
]

# Values of every JSON type; integers stay small so that no max_tokens here spends the
# fuzz tenant's token budget (huge values are the budget tests' business).
ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1.5,
    1e308,
    10**6,
    -(10**6),
    "",
    "x",
    "8",
    "\u0000",
    [],
    [1],
    [[]],
    {},
    {"a": 1},
    [{"role": "user"}],
    {"role": "user", "content": "x"},
]
OTHER_MODELS: list[Any] = ["beta-chat", "orphan-chat", "no-such-model", "", 7, None, ["alpha-chat"]]
INVALID_UTF8 = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80", b"\xfe\xfe"]
SURROGATES = ["\\ud800", "\\udfff", "\\ud800\\u0041", "\\udc00\\ud800", "\\ud83d\\ude00"]
CONTENT_TYPES = [
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "application/json; charset=latin-1",
    "application/json, text/plain",
    "*/*",
    "",
]


@dataclass(frozen=True)
class Mutant:
    kind: str
    path: str
    body: bytes
    headers: tuple[tuple[str, str | bytes], ...] = ()
    content_type: str | None = "application/json"


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside ``value`` (dict keys and list indices)."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def _set(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    """A copy of ``value`` with the item at ``path`` replaced by ``new``."""
    if not path:
        return new
    copy: Any = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _set(value[path[0]], path[1:], new)
    return copy


def _nested(rng: random.Random) -> str:
    depth = int(
        rng.choice([100, 200, 254, 255, 300, 500, 1000, 1023, 1024, 1025, rng.randint(100, 1000)])
    )
    opener, closer = rng.choice([("[", "]"), ('{"a":', "}"), ('[{"b":', "}]")])
    if opener == '[{"b":':
        depth //= 2
    return opener * depth + "1" + closer * depth


def byte_flip(rng: random.Random, path: str, body: dict[str, Any]) -> Mutant:
    data = bytearray(_dumps(body))
    for _ in range(rng.randint(1, 5)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return Mutant("byte-flip", path, bytes(data))


def truncate(rng: random.Random, path: str, body: dict[str, Any]) -> Mutant:
    data = _dumps(body)
    return Mutant("truncate", path, data[: rng.randrange(len(data))])


def duplicate_model(rng: random.Random, path: str, body: dict[str, Any]) -> Mutant:
    other = json.dumps(rng.choice(OTHER_MODELS))
    data = _dumps(body)
    if rng.random() < 0.5:  # the other model first: a last-key-wins parser takes ours
        return Mutant("dup-model-first", path, b'{"model": ' + other.encode() + b", " + data[1:])
    return Mutant("dup-model-last", path, data[:-1] + b', "model": ' + other.encode() + b"}")


def deep_nesting(rng: random.Random, path: str, body: dict[str, Any]) -> Mutant:
    nested = _nested(rng)
    where = rng.choice(["extra", "model", "messages", "content", "input", "stream_options"])
    data = _dumps({**body, where: "__NEST__"}) if where != "content" else _dumps(body)
    if where == "content" and "messages" in body:
        data = _dumps(_set(body, ("messages", 0, "content"), "__NEST__"))
    return Mutant("deep-nesting", path, data.replace(b'"__NEST__"', nested.encode()))


def huge_string(rng: random.Random, path: str, body: dict[str, Any]) -> Mutant:
    size = rng.choice([10_000, 100_000, 500_000, 900_000, 2_000_000])
    text = rng.choice(["a", "é", "🙂", " word", "\\n"]) * (size // 4)
    field = rng.choice(["model", "extra", "prompt", "input", "content"])
    if field == "content" and "messages" in body:
        return Mutant("huge-string", path, _dumps(_set(body, ("messages", 0, "content"), text)))
    return Mutant("huge-string", path, _dumps({**body, field: text}))


def invalid_utf8(rng: random.Random, path: str, body: dict[str, Any]) -> Mutant:
    data = _dumps(body)
    quotes = [i for i, byte in enumerate(data) if byte == ord('"')]
    at = rng.choice(quotes) + 1
    return Mutant("invalid-utf8", path, data[:at] + rng.choice(INVALID_UTF8) + data[at:])


def surrogate(rng: random.Random, path: str, body: dict[str, Any]) -> Mutant:
    field = rng.choice(["model", "content", "extra", "role"])
    escaped = rng.choice(SURROGATES)
    if field in {"content", "role"} and "messages" in body:
        data = _dumps(_set(body, ("messages", 0, field), "__SUR__"))
    else:
        data = _dumps({**body, field: "__SUR__"})
    return Mutant("lone-surrogate", path, data.replace(b"__SUR__", escaped.encode()))


def wrong_type(rng: random.Random, path: str, body: dict[str, Any]) -> Mutant:
    where = rng.choice(_paths(body))
    return Mutant("wrong-type", path, _dumps(_set(body, where, rng.choice(ODD_VALUES))))


def extra_fields(rng: random.Random, path: str, body: dict[str, Any]) -> Mutant:
    names = ["", "__proto__", "model\u0000", "MODEL", "Model", "x" * 300, "stream ", "tools", "n"]
    extra = {rng.choice(names) + str(i): rng.choice(ODD_VALUES) for i in range(rng.randint(1, 20))}
    return Mutant("extra-fields", path, _dumps({**body, **extra}))


def empty_body(rng: random.Random, path: str, body: dict[str, Any]) -> Mutant:
    del rng, body
    return Mutant("empty-body", path, b"")


def not_an_object(rng: random.Random, path: str, body: dict[str, Any]) -> Mutant:
    value = rng.choice([[], [body], "text", 1, None, True, [{"model": "alpha-chat"}]])
    return Mutant("not-an-object", path, _dumps(value))


def content_type(rng: random.Random, path: str, body: dict[str, Any]) -> Mutant:
    return Mutant(
        "content-type", path, _dumps(body), content_type=rng.choice(CONTENT_TYPES) or None
    )


def odd_headers(rng: random.Random, path: str, body: dict[str, Any]) -> Mutant:
    choice = rng.randrange(5)
    headers: list[tuple[str, str | bytes]]
    if choice == 0:
        headers = [("x-huge", "h" * rng.choice([1_000, 8_000, 30_000, 50_000]))]
    elif choice == 1:
        headers = [("x-odd!#$%&'*+.^_`|~", "1"), ("X-UPPER-CASE", "2"), ("x-empty", "")]
    elif choice == 2:
        # Up to Envoy's limit of 100 request headers (with the 5 every request carries).
        headers = [(f"x-many-{i}", str(i)) for i in range(rng.choice([50, 80, 90, 93, 95]))]
    elif choice == 3:
        headers = [("x-latin", b"caf\xe9 \xff"), ("x-tab", "a\tb")]
    else:
        headers = [("content-type", "text/plain")]  # a second content type
    return Mutant("odd-headers", path, _dumps(body), tuple(headers))


MUTATORS: list[Callable[[random.Random, str, dict[str, Any]], Mutant]] = [
    byte_flip,
    truncate,
    duplicate_model,
    deep_nesting,
    huge_string,
    invalid_utf8,
    surrogate,
    wrong_type,
    extra_fields,
    empty_body,
    not_an_object,
    content_type,
    odd_headers,
]


def mutate(rng: random.Random) -> Mutant:
    """One mutant of a random base request (sometimes sent to another endpoint's path)."""
    path, body = rng.choice(BASES)
    mutant = rng.choice(MUTATORS)(rng, path, body)
    if rng.random() < 0.05:
        other = rng.choice(["/v1/chat/completions", "/v1/completions", "/v1/embeddings"])
        mutant = Mutant(mutant.kind, other, mutant.body, mutant.headers, mutant.content_type)
    return mutant
