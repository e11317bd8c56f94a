"""Resumable SSE streams of Streamable HTTP's handshake era (2025-11-25, SEP-1699).

Every event of a resumable stream carries an id ``<token>-<stream>-<seq>``: ``token`` names the
:class:`ReplayBuffer` (one per endpoint per worker process) that issued it, ``stream`` the
stream within it and ``seq`` the event's place in that stream. A stream opens with a *priming*
event (an id, the ``retry`` time and empty data), so a client that loses the connection before
any message still has an id to resume from. The buffer keeps the last :data:`MAX_EVENTS` events
of each stream; a client that reconnects with ``GET`` and ``Last-Event-ID`` gets the events after
that id (of that stream only, and only within its own session), then the live rest of the stream.

Buffers live in the worker's memory. An id issued by another worker or replica is answered with
409 and an explanation (the client cannot be served here); an id whose events were already
dropped, or whose stream ended more than :data:`KEEP_DONE` seconds ago, with 410. Except for a
session's GET stream (ids ``<token>-g<stream>-<seq>``): one that cannot be resumed (another
worker's, an endpoint rebuilt since) is opened afresh, as the client would have without an id —
it carries change notifications, and a client must not lose it for want of a replay.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from typing import Any

from toolmesh.servers.dispatch import encode

__all__ = ["KEEP_DELIVERED", "KEEP_DONE", "MAX_EVENTS", "MAX_KEPT_BYTES", "RETRY_MS", "ReplayBuffer", "ReplayRefused",
           "StreamLog"]

#: Events kept per stream for replay (older ones are dropped; resuming before them gets 410).
MAX_EVENTS = 512
#: How long a finished stream stays resumable when its client was gone at the end (it comes back).
KEEP_DONE = 60.0
#: ... and when the end was written to a live connection (only a drop at that very moment needs it).
KEEP_DELIVERED = 5.0
#: Finished streams kept per buffer, in bytes: past it the oldest are dropped first.
MAX_KEPT_BYTES = 32 * 1024 * 1024
#: A stream nobody finished (its request was cancelled mid-way) is dropped after this long.
KEEP_IDLE = 3600.0
#: The reconnection time announced in the priming event and before a server-initiated close.
RETRY_MS = 500


class ReplayRefused(Exception):
    """A ``Last-Event-ID`` this buffer cannot resume from: ``status`` and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class StreamLog:
    """One stream's recent events and its state; readers wait on :meth:`wait`."""

    __slots__ = ("_changed", "done", "events", "expires", "finished_at", "polled", "prefix", "seq", "session",
                 "size", "standalone", "touched")

    def __init__(self, prefix: str, session: str, standalone: bool) -> None:
        self.prefix = prefix
        self.session = session
        self.standalone = standalone
        self.events: deque[tuple[int, bytes]] = deque(maxlen=MAX_EVENTS)
        self.seq = 0
        self.done = False
        self.finished_at = 0.0
        self.expires = 0.0
        self.size = 0  # bytes of the kept events
        self.touched = time.monotonic()
        self._changed = asyncio.Event()
        #: Set when a client resumes this stream (a relay then polls its own upstream at once).
        self.polled = asyncio.Event()

    def event_id(self, seq: int) -> str:
        """The SSE id of event ``seq`` of this stream."""
        return f"{self.prefix}{seq}"

    def priming(self, retry_ms: int = RETRY_MS) -> bytes:
        """The stream's first event: an id to resume from, the retry time, no message."""
        return f"id: {self.event_id(0)}\nretry: {retry_ms}\ndata: \n\n".encode()

    def add(self, message: Any) -> bytes:
        """Record one JSON-RPC message as the stream's next event; returns the event's bytes."""
        self.seq += 1
        data = f"id: {self.prefix}{self.seq}\nevent: message\ndata: ".encode() + encode(message) + b"\n\n"
        if len(self.events) == self.events.maxlen:
            self.size -= len(self.events[0][1])
        self.events.append((self.seq, data))
        self.size += len(data)
        self.touched = time.monotonic()
        self._wake()
        return data

    def finish(self, delivered: bool = False) -> None:
        """No more events will come (the response was recorded, or the request ended);
        ``delivered``: the last one went out on a live connection (kept only briefly)."""
        if not self.done:
            self.done = True
            self.finished_at = time.monotonic()
            self.expires = self.finished_at + (KEEP_DELIVERED if delivered else KEEP_DONE)
            self._wake()

    def reopen(self) -> None:
        """A GET stream resumed: it is live again (finished again when it ends)."""
        self.done = False
        self.touched = time.monotonic()

    def after(self, seq: int) -> list[tuple[int, bytes]]:
        """The events after ``seq``; :class:`ReplayRefused` if some of them were already dropped."""
        if seq > self.seq:
            raise ReplayRefused(400, f"Last-Event-ID {self.event_id(seq)} was never sent on this stream")
        if self.events and self.events[0][0] > seq + 1:
            raise ReplayRefused(410, f"events after {self.event_id(seq)} are no longer kept (the last "
                                     f"{MAX_EVENTS} of a stream are)")
        return [e for e in self.events if e[0] > seq]

    async def wait(self, seq: int) -> None:
        """Return once there is an event after ``seq`` or the stream is done."""
        while self.seq <= seq and not self.done:
            self._changed.clear()
            await self._changed.wait()

    def _wake(self) -> None:
        self._changed.set()


