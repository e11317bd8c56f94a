"""The Hub: a multi-tenant MCP client (SPEC §1)."""

from toolmesh.hub.changes import ChangeEvent, ChangeListener
from toolmesh.hub.config import ServerConfig
from toolmesh.hub.hub import DEFAULT_TENANT, Hub
from toolmesh.hub.result import ToolResult

__all__ = ["DEFAULT_TENANT", "ChangeEvent", "ChangeListener", "Hub", "ServerConfig", "ToolResult"]
