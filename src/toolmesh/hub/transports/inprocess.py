"""In-process transport: an ``MCPServer`` (or low-level ``Server``) living in this process.

Driven through the official SDK's ``mcp.Client``; the client context is entered
and exited by one owner task, so no cancel scope ever crosses tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from mcp import Client, MCPError

from toolmesh.errors import ConnectionFailedError, McpRemoteError, ToolTimeoutError
from toolmesh.hub.transports.base import (
    MODERN,
    Connection,
    LogHandler,
    Pending,
    ProgressCallback,
    ServerIdentity,
    ServerRequestHandler,
)


def _dump(model: Any) -> dict[str, Any]:
    out: dict[str, Any] = model.model_dump(by_alias=True, exclude_none=True, mode="json")
    return out


class InProcessConnection(Connection):
    client: Client | None = None
    _owner: asyncio.Task[None] | None = None

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        self._ready: asyncio.Future[None] = loop.create_future()
        self._stop = asyncio.Event()
        self._owner = loop.create_task(self._own(), name=f"mcp-inprocess:{self.config.name}")
        await asyncio.shield(self._ready)

    async def _own(self) -> None:
        mode = {"auto": MODERN, "2025-11-25": "legacy"}.get(self.config.protocol, self.config.protocol)
        try:
            async with Client(self.config.server, mode=mode) as client:
                self.client = client
                self._ready.set_result(None)
                await self._stop.wait()
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(ConnectionFailedError(f"server {self.config.name!r}: {exc}"))
        finally:
            self.client = None

    async def _negotiate(self) -> None:
        assert self.client is not None
        info = self.client.server_info
        self.identity = ServerIdentity(
            protocol=self.client.protocol_version,
            name=info.name if info else "",
            version=info.version if info else "",
            capabilities=_dump(self.client.server_capabilities),
            instructions=self.client.instructions,
        )

    async def request(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        max_timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        on_request: ServerRequestHandler | None = None,
        on_log: LogHandler | None = None,
        remaining: float | None = None,
        hard_remaining: float | None = None,
    ) -> dict[str, Any]:
        """Through the SDK's ``Client``; ``on_request``/``on_log`` are not routed in-process
        (the SDK client answers the server's requests itself). No progress extension here:
        the request ends after ``timeout`` (or the ``remaining`` of the caller's deadline)."""
        c = self.client
        if c is None or self.closed:
            raise ConnectionFailedError(f"server {self.config.name!r}: connection closed")
        p = params or {}
        t = timeout if timeout is not None else self.config.timeout
        bound = t if remaining is None else min(t, remaining)
        try:
            async with asyncio.timeout(bound):
                result: Any
                if method == "tools/call":
                    progress = None
                    if on_progress is not None:
                        cb = on_progress

                        async def progress(done: float, total: float | None, message: str | None) -> None:
                            r = cb(done, total, message)
                            if r is not None:
                                await r

                    result = await c.call_tool(
                        p["name"], p.get("arguments") or {}, progress_callback=progress  # type: ignore[arg-type]
                    )
                elif method == "tools/list":
                    result = await c.list_tools()
                elif method == "resources/list":
                    result = await c.list_resources()
                elif method == "resources/templates/list":
                    result = await c.list_resource_templates()
                elif method == "resources/read":
                    result = await c.read_resource(p["uri"])
                elif method == "prompts/list":
                    result = await c.list_prompts()
                elif method == "prompts/get":
                    result = await c.get_prompt(p["name"], p.get("arguments"))
                elif method == "ping":
                    result = await c.send_ping()
                else:
                    raise McpRemoteError(-32601, f"method {method!r} is not available in-process")
        except TimeoutError:
            raise ToolTimeoutError(f"server {self.config.name!r}: {method} did not finish within {t:g}s") from None
        except MCPError as exc:
            raise McpRemoteError(exc.error.code, exc.error.message, exc.error.data) from exc
        return _dump(result)

    async def _send_request(self, msg: dict[str, Any], pending: Pending) -> dict[str, Any]:
        raise NotImplementedError  # request() is overridden

    async def _send_notification(self, msg: dict[str, Any]) -> None:
        return None

    async def _close(self) -> None:
        if self._owner is not None:
            self._stop.set()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._owner, 5.0)
