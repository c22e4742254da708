"""Run the model simulator in-process (a thread with its own event loop) for tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from smesh.sim.server import serve
from smesh.sim.settings import SimSettings

__all__ = ["metric_value", "running_sim"]


@contextmanager
def running_sim(settings: SimSettings, *, grace_s: float = 0.2) -> Iterator[str]:
    """Serve ``settings`` on a free loopback port; yield the base URL; stop on exit."""
    ready = threading.Event()
    bound: list[int] = []
    errors: list[BaseException] = []
    holder: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Event]] = {}

    async def main() -> None:
        stop = asyncio.Event()
        holder["stop"] = (asyncio.get_running_loop(), stop)

        def on_ready(_host: str, port: int) -> None:
            bound.append(port)
            ready.set()

        await serve(settings, "127.0.0.1", 0, on_ready=on_ready, stop=stop, grace_s=grace_s)

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=run, name="smesh-sim", daemon=True)
    thread.start()
    if not ready.wait(10) or errors:
        raise RuntimeError(f"simulator did not start: {errors}")
    try:
        yield f"http://127.0.0.1:{bound[0]}"
    finally:
        loop, stop = holder["stop"]
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        if errors:
            raise errors[0]


def metric_value(text: str, name: str, model: str) -> float:
    """The value of ``name{model_name="model"}`` in a Prometheus text exposition."""
    prefix = f'{name}{{model_name="{model}"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    raise KeyError(f"{prefix.strip()} not in metrics")
