"""Test server for the Hub's retries: ``python hub_retry_server.py`` (stdio, toolmesh's frontend).

``flaky_read`` (``readOnlyHint``) and ``flaky_write`` (no hints) run past their 0.3 s limit on
their first call — the frontend answers JSON-RPC -32001, which the Hub may retry for a safe
tool only — and answer at once afterwards. ``calls(tool)`` says how often a tool ran.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from mcp_types import ToolAnnotations

from toolmesh.servers import ToolServer

server = ToolServer("hub-retry", max_execution_time=0.3)
ran: Counter[str] = Counter()


async def _flaky(name: str) -> str:
    ran[name] += 1
    if ran[name] == 1:
        await asyncio.sleep(5)
    return f"{name} answered on run {ran[name]}"


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
async def flaky_read() -> str:
    """Slow the first time, safe to repeat."""
    return await _flaky("flaky_read")


@server.tool()
async def flaky_write() -> str:
    """Slow the first time, not declared safe to repeat."""
    return await _flaky("flaky_write")


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
async def calls(tool: str) -> int:
    """How many times ``tool`` ran."""
    return ran[tool]


if __name__ == "__main__":
    server.run("stdio")
