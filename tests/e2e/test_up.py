"""`smesh up` as a new user runs it: one command, then a chat completion through Envoy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from smesh.ports import free_port

pytestmark = pytest.mark.integration


def test_up_serves_the_demo_mesh_and_stops_cleanly(tmp_path: Path) -> None:
    """Embedded default: the gateway answers chat and embeddings; SIGINT stops every child."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "smesh.cli",
            "up",
            "--port",
            str(port),
            "--state-dir",
            str(tmp_path / "state"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Ctrl-C"):
                break
        banner = "".join(lines)
        assert f"gateway            http://127.0.0.1:{port}" in banner, banner
        assert "chat-small-v1 90, chat-small-v2 10" in banner
        children = psutil.Process(process.pid).children(recursive=True)
        assert len(children) >= 4  # three simulators and Envoy

        url = f"http://127.0.0.1:{port}"
        answer = httpx.post(
            f"{url}/v1/chat/completions",
            headers={"x-smesh-model": "chat-small"},
            json={"model": "chat-small", "messages": [{"role": "user", "content": "hello"}]},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["usage"]["completion_tokens"] > 0
        embedding = httpx.post(
            f"{url}/v1/embeddings",
            headers={"x-smesh-model": "text-embedding-3-small"},
            json={"model": "text-embedding-3-small", "input": "hello"},
            timeout=10,
        )
        assert embedding.status_code == 200
        assert len(embedding.json()["data"][0]["embedding"]) > 0
        # The demo config was copied where the user can edit it live.
        assert (tmp_path / "state" / "mesh.yaml").exists()

        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
        assert not [c for c in children if c.is_running() and c.status() != "zombie"]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
