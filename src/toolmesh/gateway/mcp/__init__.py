"""The gateway's MCP endpoints (GW-2): ``/mcp`` and ``/servers/{name}/mcp`` on every transport.

:mod:`~toolmesh.gateway.mcp.endpoints` mounts the frontends; :mod:`~toolmesh.gateway.mcp.view`
decides which upstreams an endpoint shows and under which names;
:mod:`~toolmesh.gateway.mcp.dispatch` forwards each method to them through the Hub;
:mod:`~toolmesh.gateway.mcp.changes` passes their change notifications on to the clients.
"""

from toolmesh.gateway.mcp.dispatch import GatewayDispatcher
from toolmesh.gateway.mcp.endpoints import McpRoutes, SealedSessions
from toolmesh.gateway.mcp.view import View

__all__ = ["GatewayDispatcher", "McpRoutes", "SealedSessions", "View"]
