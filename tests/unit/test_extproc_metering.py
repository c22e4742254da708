"""Usage from answers, forced include_usage, and the metered SSE rewrite (sim-built streams)."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from smesh.config.schema import Price, Tokenizer
from smesh.extproc.metering import (
    DONE_EVENT,
    StreamMeter,
    Usage,
    cost,
    prepare_stream_request,
    usage_from_json,
)
from smesh.extproc.sse import SseSplitter, event_data
from smesh.extproc.tokens import load_counter
from smesh.sim.answers import (
    Generation,
    embeddings_body,
    final_frames,
    first_frame,
    json_body,
    plan_generation,
    step_frame,
)
from smesh.sim.protocol import parse_chat, parse_completion, parse_embeddings
from smesh.sim.settings import SimSettings

ECHO = SimSettings(echo=True)
FILLER = SimSettings(max_tokens=12)
CHAT_BODY: dict[str, Any] = {
    "model": "m",
    "messages": [{"role": "user", "content": "Tell me, über-briefly: 日本 weather? 42."}],
}
COMPLETION_BODY: dict[str, Any] = {"model": "m", "prompt": ["first prompt", "a second prompt"]}


def sim_stream(body: dict[str, Any], settings: SimSettings, endpoint: str = "chat") -> Generation:
    """Plan the simulator's answer to ``body`` as extproc sends it (usage forced)."""
    forced, _ = prepare_stream_request({**body, "stream": True})
    parse = parse_chat if endpoint == "chat" else parse_completion
    return plan_generation(parse(forced, settings), settings)


def sse_bytes(gen: Generation) -> bytes:
    """The exact bytes the simulator streams for ``gen``."""
    steps = b"".join(step_frame(gen, step) for step in range(gen.steps))
    return first_frame(gen) + steps + final_frames(gen)


def without_usage_chunk(stream: bytes) -> bytes:
    """``stream`` minus its usage-only event (what a client that did not ask gets)."""
    splitter = SseSplitter()
    events = splitter.feed(stream)
    assert splitter.flush() == b""
    kept = [e for e in events if b'"choices":[],' not in e]
    assert len(kept) == len(events) - 1
    return b"".join(kept)


def random_chunks(data: bytes, rng: random.Random, max_size: int) -> list[bytes]:
    """Cut ``data`` at random places into chunks of 1..max_size bytes."""
    sizes = []
    total = 0
    while total < len(data):
        sizes.append(rng.randint(1, max_size))
        total += sizes[-1]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [data[start : start + size] for start, size in zip(starts, sizes, strict=True)]


def run_meter(meter: StreamMeter, chunks: list[bytes]) -> list[bytes]:
    """Feed every chunk (the last one with end_of_stream); return each reply."""
    return [meter.feed(chunk, index == len(chunks) - 1) for index, chunk in enumerate(chunks)]


def test_usage_total() -> None:
    """Usage.total adds prompt and completion tokens."""
    assert Usage(3, 4).total == 7


def test_usage_from_chat_and_completion_json() -> None:
    """usage_from_json reads the simulator's chat and completion JSON answers."""
    for gen in (
        plan_generation(parse_chat(CHAT_BODY, ECHO), ECHO),
        plan_generation(parse_completion(COMPLETION_BODY, FILLER), FILLER),
    ):
        assert usage_from_json(json_body(gen)) == Usage(gen.prompt_tokens, gen.completion_tokens)


def test_usage_from_embeddings_json_has_no_completion() -> None:
    """Embeddings usage has prompt tokens only; completion is 0."""
    answer, prompt_tokens = embeddings_body(parse_embeddings({"model": "m", "input": "hi"}, ECHO))
    assert usage_from_json(answer) == Usage(prompt_tokens, 0)


@pytest.mark.parametrize(
    "body",
    [
        b"<html>502</html>",
        b"",
        b"[1, 2]",
        b'{"choices": []}',
        b'{"usage": null}',
        b'{"usage": {"completion_tokens": 3}}',
        b'{"usage": {"prompt_tokens": true, "completion_tokens": 3}}',
        b'{"usage": {"prompt_tokens": -1, "completion_tokens": 3}}',
        b'{"usage": {"prompt_tokens": 1, "completion_tokens": "3"}}',
    ],
    ids=["html", "empty", "array", "no-usage", "null", "no-prompt", "bool", "negative", "str"],
)
def test_usage_from_json_without_valid_usage_is_none(body: bytes) -> None:
    """Invalid JSON or a malformed usage object gives None, never an exception."""
    assert usage_from_json(body) is None


@pytest.mark.parametrize(
    ("options", "forced", "client_asked"),
    [
        (None, {"include_usage": True}, False),
        ({"include_usage": False}, {"include_usage": True}, False),
        ({"include_usage": True}, {"include_usage": True}, True),
        ({"continuous": 1}, {"continuous": 1, "include_usage": True}, False),
    ],
    ids=["absent", "client-false", "client-true", "other-options-kept"],
)
def test_prepare_stream_request_forces_include_usage(
    options: dict[str, Any] | None, forced: dict[str, Any], client_asked: bool
) -> None:
    """Streaming requests get include_usage=true; the flag says if the client asked."""
    body: dict[str, Any] = {"model": "m", "stream": True}
    if options is not None:
        body["stream_options"] = options
    before = orjson.dumps(body)
    new_body, asked = prepare_stream_request(body)
    assert new_body["stream_options"] == forced
    assert asked is client_asked
    assert orjson.dumps(body) == before  # the caller's body is not changed


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m"},
        {"model": "m", "stream": False, "stream_options": {"include_usage": True}},
        {"model": "m", "stream": True, "stream_options": "yes"},
        {"model": "m", "stream": True, "stream_options": {"include_usage": "yes"}},
    ],
    ids=["no-stream", "stream-false", "options-not-object", "include-usage-not-bool"],
)
def test_prepare_stream_request_leaves_other_bodies_alone(body: dict[str, Any]) -> None:
    """Non-streaming and malformed bodies pass unchanged, for the upstream to judge."""
    assert prepare_stream_request(body) == (body, False)


