"""The OpenAI wire format, outbound: plan a generation and render its JSON or SSE.

A :class:`Generation` is decided up front (text, token pieces, usage); the app then
only paces its delivery. Rendering functions return bytes ready to write.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from smesh.sim.protocol import EmbeddingRequest, GenerationRequest
from smesh.sim.settings import SimSettings
from smesh.sim.tokenizer import count_tokens, filler_pieces, split_tokens

__all__ = [
    "EMBEDDING_DIMS",
    "Choice",
    "Generation",
    "embed",
    "embeddings_body",
    "final_frames",
    "first_frame",
    "json_body",
    "plan_generation",
    "step_frame",
    "usage",
]

EMBEDDING_DIMS = 64
DONE_FRAME = b"data: [DONE]\n\n"


@dataclass(frozen=True, slots=True)
class Choice:
    """One generated answer, cut into the pieces a stream delivers."""

    pieces: tuple[str, ...]
    finish_reason: str

    @property
    def text(self) -> str:
        """The whole answer."""
        return "".join(self.pieces)


@dataclass(frozen=True, slots=True)
class Generation:
    """What one request will produce: choices and token usage."""

    request: GenerationRequest
    id: str
    created: int
    choices: tuple[Choice, ...]
    prompt_tokens: int
    completion_tokens: int

    @property
    def steps(self) -> int:
        """How many token steps the longest choice takes."""
        return max((len(choice.pieces) for choice in self.choices), default=0)


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """The OpenAI ``usage`` object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def plan_generation(request: GenerationRequest, settings: SimSettings) -> Generation:
    """Decide the answer: the echoed text (finish "stop") or filler (finish "length")."""
    choices: list[Choice] = []
    completion_tokens = 0
    for echo_text in request.echo_texts:
        if settings.echo:
            choice = Choice(tuple(split_tokens(echo_text)), "stop")
        else:
            choice = Choice(filler_pieces(request.max_tokens or settings.max_tokens), "length")
        choices.append(choice)
        completion_tokens += count_tokens(choice.text)
    prefix = "chatcmpl" if request.endpoint == "chat" else "cmpl"
    return Generation(
        request=request,
        id=f"{prefix}-{uuid.uuid4().hex}",
        created=int(time.time()),
        choices=tuple(choices),
        prompt_tokens=sum(count_tokens(prompt) for prompt in request.prompts),
        completion_tokens=completion_tokens,
    )


def json_body(gen: Generation) -> bytes:
    """The non-streaming answer."""
    if gen.request.endpoint == "chat":
        choices: list[dict[str, Any]] = [
            {
                "index": index,
                "message": {"role": "assistant", "content": choice.text},
                "logprobs": None,
                "finish_reason": choice.finish_reason,
            }
            for index, choice in enumerate(gen.choices)
        ]
        obj = "chat.completion"
    else:
        choices = [
            {
                "index": index,
                "text": choice.text,
                "logprobs": None,
                "finish_reason": choice.finish_reason,
            }
            for index, choice in enumerate(gen.choices)
        ]
        obj = "text_completion"
    return orjson.dumps(
        {
            "id": gen.id,
            "object": obj,
            "created": gen.created,
            "model": gen.request.model,
            "choices": choices,
            "usage": usage(gen.prompt_tokens, gen.completion_tokens),
        }
    )


def _frame(gen: Generation, choices: list[dict[str, Any]]) -> bytes:
    chunk: dict[str, Any] = {
        "id": gen.id,
        "object": "chat.completion.chunk" if gen.request.endpoint == "chat" else "text_completion",
        "created": gen.created,
        "model": gen.request.model,
        "choices": choices,
    }
    if gen.request.include_usage:
        chunk["usage"] = None
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _delta(gen: Generation, index: int, text: str | None, finish: str | None) -> dict[str, Any]:
    if gen.request.endpoint == "chat":
        delta: dict[str, str] = {} if text is None else {"content": text}
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
    return {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}


def first_frame(gen: Generation) -> bytes:
    """Chat streams open with the assistant role (empty content); completions send none."""
    if gen.request.endpoint != "chat":
        return b""
    choices = [
        {
            "index": index,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
        for index in range(len(gen.choices))
    ]
    return _frame(gen, choices)


def step_frame(gen: Generation, step: int) -> bytes:
    """The chunk carrying every choice's ``step``-th piece (empty past the last step)."""
    choices = [
        _delta(gen, index, choice.pieces[step], None)
        for index, choice in enumerate(gen.choices)
        if step < len(choice.pieces)
    ]
    return _frame(gen, choices) if choices else b""


def final_frames(gen: Generation) -> bytes:
    """Finish reasons, the usage chunk when asked for, then ``[DONE]``."""
    choices = [
        _delta(gen, index, None, choice.finish_reason) for index, choice in enumerate(gen.choices)
    ]
    frames = _frame(gen, choices)
    if gen.request.include_usage:
        chunk: dict[str, Any] = {
            "id": gen.id,
            "object": "chat.completion.chunk"
            if gen.request.endpoint == "chat"
            else "text_completion",
            "created": gen.created,
            "model": gen.request.model,
            "choices": [],
            "usage": usage(gen.prompt_tokens, gen.completion_tokens),
        }
        frames += b"data: " + orjson.dumps(chunk) + b"\n\n"
    return frames + DONE_FRAME


def embed(text: str, dims: int = EMBEDDING_DIMS) -> list[float]:
    """A deterministic unit vector for ``text`` (hash-derived; same text, same vector)."""
    values: list[float] = []
    counter = 0
    while len(values) < dims:
        digest = hashlib.blake2b(f"{counter}:{text}".encode(), digest_size=64).digest()
        values.extend((byte - 127.5) / 127.5 for byte in digest)
        counter += 1
    values = values[:dims]
    norm = math.sqrt(sum(value * value for value in values)) or 1.0
    return [value / norm for value in values]


def _encode_vector(vector: list[float], as_base64: bool) -> list[float] | str:
    if not as_base64:
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def embeddings_body(request: EmbeddingRequest) -> tuple[bytes, int]:
    """The embeddings answer and its prompt token count."""
    prompt_tokens = sum(count_tokens(text) for text in request.inputs)
    data: Iterator[dict[str, Any]] = (
        {
            "object": "embedding",
            "index": index,
            "embedding": _encode_vector(embed(text), request.base64),
        }
        for index, text in enumerate(request.inputs)
    )
    body = orjson.dumps(
        {
            "object": "list",
            "data": list(data),
            "model": request.model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }
    )
    return body, prompt_tokens
