"""Minimal incremental parser for ``text/event-stream`` bodies (WHATWG rules).

Reads raw chunks rather than ``readline()`` because aiohttp caps line length
(512 KiB) and a single ``data:`` line may carry a multi-megabyte tool result.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass

#: Largest single event accepted; beyond this the stream is treated as broken.
MAX_EVENT = 64 * 1024 * 1024


@dataclass(slots=True)
class SseEvent:
    event: str
    data: str
    id: str | None
    #: The stream's reconnection time in milliseconds, once a ``retry:`` field set it.
    retry: int | None = None


#: Set by a server frontend while it relays one request (the gateway): called with the server's
#: ``retry`` time (ms, or None) when the upstream closed that request's SSE stream mid-call so
#: the client polls and resumes it (SEP-1699). The frontend then closes its own client's stream
#: the same way, so the client resumes from the gateway while the gateway resumes upstream. It
#: returns an event set when its own client polls (then the relay polls upstream at once: the
#: client's poll is passed on) or None.
STREAM_PAUSED: ContextVar[Callable[[int | None], Awaitable[asyncio.Event | None]] | None] = ContextVar(
    "toolmesh_stream_paused", default=None)


class EventTooLarge(ValueError):
    """An SSE event exceeded :data:`MAX_EVENT` bytes."""


async def iter_sse(read_chunk: Callable[[], Awaitable[bytes]]) -> AsyncIterator[SseEvent]:
    """Yield events as they arrive; comments are skipped, ``retry:`` is carried on each event.

    ``read_chunk`` returns the next piece of the body, ``b""`` at the end
    (aiohttp's ``content.readany`` or :meth:`fasthttp.Response.read_chunk`)."""
    event = "message"
    data: list[str] = []
    eid: str | None = None
    retry: int | None = None
    buf = bytearray()
    eof = False
    while True:
        nl = buf.find(b"\n")
        if nl < 0:
            if eof:
                if buf:
                    nl = len(buf)
                    buf.extend(b"\n")
                else:
                    if data:
                        yield SseEvent(event, "\n".join(data), eid, retry)
                    return
            else:
                chunk = await read_chunk()
                if not chunk:
                    eof = True
                else:
                    buf.extend(chunk)
                    if len(buf) > MAX_EVENT:
                        raise EventTooLarge(f"SSE event larger than {MAX_EVENT} bytes")
                continue
        line = buf[:nl].decode("utf-8", errors="replace").rstrip("\r")
        del buf[: nl + 1]
        if not line:
            if data:
                yield SseEvent(event, "\n".join(data), eid, retry)
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value or "message"
        elif name == "id":
            eid = value
        elif name == "retry" and value.isascii() and value.isdigit():
            retry = int(value)
