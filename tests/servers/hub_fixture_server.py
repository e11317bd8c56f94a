"""An official-SDK MCPServer used by the Hub tests, runnable over stdio, HTTP and SSE.

    python hub_fixture_server.py stdio
    python hub_fixture_server.py http PORT     # Streamable HTTP at /mcp (both protocol eras)
    python hub_fixture_server.py sse PORT      # legacy HTTP+SSE at /sse
"""

from __future__ import annotations

import asyncio
import os
import sys

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError

mcp = MCPServer("hub-fixture")
STATE = {"cancelled": 0}


@mcp.tool()
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@mcp.tool()
async def echo(text: str) -> str:
    """Echo the text back."""
    return text


@mcp.tool()
async def fail(message: str = "boom") -> str:
    """Always raises."""
    raise ToolError(message)


@mcp.tool()
async def sleep(seconds: float, marker: str = "") -> str:
    """Sleep, then answer. Writes MARKER.started / MARKER.done files when marker is set."""
    if marker:
        open(marker + ".started", "w").close()
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        if marker:
            open(marker + ".cancelled", "w").close()
        raise
    if marker:
        open(marker + ".done", "w").close()
    return f"slept {seconds}"


@mcp.tool()
async def progress(steps: int, interval: float, ctx: Context) -> str:
    """Report progress every interval seconds for steps steps."""
    for i in range(steps):
        await asyncio.sleep(interval)
        await ctx.report_progress(i + 1, steps, f"step {i + 1}")
    return f"done {steps}"


@mcp.tool()
async def pid() -> int:
    """The server's process id."""
    return os.getpid()


@mcp.tool()
async def crash() -> str:
    """Kill the server process mid-call."""
    os._exit(3)


@mcp.tool()
async def big(kb: int) -> str:
    """Return kb kilobytes of text."""
    return "x" * (kb * 1024)


@mcp.resource("fixture://greeting")
def greeting() -> str:
    """A static resource."""
    return "hello"


@mcp.prompt()
def ask(topic: str) -> str:
    """A prompt template."""
    return f"Tell me about {topic}"


if __name__ == "__main__":
    transport = sys.argv[1]
    if transport == "stdio":
        mcp.run("stdio")
    else:
        import uvicorn

        app = mcp.streamable_http_app() if transport == "http" else mcp.sse_app()
        uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
