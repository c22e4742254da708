"""The `smesh` command as the README documents it."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from smesh.ports import free_port, wait_http

pytestmark = pytest.mark.integration

SMESH = [sys.executable, "-m", "smesh.cli"]


def test_sim_help_prints_the_simulators_options() -> None:
    """`smesh sim --help` is the simulator's help (it used to be an argparse error)."""
    done = subprocess.run(
        [*SMESH, "sim", "--help"], check=False, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: smesh sim")
    assert "--failure-kind" in done.stdout


def test_sim_port_serves_on_that_port() -> None:
    """`smesh sim --port P --echo` listens on P and echoes."""
    port = free_port()
    process = subprocess.Popen(
        [*SMESH, "sim", "--port", str(port), "--echo", "--ttft", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=20)
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "ping 42"}]},
            timeout=5,
        ).json()
        assert answer["choices"][0]["message"]["content"] == "ping 42"
    finally:
        process.terminate()
        process.wait(10)


def test_unknown_arguments_are_an_error_for_other_commands() -> None:
    """Arguments meant for the simulator are not silently dropped elsewhere."""
    done = subprocess.run(
        [*SMESH, "validate", "a.yaml", "--port", "1"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "unrecognized arguments: --port 1" in done.stderr
