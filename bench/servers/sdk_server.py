"""Benchmark peer: the official SDK's ``MCPServer`` with one async ``add`` tool.

Usage: ``python sdk_server.py stdio`` (``mcp.run("stdio")``) or
``python sdk_server.py http PORT [--stateful] [--sse]``: ``streamable_http_app()`` on uvicorn.
The default HTTP configuration is the SDK's fastest one measured on this machine:
``stateless_http=True, json_response=True`` (plain JSON replies, no session bookkeeping);
``--stateful`` / ``--sse`` switch back to the SDK defaults for comparison.
uvicorn runs with its defaults, which pick httptools and uvloop when installed (both are).
"""

from __future__ import annotations

import sys

from mcp.server import MCPServer

mcp = MCPServer("bench-sdk")


@mcp.tool()
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


if __name__ == "__main__":
    transport = sys.argv[1] if len(sys.argv) > 1 else "stdio"
    if transport == "stdio":
        mcp.run("stdio")
    else:
        import uvicorn

        port = int(sys.argv[2])
        app = mcp.streamable_http_app(
            stateless_http="--stateful" not in sys.argv,
            json_response="--sse" not in sys.argv,
        )
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
