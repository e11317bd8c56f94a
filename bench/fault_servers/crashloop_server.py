"""A toolmesh stdio MCP server that crash-loops while a flag file exists: ``python crashloop_server.py FLAG``.

While ``FLAG`` exists the process dies at start-up (exit status 3, before it reads a byte) and a
running one dies on its next call: what a bad deploy of a stdio server looks like to the Hub,
which restarts it. Without the flag it serves ``add(a, b)`` like bench/servers/toolmesh_server.py.
"""

from __future__ import annotations

import os
import sys

from toolmesh.servers import ToolServer, serve

FLAG = sys.argv[1] if len(sys.argv) > 1 else ""
srv = ToolServer("bench-crashloop")


@srv.tool()
async def add(a: int, b: int) -> int:
    """Add two integers (unless the flag says to crash)."""
    if FLAG and os.path.exists(FLAG):
        os._exit(3)  # a crash: no reply, no cleanup
    return a + b


if __name__ == "__main__":
    if FLAG and os.path.exists(FLAG):
        sys.exit(3)
    serve(srv, "stdio")
