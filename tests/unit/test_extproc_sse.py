"""SSE framing: whole events out of arbitrarily chunked bytes, data payloads, formatting."""

from __future__ import annotations

import random

import pytest

from smesh.extproc.sse import SseSplitter, event_data, format_event

EVENTS = [
    b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n',
    b": keep-alive\n\n",
    b"event: message\r\nid: 7\r\ndata: line one\r\ndata: line two\r\n\r\n",
    b'data: {"choices":[{"delta":{"content":" \\n\\n there"}}]}\n\n',
    b"data: mixed endings\n\r\n",
    b"data: [DONE]\n\n",
]
STREAM = b"".join(EVENTS)


def random_chunks(data: bytes, rng: random.Random, max_size: int) -> list[bytes]:
    """Cut ``data`` at random places into chunks of 1..max_size bytes."""
    chunks: list[bytes] = []
    pos = 0
    while pos < len(data):
        size = rng.randint(1, max_size)
        chunks.append(data[pos : pos + size])
        pos += size
    return chunks


def split_all(chunks: list[bytes]) -> tuple[list[bytes], bytes]:
    """Feed every chunk to one splitter; return its events and the flushed rest."""
    splitter = SseSplitter()
    events = [event for chunk in chunks for event in splitter.feed(chunk)]
    return events, splitter.flush()


def test_one_whole_event_per_chunk_comes_back_as_is() -> None:
    """A chunk that is exactly one event is returned unchanged."""
    splitter = SseSplitter()
    for event in EVENTS:
        assert splitter.feed(event) == [event]
    assert splitter.flush() == b""


def test_several_events_in_one_chunk_are_separated() -> None:
    """One chunk holding every event yields them all, in order."""
    assert split_all([STREAM]) == (EVENTS, b"")


def test_one_byte_chunks_rebuild_every_event() -> None:
    """Events split at every byte boundary come out whole, each once."""
    assert split_all([bytes([byte]) for byte in STREAM]) == (EVENTS, b"")


def test_partial_event_is_held_until_completed() -> None:
    """A partial event yields nothing until the chunk that ends it arrives."""
    splitter = SseSplitter()
    assert splitter.feed(b"data: abc\n") == []
    assert splitter.pending == len(b"data: abc\n")
    assert splitter.feed(b"\ndata: de") == [b"data: abc\n\n"]
    assert splitter.flush() == b"data: de"
    assert splitter.flush() == b""


def test_crlf_separator_split_between_chunks() -> None:
    """A \\r\\n\\r\\n separator cut in its middle still ends the event."""
    splitter = SseSplitter()
    assert splitter.feed(b"data: x\r\n\r") == []
    assert splitter.feed(b"\ndata: y\r\n") == [b"data: x\r\n\r\n"]
    assert splitter.feed(b"\r\n") == [b"data: y\r\n\r\n"]


def test_empty_chunk_changes_nothing() -> None:
    """Feeding b"" returns no events and keeps what was pending."""
    splitter = SseSplitter()
    splitter.feed(b"data: x")
    assert splitter.feed(b"") == []
    assert splitter.flush() == b"data: x"


@pytest.mark.parametrize("seed", range(40))
def test_random_splits_give_the_same_events(seed: int) -> None:
    """Any seeded random split (1-byte chunks included) yields exactly the same events."""
    rng = random.Random(seed)
    stream = b"".join(rng.choice(EVENTS) for _ in range(30)) + b"data: trailing"
    events, rest = split_all(random_chunks(stream, rng, max_size=rng.choice([1, 3, 17, 200])))
    assert b"".join(events) + rest == stream
    assert rest == b"data: trailing"
    assert all(event.endswith((b"\n\n", b"\n\r\n")) for event in events)
    assert events == split_all([stream])[0]


@pytest.mark.parametrize(
    ("event", "data"),
    [
        (b"data: hello\n\n", b"hello"),
        (b"data:hello\n\n", b"hello"),
        (b"data:  two spaces\n\n", b" two spaces"),
        (b"data: a\ndata: b\n\n", b"a\nb"),
        (b"data: a\r\ndata: b\r\n\r\n", b"a\nb"),
        (b"event: x\nid: 1\ndata: payload\nretry: 5\n\n", b"payload"),
        (b"data\n\n", b""),
        (b"data: \n\n", b""),
        (b"data: no terminator", b"no terminator"),
        (b"data: a\ndata: b", b"a\nb"),
        (b"data: [DONE]\n\n", b"[DONE]"),
        (b": keep-alive\n\n", None),
        (b":\n\n", None),
        (b"event: ping\n\n", None),
        (b"\n\n", None),
    ],
    ids=[
        "simple",
        "no-space",
        "one-space-dropped",
        "multi-line",
        "multi-line-crlf",
        "other-fields",
        "bare-data",
        "empty-data",
        "unterminated",
        "unterminated-multi-line",
        "done",
        "comment",
        "empty-comment",
        "no-data-field",
        "blank",
    ],
)
def test_event_data(event: bytes, data: bytes | None) -> None:
    """event_data returns the joined data lines, None when there is no data field."""
    assert event_data(event) == data


def test_format_event_is_one_data_line() -> None:
    """format_event frames a one-line payload as data: ...\\n\\n."""
    assert format_event(b'{"a":1}') == b'data: {"a":1}\n\n'


def test_format_event_round_trips_multi_line_data() -> None:
    """A payload with newlines becomes one data line each and parses back the same."""
    framed = format_event(b"one\ntwo")
    assert framed == b"data: one\ndata: two\n\n"
    assert event_data(framed) == b"one\ntwo"
    assert SseSplitter().feed(framed) == [framed]
