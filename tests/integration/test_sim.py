"""The model simulator over real HTTP: OpenAI endpoints, SSE, metrics, failures, CLI."""

from __future__ import annotations

import asyncio
import json
import math
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import pytest

from smesh.sim.settings import FailureKind, SimSettings
from smesh.sim.tokenizer import chat_prompt_text, count_tokens
from tests.integration.sim_fixtures import metric_value, running_sim

CHAT = "/v1/chat/completions"
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say something about the weather."},
]


@pytest.fixture(scope="module")
def sim() -> Iterator[httpx.Client]:
    """A filler-mode simulator with no latency, any model name."""
    with running_sim(SimSettings(ttft=0, itl=0)) as url, httpx.Client(base_url=url) as client:
        yield client


@pytest.fixture(scope="module")
def echo_sim() -> Iterator[httpx.Client]:
    """An echo-mode simulator serving exactly the models m1 and m2."""
    settings = SimSettings(model_names=("m1", "m2"), ttft=0, itl=0.001, echo=True)
    with running_sim(settings) as url, httpx.Client(base_url=url) as client:
        yield client


def sse_events(client: httpx.Client, path: str, body: dict[str, Any]) -> list[str]:
    """POST ``body`` and return the data payloads of the SSE answer, in order."""
    with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    assert raw.endswith("\n\n")
    events = [frame.removeprefix("data: ") for frame in raw.split("\n\n") if frame]
    assert all(not frame.startswith("data:") for frame in events)
    return events


def assert_openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert isinstance(error["message"], str)
    assert error["message"]
    assert {"message", "type", "code"} <= error.keys()
    return dict(error)


def test_chat_answer_has_real_token_usage(sim: httpx.Client) -> None:
    """A chat answer has max_tokens filler tokens and usage counted with the BPE tokenizer."""
    answer = sim.post(CHAT, json={"model": "any", "messages": MESSAGES}).json()
    assert answer["object"] == "chat.completion"
    assert answer["model"] == "any"
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["role"] == "assistant"
    usage = answer["usage"]
    assert usage["completion_tokens"] == 16 == count_tokens(choice["message"]["content"])
    assert usage["prompt_tokens"] == count_tokens(chat_prompt_text(MESSAGES))
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_chat_max_completion_tokens_wins(sim: httpx.Client) -> None:
    """max_completion_tokens (else max_tokens) sets the filler length."""
    body = {"model": "m", "messages": MESSAGES, "max_tokens": 5, "max_completion_tokens": 40}
    assert sim.post(CHAT, json=body).json()["usage"]["completion_tokens"] == 40
    body = {"model": "m", "messages": MESSAGES, "max_tokens": 5}
    assert sim.post(CHAT, json=body).json()["usage"]["completion_tokens"] == 5


