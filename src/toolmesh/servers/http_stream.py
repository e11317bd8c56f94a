"""The response streams of Streamable HTTP: a request's SSE response, and its resumption by GET.

:class:`ResponseStream` turns a POST's response into SSE on its first notification (or at once
for a client that prefers a stream); in a handshake-era session it is resumable (see
:mod:`toolmesh.servers.resume`). :func:`pump_resumed` serves a ``GET`` with ``Last-Event-ID``
for such a stream: what the client missed, then the live rest until the response.
:class:`Watchdog` notices a client that goes away while its request runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from toolmesh.net.sse import STREAM_PAUSED
from toolmesh.servers.dispatch import encode
from toolmesh.servers.resume import ReplayBuffer, ReplayRefused, StreamLog

__all__ = ["SSE_HEADERS", "ResponseStream", "Watch", "Watchdog", "close_sse_stream", "pump_resumed", "sse_event"]

#: After this long a still-running request starts watching for the client going away.
_WATCH_AFTER = 0.2


ASGIReceive = Any
ASGISend = Any

SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache, no-transform")]


async def close_sse_stream(retry_ms: int | None = None) -> bool:
    """Inside a request's handler (a tool): close the client's SSE stream of this request so it
    polls with ``Last-Event-ID`` (SEP-1699, e.g. before a long wait); the request goes on and its
    result waits for the client's resume. False when this request has no resumable stream (the
    2026-07-28 revision, stdio, WebSocket, legacy SSE)."""
    paused = STREAM_PAUSED.get()
    if paused is None:
        return False
    await paused(retry_ms)
    return True


def sse_event(message: Any) -> bytes:
    """One SSE ``message`` event carrying a JSON-RPC message."""
    return b"event: message\ndata: " + encode(message) + b"\n\n"


class ResponseStream:
    """The per-request notification channel: switches the response to SSE on first use.

    With a replay buffer (a handshake-era session) the stream is resumable: it opens with a
    priming event, every event carries an id and is kept, and once the client is gone
    (disconnected, or told to poll by :meth:`pause`) events are only kept, for its GET resume.
    """

    __slots__ = ("detached", "extra", "log", "replay", "send", "session", "sse_ok", "started")

    def __init__(self, send: ASGISend, sse_ok: bool, extra: list[tuple[bytes, bytes]],
                 replay: ReplayBuffer | None = None, session: str = "") -> None:
        self.send = send
        self.sse_ok = sse_ok
        self.extra = extra
        self.started = False
        self.replay = replay
        self.session = session
        self.log: StreamLog | None = None
        self.detached = False

    async def start(self) -> None:
        self.started = True
        await self.send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + self.extra})
        if self.replay is not None:
            self.log = self.replay.open(self.session)
            await self.send({"type": "http.response.body", "body": self.log.priming(), "more_body": True})

    async def notify(self, message: dict[str, Any]) -> None:
        if not self.sse_ok:
            return  # JSON-only client: notifications have nowhere to go
        if not self.started:
            await self.start()
        data = sse_event(message) if self.log is None else self.log.add(message)
        if not self.detached:
            await self.send({"type": "http.response.body", "body": data, "more_body": True})

    async def finish(self, response: Any) -> None:
        """The response, as the stream's last event (kept for a resume if the client is gone)."""
        if self.log is None:
            await self.send({"type": "http.response.body", "body": sse_event(response), "more_body": False})
            return
        data = self.log.add(response)
        live = not self.detached
        self.log.finish(delivered=live)
        if live:
            self.detached = True
            await self.send({"type": "http.response.body", "body": data, "more_body": False})

    async def pause(self, retry_ms: int | None) -> asyncio.Event | None:
        """Close the client's stream mid-request so it polls with ``Last-Event-ID`` (SEP-1699);
        the request goes on and its events wait in the log. Returns an event set when the
        client polls. Not resumable (or already closed): nothing to do, None."""
        if self.replay is None or not self.sse_ok or self.detached:
            return None
        if not self.started:
            await self.start()
        self.detached = True
        if self.log is not None:
            self.replay.share(self.log)  # the client may poll another worker or replica
        tail = f"retry: {retry_ms}\n\n".encode() if retry_ms is not None else b""
        await self.send({"type": "http.response.body", "body": tail, "more_body": False})
        return self.log.polled if self.log is not None else None

    def client_gone(self) -> bool:
        """The client disconnected: True if the request should go on (its stream is resumable)."""
        if self.log is None or self.replay is None:
            return False
        self.detached = True
        self.replay.share(self.log)  # it may come back through another worker or replica
        return True


