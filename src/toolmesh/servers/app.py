"""Public entry points: one ASGI app for every HTTP transport, and ``serve`` / ``serve_async``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any, Literal

from mcp.server import MCPServer

from toolmesh.servers.dispatch import Dispatcher
from toolmesh.servers.guard import DEFAULT_MAX_BODY, Guard
from toolmesh.servers.http import ASGIReceive, ASGISend, Scope, StreamableHttp, respond
from toolmesh.servers.policy import ServerPolicy, policy_of
from toolmesh.servers.sse import LegacySse
from toolmesh.servers.stdio import serve_stdio
from toolmesh.servers.ws import WebSocketFrontend

logger = logging.getLogger("toolmesh.servers")

Transport = Literal["stdio", "http", "sse", "websocket"]


class ToolmeshApp:
    """ASGI app serving one MCP server on every HTTP transport at once.

    Routes: ``path`` (Streamable HTTP, both protocol eras), ``sse_path`` + ``messages_path``
    (legacy HTTP+SSE), ``ws_path`` (WebSocket, subprotocol ``mcp``). Handles the ASGI
    lifespan by running the server's own lifespan.
    """

    def __init__(
        self,
        server: MCPServer[Any],
        *,
        path: str = "/mcp",
        sse_path: str = "/sse",
        messages_path: str = "/messages/",
        ws_path: str = "/ws",
        host: str = "127.0.0.1",
        allowed_origins: Iterable[str] | None = None,
        allowed_hosts: Iterable[str] | None = None,
        validate_origin: bool | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        session_idle_timeout: float = 1800.0,
        policy: ServerPolicy | None = None,
    ) -> None:
        self.server = server
        self.policy = policy if policy is not None else policy_of(server)
        self.dispatcher = Dispatcher(server, self.policy)
        self.guard = Guard(
            host=host,
            allowed_origins=allowed_origins,
            allowed_hosts=allowed_hosts,
            validate_origin=validate_origin,
            max_body=max_body,
            policy=self.policy,
        )
        self.path = path.rstrip("/") or "/"
        self.sse_path = sse_path.rstrip("/")
        self.messages_path = messages_path.rstrip("/")
        self.ws_path = ws_path.rstrip("/")
        self.http = StreamableHttp(self.dispatcher, self.guard, session_idle_timeout=session_idle_timeout)
        self.sse = LegacySse(self.dispatcher, self.guard, messages_path=messages_path)
        self.ws = WebSocketFrontend(self.dispatcher, self.guard)

    async def __call__(self, scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
        kind = scope["type"]
        if kind == "http":
            route = scope["path"]
            if len(route) > 1 and route.endswith("/"):
                route = route[:-1]
            if route == self.path:
                await self.http(scope, receive, send)
            elif route == self.messages_path:
                await self.sse.message(scope, receive, send)
            elif route == self.sse_path:
                await self.sse.stream(scope, receive, send)
            else:
                await respond(send, 404, b"")
        elif kind == "websocket":
            if scope["path"].rstrip("/") == self.ws_path:
                await self.ws(scope, receive, send)
            else:
                await receive()
                await send({"type": "websocket.close", "code": 1008})
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: ASGIReceive, send: ASGISend) -> None:
        async with contextlib.AsyncExitStack() as stack:
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    try:
                        await stack.enter_async_context(self.dispatcher.lifespan())
                    except Exception as exc:
                        await send({"type": "lifespan.startup.failed", "message": str(exc)})
                        return
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await stack.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return


def asgi_app(server: MCPServer[Any], **options: Any) -> ToolmeshApp:
    """An ASGI app mounting every HTTP frontend of ``server`` (see :class:`ToolmeshApp` options)."""
    return ToolmeshApp(server, **options)


async def serve_async(
    server: MCPServer[Any],
    transport: Transport = "stdio",
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    path: str = "/mcp",
    log_level: str = "warning",
    **options: Any,
) -> None:
    """Serve ``server`` until stopped. ``http``, ``sse`` and ``websocket`` all start the same
    HTTP listener with every HTTP frontend mounted (``path``, ``/sse``, ``/ws``)."""
    if transport == "stdio":
        await serve_stdio(Dispatcher(server, options.get("policy")))
        return
    if transport not in ("http", "sse", "websocket"):
        raise ValueError(f"unknown transport {transport!r}")
    import uvicorn

    from toolmesh.net.onewrite import OneWriteHttpToolsProtocol

    app = ToolmeshApp(server, path=path, host=host, **options)
    policy = app.policy
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=OneWriteHttpToolsProtocol,
        loop="none",
        ws="websockets-sansio",
        lifespan="on",
        access_log=False,
        log_level=log_level,
        server_header=False,
        date_header=False,
        limit_concurrency=policy.max_connections if policy is not None else None,
        timeout_graceful_shutdown=5,
    )
    await uvicorn.Server(config).serve()


def serve(
    server: MCPServer[Any],
    transport: Transport = "stdio",
    host: str = "127.0.0.1",
    port: int = 8000,
    path: str = "/mcp",
    **options: Any,
) -> None:
    """Blocking :func:`serve_async` on a uvloop event loop (asyncio's when uvloop is missing)."""
    coro = serve_async(server, transport, host=host, port=port, path=path, **options)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        asyncio.run(coro)
        return
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(coro)
