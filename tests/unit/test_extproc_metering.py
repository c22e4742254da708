"""Forced include_usage, and the stream meter (sim-built streams)."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from smesh.config.schema import Tokenizer
from smesh.extproc.metering import DONE_EVENT, StreamMeter, Usage, prepare_stream_request
from smesh.extproc.sse import SseSplitter, event_data
from smesh.extproc.tokens import load_counter
from smesh.sim.answers import (
    Generation,
    final_frames,
    first_frame,
    plan_generation,
    step_frame,
)
from smesh.sim.protocol import parse_chat, parse_completion
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
    forced = dict(prepare_stream_request({**body, "stream": True}))
    parse = parse_chat if endpoint == "chat" else parse_completion
    return plan_generation(parse(forced, settings), settings)


def sse_bytes(gen: Generation) -> bytes:
    """The exact bytes the simulator streams for ``gen``."""
    steps = b"".join(step_frame(gen, step) for step in range(gen.steps))
    return first_frame(gen) + steps + final_frames(gen)


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
    """Streaming requests get include_usage=true; a body already asking is returned as is."""
    body: dict[str, Any] = {"model": "m", "stream": True}
    if options is not None:
        body["stream_options"] = options
    before = orjson.dumps(body)
    new_body = prepare_stream_request(body)
    assert new_body["stream_options"] == forced
    assert (new_body is body) is client_asked
    assert orjson.dumps(body) == before  # the caller's body is not changed


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m"},
        {"model": "m", "stream": False, "stream_options": {"include_usage": True}},
        {"model": "m", "stream": True, "stream_options": "yes"},
    ],
    ids=["no-stream", "stream-false", "options-not-object"],
)
def test_prepare_stream_request_leaves_other_bodies_alone(body: dict[str, Any]) -> None:
    """Non-streaming bodies (and malformed options, refused earlier) are returned as they are."""
    assert prepare_stream_request(body) is body


@pytest.mark.parametrize("endpoint", ["chat", "completion"])
def test_sim_stream_through_meter(endpoint: str) -> None:
    """A sim stream comes out unchanged, with its usage and every token counted."""
    body = CHAT_BODY if endpoint == "chat" else COMPLETION_BODY
    gen = sim_stream(body, ECHO, endpoint)
    stream = sse_bytes(gen)
    meter = StreamMeter(load_counter(Tokenizer()))
    out = b"".join(run_meter(meter, [stream]))
    assert out == stream
    assert out.endswith(DONE_EVENT)
    assert meter.usage == Usage(gen.prompt_tokens, gen.completion_tokens)
    assert meter.completion_tokens_seen == gen.completion_tokens
    assert meter.done


def test_without_counter_each_content_delta_counts_one() -> None:
    """With no counter, completion_tokens_seen counts content deltas."""
    gen = sim_stream(CHAT_BODY, FILLER)
    meter = StreamMeter()
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
    meter = StreamMeter()
    replies = run_meter(meter, random_chunks(stream, rng, max_size))
    for reply in replies:
        splitter = SseSplitter()
        assert b"".join(splitter.feed(reply)) == reply
        assert splitter.flush() == b""
    out = b"".join(replies)
    assert out == stream
    assert out.endswith(DONE_EVENT)
    assert meter.usage == Usage(gen.prompt_tokens, gen.completion_tokens)


def test_partial_event_is_held_back_then_flushed_at_end() -> None:
    """A partial event waits for its end; end_of_stream flushes even an unterminated one."""
    meter = StreamMeter()
    assert meter.feed(b'data: {"choices":[{"text":"a"}]}\n', False) == b""
    assert meter.feed(b"\ndata: [DO", False) == b'data: {"choices":[{"text":"a"}]}\n\n'
    assert meter.feed(b"NE]", True) == b"data: [DONE]"
    assert meter.done
    assert meter.completion_tokens_seen == 1


def test_comments_and_non_json_data_pass_through() -> None:
    """Keep-alives, non-JSON data and usage:null chunks pass byte-for-byte."""
    events = b': ping\n\ndata: not json\n\ndata: {"choices":[],"usage":null}\n\n'
    meter = StreamMeter()
    assert meter.feed(events, False) == events
    assert meter.usage is None


def test_usage_chunk_is_read_with_crlf_framing() -> None:
    """The usage-only chunk is read (and passed on) whatever the line endings."""
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":1}}\r\n\r\n'
    meter = StreamMeter()
    stream = usage + b"data: [DONE]\r\n\r\n"
    assert meter.feed(stream, True) == stream
    assert meter.usage == Usage(2, 1)


def test_cut_ends_the_stream_with_an_error_event() -> None:
    """cut() returns an error event then [DONE]; later chunks are swallowed."""
    gen = sim_stream(CHAT_BODY, FILLER)
    stream = sse_bytes(gen)
    meter = StreamMeter()
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
    tail = StreamMeter().cut("blocked", "content_filter", type_="invalid_request_error")
    data = event_data(SseSplitter().feed(tail)[0])
    assert data is not None
    assert orjson.loads(data)["error"]["type"] == "invalid_request_error"
    assert orjson.loads(data)["error"]["code"] == "content_filter"
