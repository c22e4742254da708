"""Faults under steady load: 50 requests/s while components die and configs break.

The gateway: two extproc worker processes sharing a Redis budget store, one model served
by a cluster of two recording backends (replicas: Envoy retries a dead one's requests
on the other). For each outage (extproc's parent, then its workers;
xds; Redis; one backend) the errors during it and the time to recover after the
restart are reported, and no request may ever reach a backend without extproc's
``x-smesh-tenant`` (extproc fails closed). Config saves under load (empty, comment-only,
truncated, YAML syntax error, unknown field, negative weight) must cost zero requests,
and xds /status must show the error while the last good config keeps serving.

CI runs the config saves and an xds restart; ``pytest -m slow`` runs every outage.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import psutil
import pytest

from smesh.config.loader import ConfigError, parse_config
from tests.integration.gateway import Gateway
from tests.reliability.faults import Phase, Redis, SteadyLoad, config_save, outage, window
from tests.reliability.mesh import Mesh, recorded_gateway
from tests.reliability.report import figure

pytestmark = pytest.mark.integration

MESH = """
listeners:
  - {{name: gateway, port: {port}}}
extproc:
  port: {extproc_port}
  budget_store: {{kind: redis, url: "{redis_url}"}}
tenants:
  - name: load
    api_keys: ["{keys[load]}"]
    models: [chat]
    budgets: {{requests_per_minute: 1000000}}
models:
  - name: chat
    backends: [{{cluster: pool, weight: 50}}]
    max_tokens: 8
clusters:
  - name: pool                   # two replicas: a dead one is retried on the other
    endpoints: ["127.0.0.1:{backend[one]}", "127.0.0.1:{backend[two]}"]
    outlier_detection: {{consecutive_gateway_failure: 2, interval: 1s, base_ejection_time: 1s}}
"""
NODE = "envoy-test"  # the node id tests.integration.harness gives Envoy


@pytest.fixture(scope="module")
def fault_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("faults")
    with ExitStack() as stack:
        redis = Redis(tmp).start()
        stack.callback(redis.stop)
        mesh = stack.enter_context(
            recorded_gateway(
                tmp, MESH, ["load"], ["one", "two"], extproc_workers=2, redis_url=redis.url
            )
        )
        mesh.extra["redis"] = redis
        yield mesh


def load_on(mesh: Mesh) -> SteadyLoad:
    return SteadyLoad(mesh.port, mesh.keys["load"], rate=50.0)


def unprocessed(mesh: Mesh, mark: dict[str, int]) -> list[str]:
    """Records since ``mark`` without the gateway's tenant header (extproc was bypassed)."""
    return [
        f"{r.backend}#{r.seq} {r.test_id}"
        for r in mesh.records(mark)
        if r.header("x-smesh-tenant") != ["load"]
    ]


def report(phases: list[Phase], what: str) -> None:
    for phase in phases:
        figure(
            f"{what}_errors",
            phase.errors,
            phase=phase.name,
            requests=phase.requests,
            recovery_s=phase.recovery_s,
            errors_after_recovery=phase.errors_after_recovery,
            statuses=phase.statuses,
            **phase.detail,
        )


# -- config saves ------------------------------------------------------------------------


def _write_in_two_steps(text: str, finish: bool) -> Callable[[Path], object]:
    def write(path: Path) -> None:
        half = len(text) // 2
        with path.open("w") as file:
            file.write(text[:half])
            file.flush()
            if finish:
                time.sleep(0.03)  # an editor's two writes, 30 ms apart
                file.write(text[half:])

    return write


def _text(text: str) -> Callable[[Path], object]:
    return lambda path: path.write_text(text)


