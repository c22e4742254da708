"""The gateway as clients see it, through the official `openai` client and a real Envoy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.integration.gateway import Gateway, JwtIssuer, start_gateway
from tests.integration.harness import Simulator, start_simulator, wait_until

pytestmark = pytest.mark.integration

MESH = """
listeners:
  - {{name: gateway, port: {port}}}
extproc:
  port: {extproc_port}
  max_body_bytes: 65536
jwt:
  issuer: https://idp.test
  audiences: [smesh]
  jwks: '{jwks}'
  tenant_claim: team
tenants:
  - name: acme
    api_keys: ["{keys[acme]}"]
  - name: embedder
    api_keys: ["{keys[embedder]}"]
    models: [embed]
  - name: thrifty
    api_keys: ["{keys[thrifty]}"]
    budgets: {{tokens_per_minute: 60}}
  - name: eu-only
    api_keys: ["{keys[eu-only]}"]
    regions: [eu]
  - name: jwt-team
models:
  - name: chat
    aliases: [gpt-4o-mini]
    backends: [{{cluster: eu}}]
    max_tokens: 8
    price: {{prompt_per_1m: 1.0, completion_per_1m: 2.0}}
  - name: split
    backends: [{{cluster: eu, weight: 50}}, {{cluster: us, weight: 50}}]
    retries: {{attempts: 0}}
  - name: us-model
    backends: [{{cluster: us}}]
  - name: embed
    backends: [{{cluster: eu}}]
clusters:
  - {{name: eu, region: eu, endpoints: ["127.0.0.1:{eu}"], outlier_detection: null}}
  - {{name: us, region: us, endpoints: ["127.0.0.1:{us}"], outlier_detection: null}}
"""

TENANTS = ["acme", "embedder", "thrifty", "eu-only"]
ISSUER = JwtIssuer()


@pytest.fixture(scope="module")
def sims(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Simulator]]:
    tmp = tmp_path_factory.mktemp("sims")
    started = {"eu": start_simulator(tmp, "--echo"), "us": start_simulator(tmp, "--echo")}
    yield started
    for sim in started.values():
        if sim.process.poll() is None:
            sim.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, sims: dict[str, Simulator]) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp("gateway")

    def render(port: int, extproc_port: int, keys: dict[str, str]) -> str:
        return MESH.format(
            port=port,
            extproc_port=extproc_port,
            keys=keys,
            jwks=ISSUER.jwks(),
            eu=sims["eu"].port,
            us=sims["us"].port,
        )

    gateway = start_gateway(tmp, render, TENANTS)
    yield gateway
    gateway.stop()


def chat(client: openai.OpenAI, model: str = "chat", text: str = "hello there") -> str:
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], max_tokens=8
    )
    return answer.choices[0].message.content or ""


def test_chat_completion_routes_by_body_and_reports_usage(gw: Gateway) -> None:
    """A chat call with a key and no routing header works; usage and overhead come back."""
    raw = gw.client("acme").chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hello there"}]
    )
    answer = raw.parse()
    assert answer.choices[0].message.content == "hello there"  # echo: what the model got
    assert answer.usage is not None and answer.usage.prompt_tokens > 0
    assert float(raw.headers["x-smesh-overhead-ms"]) > 0


def test_alias_reaches_the_server_as_the_canonical_model(gw: Gateway) -> None:
    """Asking for an alias routes to the model, and the server sees the model's own name."""
    answer = gw.client("acme").chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.model == "chat"


