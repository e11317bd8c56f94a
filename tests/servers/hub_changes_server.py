"""An official-SDK MCPServer whose catalogue changes at run time (Hub change-notification tests).

    python hub_changes_server.py toolmesh PORT [--no-listen]   # toolmesh.servers' HTTP frontend (both eras)
    python hub_changes_server.py sdk PORT                      # the SDK's Streamable HTTP app (handshake GET stream)
    python hub_changes_server.py stdio [--no-listen]           # toolmesh.servers' stdio frontend (both eras)

``add_tool`` registers a new tool and announces it the way the caller's protocol era expects:
2026-07-28 publishes to ``subscriptions/listen`` streams only; the handshake era sends
``notifications/tools/list_changed`` on the session. ``touch`` does the same for
``notifications/resources/updated`` (handshake era: only for URIs the client subscribed to).
``end_listens`` ends every open listen stream (graceful close), so a client must re-listen.
``--no-listen`` builds the server without ``subscriptions/listen`` (so it advertises no listChanged).
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

from mcp.server import MCPServer
from mcp.server.caching import CacheHint
from mcp.server.mcpserver import Context
from mcp_types import (
    EmptyResult,
    ResourceUpdatedNotification,
    ResourceUpdatedNotificationParams,
    SubscribeRequestParams,
    ToolListChangedNotification,
    UnsubscribeRequestParams,
)

warnings.filterwarnings("ignore")
MODERN = "2026-07-28"
NO_LISTEN = "--no-listen" in sys.argv
#: Listings stay fresh for an hour: a client that sees a change sooner learned it from a notification.
HOUR = CacheHint(ttl_ms=3_600_000)
mcp = MCPServer(
    "hub-changes",
    subscriptions=False if NO_LISTEN else None,
    cache_hints={"tools/list": HOUR, "resources/list": HOUR, "prompts/list": HOUR},
)
SUBSCRIBED: set[str] = set()


def _make(name: str) -> Any:
    def added() -> str:
        return f"I am {name}"

    return added


@mcp.tool()
async def add_tool(name: str, ctx: Context) -> str:
    """Register a tool called ``name`` and announce that the tool list changed."""
    mcp.add_tool(_make(name), name=name, description=f"added at run time: {name}")
    if ctx.session.protocol_version == MODERN:
        if not NO_LISTEN:
            await ctx.notify_tools_changed()
    else:
        await ctx.session.send_notification(ToolListChangedNotification())
    return f"added {name}"


@mcp.tool()
async def touch(uri: str, ctx: Context) -> str:
    """Announce that the resource ``uri`` changed."""
    if ctx.session.protocol_version == MODERN:
        if not NO_LISTEN:
            await ctx.notify_resource_updated(uri)
    elif uri in SUBSCRIBED:
        await ctx.session.send_notification(
            ResourceUpdatedNotification(params=ResourceUpdatedNotificationParams(uri=uri))
        )
    return f"touched {uri}"


@mcp.tool()
async def end_listens() -> str:
    """End every open subscriptions/listen stream (graceful close: the client must re-listen)."""
    entry = mcp._lowlevel_server.get_request_handler("subscriptions/listen")
    handler = entry.handler if entry is not None else None
    close = getattr(handler, "close", None)
    if close is None:
        return "no listen handler"
    close()
    return "closed"


@mcp.resource("changes://doc")
def doc() -> str:
    """A resource whose updates the tests watch."""
    return "the document"


async def _subscribe(ctx: Any, params: SubscribeRequestParams) -> EmptyResult:
    SUBSCRIBED.add(str(params.uri))
    return EmptyResult()


async def _unsubscribe(ctx: Any, params: UnsubscribeRequestParams) -> EmptyResult:
    SUBSCRIBED.discard(str(params.uri))
    return EmptyResult()


mcp._lowlevel_server.add_request_handler("resources/subscribe", SubscribeRequestParams, _subscribe)
mcp._lowlevel_server.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, _unsubscribe)


if __name__ == "__main__":
    kind = sys.argv[1]
    if kind == "stdio":
        from toolmesh.servers import serve

        serve(mcp, "stdio")
    elif kind == "toolmesh":
        from toolmesh.servers import serve

        serve(mcp, "http", port=int(sys.argv[2]))
    else:
        import uvicorn

        uvicorn.run(mcp.streamable_http_app(), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
