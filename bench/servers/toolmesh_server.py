"""Benchmark peer: toolmesh ``ToolServer`` with one async ``add`` tool.

Usage: ``python tm_server.py stdio`` or ``python tm_server.py http PORT``
(Streamable HTTP at ``/mcp``, toolmesh's own frontend on uvicorn + httptools + uvloop).
"""

from __future__ import annotations

import sys

from toolmesh.servers import ToolServer, serve

srv = ToolServer("bench-toolmesh")


@srv.tool()
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


if __name__ == "__main__":
    transport = sys.argv[1] if len(sys.argv) > 1 else "stdio"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 8000
    serve(srv, "http" if transport == "http" else "stdio", host="127.0.0.1", port=port)
