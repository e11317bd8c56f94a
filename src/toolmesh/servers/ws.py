"""WebSocket frontend: JSON-RPC messages as text frames, subprotocol ``mcp`` (both protocol eras)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from toolmesh.servers.dispatch import Dispatcher, decode, encode, error_response
from toolmesh.servers.guard import Guard
from toolmesh.servers.http import ASGIReceive, ASGISend, Scope
from toolmesh.servers.state import INVALID_REQUEST, Conn, RpcError

logger = logging.getLogger("toolmesh.servers.ws")

#: Close code "try again later" (connection cap reached).
_TRY_AGAIN_LATER = 1013


class WebSocketFrontend:
    """ASGI websocket handler: one ``Conn`` per socket, requests handled concurrently."""

    def __init__(self, dispatcher: Dispatcher, guard: Guard) -> None:
        self.dispatcher = dispatcher
        self.guard = guard

    async def __call__(self, scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if self.guard.check_origin(headers) is not None:
            await send({"type": "websocket.close", "code": 1008})
            return
        if not self.guard.acquire():
            # Accept then close, so the client sees the reason (1013) rather than a bare 403.
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": _TRY_AGAIN_LATER, "reason": "too many connections"})
            return
        try:
            offered = scope.get("subprotocols") or []
            accept: dict[str, Any] = {"type": "websocket.accept"}
            if "mcp" in offered:
                accept["subprotocol"] = "mcp"
            await send(accept)
            await self._serve(scope, receive, send)
        finally:
            self.guard.release()

    async def _serve(self, scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
        client = scope.get("client")
        conn = Conn(f"ws:{client[0] if client else '-'}:{id(scope)}")
        lock = asyncio.Lock()
        tasks: set[asyncio.Task[None]] = set()
        closed = False

        async def out(message: Any) -> None:
            if closed:
                return
            async with lock:
                await send({"type": "websocket.send", "text": encode(message).decode()})

        conn.sink = out
        self.dispatcher.channel_opened(conn)

        async def run(msg: Any) -> None:
            try:
                response = await self.dispatcher.handle(msg, conn, out)
                if response is not None:
                    await out(response)
            except Exception:
                logger.debug("websocket request failed", exc_info=True)

        try:
            while True:
                event = await receive()
                kind = event["type"]
                if kind == "websocket.disconnect":
                    break
                if kind != "websocket.receive":
                    continue
                data = event.get("text")
                if data is None:
                    data = event.get("bytes") or b""
                if len(data) > self.guard.max_body:
                    await out(error_response(None, INVALID_REQUEST, "Message too large"))
                    continue
                try:
                    msg = decode(data)
                except RpcError as exc:
                    await out(error_response(None, exc.code, exc.message))
                    continue
                if type(msg) is dict and "id" not in msg:
                    await self.dispatcher.handle(msg, conn, out)
                    continue
                task = asyncio.create_task(run(msg))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            closed = True
            conn.sink = None
            self.dispatcher.channel_closed(conn)
            conn.cancel_all()
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
