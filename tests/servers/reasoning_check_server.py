"""MCP server checking reasoning steps (stdio): ``python reasoning_check_server.py``.

Tools: ``check_step`` (JSON verdict: a step is wrong when it says "guess"), ``strict`` (a tool
error for any step mentioning "guess"), ``vague`` (an answer no verifier can read).
"""

from __future__ import annotations

from mcp.server.mcpserver.exceptions import ToolError

from toolmesh.servers import ToolServer

server = ToolServer("checker")


@server.tool()
async def check_step(step: str) -> dict[str, object]:
    """Judge one step: guesses are rejected."""
    if "guess" in step.lower():
        return {"ok": False, "score": 0.0, "reason": "the step guesses instead of computing"}
    return {"ok": True, "score": 1.0, "reason": "computed"}


@server.tool()
async def strict(step: str) -> str:
    """Reject guesses with a tool error."""
    if "guess" in step.lower():
        raise ToolError("guessing is not allowed")
    return "ok"


@server.tool()
async def vague(step: str) -> str:
    """Say something unhelpful."""
    return "hmm, maybe"


if __name__ == "__main__":
    server.run("stdio")