def test_cost_uses_the_catalog_price() -> None:
    """cost() prices prompt and completion tokens per million."""
    assert cost(Usage(1_000_000, 500_000), Price(prompt_per_1m=2.0, completion_per_1m=6.0)) == 5.0


@pytest.mark.parametrize("endpoint", ["chat", "completion"])
@pytest.mark.parametrize(
    "client_wants_usage", [False, True], ids=["client-no-usage", "client-usage"]
)
def test_sim_stream_through_meter(endpoint: str, client_wants_usage: bool) -> None:
    """A sim stream comes out unchanged (minus the usage chunk unless asked) with its usage."""
    body = CHAT_BODY if endpoint == "chat" else COMPLETION_BODY
    gen = sim_stream(body, ECHO, endpoint)
    stream = sse_bytes(gen)
    expected = stream if client_wants_usage else without_usage_chunk(stream)
    meter = StreamMeter(client_wants_usage, load_counter(Tokenizer()))
    out = b"".join(run_meter(meter, [stream]))
    assert out == expected
    assert out.endswith(DONE_EVENT)
    assert meter.usage == Usage(gen.prompt_tokens, gen.completion_tokens)
    assert meter.completion_tokens_seen == gen.completion_tokens
    assert meter.done


def test_without_counter_each_content_delta_counts_one() -> None:
    """With no counter, completion_tokens_seen counts content deltas."""
    gen = sim_stream(CHAT_BODY, FILLER)
    meter = StreamMeter(client_wants_usage=False)
    run_meter(meter, [sse_bytes(gen)])
    assert meter.completion_tokens_seen == gen.steps == FILLER.max_tokens


@pytest.mark.parametrize("seed", range(30))
def test_random_splits_never_emit_partial_events(seed: int) -> None:
    """Seeded random splits (1-byte too): replies are whole events, together the expected stream."""
    rng = random.Random(seed)
    gen = sim_stream(
        CHAT_BODY if seed % 2 else COMPLETION_BODY,
        ECHO if seed % 3 else FILLER,
        "chat" if seed % 2 else "completion",
    )
    stream = sse_bytes(gen)
    max_size = 1 if seed < 5 else rng.choice([2, 7, 50, 400])
    meter = StreamMeter(client_wants_usage=False)
    replies = run_meter(meter, random_chunks(stream, rng, max_size))
    for reply in replies:
        splitter = SseSplitter()
        assert b"".join(splitter.feed(reply)) == reply
        assert splitter.flush() == b""
    out = b"".join(replies)
    assert out == without_usage_chunk(stream)
    assert out.endswith(DONE_EVENT)
    assert meter.usage == Usage(gen.prompt_tokens, gen.completion_tokens)


def test_partial_event_is_held_back_then_flushed_at_end() -> None:
    """A partial event waits for its end; end_of_stream flushes even an unterminated one."""
    meter = StreamMeter(client_wants_usage=False)
    assert meter.feed(b'data: {"choices":[{"text":"a"}]}\n', False) == b""
    assert meter.feed(b"\ndata: [DO", False) == b'data: {"choices":[{"text":"a"}]}\n\n'
    assert meter.feed(b"NE]", True) == b"data: [DONE]"
    assert meter.done
    assert meter.completion_tokens_seen == 1


def test_comments_and_non_json_data_pass_through() -> None:
    """Keep-alives, non-JSON data and usage:null chunks pass byte-for-byte."""
    events = b': ping\n\ndata: not json\n\ndata: {"choices":[],"usage":null}\n\n'
    meter = StreamMeter(client_wants_usage=False)
    assert meter.feed(events, False) == events
    assert meter.usage is None


def test_usage_chunk_is_dropped_with_crlf_framing() -> None:
    """The usage-only chunk is dropped whatever the line endings."""
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":1}}\r\n\r\n'
    meter = StreamMeter(client_wants_usage=False)
    assert meter.feed(usage + b"data: [DONE]\r\n\r\n", True) == b"data: [DONE]\r\n\r\n"
    assert meter.usage == Usage(2, 1)


def test_cut_ends_the_stream_with_an_error_event() -> None:
    """cut() returns an error event then [DONE]; later chunks are swallowed."""
    gen = sim_stream(CHAT_BODY, FILLER)
    stream = sse_bytes(gen)
    meter = StreamMeter(client_wants_usage=True)
    first = meter.feed(stream[: len(stream) // 2], False)
    assert first and meter.completion_tokens_seen > 0
    tail = meter.cut("token budget exceeded for tenant acme")
    splitter = SseSplitter()
    error_event, done = splitter.feed(tail)
    assert done == DONE_EVENT
    data = event_data(error_event)
    assert data is not None
    assert orjson.loads(data) == {
        "error": {
            "message": "token budget exceeded for tenant acme",
            "type": "rate_limit_error",
            "param": None,
            "code": "budget_exceeded",
        }
    }
    assert meter.is_cut
    assert meter.feed(stream[len(stream) // 2 :], True) == b""
    assert meter.cut("again") == b""


def test_cut_error_type_and_code_are_configurable() -> None:
    """cut() takes the error code and type."""
    tail = StreamMeter(False).cut("blocked", "content_filter", type_="invalid_request_error")
    data = event_data(SseSplitter().feed(tail)[0])
    assert data is not None
    assert orjson.loads(data)["error"]["type"] == "invalid_request_error"
    assert orjson.loads(data)["error"]["code"] == "content_filter"
