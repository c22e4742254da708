"""The extproc process as operators run it: workers, their parent, restarts, hot reloads."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import psutil
import pytest

from smesh.extproc.keys import hash_api_key, new_api_key
from smesh.ports import free_port
from tests.integration.gateway import ExtProc
from tests.integration.harness import wait_until

pytestmark = pytest.mark.integration

KEY = new_api_key()
MESH = f"""
extproc: {{port: {{port}}}}
tenants:
  - {{name: a, api_keys: ["{hash_api_key(KEY)}"]}}
models:
  - {{name: chat, backends: [{{cluster: c}}]}}
clusters:
  - {{name: c, endpoints: ["127.0.0.1:9"]}}
"""


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_kill_9_of_the_parent_takes_its_workers_down_and_a_restart_is_clean(
    tmp_path: Path,
) -> None:
    """Workers exit when their parent is SIGKILLed; extproc restarts on the same ports."""
    port = free_port()
    config = tmp_path / "mesh.yaml"
    config.write_text(MESH.replace("{port}", str(port)))
    first = ExtProc(config, tmp_path / "first.log", port=port, workers=2).start()
    assert first.process is not None
    workers = _children(first.process.pid)
    assert len([w for w in workers if "python" in w.name().lower()]) >= 2
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait(5)
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert alive == [], f"orphaned workers still running: {[p.pid for p in alive]}"
    second = ExtProc(
        config, tmp_path / "second.log", port=port, metrics_port=first.metrics_port, workers=2
    ).start()
    try:
        wait_until(lambda: len(_children(second.process.pid)) >= 2, timeout=20)  # type: ignore[union-attr]
        for worker in range(2):
            url = f"http://127.0.0.1:{first.metrics_port + worker}/metrics"
            wait_until(lambda url=url: _answers(url), timeout=20)
        assert "Address already in use" not in (tmp_path / "second.log").read_text()
        assert second.process is not None and second.process.poll() is None
    finally:
        second.stop()


def test_a_reload_with_a_bad_tokenizer_keeps_the_old_policy(tmp_path: Path) -> None:
    """A hot reload compiles the whole policy first: a missing tokenizer file is refused, logged."""
    port = free_port()
    config = tmp_path / "mesh.yaml"
    good = MESH.replace("{port}", str(port))
    config.write_text(good)
    extproc = ExtProc(config, tmp_path / "extproc.log", port=port).start()
    try:
        config.write_text(
            good.replace(
                "backends: [{cluster: c}]}",
                "backends: [{cluster: c}], tokenizer: {kind: hf, path: /nonexistent.json}}",
            )
        )
        log = tmp_path / "extproc.log"
        wait_until(lambda: "/nonexistent.json" in log.read_text(), timeout=10)
        text = log.read_text()
        assert f"{config}:6: models[0].tokenizer.path:" in text.replace(
            str(config.resolve()), str(config)
        )
        assert "Traceback" not in text
        assert extproc.process is not None and extproc.process.poll() is None
    finally:
        extproc.stop()
