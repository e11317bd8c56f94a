"""An official-SDK MCPServer for the Hub.forward tests: sampling, elicitation, logs, 2026-07-28 input_required.

    python hub_forward_server.py stdio
    python hub_forward_server.py http PORT        # the SDK's Streamable HTTP app (both protocol eras)
    python hub_forward_server.py toolmesh PORT    # toolmesh.servers' HTTP frontend (both protocol eras)
    python hub_forward_server.py sse PORT         # the SDK's legacy HTTP+SSE app at /sse
"""

from __future__ import annotations

import asyncio
import sys
import warnings
from typing import Annotated

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import (
    CallToolResult,
    ElicitRequest,
    ElicitRequestFormParams,
    InputRequiredResult,
    SamplingMessage,
    TextContent,
)
from pydantic import BaseModel, Field

warnings.filterwarnings("ignore")  # sampling/logging are deprecated in 2026-07-28; the handshake era still has them
mcp = MCPServer("hub-forward")


class Point(BaseModel):
    x: int
    y: int


class Name(BaseModel):
    name: str


@mcp.tool()
async def point(x: int) -> Point:
    """Structured output."""
    return Point(x=x, y=x * 2)


@mcp.tool()
async def fail(message: str = "boom") -> str:
    """Always a tool error (isError)."""
    raise ToolError(message)


@mcp.tool()
async def sleep(seconds: float) -> str:
    """Sleep, then answer."""
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


@mcp.tool()
async def progress(steps: int, ctx: Context) -> str:
    """Report progress steps times."""
    for i in range(steps):
        await ctx.report_progress(i + 1, steps, f"step {i + 1}")
    return f"done {steps}"


@mcp.tool()
async def chatty(ctx: Context) -> str:
    """Log two messages during the call."""
    await ctx.info("first")
    await ctx.warning("second")
    return "talked"


@mcp.tool()
async def ask_llm(prompt: str, ctx: Context) -> str:
    """Ask the client's model (sampling/createMessage) and return its answer."""
    result = await ctx.session.create_message(
        [SamplingMessage(role="user", content=TextContent(type="text", text=prompt))],
        max_tokens=50,
        related_request_id=ctx.request_id,
    )
    content = result.content
    return f"model said: {content.text}" if isinstance(content, TextContent) else "model said something else"


@mcp.tool()
async def ask_user(ctx: Context) -> str:
    """Ask the user for a name (elicitation/create)."""
    answer = await ctx.elicit("What is your name?", Name)
    if answer.action == "accept" and answer.data is not None:
        return f"hello {answer.data.name}"
    return f"user said {answer.action}"


@mcp.tool()
async def confirm(ctx: Context) -> CallToolResult | InputRequiredResult:
    """2026-07-28 multi-round: ask for confirmation via input_required, answer on the retry."""
    responses = ctx.input_responses
    if not responses:
        ask = ElicitRequest(params=ElicitRequestFormParams(
            message="Sure?", requested_schema={"type": "object", "properties": {"ok": {"type": "boolean"}}}))
        return InputRequiredResult(input_requests={"sure": ask}, request_state="round-1")
    return CallToolResult(content=[TextContent(type="text", text=f"state={ctx.request_state} answers={sorted(responses)}")])


@mcp.tool()
async def caps(ctx: Context) -> dict[str, object]:
    """The capabilities the client declared."""
    declared = ctx.session.client_capabilities
    return declared.model_dump(exclude_none=True) if declared is not None else {}


@mcp.tool()
async def regional(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})]) -> str:
    """A tool mirroring its ``region`` argument into an ``Mcp-Param-Region`` header (SEP-2243)."""
    return f"served from {region}"


@mcp.tool()
async def headers_seen(ctx: Context) -> dict[str, str | None]:
    """The credentials-like headers this server received with the call (gateway forwarding tests)."""
    request = ctx.request_context.request
    headers = getattr(request, "headers", None) or {}
    return {name: headers.get(name) for name in ("authorization", "x-user-token", "cookie")}


@mcp.resource("forward://greeting")
def greeting() -> str:
    """A static resource."""
    return "hello"


@mcp.prompt()
def ask(topic: str) -> str:
    """A prompt template."""
    return f"Tell me about {topic}"


if __name__ == "__main__":
    kind = sys.argv[1]
    if kind == "stdio":
        mcp.run("stdio")
    elif kind == "toolmesh":
        from toolmesh.servers import serve

        serve(mcp, "http", port=int(sys.argv[2]))
    else:
        import uvicorn

        app = mcp.sse_app() if kind == "sse" else mcp.streamable_http_app()
        uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