def bad_saves(good: str) -> dict[str, tuple[Callable[[Path], object], bool]]:
    """name → (how to save it, whether it is an error xds must show)."""
    with pytest.raises(ConfigError):  # so that "left-truncated" is a broken save
        parse_config(good[: len(good) // 2])
    return {
        "yaml-syntax-error": (_text(good.replace("tenants:", "tenants: [", 1)), True),
        "unknown-field": (_text(good.replace("extproc:\n", "extproc:\n  surprise: 1\n", 1)), True),
        "negative-weight": (_text(good.replace("weight: 50}", "weight: -5}", 1)), True),
        "truncated-then-completed": (_write_in_two_steps(good, finish=True), False),
        "left-truncated": (_write_in_two_steps(good, finish=False), True),
        "comment-only": (_text("# mesh.yaml is being rewritten\n"), True),
        "empty": (_text(""), True),
    }


def run_config_saves(mesh: Mesh, load: SteadyLoad, hold_s: float) -> list[Phase]:
    gateway: Gateway = mesh.gateway
    config = gateway.tmp / "mesh.yaml"
    good = config.read_text()
    phases = []
    for name, (write, is_error) in bad_saves(good).items():
        phase = config_save(load, gateway.xds, config, name, write, good, hold_s)
        phase.detail["expected_error"] = is_error
        phases.append(phase)
    return phases


def check_config_saves(phases: list[Phase]) -> None:
    failed = {p.name: p.statuses for p in phases if p.errors}
    unshown = [
        p.name for p in phases if p.detail["expected_error"] and not p.detail["config_errors"]
    ]
    wrongly_shown = [
        p.name for p in phases if not p.detail["expected_error"] and p.detail["config_errors"]
    ]
    assert not failed, f"config saves that cost requests (statuses during each): {failed}"
    assert not unshown, f"invalid saves xds /status did not report: {unshown}"
    assert not wrongly_shown, f"valid saves reported as errors: {wrongly_shown}"


# -- outages -------------------------------------------------------------------------------


def xds_outage(mesh: Mesh, load: SteadyLoad, hold_s: float) -> Phase:
    xds = mesh.gateway.xds

    def kill() -> None:
        assert xds.process is not None
        xds.process.kill()
        xds.process.wait()

    def reconnected() -> bool:
        try:
            node = xds.status()["nodes"].get(NODE, {})
        except OSError:
            return False
        return bool(node.get("streams"))

    return outage(load, "xds", kill, xds.start, hold_s, recovered=reconnected)


def extproc_outages(mesh: Mesh, load: SteadyLoad, hold_s: float) -> list[Phase]:
    extproc = mesh.gateway.extprocs[0]
    assert extproc.process is not None
    parent = psutil.Process(extproc.process.pid)
    workers = parent.children(recursive=True)
    assert len(workers) >= 2, [w.cmdline() for w in workers]

    def kill_parent() -> None:
        assert extproc.process is not None
        extproc.process.kill()
        extproc.process.wait()

    def kill_workers() -> None:
        for worker in workers:
            if worker.is_running():
                worker.kill()
        psutil.wait_procs(workers, timeout=10)

    parent_only = window(load, "extproc-parent", kill_parent, hold_s)
    parent_only.detail["workers_alive"] = sum(w.is_running() for w in workers)
    return [parent_only, outage(load, "extproc-workers", kill_workers, extproc.start, hold_s)]


def redis_outage(mesh: Mesh, load: SteadyLoad, hold_s: float) -> Phase:
    redis: Redis = mesh.extra["redis"]
    return outage(load, "redis", redis.kill, redis.start, hold_s)


def backend_outage(mesh: Mesh, load: SteadyLoad, hold_s: float) -> Phase:
    backend = mesh.backends["two"]
    counts: dict[str, int] = {}

    def restart() -> None:
        backend.start()
        counts["at_restart"] = backend.count()

    def serving_again() -> bool:
        return backend.count() > counts["at_restart"]

    return outage(load, "backend", backend.kill, restart, hold_s, recovered=serving_again)


# -- tests -----------------------------------------------------------------------------------


def test_config_saves_and_an_xds_restart_cost_no_requests(fault_mesh: Mesh) -> None:
    """Broken config saves and a kill -9 of xds under 50 req/s: zero failed requests, errors
    shown in xds /status, nothing upstream without extproc."""
    mark = fault_mesh.mark()
    with load_on(fault_mesh) as load:
        phases = run_config_saves(fault_mesh, load, hold_s=1.0)
        xds = xds_outage(fault_mesh, load, hold_s=2.0)
    report(phases, "config_save")
    report([xds], "outage")
    bypassed = unprocessed(fault_mesh, mark)
    figure("faults_unprocessed_upstream", len(bypassed), test="ci")
    assert bypassed == [], bypassed[:10]
    assert xds.errors == 0, f"xds down: {xds.statuses}"
    check_config_saves(phases)


@pytest.mark.slow
def test_component_outages_under_load(fault_mesh: Mesh) -> None:
    """Every component killed in turn under 50 req/s: extproc fails closed (never bypassed),
    xds and a single backend cost nothing, each recovers after its restart; then the
    config saves again with longer holds."""
    mark = fault_mesh.mark()
    with load_on(fault_mesh) as load:
        phases = [
            *extproc_outages(fault_mesh, load, hold_s=3.0),
            xds_outage(fault_mesh, load, hold_s=3.0),
            redis_outage(fault_mesh, load, hold_s=3.0),
            backend_outage(fault_mesh, load, hold_s=3.0),
        ]
        saves = run_config_saves(fault_mesh, load, hold_s=3.0)
    report(phases, "outage")
    report(saves, "config_save")
    bypassed = unprocessed(fault_mesh, mark)
    figure("faults_unprocessed_upstream", len(bypassed), test="slow")
    by_name = {p.name: p for p in phases}
    assert bypassed == [], bypassed[:10]
    assert by_name["xds"].errors == 0, by_name["xds"].statuses
    assert by_name["backend"].errors == 0, by_name["backend"].statuses
    after = {p.name: p.errors_after_recovery for p in phases if p.errors_after_recovery}
    assert not after, f"errors after recovery: {after}"
    check_config_saves(saves)
