"""StreamMeter on the running simulator's real SSE bytes, as Envoy would chunk them."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from smesh.config.schema import Tokenizer
from smesh.extproc.metering import DONE_EVENT, StreamMeter, Usage, prepare_stream_request
from smesh.extproc.sse import SseSplitter, event_data
from smesh.extproc.tokens import CHAT_PATH, COMPLETIONS_PATH, estimate_prompt_tokens, load_counter
from smesh.sim.settings import SimSettings
from tests.integration.sim_fixtures import running_sim

BODIES: dict[str, dict[str, Any]] = {
    CHAT_PATH: {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Echo this back: Grüße aus Zürich, 日本 and 42 cats."},
        ],
    },
    COMPLETIONS_PATH: {"model": "m", "prompt": ["first prompt text", "second one"]},
}


@pytest.fixture(scope="module")
def sim() -> Iterator[httpx.Client]:
    """An echo-mode simulator with no latency."""
    with (
        running_sim(SimSettings(ttft=0, itl=0, echo=True)) as url,
        httpx.Client(base_url=url) as client,
    ):
        yield client


def stream_raw(client: httpx.Client, path: str, body: dict[str, Any]) -> list[bytes]:
    """POST ``body`` and return the body chunks as they arrived."""
    with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200
        return [chunk for chunk in response.iter_raw() if chunk]


def events(stream: bytes) -> list[bytes]:
    """The whole events of ``stream`` (asserting nothing is left over)."""
    splitter = SseSplitter()
    found = splitter.feed(stream)
    assert splitter.flush() == b""
    return found


def is_usage_chunk(event: bytes) -> bool:
    """Whether ``event`` is the usage-only chunk."""
    data = event_data(event)
    return data is not None and data.startswith(b"{") and b'"choices":[],' in data


def rechunk(data: bytes, rng: random.Random) -> list[bytes]:
    """Cut ``data`` into random chunks of 1..64 bytes."""
    chunks: list[bytes] = []
    pos = 0
    while pos < len(data):
        size = rng.randint(1, 64)
        chunks.append(data[pos : pos + size])
        pos += size
    return chunks


@pytest.mark.parametrize("path", [CHAT_PATH, COMPLETIONS_PATH], ids=["chat", "completions"])
def test_simulator_stream_is_metered(sim: httpx.Client, path: str) -> None:
    """Events pass unchanged, usage matches the sim's JSON answer, [DONE] last."""
    body = prepare_stream_request({**BODIES[path], "stream": True})
    arrived = stream_raw(sim, path, dict(body))
    raw = b"".join(arrived)
    usage = sim.post(path, json=BODIES[path]).json()["usage"]
    json_usage = Usage(usage["prompt_tokens"], usage["completion_tokens"])
    counter = load_counter(Tokenizer())
    assert json_usage.prompt_tokens == estimate_prompt_tokens(path, BODIES[path], counter)

    expected = events(raw)
    assert any(is_usage_chunk(e) for e in expected)  # forced: Envoy reads it
    for chunks in [arrived, *(rechunk(raw, random.Random(seed)) for seed in range(5))]:
        meter = StreamMeter(counter)
        out = b"".join(
            meter.feed(chunk, index == len(chunks) - 1) for index, chunk in enumerate(chunks)
        )
        assert events(out) == expected
        assert out.endswith(DONE_EVENT)
        assert meter.usage == json_usage
        assert meter.completion_tokens_seen == json_usage.completion_tokens
