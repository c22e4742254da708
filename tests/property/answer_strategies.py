"""Hostile answers for the property tests: SSE streams and JSON, and how Envoy chunks them.

Well-formed OpenAI streams carry the planted email split across deltas anywhere
(:func:`openai_streams`); garbage streams mix every shape of event with any framing
(:func:`sse_garbage`); byte edits start from a valid stream (:data:`SSE_SEEDS`). Every answer
reaches extproc cut at arbitrary places (:class:`Chunked`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import orjson
from hypothesis import strategies as st

from tests.property.gateway import EMAIL
from tests.property.json_text import NOT_UTF8, encode, json_values, mutated

__all__ = [
    "SSE_SEEDS",
    "Chunked",
    "chunked",
    "json_answers",
    "mutated_streams",
    "openai_streams",
    "sse_garbage",
]

STREAMS = ("/v1/chat/completions", "/v1/completions")
# -- answers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunked:
    """An answer and where Envoy cut it into body chunks (``cuts``: offsets, ascending)."""

    data: bytes
    cuts: Sequence[int]

    def chunks(self) -> list[bytes]:
        edges = [0, *self.cuts, len(self.data)]
        return [self.data[a:b] for a, b in pairwise(edges)]


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> Chunked:
    """``data`` cut at arbitrary places (sometimes byte by byte, sometimes not at all)."""
    if draw(st.integers(0, 39)) == 0:
        return Chunked(data, range(1, min(len(data), 200)))  # through the first events
    cuts = draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=12, unique=True))
    return Chunked(data, tuple(sorted(c for c in cuts if c < len(data))))


_SEPARATORS = (b"\n\n", b"\r\n\r\n", b"\n\r\n")
_WORDS = ("hello", "world", "the", "mail", "to", "me", "at", ",", ".", "é", "漢字", "42")


@st.composite
def _text_with_email(draw: st.DrawFn) -> str:
    """Words and the email, whitespace-separated (the email always a word of its own)."""
    words = draw(
        st.lists(st.one_of(st.sampled_from(_WORDS), st.just(EMAIL)), min_size=1, max_size=12)
    )
    if EMAIL not in words:
        words.insert(draw(st.integers(0, len(words))), EMAIL)
    seps = draw(
        st.lists(st.sampled_from((" ", "\n", " , ")), min_size=len(words), max_size=len(words))
    )
    return "".join(w + s for w, s in zip(words, seps, strict=True))


def _pieces(draw: st.DrawFn, text: str) -> list[str]:
    """``text`` split into deltas at arbitrary places (through the email too)."""
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(text) - 1)), max_size=6)))
    edges = [0, *[c for c in cuts if c < len(text)], len(text)]
    return [text[a:b] for a, b in pairwise(edges) if b > a]


def _delta(field: str, piece: str, first: bool) -> dict[str, Any]:
    if field == "text":
        return {"text": piece}
    if field == "tool":
        call: dict[str, Any] = {"index": 0, "function": {"arguments": piece}}
        if first:
            call |= {"id": "call_1", "type": "function"}
            call["function"]["name"] = "send"
        return {"delta": {"tool_calls": [call]}}
    if field == "function_call":
        return {
            "delta": {"function_call": {"arguments": piece} | ({"name": "send"} if first else {})}
        }
    return {"delta": {field: piece} | ({"role": "assistant"} if first else {})}


@st.composite
def openai_streams(draw: st.DrawFn, fields: tuple[str, ...]) -> tuple[bytes, bool]:
    """A well-formed OpenAI SSE answer whose text (in one of ``fields``) carries the email.

    One or two choices, interleaved; the email split across deltas anywhere; keep-alive
    comments between events; ``\\n\\n`` or ``\\r\\n\\r\\n`` framing; a usage chunk and
    ``[DONE]`` at the end, or not. Returns the bytes and whether ``[DONE]`` was sent.
    """
    queues = []
    for index in range(draw(st.integers(1, 2))):
        field = draw(st.sampled_from(fields))
        pieces = _pieces(draw, draw(_text_with_email()))
        finish = draw(st.booleans())
        choices = []
        for n, piece in enumerate(pieces):
            last = n == len(pieces) - 1
            choice = {"index": index, **_delta(field, piece, n == 0)}
            choice["finish_reason"] = "stop" if (last and finish) else None
            choices.append(choice)
        queues.append(choices)
    order = draw(st.permutations([i for i, q in enumerate(queues) for _ in q]))
    events = []
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "chat"}
    for i in order:
        choice = queues[i].pop(0)
        events.append(b"data: " + orjson.dumps({**base, "choices": [choice]}))
        if draw(st.integers(0, 4)) == 0:
            events.append(b": keep-alive")
    usage = {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12}
    if draw(st.booleans()):
        events.append(b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}))
    done = draw(st.booleans())
    if done:
        events.append(b"data: [DONE]")
    separator = draw(st.sampled_from(_SEPARATORS[:2]))
    if separator == b"\r\n\r\n":
        events = [e.replace(b"\n", b"\r\n") for e in events]
    return b"".join(e + separator for e in events), done


_chunk_base = {"id": "c", "object": "chat.completion.chunk", "model": "chat"}
_odd_choices = st.sampled_from(
    (
        5,
        None,
        [5, None, "x"],
        [{"delta": 5}],
        [{"delta": {"content": 5}}],
        [{"index": "x", "delta": {"content": EMAIL}}],
        [{"delta": {"tool_calls": [{"index": "a", "function": {"arguments": EMAIL}}]}}],
        [
            {
                "delta": {
                    "tool_calls": [
                        5,
                        {"function": 5},
                        {"index": 1.5, "function": {"arguments": "x"}},
                    ]
                }
            }
        ],
        [{"delta": {"tool_calls": {"function": {}}}, "finish_reason": "length"}],
        [{"text": 5, "finish_reason": "stop"}],
        [{"delta": None, "text": EMAIL}],
        [],
    )
)
_sse_atoms = st.one_of(
    _odd_choices.map(lambda c: b"data: " + orjson.dumps({**_chunk_base, "choices": c})),
    _text_with_email().map(
        lambda t: (
            b"data: "
            + orjson.dumps({**_chunk_base, "choices": [{"index": 0, "delta": {"content": t}}]})
        )
    ),
    json_values.map(lambda v: b"data: " + encode(v)),
    st.binary(max_size=40).map(lambda b: b"data: " + b),
    st.sampled_from(
        (
            b"data: [DONE]",
            b"data:[DONE]",
            b"data:  [DONE]",
            b": ping",
            b"event: message",
            b"id: 7\nretry: 10",
            b"data",
            b"data: {\ndata: }",
            b'data: {"usage": {"prompt_tokens": 1e400}}',
            b'data: {"choices": [{"index": 1000000000000000000000000000000, "text": "hi"}]}',
            b'data: {"choices": [], "usage": {"prompt_tokens": -1, "completion_tokens": "x"}}',
        )
    ),
    st.binary(max_size=60),
    # A huge event: 20 KB to 200 KB of content (more than the stream scanner ever holds).
    st.tuples(st.integers(20_000, 200_000), st.sampled_from(("a", "a ", EMAIL + " "))).map(
        lambda p: (
            b"data: "
            + orjson.dumps(
                {
                    **_chunk_base,
                    "choices": [{"index": 0, "delta": {"content": (p[1] * p[0])[: p[0]]}}],
                }
            )
        )
    ),
)


@st.composite
def sse_garbage(draw: st.DrawFn) -> bytes:
    """Events of every shape, any framing (lone CRs, none at all), ``[DONE]`` anywhere."""
    atoms = draw(st.lists(_sse_atoms, max_size=8))
    ends = st.sampled_from((*_SEPARATORS, b"\r\r", b"\n", b""))
    return b"".join(atom + draw(ends) for atom in atoms)


# -- JSON answers -------------------------------------------------------------------------


def _text(draw: st.DrawFn) -> str:
    words = draw(st.lists(st.sampled_from(("hi", "mail", "me", ",", "\n", "漢字")), max_size=4))
    at = draw(st.integers(0, len(words)))
    return " ".join([*words[:at], EMAIL, *words[at:]])


@st.composite
def json_answers(draw: st.DrawFn, endpoint: str) -> tuple[bytes, bool]:
    """A well-formed answer with the email in every text a client reads, or any JSON text."""
    if draw(st.integers(0, 3)) == 0:
        return draw(json_values).encode("utf-8", "surrogatepass"), False
    if endpoint == "/v1/completions":
        choices = [{"index": 0, "text": _text(draw), "finish_reason": "stop"}]
    else:
        message: dict[str, Any] = {"role": "assistant", "content": _text(draw)}
        for name in draw(st.sets(st.sampled_from(("refusal", "reasoning_content", "tool_calls")))):
            if name == "tool_calls":
                function = {"name": "send", "arguments": _text(draw)}
                message[name] = [{"id": "c", "type": "function", "function": function}]
            else:
                message[name] = _text(draw)
        choices = [{"index": 0, "message": message, "finish_reason": "stop"}]
    usage = {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12}
    return orjson.dumps({"id": "x", "object": "o", "choices": choices, "usage": usage}), True


# -- byte edits of a valid stream ------------------------------------------------------

_SSE_TOKENS = (
    b"\n",
    b"\n\n",
    b"\r",
    b"\r\n",
    b"data: ",
    b"data: [DONE]\n\n",
    b": ping\n\n",
    b'{"choices":',
    b'"content":',
    b'"tool_calls":[',
    b'"finish_reason":"stop"',
    b'"index":1',
    b"{",
    b"}",
    b'"',
    b"\\u0000",
    b"\\ud800",
    *NOT_UTF8,
)


def _sse_seed(endpoint: str) -> bytes:
    base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "chat"}
    if endpoint == "/v1/completions":
        pieces = [{"index": 0, "text": t} for t in ("mail jane", ".doe@exam", "ple.com now")]
    else:
        pieces = [{"index": 0, "delta": {"content": t}} for t in ("mail jane", ".doe@exam")]
        pieces += [
            {"index": 1, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "x"}}]}},
            {"index": 0, "delta": {"content": "ple.com now"}, "finish_reason": "stop"},
        ]
    events = [b"data: " + orjson.dumps({**base, "choices": [p]}) for p in pieces]
    usage = {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12}
    events += [b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}), b"data: [DONE]"]
    return b"".join(e + b"\n\n" for e in events)


SSE_SEEDS = {endpoint: _sse_seed(endpoint) for endpoint in STREAMS}


def mutated_streams(endpoint: str) -> st.SearchStrategy[bytes]:
    return mutated(SSE_SEEDS[endpoint], _SSE_TOKENS)