def test_every_stream_ends_with_the_usage_chunk(gw: Gateway) -> None:
    """SSE through the gateway: content arrives, and the stream ends with OpenAI's usage chunk.

    The gateway forces stream_options.include_usage so Envoy meters streams exactly
    without Python on the answer path; clients that did not ask get the documented final
    chunk (empty choices, usage) too.
    """
    stream = gw.client("acme").chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "one two three"}], stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    assert all(c.choices for c in chunks[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


def test_streaming_with_usage_request_gets_usage(gw: Gateway) -> None:
    """With stream_options.include_usage the final chunk carries usage."""
    stream = gw.client("acme").chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0


def test_embeddings(gw: Gateway) -> None:
    """Embeddings go through the same pipeline."""
    result = gw.client("embedder").embeddings.create(model="embed", input=["a", "b"])
    assert len(result.data) == 2
    assert result.usage.prompt_tokens > 0


def test_answer_larger_than_the_request_limit_is_served_and_metered(gw: Gateway) -> None:
    """A 64 KiB request limit does not cap answers: a large embeddings batch comes back whole."""
    inputs = [f"sentence number {i}" for i in range(400)]
    raw = gw.client("embedder").embeddings.with_raw_response.create(model="embed", input=inputs)
    assert len(raw.http_response.content) > 65536  # bigger than extproc.max_body_bytes
    result = raw.parse()
    assert len(result.data) == 400
    assert result.usage.prompt_tokens > 400
    # Usage arrives with Envoy's access log, batched every 50 ms.
    wait_until(lambda: 'tenant="embedder"' in gw.extprocs[0].metrics(), timeout=5)


def test_model_list_is_the_tenants_catalog(gw: Gateway) -> None:
    """/v1/models lists only what the tenant may use, answered without a model server."""
    ids = {m.id for m in gw.client("embedder").models.list()}
    assert ids == {"embed"}
    everything = {m.id for m in gw.client("acme").models.list()}
    assert {"chat", "gpt-4o-mini", "split", "us-model", "embed"} <= everything
    eu_only = {m.id for m in gw.client("eu-only").models.list()}
    assert "us-model" not in eu_only and "chat" in eu_only


def test_wrong_and_missing_keys_are_401(gw: Gateway) -> None:
    """An unknown key and no key both get OpenAI 401 errors."""
    with pytest.raises(openai.AuthenticationError) as wrong:
        chat(gw.client(api_key="sk-not-a-key"))
    assert wrong.value.code == "invalid_api_key"
    response = gw.post("/v1/chat/completions", b'{"model": "chat", "messages": []}', key=None)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_api_key"


def test_unknown_and_forbidden_models_are_the_same_404(gw: Gateway) -> None:
    """Unknown model and a model outside the tenant's list: the same 404 model_not_found."""
    with pytest.raises(openai.NotFoundError) as unknown:
        chat(gw.client("acme"), model="nope")
    with pytest.raises(openai.NotFoundError) as denied:
        chat(gw.client("embedder"), model="chat")
    assert unknown.value.code == denied.value.code == "model_not_found"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"model": "chat", "messages": [', "invalid_json"),
        (b"\xff\xfe not utf-8", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model_required"),
        (b'{"model": "chat"}', "missing_field"),
        (
            b'{"model": "chat", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}',
            "invalid_max_tokens",
        ),
    ],
    ids=["truncated", "invalid-utf8", "not-object", "no-model", "no-messages", "bad-max-tokens"],
)
def test_malformed_requests_are_400_json(gw: Gateway, body: bytes, code: str) -> None:
    """Bad bodies get a 400 with an OpenAI error and never reach a model."""
    response = gw.post("/v1/chat/completions", body, key=gw.keys["acme"])
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code


def test_oversized_body_is_413_json(gw: Gateway) -> None:
    """A body past extproc.max_body_bytes gets 413 JSON, promptly."""
    big = b'{"model": "chat", "messages": [{"role": "user", "content": "' + b"x" * 200_000 + b'"}]}'
    response = gw.post("/v1/chat/completions", big, key=gw.keys["acme"])
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]


def test_budget_exhaustion_is_429_with_retry_after(gw: Gateway) -> None:
    """A tenant over tokens_per_minute gets 429 + Retry-After; OpenAI maps it to RateLimitError."""
    client = gw.client("thrifty")
    with pytest.raises(openai.RateLimitError) as limited:
        for _ in range(20):
            chat(client, text="spend some tokens please")
    assert int(limited.value.response.headers["retry-after"]) >= 1
    assert limited.value.code == "budget_exceeded"


def test_residency_tenant_never_leaves_its_region(gw: Gateway, sims: dict[str, Simulator]) -> None:
    """An eu-only tenant on a 50/50 eu/us model only reaches eu; us-only models do not exist."""
    with pytest.raises(openai.NotFoundError) as denied:
        chat(gw.client("eu-only"), model="us-model")
    assert denied.value.code == "model_not_found"
    before = httpx.get(f"{sims['us'].url}/metrics").text
    for _ in range(12):
        assert chat(gw.client("eu-only"), model="split", text="stay home") == "stay home"
    assert httpx.get(f"{sims['us'].url}/metrics").text.count("stay") == before.count("stay")
    us_requests = _requests_served(sims["us"])
    for _ in range(12):
        chat(gw.client("eu-only"), model="split")
    assert _requests_served(sims["us"]) == us_requests


def _requests_served(sim: Simulator) -> float:
    text = httpx.get(f"{sim.url}/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("vllm:e2e_request_latency_seconds_count")
    )


def test_jwt_tenant_is_taken_from_the_claim(gw: Gateway) -> None:
    """A valid JWT names the tenant by claim; a JWT signed by another key is refused."""
    token = ISSUER.token({"team": "jwt-team"})
    assert chat(gw.client(api_key=token), text="via jwt") == "via jwt"
    forged = ISSUER.token({"team": "jwt-team"}, key=JwtIssuer().key)
    with pytest.raises(openai.AuthenticationError):
        chat(gw.client(api_key=forged))


def test_client_cannot_pick_a_route_or_tenant_by_header(gw: Gateway) -> None:
    """Client-sent x-smesh-* headers are overwritten: the body's model and the key's tenant win."""
    response = gw.post(
        "/v1/chat/completions",
        b'{"model": "chat", "messages": [{"role": "user", "content": "x"}]}',
        key=gw.keys["eu-only"],
        **{"x-smesh-model": "us-model", "x-smesh-tenant": "acme", "x-smesh-residency": "us"},
    )
    assert response.status_code == 200
    assert response.json()["model"] == "chat"


def test_token_metrics_by_tenant(gw: Gateway) -> None:
    """extproc's Prometheus endpoint counts tokens by tenant, model and type."""
    chat(gw.client("acme"), text="count me")
    # The usage comes back with Envoy's access log (batches every 50 ms), not the answer.
    wait_until(lambda: "gen_ai_client_token_usage" in gw.extprocs[0].metrics(), timeout=5)
    metrics = gw.extprocs[0].metrics()
    assert 'tenant="acme"' in metrics and 'gen_ai_token_type="input"' in metrics


def test_region_outage_gives_503_never_another_region(
    gw: Gateway, sims: dict[str, Simulator]
) -> None:
    """With the eu servers down, the eu-only tenant gets 503 JSON while us still serves."""
    sims["eu"].stop()
    for _ in range(6):
        with pytest.raises(openai.APIStatusError) as failed:
            chat(gw.client("eu-only"), model="split")
        assert failed.value.status_code == 503
    assert chat(gw.client("acme"), model="us-model", text="still up") == "still up"
