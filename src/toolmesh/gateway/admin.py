"""Admin API (GW-4). Placeholder being replaced by the real implementation (helper H4)."""

from __future__ import annotations

from toolmesh.gateway.state import Gateway
from toolmesh.gateway.web import Receive, Scope, Send, send_error


class AdminApi:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_error(send, 404, "not implemented yet", "not_found_error")
