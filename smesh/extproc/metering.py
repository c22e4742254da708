"""Token usage: the forced ``include_usage`` on streams, and the meter of a running stream.

Why: budgets are reservations settled to the upstream's reported usage (DESIGN 8, 9).
A stream carries its usage only in a final usage-only chunk, and only when the request
set ``stream_options.include_usage``, so extproc forces that option on every streaming
request (:func:`prepare_stream_request`); Envoy reads the chunk itself
(``sse_to_metadata``). A stream that extproc does see (``budgets.enforce_in_stream``)
goes through :class:`StreamMeter`, which counts completion tokens as they pass so the
caller can cut a stream that would overrun its budget with a final SSE error event
(:meth:`StreamMeter.cut`) instead of letting it finish. Events pass through byte for
byte, whole: a partial event is held back until the chunk that completes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson

from smesh.extproc.sse import SseSplitter, event_data, format_event
from smesh.extproc.tokens import TokenCounter

__all__ = [
    "DONE_EVENT",
    "StreamMeter",
    "Usage",
    "prepare_stream_request",
]

DONE_EVENT = b"data: [DONE]\n\n"
_DONE = b"[DONE]"


class Usage(NamedTuple):
    """Tokens one answer used, as the upstream reported them."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


def _count(value: object) -> int | None:
    """A token count: a non-negative int (``bool`` is not a count)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _usage(value: object) -> Usage | None:
    """An OpenAI ``usage`` object; a missing ``completion_tokens`` (embeddings) is 0."""
    if not isinstance(value, Mapping):
        return None
    prompt = _count(value.get("prompt_tokens"))
    raw_completion = value.get("completion_tokens")
    completion = 0 if raw_completion is None else _count(raw_completion)
    if prompt is None or completion is None:
        return None
    return Usage(prompt, completion)


def prepare_stream_request(body: Mapping[str, Any]) -> Mapping[str, Any]:
    """``body`` with ``stream_options.include_usage`` forced on a streaming request.

    Returns ``body`` itself when nothing changes (not a stream, usage already asked for,
    or malformed options, which request parsing refuses first); otherwise a new body.
    """
    if body.get("stream") is not True:
        return body
    options = body.get("stream_options")
    if options is None:
        options = {}
    if not isinstance(options, Mapping) or options.get("include_usage") is True:
        return body
    return {**body, "stream_options": {**options, "include_usage": True}}


def _choice_texts(choices: list[Any]) -> list[str]:
    """The generated text pieces in a chunk's ``choices`` (chat deltas or completions)."""
    texts: list[str] = []
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta")
        if isinstance(delta, dict):
            for key in ("content", "reasoning_content"):
                text = delta.get(key)
                if isinstance(text, str) and text:
                    texts.append(text)
        else:
            text = choice.get("text")
            if isinstance(text, str) and text:
                texts.append(text)
    return texts


class StreamMeter:
    """Meter one streamed (SSE) answer on its way to the client.

    ``feed`` every upstream body chunk; send what it returns in its place (the same
    bytes, in whole events). ``usage`` is set once the upstream's usage chunk has
    passed; ``completion_tokens_seen`` grows with every content delta (counted with
    ``counter``, or one per delta without one) so a caller can enforce a budget
    mid-stream.
    """

    __slots__ = (
        "_counter",
        "_cut",
        "_splitter",
        "completion_tokens_seen",
        "done",
        "usage",
    )

    def __init__(self, counter: TokenCounter | None = None) -> None:
        self._counter = counter
        self._splitter = SseSplitter()
        self._cut = False
        self.usage: Usage | None = None
        self.completion_tokens_seen = 0
        self.done = False  # the upstream's ``data: [DONE]`` has passed

    @property
    def is_cut(self) -> bool:
        """Whether :meth:`cut` ended the stream."""
        return self._cut

    def feed(self, chunk: bytes, end_of_stream: bool) -> bytes:
        """The bytes to send the client instead of ``chunk`` (whole events only)."""
        events = self.events(chunk, end_of_stream)
        for event in events:
            self.observe(event)
        return events[0] if len(events) == 1 else b"".join(events)

    def events(self, chunk: bytes, end_of_stream: bool) -> list[bytes]:
        """The whole events ``chunk`` completes (none once cut); :meth:`observe` each."""
        if self._cut:
            return []
        events = self._splitter.feed(chunk)
        if end_of_stream:
            rest = self._splitter.flush()
            if rest:
                events.append(rest)
        return events

    def observe(self, event: bytes) -> bool:
        """Record what ``event`` tells (usage, tokens, the end); always True (kept)."""
        data = event_data(event)
        if data is None:
            return True
        if data == _DONE:
            self.done = True
            return True
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return True
        if not isinstance(chunk, dict):
            return True
        choices = chunk.get("choices")
        raw_usage = chunk.get("usage")
        if raw_usage is not None:
            self.usage = _usage(raw_usage) or self.usage
        if isinstance(choices, list) and choices:
            for text in _choice_texts(choices):
                counter = self._counter
                self.completion_tokens_seen += 1 if counter is None else counter.count(text)
            return True
        return True

    def cut(
        self, message: str, code: str = "budget_exceeded", *, type_: str = "rate_limit_error"
    ) -> bytes:
        """End the stream now: the final SSE error event and ``[DONE]``.

        Whatever the upstream sends afterwards (and any partial event held back) is
        dropped: :meth:`feed` returns ``b""`` from here on. A second call returns ``b""``.
        """
        if self._cut:
            return b""
        self._cut = True
        self._splitter.flush()
        error = {"error": {"message": message, "type": type_, "param": None, "code": code}}
        return format_event(orjson.dumps(error)) + DONE_EVENT
