"""Legacy HTTP+SSE frontend (protocol 2024-11-05 style).

``GET /sse`` opens the stream and announces ``event: endpoint`` with
``/messages/?session_id=…``; the client POSTs JSON-RPC there (202 Accepted) and every
response or notification comes back as an SSE ``message`` event on the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any
from urllib.parse import parse_qs

from toolmesh.servers.dispatch import Dispatcher, decode, encode, error_response
from toolmesh.servers.guard import Guard
from toolmesh.servers.http import ASGIReceive, ASGISend, Scope, read_body, respond
from toolmesh.servers.http_stream import sse_event
from toolmesh.servers.state import INVALID_REQUEST, Conn, RpcError

logger = logging.getLogger("toolmesh.servers.sse")

_KEEPALIVE = 15.0
_CLOSED: Any = object()


class _SseSession:
    __slots__ = ("conn", "queue", "tasks")

    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.tasks: set[asyncio.Task[None]] = set()

    async def notify(self, message: dict[str, Any]) -> None:
        self.queue.put_nowait(message)


class LegacySse:
    """ASGI handlers for the SSE stream and its message endpoint."""

    def __init__(self, dispatcher: Dispatcher, guard: Guard, *, messages_path: str = "/messages/") -> None:
        self.dispatcher = dispatcher
        self.guard = guard
        self.messages_path = messages_path
        self.sessions: dict[str, _SseSession] = {}

    async def stream(self, scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
        """``GET /sse``: the server→client event stream of one session."""
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if (denied := self.guard.check_origin(headers)) is not None:
            await respond(send, 403, encode(error_response(None, INVALID_REQUEST, denied)))
            return
        if scope["method"] != "GET":
            await respond(send, 405, b"", [(b"allow", b"GET")])
            return
        if not self.guard.acquire():
            await respond(send, 503, encode(error_response(None, INVALID_REQUEST, "Too many connections")))
            return
        sid = uuid.uuid4().hex
        session = _SseSession(Conn(f"sse:{sid}"))
        self.sessions[sid] = session
        session.conn.sink = session.notify
        self.dispatcher.channel_opened(session.conn)
        endpoint = f"{scope.get('root_path', '')}{self.messages_path}?session_id={sid}"

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            session.queue.put_nowait(_CLOSED)

        watcher = asyncio.create_task(watch())
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
                }
            )
            await send(
                {
                    "type": "http.response.body",
                    "body": f"event: endpoint\ndata: {endpoint}\n\n".encode(),
                    "more_body": True,
                }
            )
            while True:
                try:
                    item = await asyncio.wait_for(session.queue.get(), _KEEPALIVE)
                except TimeoutError:
                    await send({"type": "http.response.body", "body": b": ping\n\n", "more_body": True})
                    continue
                if item is _CLOSED:
                    break
                await send({"type": "http.response.body", "body": sse_event(item), "more_body": True})
        finally:
            watcher.cancel()
            self.sessions.pop(sid, None)
            session.conn.sink = None
            self.dispatcher.channel_closed(session.conn)
            session.conn.cancel_all()
            for task in session.tasks:
                task.cancel()
            self.guard.release()
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def message(self, scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
        """``POST /messages/?session_id=…``: one client→server message, answered on the stream."""
        if scope["method"] != "POST":
            await respond(send, 405, b"", [(b"allow", b"POST")])
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if (denied := self.guard.check_origin(headers)) is not None:
            await respond(send, 403, encode(error_response(None, INVALID_REQUEST, denied)))
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        sid = (query.get("session_id") or [""])[0]
        session = self.sessions.get(sid)
        if session is None:
            await respond(send, 404 if sid else 400, encode(error_response(None, INVALID_REQUEST, "Session not found")))
            return
        body = await read_body(receive, self.guard.max_body)
        if body is None:
            await respond(send, 413, encode(error_response(None, INVALID_REQUEST, "Request body too large")))
            return
        try:
            msg = decode(body)
        except RpcError as exc:
            await respond(send, 400, encode(error_response(None, exc.code, exc.message)))
            return
        await respond(send, 202, b"")
        if type(msg) is dict and "id" not in msg:
            await self.dispatcher.handle(msg, session.conn)
            return

        async def run() -> None:
            response = await self.dispatcher.handle(msg, session.conn, session.notify)
            if response is not None:
                session.queue.put_nowait(response)

        task = asyncio.create_task(run())
        session.tasks.add(task)
        task.add_done_callback(session.tasks.discard)
