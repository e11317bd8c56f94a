"""What the five demo servers share: the server class they are built on."""

from __future__ import annotations

from typing import Any

from mcp.server import MCPServer
from mcp_types import ToolAnnotations

#: Every demo tool is a lookup in a read-only data set: the Hub may share identical calls in flight
#: (coalescing) and retry them safely.
READ_ONLY = ToolAnnotations(readOnlyHint=True, idempotentHint=True, openWorldHint=False)


def new_server(name: str, instructions: str) -> MCPServer[Any]:
    """A named demo server: a ``toolmesh.servers.ToolServer`` (SDK ``MCPServer`` + policy) when available."""
    try:
        from toolmesh.servers import ToolServer
    except ImportError:  # toolmesh.servers not importable: the plain SDK server does the job
        return MCPServer(name=f"toolmesh-demo-{name}", instructions=instructions, version="1.0", log_level="WARNING")
    return ToolServer(
        name=f"toolmesh-demo-{name}",
        instructions=instructions,
        version="1.0",
        log_level="WARNING",
        max_execution_time=10.0,
    )
