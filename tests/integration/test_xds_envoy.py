"""xds drives a real Envoy: first config, live edits, bad edits, NACKs, repoints, restarts."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from smesh.envoy_process import EnvoyProcess
from smesh.ports import free_port
from tests.integration.harness import (
    Load,
    Simulator,
    Xds,
    chat,
    cluster_requests,
    envoy_clusters,
    start_envoy,
    wait_until,
)

pytestmark = pytest.mark.integration


def mesh(
    port: int,
    a: Simulator,
    b: Simulator,
    weights: tuple[int, int] = (100, 0),
    route_to: str = "blue",
    extra: str = "",
) -> str:
    backends = (
        f"[{{cluster: blue, weight: {weights[0]}}}, {{cluster: green, weight: {weights[1]}}}]"
        if route_to == "both"
        else f"[{{cluster: {route_to}}}]"
    )
    declared = (
        {"blue": a, "green": b} if route_to == "both" else {route_to: (a, b)[route_to == "green"]}
    )
    clusters = "".join(
        f'  - {{name: {name}, endpoints: ["127.0.0.1:{sim.port}"]}}\n'
        for name, sim in declared.items()
    )
    return f"""
listeners:
  - {{name: gateway, port: {port}}}
models:
  - name: chat
    aliases: [gpt-4o-mini]
    backends: {backends}
    retries: {{attempts: 0}}
clusters:
{clusters}{extra}"""


class Stack:
    def __init__(self, tmp: Path, sims: list[Simulator]) -> None:
        self.tmp = tmp
        self.sims = sims
        self.port = free_port()
        self.config = tmp / "mesh.yaml"
        self.xds = Xds(self.config, tmp / "xds.log")
        self.envoy: EnvoyProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write(self, **kwargs: object) -> None:
        text = mesh(self.port, self.sims[0], self.sims[1], **kwargs)  # type: ignore[arg-type]
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.config)  # an atomic save, as editors do

    def post(self, model: str = "chat", header: str | None = "chat") -> httpx.Response:
        headers = {"x-smesh-model": header} if header else {}
        return httpx.post(
            f"{self.url}/v1/chat/completions", json=chat(model), headers=headers, timeout=10
        )


@pytest.fixture
def stack(tmp_path: Path, simulators: list[Simulator]) -> Iterator[Stack]:
    s = Stack(tmp_path, simulators)
    s.write(route_to="both", weights=(100, 0))
    try:
        s.xds.start()
        s.envoy = start_envoy(tmp_path, s.xds)
        wait_until(lambda: s.post().status_code == 200, timeout=10)
        yield s
    finally:
        if s.envoy is not None:
            s.envoy.stop()
        s.xds.stop()


def counts(stack: Stack) -> tuple[int, int]:
    assert stack.envoy is not None
    return cluster_requests(stack.envoy, "blue"), cluster_requests(stack.envoy, "green")


def test_first_config_is_served(stack: Stack) -> None:
    """Envoy serves the model route from the first snapshot; aliases route too."""
    response = stack.post()
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["role"] == "assistant"
    assert stack.post(header="gpt-4o-mini").status_code == 200


def test_unknown_and_missing_model_get_openai_errors(stack: Stack) -> None:
    """An unknown model is a 404 JSON error; no model header is a 400."""
    unknown = stack.post(header="nope")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"
    missing = stack.post(header=None)
    assert missing.status_code == 400
    assert missing.json()["error"]["type"] == "invalid_request_error"


def test_yaml_edit_changes_the_split(stack: Stack) -> None:
    """Saving new weights moves traffic: 100/0 → 0/100 applies within a second or so."""
    for _ in range(10):
        assert stack.post().status_code == 200
    blue, green = counts(stack)
    assert (blue, green) == (blue, 0) and blue >= 10
    stack.write(route_to="both", weights=(0, 100))
    saved = time.monotonic()

    def moved() -> bool:
        before = counts(stack)[1]
        stack.post()
        return counts(stack)[1] > before

    wait_until(moved, timeout=5)
    assert time.monotonic() - saved < 3.0
    blue_before = counts(stack)[0]
    for _ in range(20):
        assert stack.post().status_code == 200
    assert counts(stack)[0] == blue_before


def test_invalid_yaml_edit_keeps_the_old_config(stack: Stack) -> None:
    """A broken save is refused with file:line:field, and Envoy keeps serving."""
    good_version = stack.xds.status()["snapshot"]
    stack.config.write_text(stack.config.read_text().replace("weight: 100", "weight: -5"))
    wait_until(lambda: bool(stack.xds.status()["config_errors"]), timeout=5)
    errors = stack.xds.status()["config_errors"]
    assert any("mesh.yaml:" in e and "backends[0].weight" in e for e in errors), errors
    assert stack.xds.status()["snapshot"] == good_version
    assert all(stack.post().status_code == 200 for _ in range(10))
    # Fixing the file clears the error.
    stack.write(route_to="both", weights=(50, 50))
    wait_until(lambda: not stack.xds.status()["config_errors"], timeout=5)


@pytest.mark.parametrize(
    "save",
    ["", "# listeners:\n#   - {name: gateway, port: 1}\n", "---\n"],
    ids=["empty", "comments-only", "bare-document"],
)
def test_an_empty_save_keeps_the_gateway_serving(stack: Stack, save: str) -> None:
    """`: > mesh.yaml` is refused: the listener stays up, every request under load succeeds."""
    good_version = stack.xds.status()["snapshot"]
    with Load(stack.url, "chat") as load:
        time.sleep(0.3)
        stack.config.write_text(save)  # truncate-and-write, as `: > mesh.yaml` does
        wait_until(lambda: bool(stack.xds.status()["config_errors"]), timeout=5)
        time.sleep(1.0)  # Envoy would have dropped the port by now had it been pushed
    assert load.total > 20 and load.non_2xx() == {}, load.non_2xx()
    [error] = stack.xds.status()["config_errors"]
    assert error.endswith("(document): the config is empty (no listeners, models or tenants)")
    assert stack.xds.status()["snapshot"] == good_version


def test_a_save_caught_mid_write_is_never_applied(stack: Stack) -> None:
    """Half a file, then the rest 30 ms later: the half is never pushed (no errors, no 404s)."""
    full = stack.config.read_text().replace("weight: 100", "weight: 99")
    cut = full.index("clusters:")
    with Load(stack.url, "chat") as load:
        time.sleep(0.3)
        with stack.config.open("w") as out:
            out.write(full[:cut])  # models without their clusters: invalid if applied alone
            out.flush()
            time.sleep(0.03)
            out.write(full[cut:])
        wait_until(lambda: stack.xds.status()["loads"] >= 2, timeout=5)
        time.sleep(0.3)
    assert load.total > 20 and load.non_2xx() == {}, load.non_2xx()
    assert stack.xds.status()["config_errors"] == []
    assert stack.xds.status()["rejects"] == 0


def test_nack_keeps_old_config_and_is_visible(stack: Stack) -> None:
    """A listener Envoy cannot bind is NACKed: old listeners serve, xds reports the error."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        stack.write(
            route_to="both",
            weights=(100, 0),
            extra="",
        )
        text = stack.config.read_text().replace(
            "listeners:\n", f"listeners:\n  - {{name: second, port: {taken}}}\n"
        )
        stack.config.write_text(text)

        def nacked() -> bool:
            node = stack.xds.status()["nodes"].get("envoy-test", {})
            return bool(node.get("types", {}).get("Listener", {}).get("nack_error"))

        wait_until(nacked, timeout=10)
        listener = stack.xds.status()["nodes"]["envoy-test"]["types"]["Listener"]
        assert "second" in listener["nack_error"] or str(taken) in listener["nack_error"]
        assert not listener["in_sync"]
        assert 'smesh_xds_nacks_total{node="envoy-test",type="Listener"} 1.0' in stack.xds.metrics()
        assert all(stack.post().status_code == 200 for _ in range(10))


