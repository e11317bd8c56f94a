"""Constants and small types every MCP connection shares (protocol keys, callbacks, request state)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

MODERN = "2026-07-28"
LEGACY = "2025-11-25"
HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
CLIENT_INFO = {"name": "toolmesh", "version": "0.1.0"}
CLIENT_CAPABILITIES: dict[str, Any] = {"roots": {"listChanged": False}}
META_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
META_CLIENT_CAPS = "io.modelcontextprotocol/clientCapabilities"
META_SERVER_INFO = "io.modelcontextprotocol/serverInfo"
#: A server→client message names the client request it belongs to (stdio, WebSocket, legacy SSE).
META_RELATED = "io.modelcontextprotocol/related-request-id"

METHOD_NOT_FOUND = -32601
UNSUPPORTED_VERSION = -32022

ProgressCallback = Callable[[float, float | None, str | None], Awaitable[None] | None]
NotificationHandler = Callable[[str, dict[str, Any]], Awaitable[None] | None]
#: Answers a server→client request (``sampling/createMessage``...): ``(method, params) -> result``;
#: raising :class:`McpRemoteError` sends that error back instead.
ServerRequestHandler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
#: Receives the ``params`` of a ``notifications/message`` that belongs to one request.
LogHandler = Callable[[dict[str, Any]], Awaitable[None] | None]


#: How often a connection's deadline sweep runs while requests are in flight (seconds);
#: a request times out at most this much after its deadline.
SWEEP_INTERVAL = 0.05


@dataclass(slots=True)
class Pending:
    """One request in flight: its future, progress hook, timeout scope and the hooks that
    receive the server's requests and log messages belonging to it."""

    future: asyncio.Future[dict[str, Any]]
    on_progress: ProgressCallback | None = None
    #: The waiting task, cancelled by the connection's deadline sweep when ``deadline`` passes.
    task: asyncio.Task[Any] | None = None
    extend_by: float = 0.0
    hard_deadline: float = 0.0
    on_request: ServerRequestHandler | None = None
    on_log: LogHandler | None = None
    deadline: float = 0.0
    timed_out: bool = False


@dataclass
class ServerIdentity:
    """What the server told us about itself at connect time."""

    protocol: str = ""
    name: str = ""
    version: str = ""
    capabilities: dict[str, Any] = field(default_factory=dict)
    instructions: str | None = None
    ttl_ms: int | None = None
