"""An official-SDK MCP server over Streamable HTTP for the fault tests: ``python fault_server.py PORT``.

``slow_read(seconds)`` is read-only (safe to retry), so the Hub retries it after a lost
connection: the case where a retry could run past the call's deadline.
"""

from __future__ import annotations

import asyncio
import os
import sys

from mcp.server import MCPServer
from mcp_types import ToolAnnotations

mcp = MCPServer("fault-fixture")


@mcp.tool(annotations=ToolAnnotations(readOnlyHint=True))
async def slow_read(seconds: float) -> str:
    """Wait ``seconds``, then answer; safe to repeat."""
    await asyncio.sleep(seconds)
    return f"read after {seconds}"


@mcp.tool(annotations=ToolAnnotations(readOnlyHint=True))
async def pid() -> int:
    """The server's process id."""
    return os.getpid()


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(mcp.streamable_http_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