def test_repoint_under_load_has_zero_errors(stack: Stack) -> None:
    """Moving the route to a brand-new cluster under continuous load gives no non-2xx."""
    stack.write(route_to="blue")
    assert stack.envoy is not None
    wait_until(lambda: "green" not in envoy_clusters(stack.envoy), timeout=10)
    envoy = stack.envoy
    with Load(stack.url, "chat") as load:
        wait_until(lambda: load.total > 50, timeout=10)
        # Back and forth: each move adds a cluster and removes the other one.
        for new, old in [("green", "blue"), ("blue", "green"), ("green", "blue")]:
            served = cluster_requests(envoy, new)
            stack.write(route_to=new)
            wait_until(lambda: cluster_requests(envoy, new) > served + 20, timeout=10)  # noqa: B023
            wait_until(lambda: old not in envoy_clusters(envoy), timeout=10)  # noqa: B023
        before = load.total
        wait_until(lambda: load.total > before + 50, timeout=10)
    assert load.non_2xx() == {}, load.non_2xx()
    assert load.total > 200


def test_xds_restart_keeps_serving_and_reconverges(stack: Stack) -> None:
    """With xds down Envoy serves the last config; a restarted xds brings in new edits."""
    with Load(stack.url, "chat") as load:
        wait_until(lambda: load.total > 30, timeout=10)
        stack.xds.stop()
        before = load.total
        wait_until(lambda: load.total > before + 50, timeout=10)
        stack.write(route_to="both", weights=(0, 100))
        stack.xds.start()
        green = counts(stack)[1]
        wait_until(lambda: counts(stack)[1] > green + 20, timeout=15)
    assert load.non_2xx() == {}, load.non_2xx()
    status = stack.xds.status()["nodes"]["envoy-test"]
    assert status["streams"] == 1
    assert all(t["in_sync"] for t in status["types"].values())


def test_xds_restart_with_a_repointed_route_keeps_serving(stack: Stack) -> None:
    """Edited while xds was down (route moved, old cluster removed): the restart converges
    without a single error, because the restarted xds knows what Envoy holds."""
    stack.write(route_to="blue")
    assert stack.envoy is not None
    envoy = stack.envoy
    wait_until(lambda: "green" not in envoy_clusters(envoy), timeout=10)
    with Load(stack.url, "chat") as load:
        wait_until(lambda: load.total > 30, timeout=10)
        for new in ["green", "blue", "green"]:
            stack.xds.stop()
            served = cluster_requests(envoy, new)
            stack.write(route_to=new)
            stack.xds.start()
            wait_until(lambda: cluster_requests(envoy, new) > served + 20, timeout=15)  # noqa: B023
    assert load.non_2xx() == {}, load.non_2xx()
