"""Which strings of an OpenAI request or answer a guard reads, and how they are rewritten."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from smesh.extproc.guards.texts import (
    answer_texts,
    map_answer_texts,
    map_request_texts,
    request_texts,
)

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"


def upper(text: str) -> str:
    return text.upper()


CHAT_BODY: dict[str, Any] = {
    "model": "m",
    "temperature": 0.2,
    "messages": [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look at this"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "input_audio", "input_audio": {"data": "UklGRg", "format": "wav"}},
                {"type": "text", "text": "and this"},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"q": "x"}'},
                }
            ],
        },
        {"role": "assistant", "content": None, "function_call": {"name": "g", "arguments": "{}"}},
        {"role": "tool", "tool_call_id": "c1", "content": "tool says hi"},
    ],
    "tools": [{"type": "function", "function": {"name": "f", "description": "not user text"}}],
}


def test_chat_texts_in_document_order() -> None:
    """Chat text comes from contents, text parts, tool-call and function-call arguments."""
    assert list(request_texts(CHAT, CHAT_BODY)) == [
        "be brief",
        "look at this",
        "and this",
        '{"q": "x"}',
        "{}",
        "tool says hi",
    ]


def test_chat_map_rewrites_only_texts() -> None:
    """Mapping changes the texts and leaves model, tools, images and audio as they were."""
    out = map_request_texts(CHAT, CHAT_BODY, upper)
    assert out["messages"][0]["content"] == "BE BRIEF"
    parts = out["messages"][1]["content"]
    assert [p.get("text") for p in parts] == ["LOOK AT THIS", None, None, "AND THIS"]
    assert parts[1] is CHAT_BODY["messages"][1]["content"][1]
    assert out["messages"][2]["tool_calls"][0]["function"]["arguments"] == '{"Q": "X"}'
    assert out["messages"][3]["function_call"]["arguments"] == "{}"
    assert out["messages"][4]["content"] == "TOOL SAYS HI"
    assert out["tools"] is CHAT_BODY["tools"]
    assert out["model"] == "m" and out["temperature"] == 0.2


def test_map_never_mutates_the_body() -> None:
    """The body given is left exactly as it was."""
    before = copy.deepcopy(CHAT_BODY)
    map_request_texts(CHAT, CHAT_BODY, upper)
    assert before == CHAT_BODY


def test_unchanged_containers_are_shared() -> None:
    """When fn changes nothing, the messages list is the very same object (no copying)."""
    out = map_request_texts(CHAT, CHAT_BODY, lambda t: t)
    assert out is not CHAT_BODY
    assert out["messages"] is CHAT_BODY["messages"]


@pytest.mark.parametrize(
    ("prompt", "texts", "mapped"),
    [
        ("one prompt", ["one prompt"], "ONE PROMPT"),
        (["first", "second"], ["first", "second"], ["FIRST", "SECOND"]),
        ([101, 2023, 102], [], [101, 2023, 102]),
        ([[101, 2023], [102]], [], [[101, 2023], [102]]),
        (["text", 7, None], ["text"], ["TEXT", 7, None]),
    ],
    ids=["string", "strings", "token-ids", "token-id-batches", "mixed"],
)
def test_completion_prompt(prompt: Any, texts: list[str], mapped: Any) -> None:
    """A completion prompt is text when it is a string or a list of strings, never token ids."""
    body = {"model": "m", "prompt": prompt}
    assert list(request_texts(COMPLETIONS, body)) == texts
    assert map_request_texts(COMPLETIONS, body, upper)["prompt"] == mapped


def test_embedding_input() -> None:
    """Embedding input strings are text; token-id input passes through."""
    assert list(request_texts(EMBEDDINGS, {"input": ["a", "b"]})) == ["a", "b"]
    assert map_request_texts(EMBEDDINGS, {"input": "a"}, upper) == {"input": "A"}
    ids = [[1, 2, 3]]
    assert map_request_texts(EMBEDDINGS, {"input": ids}, upper)["input"] is ids


ODD_SHAPES: list[tuple[str, dict[str, Any]]] = [
    ("no-messages", {"model": "m"}),
    ("messages-not-list", {"messages": "hello"}),
    ("message-not-dict", {"messages": ["hello", 3, None]}),
    ("content-number", {"messages": [{"role": "user", "content": 42}]}),
    ("content-dict", {"messages": [{"role": "user", "content": {"text": "x"}}]}),
    ("part-without-text", {"messages": [{"role": "user", "content": [{"type": "text"}]}]}),
    (
        "part-text-not-str",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]},
    ),
    ("parts-junk", {"messages": [{"role": "user", "content": [None, 1, "s", [], {}]}]}),
    (
        "tool-calls-junk",
        {"messages": [{"tool_calls": [None, {"function": None}, {"function": {"arguments": 5}}]}]},
    ),
]


@pytest.mark.parametrize("body", [b for _, b in ODD_SHAPES], ids=[n for n, _ in ODD_SHAPES])
def test_odd_shapes_pass_through(body: dict[str, Any]) -> None:
    """Whatever is not text is passed through untouched, and nothing crashes."""
    before = copy.deepcopy(body)
    assert list(request_texts(CHAT, body)) == []
    assert map_request_texts(CHAT, body, upper) == before


def test_unknown_endpoint_has_no_texts() -> None:
    """An endpoint the guards do not know yields no texts and a plain copy of the body."""
    body = {"input": "secret"}
    assert list(request_texts("/v1/other", body)) == []
    assert map_request_texts("/v1/other", body, upper) == body


CHAT_ANSWER: dict[str, Any] = {
    "id": "x",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hello there"}},
        {
            "index": 1,
            "message": {
                "role": "assistant",
                "content": [{"type": "text", "text": "part"}],
                "tool_calls": [{"function": {"name": "f", "arguments": '{"a": "b"}'}}],
                "refusal": "no",
            },
        },
    ],
    "usage": {"prompt_tokens": 3},
}


def test_chat_answer_texts() -> None:
    """Answer text comes from message content (string or parts), tool arguments and refusals."""
    assert list(answer_texts(CHAT, CHAT_ANSWER)) == ["hello there", "part", '{"a": "b"}', "no"]
    out = map_answer_texts(CHAT, CHAT_ANSWER, upper)
    assert out["choices"][0]["message"]["content"] == "HELLO THERE"
    assert out["choices"][1]["message"]["tool_calls"][0]["function"]["arguments"] == '{"A": "B"}'
    assert out["usage"] is CHAT_ANSWER["usage"]
    assert CHAT_ANSWER["choices"][0]["message"]["content"] == "hello there"


def test_completion_answer_texts() -> None:
    """A completion answer's text is choices[].text."""
    answer = {"choices": [{"text": "one"}, {"text": None}, {"index": 2}]}
    assert list(answer_texts(COMPLETIONS, answer)) == ["one"]
    assert map_answer_texts(COMPLETIONS, answer, upper)["choices"][0] == {"text": "ONE"}


def test_embedding_answer_has_no_texts() -> None:
    """Embedding answers carry vectors, not text."""
    answer = {"data": [{"embedding": [0.1, 0.2]}]}
    assert list(answer_texts(EMBEDDINGS, answer)) == []