def test_stream_with_include_usage_ends_with_usage_then_done(sim: httpx.Client) -> None:
    """Streaming with include_usage sends role, content, finish, a usage chunk, then [DONE]."""
    body = {
        "model": "m",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    events = sse_events(sim, CHAT, body)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 16
    assert usage_chunk["usage"]["prompt_tokens"] == count_tokens(chat_prompt_text(MESSAGES))
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert all(chunk["usage"] is None for chunk in chunks[:-1])
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    plain = sim.post(CHAT, json={"model": "m", "messages": MESSAGES}).json()
    assert text == plain["choices"][0]["message"]["content"]
    assert len(chunks) == 16 + 3  # role, 16 one-token pieces, finish, usage


def test_stream_without_include_usage_has_no_usage_chunk(sim: httpx.Client) -> None:
    """Streaming without include_usage sends no usage anywhere and still ends with [DONE]."""
    events = sse_events(sim, CHAT, {"model": "m", "messages": MESSAGES, "stream": True})
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert all("usage" not in chunk for chunk in chunks)
    assert all(chunk["choices"] for chunk in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(
    "content",
    [
        'Grüße, 世界! 🚀 — naïve café\n\ttabs & <tags> "quotes"',
        [{"type": "text", "text": "part one, "}, {"type": "text", "text": "part two ✓"}],
    ],
    ids=["unicode-string", "text-parts"],
)
def test_echo_returns_last_user_message_verbatim(echo_sim: httpx.Client, content: Any) -> None:
    """Echo mode answers with the last user message exactly, whole and streamed."""
    expected = content if isinstance(content, str) else "".join(p["text"] for p in content)
    messages = [
        {"role": "user", "content": "an earlier question"},
        {"role": "assistant", "content": "an earlier answer"},
        {"role": "user", "content": content},
        {"role": "assistant", "content": "a prefill that is not the user's"},
    ]
    answer = echo_sim.post(CHAT, json={"model": "m1", "messages": messages}).json()
    assert answer["choices"][0]["message"]["content"] == expected
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"]["completion_tokens"] == count_tokens(expected)
    events = sse_events(echo_sim, CHAT, {"model": "m2", "messages": messages, "stream": True})
    chunks = [json.loads(event) for event in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == expected
    assert len(chunks) > 4  # delivered in token-sized pieces, not in one piece


def test_completions_prompt_string_and_list(echo_sim: httpx.Client) -> None:
    """/v1/completions echoes each prompt as its own choice and counts every prompt."""
    one = echo_sim.post("/v1/completions", json={"model": "m1", "prompt": "Once upon"}).json()
    assert one["object"] == "text_completion"
    assert one["choices"][0]["text"] == "Once upon"
    assert one["usage"]["prompt_tokens"] == count_tokens("Once upon")
    many = echo_sim.post("/v1/completions", json={"model": "m1", "prompt": ["a cat", "a dog"]})
    texts = [choice["text"] for choice in many.json()["choices"]]
    assert texts == ["a cat", "a dog"]
    assert many.json()["usage"]["prompt_tokens"] == count_tokens("a cat") + count_tokens("a dog")


def test_completions_stream(sim: httpx.Client) -> None:
    """Streamed completions carry text pieces, then usage when asked, then [DONE]."""
    body = {
        "model": "m",
        "prompt": "Hello",
        "max_tokens": 7,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    events = sse_events(sim, "/v1/completions", body)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert chunks[-1]["usage"]["completion_tokens"] == 7
    text = "".join(c["choices"][0]["text"] for c in chunks[:-1])
    assert count_tokens(text) == 7


def test_embeddings_are_deterministic_unit_vectors(sim: httpx.Client) -> None:
    """Embeddings: 64 dims, unit length, same text same vector, usage counts tokens."""
    body = {"model": "emb", "input": ["alpha beta", "gamma", "alpha beta"]}
    answer = sim.post("/v1/embeddings", json=body).json()
    vectors = [item["embedding"] for item in answer["data"]]
    assert [item["index"] for item in answer["data"]] == [0, 1, 2]
    assert all(len(vector) == 64 for vector in vectors)
    assert all(math.isclose(math.fsum(v * v for v in vector), 1.0) for vector in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    expected = 2 * count_tokens("alpha beta") + count_tokens("gamma")
    assert answer["usage"] == {"prompt_tokens": expected, "total_tokens": expected}
    single = sim.post("/v1/embeddings", json={"model": "emb", "input": "gamma"}).json()
    assert single["data"][0]["embedding"] == vectors[1]


def test_models_health_and_unknown_model(echo_sim: httpx.Client) -> None:
    """/v1/models lists the fixed names, /health says ok, other names get a 404 error."""
    models = echo_sim.get("/v1/models").json()
    assert [model["id"] for model in models["data"]] == ["m1", "m2"]
    health = echo_sim.get("/health")
    assert (health.status_code, health.text) == (200, "ok")
    response = echo_sim.post(CHAT, json={"model": "gpt-5", "messages": MESSAGES})
    assert assert_openai_error(response, 404)["code"] == "model_not_found"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b'{"model": "m", "messages": [', 400),
        (b"not json at all", 400),
        (b'["a", "list"]', 400),
        (b'{"model": "m"}', 400),
        (b'{"model": "m", "messages": []}', 400),
        (b'{"model": "m", "messages": ["hi"]}', 400),
        (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}', 400),
        (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', 400),
        (b'{"model": 7, "messages": [{"role": "user", "content": "x"}]}', 400),
        (b"", 400),
    ],
    ids=[
        "truncated-json",
        "not-json",
        "not-object",
        "no-messages",
        "empty-messages",
        "message-not-object",
        "max-tokens-zero",
        "stream-not-bool",
        "model-not-string",
        "empty-body",
    ],
)
def test_bad_chat_input_is_an_openai_error(sim: httpx.Client, raw: bytes, status: int) -> None:
    """Malformed or invalid chat bodies get an OpenAI JSON error, never a 500."""
    response = sim.post(CHAT, content=raw, headers={"content-type": "application/json"})
    assert_openai_error(response, status)


def test_unknown_route_and_method_are_json_errors(sim: httpx.Client) -> None:
    """Unknown paths (404) and wrong methods (405) also answer with OpenAI JSON errors."""
    assert_openai_error(sim.get("/v1/nothing"), 404)
    assert_openai_error(sim.get(CHAT), 405)
    bad = sim.post("/v1/embeddings", json={"input": []})
    assert assert_openai_error(bad, 400)["param"] == "input"


def test_metrics_expose_vllm_names_and_move(sim: httpx.Client) -> None:
    """/metrics has vLLM's metric names with model_name, and counters grow with traffic."""
    before = sim.get("/metrics").text
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:time_to_first_token_seconds",
        "vllm:e2e_request_latency_seconds",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in before
    model = "metrics-model"
    for _ in range(3):
        sim.post(CHAT, json={"model": model, "messages": MESSAGES, "max_tokens": 4})
    after = sim.get("/metrics").text
    assert metric_value(after, "vllm:generation_tokens_total", model) == 12
    prompt = 3 * count_tokens(chat_prompt_text(MESSAGES))
    assert metric_value(after, "vllm:prompt_tokens_total", model) == prompt
    assert metric_value(after, "vllm:e2e_request_latency_seconds_count", model) == 3
    assert metric_value(after, "vllm:time_to_first_token_seconds_count", model) == 3
    assert metric_value(after, "vllm:num_requests_running", model) == 0


@pytest.mark.parametrize("kind", ["500", "429", "timeout", "reset"])
def test_failure_injection(kind: FailureKind) -> None:
    """failure_rate 1.0 makes every model request fail the configured way; the server lives."""
    settings = SimSettings(ttft=0, itl=0, failure_rate=1.0, failure_kind=kind)
    with running_sim(settings) as url, httpx.Client(base_url=url, timeout=0.5) as client:
        body = {"model": "m", "messages": MESSAGES}
        if kind == "500":
            assert_openai_error(client.post(CHAT, json=body), 500)
        elif kind == "429":
            response = client.post(CHAT, json=body)
            assert_openai_error(response, 429)
            assert int(response.headers["retry-after"]) >= 1
        elif kind == "timeout":
            with pytest.raises(httpx.ReadTimeout):
                client.post(CHAT, json=body)
        else:
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                client.post(CHAT, json=body)
        assert client.get("/health").text == "ok"  # non-model routes never fail


def test_failure_rate_zero_never_fails(sim: httpx.Client) -> None:
    """With the default failure_rate 0 every request succeeds."""
    statuses = {sim.post(CHAT, json={"messages": MESSAGES}).status_code for _ in range(20)}
    assert statuses == {200}


def test_max_concurrency_queues_excess_requests() -> None:
    """With max_concurrency 1 a second request waits (waiting gauge 1) and ends a ttft later."""
    ttft = 0.5
    settings = SimSettings(ttft=ttft, itl=0, max_concurrency=1)

    async def scenario(url: str) -> tuple[list[float], float, float]:
        async with aiohttp.ClientSession(base_url=url) as session:

            async def timed() -> float:
                start = time.monotonic()
                async with session.post(CHAT, json={"model": "q", "messages": MESSAGES}) as r:
                    assert r.status == 200
                    await r.read()
                return time.monotonic() - start

            tasks = [asyncio.create_task(timed()) for _ in range(2)]
            await asyncio.sleep(ttft / 2)
            async with session.get("/metrics") as response:
                during = await response.text()
            durations = await asyncio.gather(*tasks)
            waiting = metric_value(during, "vllm:num_requests_waiting", "q")
            running = metric_value(during, "vllm:num_requests_running", "q")
            return sorted(durations), waiting, running

    with running_sim(settings) as url:
        durations, waiting, running = asyncio.run(scenario(url))
    assert (waiting, running) == (1, 1)
    assert durations[0] >= ttft * 0.95
    assert durations[1] >= 2 * ttft * 0.95  # it could only start when the first finished


def test_stream_is_paced_by_ttft_and_itl() -> None:
    """A stream's first token comes after ttft, and the rest at itl intervals."""
    settings = SimSettings(ttft=0.2, itl=0.02)
    body = {"model": "m", "messages": MESSAGES, "stream": True, "max_tokens": 10}
    with running_sim(settings) as url, httpx.Client(base_url=url) as client:
        start = time.monotonic()
        with client.stream("POST", CHAT, json=body) as response:
            arrivals = []
            for line in response.iter_lines():
                if '"content":"' in line and '"content":""' not in line:
                    arrivals.append(time.monotonic() - start)
    assert len(arrivals) == 10
    assert arrivals[0] >= 0.2 * 0.95
    assert arrivals[-1] - arrivals[0] >= 9 * 0.02 * 0.9


def read_ready_line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    assert line.startswith("smesh-sim listening on http://127.0.0.1:"), line
    return line.removeprefix("smesh-sim listening on ")


@pytest.mark.parametrize(
    ("workers", "stop_signal"), [(1, signal.SIGINT), (2, signal.SIGTERM)], ids=["one", "two"]
)
def test_cli_serves_and_stops_cleanly(workers: int, stop_signal: signal.Signals) -> None:
    """`python -m smesh.sim` prints its ready line, serves, and exits 0 on SIGINT/SIGTERM."""
    argv = [sys.executable, "-m", "smesh.sim", "--port", "0", "--model", "cli-model", "--echo"]
    argv += ["--ttft", "0", "--itl", "0.0", "--workers", str(workers)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = read_ready_line(process)
        body = {"model": "cli-model", "messages": [{"role": "user", "content": "ping"}]}
        with httpx.Client(base_url=url) as client:
            for _ in range(4):
                answer = client.post(CHAT, json=body).json()
                assert answer["choices"][0]["message"]["content"] == "ping"
        process.send_signal(stop_signal)
        _stdout, stderr = process.communicate(timeout=15)
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
