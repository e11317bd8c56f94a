"""``ToolServer``: the SDK's ``MCPServer`` plus production policy, served by toolmesh's frontends."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

from mcp.server import MCPServer
from mcp.server.caching import CacheHint
from mcp_types.methods import CACHEABLE_METHODS

from toolmesh.servers.app import serve
from toolmesh.servers.policy import ServerPolicy

__all__ = ["ToolServer"]

_F = TypeVar("_F", bound=Callable[..., Any])


class ToolServer(MCPServer[Any]):
    """``MCPServer`` plus production policy, served by toolmesh's lean frontends.

    Args:
        max_execution_time: default limit in seconds for one tool call; ``None`` = unlimited.
            A call over its limit is cancelled and answered with JSON-RPC error ``-32001``
            ("Request timed out", ``data={"tool", "timeout"}``) — a protocol error, not a
            tool result, so clients can tell a timeout from a tool failure.
        tool_timeouts: per-tool overrides (also settable with ``@server.tool(timeout=...)``).
        rate_limit: requests per second allowed per client (token bucket); the client is
            the legacy session / WebSocket / SSE connection, else the remote address. Over
            the limit a request gets JSON-RPC error ``-32029`` "Rate limit exceeded" with
            ``data={"retryAfter": seconds}`` (HTTP status 429 plus ``Retry-After``).
        rate_burst: bucket capacity (default: ``max(1, rate_limit)``).
        max_connections: cap on concurrent client connections (HTTP connections, legacy
            sessions, SSE streams, WebSockets); beyond it HTTP answers 503, WebSocket closes 1013.
        list_ttl: seconds a 2026-07-28 client may cache the tool/resource/prompt listings
            (``ttlMs``); the SDK's default of 0 makes clients re-list before every use. Ignored
            when ``cache_hints`` is given.
        *args, **kwargs: passed to ``MCPServer``.
    """

    def __init__(
        self,
        name: str | None = None,
        *args: Any,
        max_execution_time: float | None = None,
        tool_timeouts: Mapping[str, float] | None = None,
        rate_limit: float | None = None,
        rate_burst: float | None = None,
        max_connections: int | None = None,
        list_ttl: float = 60.0,
        **kwargs: Any,
    ) -> None:
        if "cache_hints" not in kwargs and list_ttl > 0:
            hint = CacheHint(ttl_ms=int(list_ttl * 1000))
            kwargs["cache_hints"] = {m: hint for m in CACHEABLE_METHODS if m.endswith("/list")}
        super().__init__(name, *args, **kwargs)
        self.policy = ServerPolicy(
            max_execution_time=max_execution_time,
            tool_timeouts=tool_timeouts,
            rate_limit=rate_limit,
            rate_burst=rate_burst,
            max_connections=max_connections,
        )

    def tool(  # type: ignore[override]
        self, name: str | None = None, *, timeout: float | None = None, **kwargs: Any
    ) -> Callable[[_F], _F]:
        """Register a tool like ``MCPServer.tool``; ``timeout`` overrides ``max_execution_time``."""
        register = super().tool(name, **kwargs)

        def decorator(fn: _F) -> _F:
            register(fn)
            if timeout is not None:
                self.policy.tool_timeouts[name or fn.__name__] = float(timeout)
            return fn

        return decorator

    def metrics(self) -> dict[str, Any]:
        """Snapshot of per-tool calls, errors, timeouts and latency, plus rate-limit/connection counts."""
        return self.policy.snapshot()

    def run(  # type: ignore[override]
        self,
        transport: Literal["stdio", "http", "sse", "websocket"] = "stdio",
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        path: str = "/mcp",
        **options: Any,
    ) -> None:
        """Serve this server with toolmesh's frontends (blocking); see ``toolmesh.servers.serve``."""
        serve(self, transport, host=host, port=port, path=path, **options)
