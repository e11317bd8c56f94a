"""A one-off connection test: connect, list the tools, close (behind ``Hub.test_connection``)."""

from __future__ import annotations

import time
from typing import Any

from toolmesh.hub.config import ServerConfig
from toolmesh.hub.transports import make_connection

__all__ = ["probe"]


async def probe(config: ServerConfig, client_capabilities: dict[str, Any] | None = None) -> dict[str, Any]:
    """Open a fresh connection to ``config``, list its tools, close. Never raises: the report says
    ``ok`` and ``error``, with the protocol, server info, tool count and the timings in ms.
    ``client_capabilities`` is what the client advertises when ``config`` does not say."""
    start = time.perf_counter()
    caps = config.client_capabilities
    conn = make_connection(config, caps if caps is not None else client_capabilities)
    report: dict[str, Any] = {"name": config.name, "transport": config.transport}
    try:
        await conn.start()
        connected = time.perf_counter()
        tools = await conn.request("tools/list", timeout=config.connect_timeout)
        done = time.perf_counter()
        report.update(
            ok=True,
            protocol=conn.identity.protocol,
            server_info={"name": conn.identity.name, "version": conn.identity.version},
            connect_ms=round((connected - start) * 1000, 2),
            list_ms=round((done - connected) * 1000, 2),
            latency_ms=round((done - start) * 1000, 2),
            tool_count=len(tools.get("tools") or []),
            error=None,
        )
    except Exception as exc:
        report.update(ok=False, error=f"{type(exc).__name__}: {exc}",
                      latency_ms=round((time.perf_counter() - start) * 1000, 2), tool_count=0)
    finally:
        await conn.close()
    return report