async def pump_resumed(receive: ASGIReceive, send: ASGISend, log: StreamLog, seq: int,
                       replayed: list[tuple[int, bytes]], extra: list[tuple[bytes, bytes]], keepalive: float) -> None:
    """A POST's response stream resumed by GET: what the client missed, then the rest live."""
    async def gone() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.create_task(gone())
    log.polled.set()  # a relay waiting to poll its upstream does so now
    try:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + extra})
        body = b"".join(data for _, data in replayed) or b": resumed\n\n"
        await send({"type": "http.response.body", "body": body, "more_body": True})
        if replayed:
            seq = replayed[-1][0]
        while not log.done or log.seq > seq:
            if log.seq <= seq:
                waiter = asyncio.ensure_future(log.wait(seq))
                done, _ = await asyncio.wait({waiter, watcher}, timeout=keepalive,
                                             return_when=asyncio.FIRST_COMPLETED)
                if waiter not in done:
                    waiter.cancel()
                    if watcher in done:
                        return  # the client left again: it may resume once more
                    await send({"type": "http.response.body", "body": b": ping\n\n", "more_body": True})
                    continue
            try:
                fresh = log.after(seq)
            except ReplayRefused:
                return  # this reader fell too far behind: its next resume gets a clear 410
            if fresh:
                seq = fresh[-1][0]
                await send({"type": "http.response.body", "body": b"".join(d for _, d in fresh),
                            "more_body": True})
    finally:
        watcher.cancel()
        with contextlib.suppress(Exception):
            await send({"type": "http.response.body", "body": b"", "more_body": False})


class Watch:
    """Cancels the request task if the client disconnects (armed only for slow requests),
    unless its stream is resumable: then the request goes on for the client's resume."""

    __slots__ = ("disconnected", "receive", "started", "stream", "target", "task")

    def __init__(self, receive: ASGIReceive, target: asyncio.Task[Any], now: float, stream: ResponseStream) -> None:
        self.receive = receive
        self.target = target
        self.started = now
        self.stream = stream
        self.disconnected = False
        self.task: asyncio.Task[None] | None = None

    def arm(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            msg = await self.receive()
            if msg["type"] == "http.disconnect":
                if not self.stream.client_gone():
                    self.disconnected = True
                    self.target.cancel()
                return

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()


class Watchdog:
    """One periodic task arms the disconnect watch of requests running past ``_WATCH_AFTER``.

    Cheaper than a timer per request: the fast path is a set add and discard.
    """

    def __init__(self) -> None:
        self.active: set[Watch] = set()
        self.task: asyncio.Task[None] | None = None

    def watch(self, receive: ASGIReceive, target: asyncio.Task[Any], stream: ResponseStream) -> Watch:
        loop = asyncio.get_running_loop()
        w = Watch(receive, target, loop.time(), stream)
        self.active.add(w)
        if self.task is None or self.task.done():
            self.task = loop.create_task(self._run())
        return w

    def done(self, w: Watch) -> None:
        self.active.discard(w)
        w.stop()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self.active:
            await asyncio.sleep(_WATCH_AFTER / 2)
            limit = loop.time() - _WATCH_AFTER
            for w in list(self.active):
                if w.task is None and w.started <= limit:
                    w.arm()
