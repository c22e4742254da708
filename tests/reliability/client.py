"""A raw HTTP/1.1 client for reliability tests: exact paths, repeated headers, hard timeouts.

httpx normalises URLs (``/v1/../x`` becomes ``/x``) and merges nothing it is not told
to, but the tests here need the bytes on the wire exactly as written, so requests go out
through :mod:`http.client` (path verbatim, each header as given, repeats kept). An answer
is never an exception: a connection closed without a response is status 0, no response
within the timeout is status -1 (a hang).
"""

from __future__ import annotations

import http.client
import itertools
import json
import re
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CLOSED",
    "HUNG",
    "Answer",
    "Call",
    "burst",
    "error_problem",
    "python_internals",
    "run_calls",
    "send",
    "sse_usage",
]

CLOSED = 0  # the connection closed (or failed) with no HTTP response
HUNG = -1  # no response within the timeout

Header = tuple[str, str | bytes]


@dataclass(frozen=True)
class Call:
    """One request as it goes on the wire; ``tag`` is whatever the test judges it by."""

    method: str
    path: str
    headers: tuple[Header, ...] = ()
    body: bytes = b""
    tag: Any = None


@dataclass
class Answer:
    call: Call
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    elapsed: float = 0.0
    error: str = ""
    started: float = 0.0  # time.monotonic() when the request was sent

    def header(self, name: str) -> list[str]:
        wanted = name.lower()
        return [v for k, v in self.headers if k.lower() == wanted]

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class _Connection(http.client.HTTPConnection):
    uses = 0


def _exchange(conn: _Connection, port: int, call: Call) -> Answer:
    conn.uses += 1
    conn.putrequest(call.method, call.path, skip_host=True, skip_accept_encoding=True)
    names = {k.lower() for k, _ in call.headers}
    if "host" not in names:
        conn.putheader("Host", f"127.0.0.1:{port}")
    for key, value in call.headers:
        conn.putheader(key, value)
    framed = "content-length" in names or "transfer-encoding" in names
    if not framed and (call.body or call.method in {"POST", "PUT", "PATCH"}):
        conn.putheader("Content-Length", str(len(call.body)))
    conn.endheaders(call.body or None)
    response = conn.getresponse()
    body = response.read()
    return Answer(call, response.status, list(response.getheaders()), body)


def _one(
    port: int, call: Call, conn: _Connection | None, timeout: float
) -> tuple[Answer, _Connection | None]:
    """Send ``call`` on ``conn`` (or a new connection); retry once if a reused one was stale."""
    for attempt in range(2):
        if conn is None:
            conn = _Connection("127.0.0.1", port, timeout=timeout)
        started = time.monotonic()
        try:
            answer = _exchange(conn, port, call)
        except TimeoutError as exc:
            conn.close()
            return Answer(call, HUNG, error=repr(exc), started=started), None
        except _STALE as exc:
            reused = conn.uses > 1
            conn.close()
            conn = None
            if reused and attempt == 0:
                continue  # a keep-alive connection the server had closed: not this request
            return Answer(call, CLOSED, error=repr(exc), started=started), None
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            return Answer(call, CLOSED, error=repr(exc), started=started), None
        answer.started = started
        answer.elapsed = time.monotonic() - started
        return answer, conn
    raise AssertionError("unreachable")


def send(port: int, call: Call, timeout: float = 10.0) -> Answer:
    """One request on a fresh connection."""
    answer, conn = _one(port, call, None, timeout)
    if conn is not None:
        conn.close()
    return answer


def run_calls(
    port: int, calls: Sequence[Call], workers: int = 8, timeout: float = 10.0
) -> list[Answer]:
    """Every call, ``workers`` at a time on keep-alive connections; answers in call order."""
    answers: list[Answer | None] = [None] * len(calls)
    indices = itertools.count()

    def work() -> None:
        conn: _Connection | None = None
        while (i := next(indices)) < len(calls):
            answers[i], conn = _one(port, calls[i], conn, timeout)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=work, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(a is not None for a in answers)
    return [a for a in answers if a is not None]


def burst(port: int, calls: Sequence[Call], timeout: float = 30.0) -> list[Answer]:
    """All calls at once: one thread and one connection each, released together."""
    answers: list[Answer | None] = [None] * len(calls)
    conns = [_Connection("127.0.0.1", port, timeout=timeout) for _ in calls]
    for conn in conns:
        conn.connect()  # connected before the start, so the requests leave together
    barrier = threading.Barrier(len(calls))

    def work(i: int) -> None:
        barrier.wait()
        answers[i], conn = _one(port, calls[i], conns[i], timeout)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for conn in conns:
        conn.close()
    return [a for a in answers if a is not None]


def sse_usage(body: bytes) -> dict[str, Any] | None:
    """The ``usage`` of the last SSE chunk that carries one, or None."""
    usage = None
    for line in body.split(b"\n"):
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        try:
            chunk = json.loads(line[6:])
        except ValueError:
            continue
        if isinstance(chunk, dict) and isinstance(chunk.get("usage"), dict):
            usage = chunk["usage"]
    return usage


def error_problem(answer: Answer) -> str | None:
    """What is wrong with a refusal's body, or None if it is an OpenAI-style JSON error."""
    content_type = ";".join(answer.header("content-type"))
    if not content_type.startswith("application/json"):
        return f"content-type {content_type!r}"
    body = answer.json()
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return f"no error object: {answer.body[:120]!r}"
    for key in ("message", "type", "code"):
        if not isinstance(error.get(key), str) or not error[key]:
            return f"error.{key} is {error.get(key)!r}"
    return None


_PYTHON = re.compile(
    rb"Traceback|File \"|\b[A-Z][A-Za-z]*(?:Error|Exception)\b|\bError: |\bline \d+, in\b"
)


def python_internals(body: bytes) -> str | None:
    """The Python traceback or exception name a body leaks, if any."""
    found = _PYTHON.search(body)
    return found.group(0).decode("latin-1") if found else None


def open_socket(port: int, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)
