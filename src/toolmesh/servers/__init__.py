"""Hosting MCP tool servers: a lean JSON-RPC core and fast frontends for SDK ``MCPServer`` objects.

Write a server with the official SDK (``MCPServer`` decorators) or with :class:`ToolServer`
(the same API plus production policy: per-tool timeouts, per-client rate limits, connection
caps, metrics), then serve it with :func:`serve` / :func:`serve_async` over stdio, Streamable
HTTP (both protocol revisions), legacy HTTP+SSE or WebSocket, or mount :func:`asgi_app`.
"""

from __future__ import annotations

from toolmesh.servers.app import asgi_app, serve, serve_async
from toolmesh.servers.http_stream import close_sse_stream
from toolmesh.servers.policy import ServerPolicy, ToolMetrics, policy_of
from toolmesh.servers.toolserver import ToolServer

__all__ = ["ServerPolicy", "ToolMetrics", "ToolServer", "asgi_app", "close_sse_stream", "policy_of", "serve",
           "serve_async"]
