"""MCP endpoints (GW-2). Placeholder: the lead is writing the real one."""

from __future__ import annotations

from toolmesh.gateway.state import Gateway
from toolmesh.gateway.web import Receive, Scope, Send, send_error


class McpRoutes:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    async def __call__(self, view: str | None, tail: str, scope: Scope, receive: Receive, send: Send) -> None:
        await send_error(send, 404, "not implemented yet", "not_found_error")

    async def aclose(self) -> None:
        return None
