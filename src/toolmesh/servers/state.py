"""Per-connection state and the JSON-RPC error type shared by the core and the frontends."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
#: Server-side tool timeout (the SDK's REQUEST_TIMEOUT).
REQUEST_TIMEOUT = -32001
#: Per-client rate limit exceeded (toolmesh's own code; ``data.retryAfter`` in seconds).
RATE_LIMITED = -32029
#: Answer to a request the client cancelled (only sent where a reply is owed, e.g. HTTP).
REQUEST_CANCELLED = -32800
HEADER_MISMATCH = -32020
UNSUPPORTED_PROTOCOL_VERSION = -32022

#: Logging levels, lowest first (RFC 5424 order as used by MCP).
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")

#: HTTP status for a JSON-RPC error code on the 2026-07-28 wire (the SDK's table).
MODERN_HTTP_STATUS: dict[int, int] = {
    PARSE_ERROR: 400,
    INVALID_REQUEST: 400,
    INVALID_PARAMS: 400,
    HEADER_MISMATCH: 400,
    -32021: 400,
    UNSUPPORTED_PROTOCOL_VERSION: 400,
    METHOD_NOT_FOUND: 404,
    RATE_LIMITED: 429,
}


class RpcError(Exception):
    """A JSON-RPC error to send back: ``code``, ``message`` and optional ``data``."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_error(self) -> dict[str, Any]:
        """The JSON-RPC ``error`` object."""
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err


class Conn:
    """One client connection (stdio, WebSocket, SSE stream) or legacy HTTP session.

    Holds the negotiated handshake-era version, the client's key for rate limiting,
    the log level it asked for, the requests in flight (for ``notifications/cancelled``) and
    the server→client requests awaiting the client's answer (``pending``).
    """

    __slots__ = (
        "_next_id",
        "cancelled",
        "client_caps",
        "client_key",
        "inflight",
        "initialized",
        "last_seen",
        "log_level",
        "owner",
        "pending",
        "sink",
        "version",
    )

    def __init__(self, client_key: str, *, shared: bool = False) -> None:
        """``shared``: the session may be served by other processes too (sealed ids): its
        server→client request ids start at a random point, so that two processes' requests in one
        session never share an id (a client's answer is then relayed to the one that asked)."""
        self.client_key = client_key
        self.version: str | None = None
        self.initialized = False
        self.client_caps: Any = None
        # Index into LOG_LEVELS; handshake-era clients get every level until they setLevel.
        self.log_level = 0
        self.inflight: dict[Any, asyncio.Task[Any]] = {}
        self.cancelled: set[Any] = set()
        self.last_seen = 0.0
        self.pending: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        # Where server-initiated messages outside any request go (list_changed, resources/updated):
        # the SSE stream, the WebSocket, or a Streamable HTTP session's GET stream; None = nowhere.
        self.sink: Callable[[dict[str, Any]], Awaitable[None]] | None = None
        # Who may use this session (the credential it was opened with; "" = anyone): set by
        # the Streamable HTTP frontend's session codec, so a stolen session id is refused.
        self.owner = ""
        self._next_id = secrets.randbelow(1 << 40) << 12 if shared else 0  # < 2**53: exact in JavaScript

    def expect_response(self) -> tuple[int, asyncio.Future[dict[str, Any]]]:
        """A fresh id for a server→client request and the future its answer will resolve."""
        self._next_id += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[self._next_id] = future
        return self._next_id, future

    def resolve(self, message: dict[str, Any]) -> bool:
        """Hand a client's JSON-RPC response to the request waiting for it; False when none is."""
        future = self.pending.pop(message.get("id"), None)
        if future is None or future.done():
            return False
        future.set_result(message)
        return True

    def cancel(self, request_id: Any) -> bool:
        """Cancel the in-flight request ``request_id``; False when it is unknown or done."""
        task = self.inflight.get(request_id)
        if task is None or task.done():
            return False
        self.cancelled.add(request_id)
        task.cancel()
        return True

    def cancel_all(self) -> None:
        """Cancel everything in flight (the connection is going away)."""
        for rid in list(self.inflight):
            self.cancel(rid)
        for future in self.pending.values():
            if not future.done():
                future.cancel()
        self.pending.clear()
