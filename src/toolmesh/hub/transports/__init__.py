"""Client transports: one :class:`Connection` class per wire."""

from __future__ import annotations

from toolmesh.hub.config import ServerConfig
from toolmesh.hub.transports.base import Connection, ServerIdentity


def make_connection(config: ServerConfig) -> Connection:
    """A new, unopened connection for ``config`` (call ``await conn.start()``)."""
    kind = config.transport
    if kind == "stdio":
        from toolmesh.hub.transports.stdio import StdioConnection

        return StdioConnection(config)
    if kind == "http":
        from toolmesh.hub.transports.http import HttpConnection

        return HttpConnection(config)
    if kind == "sse":
        from toolmesh.hub.transports.sse import SseConnection

        return SseConnection(config)
    if kind == "websocket":
        from toolmesh.hub.transports.websocket import WebSocketConnection

        return WebSocketConnection(config)
    if kind == "inprocess":
        from toolmesh.hub.transports.inprocess import InProcessConnection

        return InProcessConnection(config)
    raise ValueError(f"unknown transport {kind!r}")


__all__ = ["Connection", "ServerIdentity", "make_connection"]
