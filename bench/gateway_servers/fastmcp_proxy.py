"""Benchmark peer: FastMCP 4.x's proxy in front of an MCP server over Streamable HTTP.

Usage: ``python fastmcp_proxy.py UPSTREAM_URL PORT``.

The backend is a ``fastmcp.Client`` connected once, before serving, and handed to
``create_proxy``: FastMCP then reuses that one session for every request, its fastest mode
(a disconnected client or a URL makes it open a fresh backend session per request). The
client speaks 2026-07-28 to the upstream; the front is ``http_app(stateless_http=True,
json_response=True)`` on uvicorn (httptools + uvloop, as for the gateway), so the same
2026-07-28 wrk script reaches it.
"""

from __future__ import annotations

import logging
import sys


async def serve(upstream: str, port: int) -> None:
    import uvicorn
    from fastmcp import Client
    from fastmcp.server import create_proxy

    logging.getLogger("fastmcp").setLevel(logging.WARNING)  # "reusing existing session" at INFO
    async with Client(upstream, mode="2026-07-28") as backend:
        proxy = create_proxy(backend, name="bench-fastmcp-proxy")
        app = proxy.http_app(path="/mcp", stateless_http=True, json_response=True)
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                                http="httptools", loop="none")
        await uvicorn.Server(config).serve()


if __name__ == "__main__":
    import uvloop

    uvloop.run(serve(sys.argv[1], int(sys.argv[2])))
