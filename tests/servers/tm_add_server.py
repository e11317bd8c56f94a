"""Test server for toolmesh's server frontends: ``python tm_add_server.py TRANSPORT [PORT] [--policy]``.

Tools: ``add`` (async), ``slow`` (sleeps, reports progress each step, records cancellation),
``boom`` (raises), ``sleepy`` (1 s timeout override). A resource, a template and a prompt.
"""

from __future__ import annotations

import asyncio
import os
import sys

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError

from toolmesh.servers import ToolServer

policy = "--policy" in sys.argv
server = ToolServer(
    "tm-add",
    max_execution_time=5.0 if policy else None,
    rate_limit=5.0 if "--rate" in sys.argv else None,
    rate_burst=5 if "--rate" in sys.argv else None,
    max_connections=1 if "--one-conn" in sys.argv else None,
)
MARKER = os.environ.get("TM_CANCEL_MARKER")


@server.tool()
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
async def slow(steps: int, delay: float, ctx: Context) -> str:
    """Sleep ``steps`` × ``delay`` seconds, reporting progress after each step."""
    try:
        for i in range(steps):
            await asyncio.sleep(delay)
            await ctx.report_progress(i + 1, steps, f"step {i + 1}")
    except asyncio.CancelledError:
        if MARKER:
            with open(MARKER, "w") as fh:
                fh.write("cancelled")
        raise
    return f"done {steps}"


@server.tool()
def boom() -> str:
    """Always fails (an anticipated ToolError, whose text reaches the client)."""
    raise ToolError("kaboom")


@server.tool()
async def chatty(ctx: Context) -> str:
    """Logs at two levels."""
    await ctx.debug("fine detail")
    await ctx.warning("careful")
    return "said"


@server.tool(timeout=0.3)
async def sleepy(seconds: float) -> str:
    """Sleeps; its own limit is 0.3 s."""
    await asyncio.sleep(seconds)
    return "awake"


@server.resource("res://greeting")
def greeting() -> str:
    return "hello"


@server.resource("res://items/{item}")
def item(item: str) -> str:
    return f"item {item}"


@server.prompt()
def greet(name: str) -> str:
    """Greet someone."""
    return f"Hello {name}"


if __name__ == "__main__":
    transport = sys.argv[1] if len(sys.argv) > 1 else "stdio"
    port = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2].isdigit() else 8000
    server.run(transport, port=port)  # type: ignore[arg-type]
