"""Resumable SSE streams of Streamable HTTP's handshake era (2025-11-25, SEP-1699).

Every event of a resumable stream carries an id ``<token>-<stream>-<seq>``: ``token`` names the
:class:`ReplayBuffer` (one per endpoint per worker process) that issued it, ``stream`` the
stream within it and ``seq`` the event's place in that stream. A stream opens with a *priming*
event (an id, the ``retry`` time and empty data), so a client that loses the connection before
any message still has an id to resume from. The buffer keeps the last :data:`MAX_EVENTS` events
of each stream; a client that reconnects with ``GET`` and ``Last-Event-ID`` gets the events after
that id (of that stream only, and only within its own session), then the live rest of the stream.

Buffers live in the worker's memory. With a :class:`StreamMirror` (the gateway's, in Redis, when
``state.url`` is set) a response stream whose client leaves mid-stream (it disconnected, or was
told to poll) is copied there from that moment on, and an id issued by another worker or replica
is resumed from that copy: what the client missed, then the rest as the other process writes it.
A stream delivered whole costs the mirror nothing. Without a mirror such an id is answered with
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
from typing import Any, NamedTuple, Protocol

from toolmesh.servers.dispatch import encode

__all__ = ["KEEP_DELIVERED", "KEEP_DONE", "MAX_EVENTS", "MAX_KEPT_BYTES", "RETRY_MS", "MirroredStream", "ReplayBuffer",
           "ReplayRefused", "StreamLog", "StreamMirror"]

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


#: Seconds between two reads of a mirrored stream being followed for a client of this process.
MIRROR_POLL = 0.05
#: How long a resume waits for a stream's copy to reach the mirror (the process serving it writes
#: it once it sees its client leave, which may be a moment after the client is back elsewhere).
MIRROR_WAIT = 1.0


class MirroredStream(NamedTuple):
    """What a :class:`StreamMirror` holds of one stream after a given event."""

    #: ``(seq, event bytes)`` after the one asked for, oldest first (the oldest may be trimmed).
    events: list[tuple[int, bytes]]
    #: The stream ended (its last event is among those written).
    done: bool
    #: The process writing the stream still runs (False: a stream not ``done`` never will be).
    alive: bool


class StreamMirror(Protocol):
    """A copy of every resumable response stream outside this process, so that another worker or
    replica can resume it. Writes never block or raise (a failed one only costs that resume)."""

    def opened(self, stream: str, session: str) -> None:
        """Stream ``stream`` (``<token>-<n>``) of ``session`` started."""

    def append(self, stream: str, session: str, seq: int, data: bytes) -> None:
        """Event ``seq`` of the stream, as sent (SSE bytes with its id)."""

    def ended(self, stream: str, session: str) -> None:
        """No more events will come: the copy is kept for :data:`KEEP_DONE` seconds."""

    async def read(self, stream: str, session: str, after: int) -> tuple[list[tuple[int, bytes]], bool, bool] | None:
        """``(events, done, alive)`` as in :class:`MirroredStream`, the events after ``after``; None
        when there is no copy (never shared, expired, or another session's). Raises when the
        mirror cannot be reached."""


class ReplayRefused(Exception):
    """A ``Last-Event-ID`` this buffer cannot resume from: ``status`` and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class StreamLog:
    """One stream's recent events and its state; readers wait on :meth:`wait`."""

    __slots__ = ("_changed", "done", "events", "expires", "finished_at", "mirror", "polled", "prefix", "seq",
                 "session", "size", "standalone", "touched")

    def __init__(self, prefix: str, session: str, standalone: bool) -> None:
        self.prefix = prefix
        #: Where each event is copied as well, once shared (see :meth:`ReplayBuffer.share`).
        self.mirror: StreamMirror | None = None
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
        self.keep(self.seq, data)
        if self.mirror is not None:
            self.mirror.append(self.prefix[:-1], self.session, self.seq, data)
        return data

    def keep(self, seq: int, data: bytes) -> None:
        """Keep event ``seq`` (already formatted: :meth:`add`'s, or a mirrored copy's) for readers."""
        if len(self.events) == self.events.maxlen:
            self.size -= len(self.events[0][1])
        self.events.append((seq, data))
        self.seq = max(self.seq, seq)
        self.size += len(data)
        self.touched = time.monotonic()
        self._wake()

    def finish(self, delivered: bool = False) -> None:
        """No more events will come (the response was recorded, or the request ended);
        ``delivered``: the last one went out on a live connection (kept only briefly)."""
        if not self.done:
            self.done = True
            self.finished_at = time.monotonic()
            self.expires = self.finished_at + (KEEP_DELIVERED if delivered else KEEP_DONE)
            if self.mirror is not None:
                self.mirror.ended(self.prefix[:-1], self.session)
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

    def __init__(self, mirror: StreamMirror | None = None) -> None:
        """``mirror``: where response streams are copied for other processes to resume (and read from)."""
        # Random per buffer: ids from another worker, replica or an earlier run never match.
        self.token = secrets.token_hex(4)
        self.mirror = mirror
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

    def share(self, log: StreamLog) -> None:
        """Copy ``log`` to the mirror from now on (its client left mid-stream and may resume on
        another worker or replica): what it kept so far, then each event as it comes. A session's
        GET stream is not shared (elsewhere it is opened afresh, see the module doc)."""
        mirror = self.mirror
        if mirror is None or log.mirror is not None or log.standalone:
            return
        log.mirror = mirror
        stream = log.prefix[:-1]
        mirror.opened(stream, log.session)
        for seq, data in log.events:
            mirror.append(stream, log.session, seq, data)
        if log.done:
            mirror.ended(stream, log.session)

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

    async def resume(self, last_event_id: str, session: str) -> tuple[StreamLog, int, asyncio.Task[None] | None]:
        """:meth:`find`, and for a response stream another process started, its mirrored copy:
        a log filled with what the mirror holds and a task that keeps it filled until the stream
        ends (cancel it when the reader leaves). :class:`ReplayRefused` when neither has it."""
        try:
            log, seq = self.find(last_event_id, session)
            return log, seq, None
        except ReplayRefused as exc:
            if exc.status != 409 or self.mirror is None or self.of_get_stream(last_event_id):
                raise
        token, _, rest = last_event_id.strip().partition("-")
        number, _, seq_text = rest.partition("-")
        stream, seq = f"{token}-{number}", int(seq_text)
        copy = await self._read_mirror(stream, session, seq, wait=MIRROR_WAIT)
        if copy is None:
            raise ReplayRefused(410, "the stream of this Last-Event-ID ended long ago or is unknown")
        if not copy.done and not copy.alive:
            raise ReplayRefused(410, "the worker or replica that ran this stream's request stopped: "
                                     "its result will not come")
        log = StreamLog(f"{stream}-", session, standalone=False)
        log.seq = seq
        for event_seq, data in copy.events:
            log.keep(event_seq, data)
        if copy.done:
            log.finish()
            return log, seq, None
        return log, seq, asyncio.create_task(self._follow(log, stream, session))

    async def _read_mirror(self, stream: str, session: str, after: int, *, wait: float) -> MirroredStream | None:
        assert self.mirror is not None
        until = time.monotonic() + wait
        while True:
            try:
                raw = await self.mirror.read(stream, session, after)
            except Exception as exc:  # the mirror's own error (e.g. Redis down): said, not a crash
                raise ReplayRefused(503, f"streams of other workers or replicas cannot be read now: {exc}") from None
            if raw is not None:
                return MirroredStream(*raw)
            if time.monotonic() >= until:
                return None
            await asyncio.sleep(MIRROR_POLL)

    async def _follow(self, log: StreamLog, stream: str, session: str) -> None:
        """Copy the mirror's new events into ``log`` until the stream ends (or cannot any more)."""
        try:
            while not log.done:
                await asyncio.sleep(MIRROR_POLL)
                try:
                    copy = await self._read_mirror(stream, session, log.seq, wait=0.0)
                except ReplayRefused:
                    continue  # the mirror is unreachable for now: try again
                if copy is None:
                    break  # expired: the reader ends here (a further resume gets a clear 410)
                fresh = [(n, data) for n, data in copy.events if n > log.seq]
                if fresh and fresh[0][0] > log.seq + 1:
                    break  # the copy was trimmed past this reader: its next resume gets a clear 410
                for event_seq, data in fresh:
                    log.keep(event_seq, data)
                if copy.done or not copy.alive:
                    break
        finally:
            log.finish()

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
