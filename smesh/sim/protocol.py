"""The OpenAI wire format, inbound: parse and validate request bodies; error bodies.

Pure functions over decoded JSON. A body that is not what the endpoint expects raises
:class:`RequestError`, which carries the HTTP status and the OpenAI error fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from smesh.sim.settings import SimSettings
from smesh.sim.tokenizer import chat_prompt_text, content_text

__all__ = [
    "MAX_GENERATED_TOKENS",
    "EmbeddingRequest",
    "Endpoint",
    "GenerationRequest",
    "RequestError",
    "decode_body",
    "error_body",
    "parse_chat",
    "parse_completion",
    "parse_embeddings",
]

Endpoint = Literal["chat", "completion"]
MAX_GENERATED_TOKENS = 32768  # the simulated context window caps any one answer


class RequestError(Exception):
    """A client error, answered as ``{"error": {"message", "type", "code"}}``."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type_
        self.code = code
        self.param = param

    def body(self) -> bytes:
        """The JSON error body."""
        return error_body(self.message, self.type, self.code, self.param)


def error_body(message: str, type_: str, code: str | int | None, param: str | None = None) -> bytes:
    """An OpenAI-style error body."""
    error = {"message": message, "type": type_, "param": param, "code": code}
    return orjson.dumps({"error": error})


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """A chat or completion request, reduced to what the simulator needs.

    ``prompts`` holds one prompt text per choice (chat: the rendered messages);
    ``echo_texts`` the text each choice repeats in echo mode.
    """

    endpoint: Endpoint
    model: str
    prompts: tuple[str, ...]
    echo_texts: tuple[str, ...]
    max_tokens: int | None
    stream: bool
    include_usage: bool


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """An embeddings request: the texts to embed and the output encoding."""

    model: str
    inputs: tuple[str, ...]
    base64: bool


def decode_body(raw: bytes) -> dict[str, Any]:
    """Decode a request body that must be one JSON object."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"request body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise RequestError(
            f"request body must be a JSON object, got {type(body).__name__}",
            code="invalid_body",
        )
    return body


def _model(body: Mapping[str, Any], settings: SimSettings) -> str:
    model = body.get("model")
    if model is None and not settings.model_names:
        return settings.default_model
    if not isinstance(model, str) or not model:
        raise RequestError("'model' must be a non-empty string", param="model")
    if not settings.serves(model):
        raise RequestError(
            f"the model '{model}' does not exist; served: {', '.join(settings.model_names)}",
            status=404,
            code="model_not_found",
            param="model",
        )
    return model


def _positive_int(body: Mapping[str, Any], *names: str) -> int | None:
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RequestError(f"'{name}' must be a positive integer, got {value!r}", param=name)
        return min(value, MAX_GENERATED_TOKENS)
    return None


def _stream_flags(body: Mapping[str, Any]) -> tuple[bool, bool]:
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise RequestError(f"'stream' must be a boolean, got {stream!r}", param="stream")
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not isinstance(options, dict):
        raise RequestError("'stream_options' must be an object", param="stream_options")
    include_usage = options.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise RequestError(
            "'stream_options.include_usage' must be a boolean", param="stream_options"
        )
    return stream, stream and include_usage


def parse_chat(body: Mapping[str, Any], settings: SimSettings) -> GenerationRequest:
    """Validate a ``/v1/chat/completions`` body."""
    model = _model(body, settings)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty array", param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RequestError(
                f"messages[{index}] must be an object with a string 'role'", param="messages"
            )
    last_user = next((m for m in reversed(messages) if m["role"] == "user"), None)
    echo = content_text(last_user.get("content")) if last_user is not None else ""
    stream, include_usage = _stream_flags(body)
    return GenerationRequest(
        endpoint="chat",
        model=model,
        prompts=(chat_prompt_text(messages),),
        echo_texts=(echo,),
        max_tokens=_positive_int(body, "max_completion_tokens", "max_tokens"),
        stream=stream,
        include_usage=include_usage,
    )


def _texts(value: object, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise RequestError(f"'{name}' must be a string or a non-empty array of strings", param=name)


def parse_completion(body: Mapping[str, Any], settings: SimSettings) -> GenerationRequest:
    """Validate a ``/v1/completions`` body (one choice per prompt)."""
    model = _model(body, settings)
    prompts = _texts(body.get("prompt"), "prompt")
    stream, include_usage = _stream_flags(body)
    return GenerationRequest(
        endpoint="completion",
        model=model,
        prompts=prompts,
        echo_texts=prompts,
        max_tokens=_positive_int(body, "max_tokens"),
        stream=stream,
        include_usage=include_usage,
    )


def parse_embeddings(body: Mapping[str, Any], settings: SimSettings) -> EmbeddingRequest:
    """Validate a ``/v1/embeddings`` body."""
    model = _model(body, settings)
    inputs = _texts(body.get("input"), "input")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64", None):
        raise RequestError(
            f"'encoding_format' must be 'float' or 'base64', got {encoding!r}",
            param="encoding_format",
        )
    return EmbeddingRequest(model=model, inputs=inputs, base64=encoding == "base64")
