"""Server-Sent Events framing for OpenAI streams.

Why: Envoy hands ext_proc the response body in chunks cut at arbitrary byte
boundaries, so one SSE event may arrive in pieces and one chunk may hold several
events. Metering and redaction need whole events; :class:`SseSplitter` re-frames the
byte stream and returns every event byte-for-byte as it came, so a pass-through
changes nothing.

An event ends with a blank line (WHATWG HTML, "Server-sent events", 9.2.5 "Parsing an
event stream": lines end with CRLF, LF or CR; an empty line dispatches the event).
The splitter accepts ``\\n\\n``, ``\\r\\n\\r\\n`` and mixtures such as ``\\n\\r\\n``;
streams that end lines with a lone CR are not split (no OpenAI-compatible server
sends them) and come out whole from :meth:`SseSplitter.flush`.
"""

from __future__ import annotations

__all__ = ["SseSplitter", "event_data", "format_event"]

_LF_LF = b"\n\n"
_LF_CRLF = b"\n\r\n"  # also the tail of CRLF CRLF


def _event_end(buf: bytes | bytearray, start: int = 0) -> int:
    """Index just past the first blank-line separator at or after ``start``, or -1."""
    lf = buf.find(_LF_LF, start)
    crlf = buf.find(_LF_CRLF, start)
    if crlf < 0:
        return -1 if lf < 0 else lf + 2
    if lf < 0 or crlf < lf:
        return crlf + 3
    return lf + 2


class SseSplitter:
    """Cut a chunked byte stream into complete SSE events, keeping partial ones.

    Each returned event includes its terminating blank line, so joining everything
    :meth:`feed` and :meth:`flush` return gives back the input exactly.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add ``chunk``; return the events it completes (possibly none)."""
        if not chunk:
            return []
        buf = self._buf
        if not buf:
            # Fast path: most upstream chunks are exactly one or more whole events.
            end = _event_end(chunk)
            if end == len(chunk):
                return [chunk]
        # A separator may straddle the old tail and the new chunk: rescan 2 bytes back.
        start = max(0, len(buf) - 2)
        buf += chunk
        events: list[bytes] = []
        pos = 0
        while (end := _event_end(buf, start)) >= 0:
            events.append(bytes(buf[pos:end]))
            pos = start = end
        if pos:
            del buf[:pos]
        return events

    def flush(self) -> bytes:
        """Return and forget what is left: a partial event, or ``b""``."""
        rest = bytes(self._buf)
        self._buf.clear()
        return rest

    @property
    def pending(self) -> int:
        """How many bytes are held back waiting for the end of an event."""
        return len(self._buf)


def event_data(event: bytes) -> bytes | None:
    """The event's ``data`` payload, or ``None`` when it has no ``data`` field.

    Per the SSE spec, several ``data:`` lines join with ``\\n``, one space after the
    colon is dropped, ``:``-lines are comments, and a bare ``data`` line is empty data.
    Comments and keep-alives (``: ping``) therefore give ``None``.
    """
    if event.startswith(b"data: ") and b"\r" not in event:
        # Fast path: one ``data: ...`` line, the form every OpenAI-style server sends.
        line_end = event.find(b"\n")
        if line_end < 0:
            return event[6:]
        if event[line_end:] in (b"\n", b"\n\n"):
            return event[6:line_end]
    lines: list[bytes] = []
    for line in event.splitlines():
        name, colon, value = line.partition(b":")
        if name != b"data":
            continue  # comments (empty name), blank lines, event/id/retry fields
        if colon and value.startswith(b" "):
            value = value[1:]
        lines.append(value)
    return b"\n".join(lines) if lines else None


def format_event(data: bytes) -> bytes:
    """One SSE event carrying ``data`` (a ``data:`` line per line of ``data``)."""
    if b"\n" not in data and b"\r" not in data:
        return b"data: " + data + b"\n\n"
    return b"".join(b"data: " + line + b"\n" for line in data.splitlines()) + b"\n"
