"""An upstream that counts its calls (Hub coalescing / result-cache tests and ``toolmesh bench cache``).

    python hub_cache_server.py PORT [DELAY_MS]    # toolmesh.servers' HTTP frontend (both eras)

Tools (each sleeps DELAY_MS, default 20, before answering):

* ``lookup(sku)`` — read-only; answers with its call number and the caller's ``X-User-Token``
  (so a test sees whose answer it got);
* ``flaky(sku)`` — read-only; an ``isError`` result;
* ``hold(sku, seconds)`` — read-only, sleeps ``seconds`` more (cancellation tests);
* ``steps(sku, n)`` — read-only, reports ``n`` progress steps 50 ms apart;
* ``reserve(sku)`` — not read-only;
* ``counts()`` — how often each tool ran (and how many calls were cancelled);
* ``change()`` — adds a tool and announces ``tools/list_changed``.
"""

from __future__ import annotations

import asyncio
import sys
import warnings
from collections import Counter
from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp_types import CallToolResult, TextContent, ToolAnnotations, ToolListChangedNotification

warnings.filterwarnings("ignore")
MODERN = "2026-07-28"
DELAY = (int(sys.argv[2]) if len(sys.argv) > 2 else 20) / 1000.0
READ_ONLY = ToolAnnotations(read_only_hint=True)
mcp = MCPServer("hub-cache")
COUNTS: Counter[str] = Counter()


def _token(ctx: Context) -> str | None:
    request = ctx.request_context.request
    headers = getattr(request, "headers", None) or {}
    value = headers.get("x-user-token")
    return str(value) if value is not None else None


@mcp.tool(annotations=READ_ONLY)
async def lookup(sku: str, ctx: Context) -> dict[str, Any]:
    """Read-only: the SKU, this server's call number and the caller's token."""
    COUNTS["lookup"] += 1
    n = COUNTS["lookup"]
    await asyncio.sleep(DELAY)
    return {"sku": sku, "n": n, "token": _token(ctx)}


@mcp.tool(annotations=READ_ONLY)
async def flaky(sku: str) -> CallToolResult:
    """Read-only, answers with an error result."""
    COUNTS["flaky"] += 1
    await asyncio.sleep(DELAY)
    return CallToolResult(content=[TextContent(type="text", text=f"no such sku {sku}")], is_error=True)


@mcp.tool(annotations=READ_ONLY)
async def hold(sku: str, seconds: float) -> str:
    """Read-only, slow; counts cancellations."""
    COUNTS["hold"] += 1
    n = COUNTS["hold"]
    try:
        await asyncio.sleep(DELAY + seconds)
    except asyncio.CancelledError:
        COUNTS["hold_cancelled"] += 1
        raise
    return f"held {sku} #{n}"


@mcp.tool(annotations=READ_ONLY)
async def steps(sku: str, n: int, ctx: Context) -> str:
    """Read-only; reports ``n`` progress steps, 50 ms apart."""
    COUNTS["steps"] += 1
    for i in range(n):
        await asyncio.sleep(0.05)
        await ctx.report_progress(i + 1, n, f"step {i + 1}")
    return f"{sku}: {n} steps"


@mcp.tool()
async def reserve(sku: str) -> str:
    """Not read-only: every call changes something."""
    COUNTS["reserve"] += 1
    n = COUNTS["reserve"]
    await asyncio.sleep(DELAY)
    return f"reserved {sku} #{n}"


@mcp.tool()
def counts() -> dict[str, int]:
    """How often each tool ran."""
    return dict(COUNTS)


@mcp.tool()
async def change(ctx: Context) -> str:
    """Add a tool and announce that the tool list changed."""
    COUNTS["change"] += 1
    name = f"added_{COUNTS['change']}"
    mcp.add_tool(lambda: name, name=name, description="added at run time")
    if ctx.session.protocol_version == MODERN:
        await ctx.notify_tools_changed()
    else:
        await ctx.session.send_notification(ToolListChangedNotification())
    return name


if __name__ == "__main__":
    from toolmesh.servers import serve

    serve(mcp, "http", port=int(sys.argv[1]))
