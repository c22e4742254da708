"""The answer step: only for requests whose tenant's guard policy scans answers.

Everyone else's answers never pass through Python (the response phases are off; DESIGN
decision 4). For a guarded tenant extproc switches them on for that request and this
module rewrites the answer on its way to the client:

- **JSON** answers are collected and rewritten once complete: every text a client reads
  (``choices[].message.content``, tool-call arguments, ``choices[].text``) goes through
  the request's answer redactor and, with ``restore: true``, gets the prompt's
  placeholders mapped back.
- **SSE** streams stay streams: each event is rewritten as it passes, the text of each
  choice (and of each tool call) through its own hold-back
  :class:`~smesh.extproc.guards.stream.StreamScanner`, so an entity split over any
  chunking is still caught and none is ever half-sent. Held text is released into the
  event that finishes its choice, or into a last chunk before ``[DONE]``.

Fails closed: if scanning raises, a JSON answer is replaced by an error object and a
stream ends with an SSE error event and ``[DONE]``; nothing more of that answer passes.
With ``answers: block`` an answer carrying PII is withheld the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson

from smesh.extproc.endpoints import EndpointSpec
from smesh.extproc.guarding import CompiledGuard
from smesh.extproc.guards.redact import Redactor
from smesh.extproc.guards.stream import StreamScanner
from smesh.extproc.guards.texts import map_answer_texts
from smesh.extproc.sse import SseSplitter, event_data, format_event

__all__ = ["MAX_SCANNED_ANSWER", "AnswerRewriter"]

log = logging.getLogger(__name__)

# A JSON answer is scanned whole; past this size it is withheld rather than sent unscanned.
MAX_SCANNED_ANSWER = 16 << 20
DONE_EVENT = b"data: [DONE]\n\n"
_DONE = b"[DONE]"
# Fields a synthetic last chunk copies from the stream's chunks.
_CHUNK_IDENTITY = ("id", "object", "created", "model")
# The text fields of a chat delta a person reads (besides tool and function arguments).
_DELTA_TEXTS = ("content", "reasoning_content", "refusal")


def _place(choice: dict[str, Any], name: str, text: str) -> None:
    """Append ``text`` where a scanner named ``name`` reads from, in ``choice``."""
    if name == "text":
        holder: dict[str, Any] = choice
        field = "text"
    else:
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            delta = choice["delta"] = {}
        if name in _DELTA_TEXTS:
            holder, field = delta, name
        elif name == "function_call":
            call = delta.get("function_call")
            if not isinstance(call, dict):
                call = delta["function_call"] = {}
            holder, field = call, "arguments"
        else:  # tool<k>
            holder = {}
            tool = {"index": int(name.removeprefix("tool")), "function": holder}
            calls = delta.get("tool_calls")
            delta["tool_calls"] = [*(calls if isinstance(calls, list) else []), tool]
            field = "arguments"
    current = holder.get(field)
    holder[field] = (current if isinstance(current, str) else "") + text


def _error_object(code: str, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "guard_error", "code": code, "param": None}}


class AnswerRewriter:
    """One answer of one guarded request: chunks in, rewritten chunks out."""

    __slots__ = (
        "_closed",
        "_guard",
        "_json",
        "_json_size",
        "_kind",
        "_last_chunk",
        "_redactor",
        "_restore",
        "_scanners",
        "_spec",
        "_splitter",
    )

    def __init__(self, guard: CompiledGuard, spec: EndpointSpec, prompt: Redactor | None) -> None:
        assert guard.pii is not None
        base = prompt if prompt is not None else Redactor(guard.pii, "off", guard.hash_key)
        self._redactor = base.with_action(guard.answers)
        self._restore = guard.restore and prompt is not None
        self._guard = guard
        self._spec = spec
        self._kind = ""  # "json", "sse" or "" (passed through untouched)
        self._json: list[bytes] = []
        self._json_size = 0
        self._splitter = SseSplitter()
        self._scanners: dict[tuple[int, str], StreamScanner] = {}
        self._last_chunk: dict[str, Any] = {}
        self._closed = False

    def begin(self, status: int, headers: Mapping[str, str]) -> bool:
        """Look at the answer's headers; whether its body will be rewritten."""
        media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if not 200 <= status < 300:
            return False  # an upstream error carries no generated text
        if media == "text/event-stream":
            self._kind = "sse"
        elif media == "application/json":
            self._kind = "json"
        return bool(self._kind)

    def feed(self, chunk: bytes, end_of_stream: bool) -> bytes:
        """What to send the client instead of ``chunk``."""
        if self._closed:
            return b""
        try:
            if self._kind == "json":
                return self._feed_json(chunk, end_of_stream)
            if self._kind == "sse":
                return self._feed_sse(chunk, end_of_stream)
        except Exception:
            log.exception("the answer guard failed; withholding the rest of the answer")
            return self._fail("guard_failed", "the answer could not be checked; it was withheld")
        return chunk

    # -- JSON ----------------------------------------------------------------------------

    def _feed_json(self, chunk: bytes, end_of_stream: bool) -> bytes:
        self._json_size += len(chunk)
        if self._json_size > MAX_SCANNED_ANSWER:
            return self._fail("answer_too_large", "the answer is too large to be checked")
        self._json.append(chunk)
        if not end_of_stream:
            return b""  # held until complete: a JSON answer is scanned whole
        raw = b"".join(self._json)
        self._json.clear()
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self._fail("invalid_answer", "the model's answer is not valid JSON")
        rewritten = map_answer_texts(self._spec.path, answer, self._text)
        if self._redactor.blocked:
            return self._fail("pii_in_answer", self._blocked_message())
        return orjson.dumps(rewritten)

    def _text(self, text: str) -> str:
        out = self._redactor.apply(text)
        return self._redactor.restore(out) if self._restore else out

    # -- SSE -----------------------------------------------------------------------------

    def _feed_sse(self, chunk: bytes, end_of_stream: bool) -> bytes:
        events = self._splitter.feed(chunk)
        if end_of_stream and (rest := self._splitter.flush()):
            events.append(rest)
        out = [self._event(event) for event in events]
        if end_of_stream and not self._closed:
            out.append(self._flush_all())
        return b"".join(out)

    def _event(self, event: bytes) -> bytes:
        if self._closed:
            return b""
        data = event_data(event)
        if data is None:
            return event  # comments, keep-alives
        if data == _DONE:
            # The answer ends here: whatever an upstream sends after [DONE] is dropped.
            rest = self._flush_all()
            if self._closed:
                return rest  # the flush withheld the answer (its error event ends it)
            self._closed = True
            return rest + event
        chunk = orjson.loads(data)
        if not isinstance(chunk, dict) or not isinstance(chunk.get("choices"), list):
            return event
        self._last_chunk = chunk
        for choice in chunk["choices"]:
            if isinstance(choice, dict):
                self._choice(choice)
        if self._redactor.blocked:
            return self._fail("pii_in_answer", self._blocked_message())
        return format_event(orjson.dumps(chunk))

    def _choice(self, choice: dict[str, Any]) -> None:
        index = choice.get("index", 0) if isinstance(choice.get("index", 0), int) else 0
        finishing = choice.get("finish_reason") is not None
        delta = choice.get("delta")
        if isinstance(delta, dict):
            for field in _DELTA_TEXTS:  # content, reasoning, a refusal: all read by people
                self._rewrite_field(delta, field, index, field)
            call = delta.get("function_call")
            if isinstance(call, dict):
                self._rewrite_field(call, "arguments", index, "function_call")
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                for position, tool in enumerate(calls):
                    function = tool.get("function") if isinstance(tool, dict) else None
                    if isinstance(function, dict):
                        key = tool.get("index", position)
                        self._rewrite_field(function, "arguments", index, f"tool{key}")
            if finishing:
                self._release_choice(index, choice)
        elif "text" in choice or finishing:
            self._rewrite_field(choice, "text", index, "text")
            if finishing:
                self._release_choice(index, choice)

    def _release_choice(self, index: int, choice: dict[str, Any]) -> None:
        """Every text this choice still holds, into the chunk that finishes it."""
        for key in sorted(k for k in self._scanners if k[0] == index):
            rest = self._scanners.pop(key).flush()
            if rest:
                _place(choice, key[1], rest)

    def _scanner(self, index: int, name: str) -> StreamScanner:
        key = (index, name)
        scanner = self._scanners.get(key)
        if scanner is None:
            scanner = StreamScanner(self._redactor, restore=self._restore)
            self._scanners[key] = scanner
        return scanner

    def _rewrite_field(self, holder: dict[str, Any], field: str, index: int, name: str) -> None:
        text = holder.get(field)
        if isinstance(text, str) and text:
            holder[field] = self._scanner(index, name).feed(text)

    def _flush_all(self) -> bytes:
        """Everything still held, as one last chunk per choice and field (before [DONE])."""
        out = []
        for (index, name), scanner in sorted(self._scanners.items()):
            rest = scanner.flush()
            if not rest:
                continue
            chunk: dict[str, Any] = {
                k: v for k, v in self._last_chunk.items() if k in _CHUNK_IDENTITY
            }
            choice: dict[str, Any] = {"index": index, "finish_reason": None}
            _place(choice, name, rest)
            chunk["choices"] = [choice]
            out.append(format_event(orjson.dumps(chunk)))
        self._scanners.clear()
        if self._redactor.blocked:
            return self._fail("pii_in_answer", self._blocked_message())
        return b"".join(out)

    # -- failure -------------------------------------------------------------------------

    def _blocked_message(self) -> str:
        types = ", ".join(sorted(self._redactor.counts))
        name = self._guard.name
        return f"the answer was withheld by guard policy {name!r}: it contains PII ({types})"

    def _fail(self, code: str, message: str) -> bytes:
        """End the answer here: an error object (JSON) or event (SSE); nothing after it."""
        if self._closed:
            return b""
        self._closed = True
        self._scanners.clear()
        body = orjson.dumps(_error_object(code, message))
        if self._kind == "sse":
            return format_event(body) + DONE_EVENT
        return body
