"""Streamable HTTP frontend as a raw ASGI handler (both protocol eras on one endpoint).

2026-07-28: every POST is self-contained (per-request ``_meta`` envelope, routing headers
checked). Handshake era: ``initialize`` opens a session (``Mcp-Session-Id``), later POSTs
must carry it (unknown → 404), DELETE ends it. GET opens the session's standalone
server→client stream when the dispatcher sends messages outside requests (``pushes``;
the gateway does), else → 405.
Responses are JSON unless the request emits notifications (progress, logs) or server→client
requests (sampling, elicitation, roots) and the client accepts ``text/event-stream``: then
those and the result go out as SSE; the client POSTs its answers to the server's requests
(202 Accepted) and they reach the waiting tool through the dispatcher; a client that lists
``text/event-stream`` first gets every response as SSE.
In a handshake-era session every SSE stream is resumable (SEP-1699, :mod:`toolmesh.servers.resume`):
a priming event, event ids, ``GET`` + ``Last-Event-ID`` replays what the client missed. A client
that disconnects mid-request cancels the handler, unless its stream is resumable (it may come back).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from mcp_types.version import MODERN_PROTOCOL_VERSIONS as MODERN_VERSIONS

from toolmesh.net.asgi import Scope as Scope  # the shared ASGI scope type, re-exported for servers/*
from toolmesh.net.sse import STREAM_PAUSED
from toolmesh.servers.dispatch import Dispatcher, decode, encode, error_response
from toolmesh.servers.guard import Guard
from toolmesh.servers.http_stream import SSE_HEADERS, ResponseStream, Watchdog, pump_resumed, sse_event
from toolmesh.servers.relay import SessionRelay, meant_elsewhere
from toolmesh.servers.resume import ReplayBuffer, ReplayRefused, StreamLog, StreamMirror
from toolmesh.servers.state import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    MODERN_HTTP_STATUS,
    PARSE_ERROR,
    RATE_LIMITED,
    REQUEST_CANCELLED,
    Conn,
    RpcError,
)

logger = logging.getLogger("toolmesh.servers.http")

ASGIReceive = Any
ASGISend = Any

_JSON = [(b"content-type", b"application/json")]
_SSE = SSE_HEADERS
_PV_KEY = "io.modelcontextprotocol/protocolVersion"
_NO_ENVELOPE = (
    "params._meta must be an object carrying the required 'io.modelcontextprotocol/protocolVersion' "
    "and 'io.modelcontextprotocol/clientCapabilities' envelope keys"
)
#: GET streams: a comment line this often keeps proxies from timing the stream out.
_KEEPALIVE = 15.0
#: Messages queued for a GET stream whose client is not reading before the stream is ended.
_STREAM_BACKLOG = 1000
_CLOSED: Any = object()


async def respond(send: ASGISend, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    """Send a complete JSON (or empty) response."""
    headers = list(_JSON) if body else []
    headers.append((b"content-length", str(len(body)).encode()))
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: ASGIReceive, limit: int) -> bytes | None:
    """The request body, or ``None`` when it exceeds ``limit`` bytes."""
    msg = await receive()
    body: bytes = msg.get("body", b"")
    if not msg.get("more_body"):
        return body if len(body) <= limit else None
    parts = [body]
    size = len(body)
    while msg.get("more_body"):
        msg = await receive()
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


class SessionCodec(Protocol):
    """Makes handshake-era sessions portable: the session id itself carries the session's state.

    ``seal`` builds the id for an ``initialize`` message; ``open`` rebuilds the :class:`Conn`
    from an id this process never saw (another worker issued it), or returns ``None`` when
    the id is not valid here (forged, expired, or ended); ``end`` records that the client
    ended the session (DELETE), so no worker opens it again; ``ended`` tells a worker that
    still holds the session that another worker ended it. ``holder`` names the credential of
    a request: a session answers only the credential that opened it (a leaked id is useless).
    """

    def seal(self, msg: Any, scope: Scope) -> str: ...

    def holder(self, scope: Scope) -> str: ...

    async def open(self, sid: str, scope: Scope) -> Conn | None: ...

    async def end(self, sid: str) -> None: ...

    async def ended(self, sid: str) -> bool: ...


class StreamableHttp:
    """ASGI handler for the MCP endpoint; mount it at one path."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        guard: Guard,
        *,
        max_sessions: int = 10_000,
        session_idle_timeout: float = 1800.0,
        session_codec: SessionCodec | None = None,
        resumable: bool = True,
        mirror: StreamMirror | None = None,
        relay: SessionRelay | None = None,
    ) -> None:
        """``resumable``: handshake-era SSE streams carry event ids and resume on ``Last-Event-ID``;
        ``mirror``: where they are copied too, for other workers or replicas to resume them;
        ``relay``: where a session's cancellations and answers for another process go."""
        self.dispatcher = dispatcher
        self.relay = relay
        self.replay = ReplayBuffer(mirror) if resumable else None
        self.guard = guard
        self.codec = session_codec
        self.sessions: dict[str, Conn] = {}
        self.max_sessions = max_sessions
        self.idle_timeout = session_idle_timeout
        self._swept = time.monotonic()
        self._watchdog = Watchdog()
        #: Open GET streams: session → ends it.
        self._streams: dict[Conn, Callable[[], None]] = {}

    async def __call__(self, scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if (denied := self.guard.check_origin(headers)) is not None:
            await respond(send, 403, encode(error_response(None, INVALID_REQUEST, denied)))
            return
        method = scope["method"]
        if method == "POST":
            await self._post(scope, receive, send, headers)
        elif method == "DELETE":
            sid = headers.get("mcp-session-id")
            conn = self.sessions.get(sid) if sid else None
            if conn is not None and self.codec is not None and conn.owner != self.codec.holder(scope):
                conn = None  # another credential's session: as if unknown (no hijacking, no probing)
            elif conn is not None and sid:
                del self.sessions[sid]
            elif sid and self.codec is not None:
                conn = await self.codec.open(sid, scope)
                if conn is not None:
                    self.guard.acquire()
            if conn is not None and sid and self.codec is not None:
                await self.codec.end(sid)
            if conn is None:
                await respond(send, 404 if sid else 400, b"")
                return
            conn.cancel_all()
            if (close := self._streams.get(conn)) is not None:
                close()
            if self.replay is not None and sid:
                self.replay.drop_session(sid)
            self.guard.release()
            await respond(send, 200, b"")
        elif method == "GET" and (self.dispatcher.pushes or (self.replay is not None and "last-event-id" in headers)):
            await self._get(scope, receive, send, headers)
        else:
            allow = b"GET, POST, DELETE" if self.dispatcher.pushes else b"POST, DELETE"
            await respond(send, 405, b"", [(b"allow", allow)])

    async def _post(self, scope: Scope, receive: ASGIReceive, send: ASGISend, headers: dict[str, str]) -> None:
        ctype = headers.get("content-type", "")
        if not ctype.startswith("application/json"):
            await respond(
                send, 415, encode(error_response(None, INVALID_REQUEST, "Content-Type must be application/json"))
            )
            return
        body = await read_body(receive, self.guard.max_body)
        if body is None:
            await respond(send, 413, encode(error_response(None, INVALID_REQUEST, "Request body too large")))
            return
        try:
            msg = decode(body)
        except RpcError as exc:
            await respond(send, 400, encode(error_response(None, PARSE_ERROR, exc.message)))
            return
        modern = False
        if type(msg) is dict:
            params = msg.get("params")
            meta = params.get("_meta") if type(params) is dict else None
            modern = type(meta) is dict and _PV_KEY in meta
        extra: list[tuple[bytes, bytes]] = []
        conn: Conn | None = None
        if not modern and headers.get("mcp-protocol-version") in MODERN_VERSIONS:
            # The header claims the stateless era but the body carries no envelope.
            if type(msg) is dict and "id" not in msg and isinstance(msg.get("method"), str):
                await respond(send, 202, b"")
                return
            if type(msg) is dict and isinstance(msg.get("method"), str) and type(msg.get("id")) in (str, int):
                err = error_response(msg["id"], INVALID_PARAMS, _NO_ENVELOPE)
            else:
                err = error_response(None, INVALID_REQUEST, "Body must be a single JSON-RPC request or notification")
            await respond(send, 400, encode(err))
            return
        if not modern:
            found = await self._session(msg, headers, scope, send, extra)
            if found is None:
                return
            conn = found
        if type(msg) is dict and ("id" not in msg or ("method" not in msg and ("result" in msg or "error" in msg))):
            # A notification, or the client's answer to a server→client request.
            if self.relay is not None and conn is not None and meant_elsewhere(conn, msg):
                self.relay.forward(headers.get("mcp-session-id", ""), msg)  # (its request runs elsewhere)
            else:
                await self.dispatcher.handle(msg, conn, headers=headers)
            await respond(send, 202, b"", extra)
            return
        accept = headers.get("accept", "")
        sse_ok = "text/event-stream" in accept
        session = headers.get("mcp-session-id", "")
        # Handshake era with a session: the response stream (if any) is resumable (SEP-1699).
        replay = self.replay if sse_ok and conn is not None and session else None
        stream = ResponseStream(send, sse_ok, extra, replay, session)
        paused = None
        if replay is not None:
            paused = STREAM_PAUSED.set(stream.pause)
            if _prefers_sse(accept):
                await stream.start()  # the client asked for a stream first: it gets one at once
        task = asyncio.current_task()
        assert task is not None
        watch = self._watchdog.watch(receive, task, stream)
        answered = False
        try:
            response = await self.dispatcher.handle(
                msg, conn, stream.notify if sse_ok else None, headers=headers if modern else None, client=_client(scope)
            )
            answered = True
        except asyncio.CancelledError:
            if watch.disconnected:
                task.uncancel()
                return  # nobody is listening any more
            raise
        finally:
            self._watchdog.done(watch)
            if paused is not None:
                STREAM_PAUSED.reset(paused)
            if stream.log is not None and not answered:
                stream.log.finish()  # the request failed or was cancelled: a resume gets the stream's end
        if response is None:  # cancelled by notifications/cancelled: a reply is still owed
            # (id 0 is a valid id: keep it)
            response = error_response(msg.get("id") if type(msg) is dict else None, REQUEST_CANCELLED,
                                      "Request cancelled")
        if stream.started:
            await stream.finish(response)
            return
        status = 200
        if type(response) is dict and "error" in response:
            code = response["error"]["code"]
            if code == RATE_LIMITED:
                status = 429
                retry = response["error"].get("data", {}).get("retryAfter", 1)
                extra = [*extra, (b"retry-after", str(max(1, round(retry))).encode())]
            elif modern:
                status = MODERN_HTTP_STATUS.get(code, 200)
        await respond(send, status, encode(response), extra)

    async def _get(self, scope: Scope, receive: ASGIReceive, send: ASGISend, headers: dict[str, str]) -> None:
        """A handshake-era session's standalone stream: messages the server sends outside requests."""
        if "text/event-stream" not in headers.get("accept", ""):
            err = error_response(None, INVALID_REQUEST, "Not Acceptable: the client must accept text/event-stream")
            await respond(send, 406, encode(err))
            return
        extra: list[tuple[bytes, bytes]] = []
        conn = await self._session(None, headers, scope, send, extra)
        if conn is None:
            return
        sid = headers.get("mcp-session-id", "")
        log: StreamLog | None = None
        replayed: list[tuple[int, bytes]] = []
        last = headers.get("last-event-id")
        if last is not None and self.replay is not None:
            follower = None
            try:
                log, seq, follower = await self.replay.resume(last, sid)
                replayed = log.after(seq)
            except ReplayRefused as exc:
                if follower is not None:
                    follower.cancel()
                if not self.replay.of_get_stream(last):
                    await respond(send, exc.status, encode(error_response(None, INVALID_REQUEST, exc.message)), extra)
                    return
                log, last = None, None  # a GET stream that cannot be resumed: a fresh one instead
            if log is not None and not log.standalone:
                try:
                    await pump_resumed(receive, send, log, seq, replayed, extra, _KEEPALIVE)
                finally:
                    if follower is not None:
                        follower.cancel()  # (another process's stream, followed in the mirror)
                return
            if (close := self._streams.get(conn)) is not None:
                close()  # the stream being resumed replaces the old one (its client is gone)
                conn.sink = None
            if log is not None:
                log.reopen()
        if not self.dispatcher.pushes:
            await respond(send, 405, b"", [(b"allow", b"POST, DELETE")])
            return
        if conn.sink is not None:
            err = error_response(None, INVALID_REQUEST, "Conflict: this session already has a GET stream")
            await respond(send, 409, encode(err))
            return
        if log is None and self.replay is not None:
            log = self.replay.open(sid, standalone=True)
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def sink(message: dict[str, Any]) -> None:
            # A client that stopped reading loses its stream, not the server's memory.
            queue.put_nowait(message if queue.qsize() < _STREAM_BACKLOG else _CLOSED)

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            queue.put_nowait(_CLOSED)

        conn.sink = sink
        closer = self._streams[conn] = lambda: queue.put_nowait(_CLOSED)
        self.dispatcher.channel_opened(conn)
        watcher = asyncio.create_task(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _SSE + extra})
            head = b": stream open\n\n" if log is None else (log.priming() if not replayed and not last else b"")
            head += b"".join(data for _, data in replayed)
            await send({"type": "http.response.body", "body": head or b": resumed\n\n", "more_body": True})
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), _KEEPALIVE)
                except TimeoutError:
                    if self.codec is not None and await self.codec.ended(sid):
                        break  # ended (DELETE) through another worker
                    await send({"type": "http.response.body", "body": b": ping\n\n", "more_body": True})
                    continue
                if item is _CLOSED:
                    break
                conn.last_seen = time.monotonic()
                data = sse_event(item) if log is None else log.add(item)
                await send({"type": "http.response.body", "body": data, "more_body": True})
        finally:
            watcher.cancel()
            if self._streams.get(conn) is closer:  # (else a resumed stream took over, and the log)
                del self._streams[conn]
                if log is not None:
                    log.finish()  # resumable for a while (its client may come back)
            if conn.sink is sink:
                conn.sink = None
                self.dispatcher.channel_closed(conn)
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def deliver(self, session: str, message: dict[str, Any]) -> bool:
        """Hand a message another process relayed (see :mod:`toolmesh.servers.relay`) to
        ``session``, if a request or a server→client request it targets is here; else False."""
        conn = self.sessions.get(session)
        if conn is None or meant_elsewhere(conn, message):
            return False
        await self.dispatcher.handle(message, conn)
        return True

    def end_streams(self) -> None:
        """End every open GET stream (server shutting down: clients reconnect elsewhere)."""
        for close in list(self._streams.values()):
            close()

    async def _session(
        self, msg: Any, headers: dict[str, str], scope: Scope, send: ASGISend, extra: list[tuple[bytes, bytes]]
    ) -> Conn | None:
        """The handshake-era session of this POST (created by ``initialize``); answers errors itself."""
        sid = headers.get("mcp-session-id")
        now = time.monotonic()
        if type(msg) is dict and msg.get("method") == "initialize" and not sid:
            if len(self.sessions) >= self.max_sessions or now - self._swept > 60.0:
                self._expire(now)
            if len(self.sessions) >= self.max_sessions or not self.guard.acquire():
                await respond(send, 503, encode(error_response(msg.get("id"), INVALID_REQUEST, "Too many sessions")))
                return None
            sid = self.codec.seal(msg, scope) if self.codec is not None else uuid.uuid4().hex
            conn = Conn(f"session:{sid}", shared=self.codec is not None)
            if self.codec is not None:
                conn.owner = self.codec.holder(scope)
            self.sessions[sid] = conn
        elif not sid:
            await respond(send, 400, encode(error_response(None, INVALID_REQUEST, "Bad Request: Missing session ID")))
            return None
        else:
            found = self.sessions.get(sid)
            if found is not None and self.codec is not None and found.owner != self.codec.holder(scope):
                found = None  # opened with another credential: refused like an unknown id
            elif found is not None and self.codec is not None and await self.codec.ended(sid):
                del self.sessions[sid]  # ended (DELETE) through another worker
                self.guard.release()
                found = None
            elif found is None and self.codec is not None:
                # A session another worker (or replica) opened: its state travels in the sealed id.
                found = await self.codec.open(sid, scope)
                if found is not None:
                    if not self.guard.acquire():
                        await respond(send, 503, encode(error_response(None, INVALID_REQUEST, "Too many sessions")))
                        return None
                    self.sessions[sid] = found
            if found is None:
                await respond(send, 404, encode(error_response(None, INVALID_REQUEST, "Session not found")))
                return None
            conn = found
        conn.last_seen = now
        extra.append((b"mcp-session-id", sid.encode()))
        return conn

    def _expire(self, now: float) -> None:
        # Sessions whose client vanished without DELETE; swept at most once a minute (on initialize).
        self._swept = now
        for sid in [s for s, c in self.sessions.items()
                    if now - c.last_seen > self.idle_timeout and not c.inflight and c.sink is None]:
            del self.sessions[sid]
            self.guard.release()


def _prefers_sse(accept: str) -> bool:
    """The client lists ``text/event-stream`` before ``application/json`` (or accepts only it)."""
    json_at = accept.find("application/json")
    return json_at < 0 or accept.find("text/event-stream") < json_at


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else "-"
