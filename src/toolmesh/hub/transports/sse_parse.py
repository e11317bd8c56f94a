"""Minimal incremental parser for ``text/event-stream`` bodies (WHATWG rules)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import StreamReader


@dataclass(slots=True)
class SseEvent:
    event: str
    data: str
    id: str | None


async def iter_sse(content: StreamReader) -> AsyncIterator[SseEvent]:
    """Yield events as they arrive; comments and retry fields are skipped."""
    event = "message"
    data: list[str] = []
    eid: str | None = None
    while True:
        raw = await content.readline()
        if not raw:
            if data:
                yield SseEvent(event, "\n".join(data), eid)
            return
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if data:
                yield SseEvent(event, "\n".join(data), eid)
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
