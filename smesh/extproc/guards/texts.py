"""Which strings in an OpenAI request or answer body are text a guard must read.

Request bodies: chat ``messages[].content`` (a string, or content parts of ``type: "text"``),
``messages[].tool_calls[].function.arguments`` and the legacy ``function_call.arguments``
(JSON strings, scanned as text), completion ``prompt`` and embedding ``input`` (a string or
a list of strings). Answers: ``choices[].message`` content, tool-call arguments, ``refusal``
and ``reasoning_content``, and completion ``choices[].text``.

What is not text passes through untouched: token-id arrays, image and audio parts, part
types this module does not know, nulls, numbers, any odd shape. Mapping never mutates the
body it is given; containers that did not change are shared with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = ["answer_texts", "map_answer_texts", "map_request_texts", "request_texts"]

_Fn = Callable[[str], str]
_CHAT = "/v1/chat/completions"
_COMPLETIONS = "/v1/completions"
_EMBEDDINGS = "/v1/embeddings"


def request_texts(endpoint: str, body: Mapping[str, Any]) -> Iterator[str]:
    """Every text in a request body, in document order."""
    found: list[str] = []
    map_request_texts(endpoint, body, _collector(found))
    return iter(found)


def map_request_texts(endpoint: str, body: Mapping[str, Any], fn: _Fn) -> dict[str, Any]:
    """A new body with every text replaced by fn(text)."""
    if endpoint == _CHAT:
        return _with(body, "messages", _map_list(body.get("messages"), fn, _map_message))
    if endpoint == _COMPLETIONS:
        return _with(body, "prompt", _map_strings(body.get("prompt"), fn))
    if endpoint == _EMBEDDINGS:
        return _with(body, "input", _map_strings(body.get("input"), fn))
    return dict(body)


def answer_texts(endpoint: str, answer: Mapping[str, Any]) -> Iterator[str]:
    """Every text in a JSON (non-streamed) answer, in document order."""
    found: list[str] = []
    map_answer_texts(endpoint, answer, _collector(found))
    return iter(found)


def map_answer_texts(endpoint: str, answer: Mapping[str, Any], fn: _Fn) -> dict[str, Any]:
    """A new answer with every text replaced by fn(text)."""
    if endpoint == _CHAT:
        return _with(answer, "choices", _map_list(answer.get("choices"), fn, _map_chat_choice))
    if endpoint == _COMPLETIONS:
        return _with(answer, "choices", _map_list(answer.get("choices"), fn, _map_text_choice))
    return dict(answer)


def _collector(found: list[str]) -> _Fn:
    def collect(text: str) -> str:
        found.append(text)
        return text  # the same object: nothing is copied

    return collect


def _with(container: Mapping[str, Any], key: str, value: Any) -> dict[str, Any]:
    out = dict(container)
    if key in container and value is not container[key]:
        out[key] = value
    return out


def _map_list(items: Any, fn: _Fn, each: Callable[[Any, _Fn], Any]) -> Any:
    if not isinstance(items, list):
        return items
    out: list[Any] | None = None
    for i, item in enumerate(items):
        new = each(item, fn)
        if new is not item:
            out = list(items) if out is None else out
            out[i] = new
    return items if out is None else out


def _map_strings(value: Any, fn: _Fn) -> Any:
    """A prompt or input: a string, or a list whose strings are texts (ints are token ids)."""
    if isinstance(value, str):
        return fn(value)
    return _map_list(value, fn, lambda item, f: f(item) if isinstance(item, str) else item)


def _map_content(content: Any, fn: _Fn) -> Any:
    if isinstance(content, str):
        return fn(content)
    return _map_list(content, fn, _map_part)


def _map_part(part: Any, fn: _Fn) -> Any:
    if (
        isinstance(part, Mapping)
        and part.get("type") == "text"
        and isinstance(part.get("text"), str)
    ):
        return _changed(part, "text", fn(part["text"]))
    return part


def _map_message(message: Any, fn: _Fn) -> Any:
    if not isinstance(message, Mapping):
        return message
    out = _changed(message, "content", _map_content(message.get("content"), fn))
    out = _changed(out, "tool_calls", _map_list(message.get("tool_calls"), fn, _map_tool_call))
    out = _changed(out, "function_call", _map_arguments(message.get("function_call"), fn))
    for key in ("refusal", "reasoning_content"):
        value = message.get(key)
        if isinstance(value, str):
            out = _changed(out, key, fn(value))
    return out


def _map_tool_call(call: Any, fn: _Fn) -> Any:
    if not isinstance(call, Mapping):
        return call
    return _changed(call, "function", _map_arguments(call.get("function"), fn))


def _map_arguments(function: Any, fn: _Fn) -> Any:
    if isinstance(function, Mapping) and isinstance(function.get("arguments"), str):
        return _changed(function, "arguments", fn(function["arguments"]))
    return function


def _map_chat_choice(choice: Any, fn: _Fn) -> Any:
    if not isinstance(choice, Mapping):
        return choice
    return _changed(choice, "message", _map_message(choice.get("message"), fn))


def _map_text_choice(choice: Any, fn: _Fn) -> Any:
    if isinstance(choice, Mapping) and isinstance(choice.get("text"), str):
        return _changed(choice, "text", fn(choice["text"]))
    return choice


def _changed(container: Any, key: str, value: Any) -> Any:
    """The container with key set to value: itself when nothing changed, else a copy."""
    if not isinstance(container, Mapping) or key not in container:
        return container
    if value is container[key]:
        return container
    return {**container, key: value}
