"""Benchmark peer: a FastMCP 4.x server with one async ``add`` tool.

Usage: ``python fastmcp_server.py stdio`` or ``python fastmcp_server.py http PORT [--stateful] [--sse]``.
HTTP is ``FastMCP.http_app()`` on uvicorn (defaults: httptools + uvloop when installed), by default
with ``stateless_http=True, json_response=True``, FastMCP's fastest configuration here.
"""

from __future__ import annotations

import sys

from fastmcp import FastMCP

mcp = FastMCP("bench-fastmcp")


@mcp.tool
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


if __name__ == "__main__":
    transport = sys.argv[1] if len(sys.argv) > 1 else "stdio"
    if transport == "stdio":
        mcp.run("stdio", show_banner=False)
    else:
        import uvicorn

        port = int(sys.argv[2])
        app = mcp.http_app(
            path="/mcp",
            stateless_http="--stateful" not in sys.argv,
            json_response="--sse" not in sys.argv,
        )
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
