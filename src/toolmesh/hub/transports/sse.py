"""Legacy HTTP+SSE transport (protocol 2024-11-05): GET an event stream, POST to its endpoint."""

from __future__ import annotations

import asyncio
from urllib.parse import urljoin

import aiohttp

from toolmesh.errors import ConnectionFailedError
from toolmesh.hub.transports.stream import StreamConnection
from toolmesh.net.addrguard import guarded_connector
from toolmesh.net.sse import iter_sse


class SseConnection(StreamConnection):
    session: aiohttp.ClientSession | None = None
    endpoint: str | None = None

    async def _open(self) -> None:
        assert self.config.url is not None
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None),
                                             connector=guarded_connector(self.config.connect_guard))
        self._endpoint_ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        try:
            self._resp = await self.session.get(
                self.config.url, headers={**self.config.headers, "Accept": "text/event-stream"}
            )
        except (aiohttp.ClientError, OSError) as exc:
            raise ConnectionFailedError(f"server {self.config.name!r}: SSE connect failed: {exc}") from exc
        if self._resp.status != 200:
            status = self._resp.status
            self._resp.release()
            raise ConnectionFailedError(f"server {self.config.name!r}: SSE stream answered HTTP {status}")
        self._start_reader()
        self.endpoint = await self._endpoint_ready

    async def _read_loop(self) -> None:
        try:
            async for ev in iter_sse(self._resp.content.readany):
                if ev.event == "endpoint":
                    if not self._endpoint_ready.done():
                        self._endpoint_ready.set_result(urljoin(str(self.config.url), ev.data.strip()))
                elif ev.event == "message" and ev.data:
                    await self._feed(ev.data)
        finally:
            if not self._endpoint_ready.done():
                self._endpoint_ready.set_exception(
                    ConnectionFailedError(f"server {self.config.name!r}: SSE stream ended before the endpoint event")
                )

    async def _write(self, data: bytes) -> None:
        if self.session is None or self.endpoint is None:
            raise ConnectionFailedError(f"server {self.config.name!r}: SSE session is not open")
        try:
            async with self.session.post(
                self.endpoint, data=data, headers={**self.config.headers, "Content-Type": "application/json"}
            ) as resp:
                if resp.status >= 400:
                    text = (await resp.read())[:200].decode(errors="replace")
                    raise ConnectionFailedError(
                        f"server {self.config.name!r}: message POST answered HTTP {resp.status}: {text}"
                    )
        except (aiohttp.ClientError, OSError) as exc:
            raise ConnectionFailedError(f"server {self.config.name!r}: message POST failed: {exc}") from exc

    async def _close(self) -> None:
        await self._stop_reader()
        resp = getattr(self, "_resp", None)
        if resp is not None:
            resp.close()
        if self.session is not None:
            await self.session.close()
