"""Operations (GW-5). Placeholder being replaced by the real implementation (helper H4)."""

from __future__ import annotations

import logging
from typing import Any

from toolmesh.gateway.config import LogSettings, OtelSettings
from toolmesh.gateway.state import Gateway
from toolmesh.gateway.web import Receive, Scope, Send, send_json


def configure_logging(settings: LogSettings) -> None:
    logging.basicConfig(level=settings.level.upper())


def configure_tracing(settings: OtelSettings) -> None:
    return None


class Ops:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    async def health(self, scope: Scope, receive: Receive, send: Send, *, ready: bool) -> None:
        ok = self.gw.ready if ready else True
        await send_json(send, 200 if ok else 503, {"status": "ok" if ok else "starting"})

    async def metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 404, {})

    def observe(self, route: str, status: int, seconds: float, tenant: str) -> None:
        _ = (route, status, seconds, tenant, Any)
