"""Client transports: one :class:`Connection` class per wire."""

from __future__ import annotations

from typing import Any

from toolmesh.hub.config import ServerConfig
from toolmesh.hub.transports.base import Connection, ServerIdentity


def make_connection(config: ServerConfig, client_capabilities: dict[str, Any] | None = None) -> Connection:
    """A new, unopened connection for ``config`` (call ``await conn.start()``).

    ``client_capabilities`` overrides what the client advertises (default: ``config``'s, else roots)."""
    kind = config.transport
    if kind == "stdio":
        from toolmesh.hub.transports.stdio import StdioConnection

        return StdioConnection(config, client_capabilities)
    if kind == "http":
        from toolmesh.hub.transports.http import HttpConnection

        return HttpConnection(config, client_capabilities)
    if kind == "sse":
        from toolmesh.hub.transports.sse import SseConnection

        return SseConnection(config, client_capabilities)
    if kind == "websocket":
        from toolmesh.hub.transports.websocket import WebSocketConnection

        return WebSocketConnection(config, client_capabilities)
    if kind == "inprocess":
        from toolmesh.hub.transports.inprocess import InProcessConnection

        return InProcessConnection(config, client_capabilities)
    raise ValueError(f"unknown transport {kind!r}")


__all__ = ["Connection", "ServerIdentity", "make_connection"]