class ReplayBuffer:
    """The resumable streams of one Streamable HTTP endpoint in this process."""

    def __init__(self) -> None:
        # Random per buffer: ids from another worker, replica or an earlier run never match.
        self.token = secrets.token_hex(4)
        self.streams: dict[int, StreamLog] = {}
        self._next = 0
        self._swept = time.monotonic()

    def open(self, session: str, *, standalone: bool = False) -> StreamLog:
        """A new stream of ``session``'s (``standalone``: its GET stream, else a POST's response)."""
        now = time.monotonic()
        if now - self._swept > 5.0:
            self.sweep(now)
        self._next += 1
        # "g" marks a GET stream's ids: one that cannot be resumed is simply opened afresh.
        kind = "g" if standalone else ""
        log = self.streams[self._next] = StreamLog(f"{self.token}-{kind}{self._next}-", session, standalone)
        return log

    def find(self, last_event_id: str, session: str) -> tuple[StreamLog, int]:
        """The stream ``last_event_id`` belongs to and the event's place in it; else :class:`ReplayRefused`."""
        token, _, rest = last_event_id.strip().partition("-")
        stream, _, seq = rest.partition("-")
        stream = stream.removeprefix("g")
        if not (token and stream.isdigit() and seq.isdigit()):
            raise ReplayRefused(400, f"Last-Event-ID {last_event_id[:80]!r} is not an event id of this server")
        if token != self.token:
            raise ReplayRefused(409, "Last-Event-ID was issued by another worker or replica of this server: "
                                     "streams are resumable only where they started (route a session's requests "
                                     "to one worker, e.g. sticky on Mcp-Session-Id), and not across a restart")
        log = self.streams.get(int(stream))
        if log is None or log.session != session:
            raise ReplayRefused(410, "the stream of this Last-Event-ID ended long ago or is unknown")
        return log, int(seq)

    @staticmethod
    def of_get_stream(last_event_id: str) -> bool:
        """Whether ``last_event_id`` names an event of a session's GET stream (any buffer's)."""
        return last_event_id.strip().partition("-")[2].startswith("g")

    def sweep(self, now: float) -> None:
        """Drop finished streams past their keep time, streams idle for :data:`KEEP_IDLE`, and the
        oldest finished ones while those hold more than :data:`MAX_KEPT_BYTES`."""
        self._swept = now
        for key in [k for k, s in self.streams.items()
                    if (s.done and now > s.expires) or now - s.touched > KEEP_IDLE]:
            del self.streams[key]
        finished = [(s.finished_at, k, s.size) for k, s in self.streams.items() if s.done]
        kept = sum(size for _, _, size in finished)
        for _, key, size in sorted(finished):
            if kept <= MAX_KEPT_BYTES:
                break
            del self.streams[key]
            kept -= size

    def drop_session(self, session: str) -> None:
        """The session ended (DELETE): its streams cannot be resumed any more."""
        for key in [k for k, s in self.streams.items() if s.session == session]:
            self.streams.pop(key).finish()
