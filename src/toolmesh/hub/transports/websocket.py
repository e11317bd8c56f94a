"""WebSocket transport: JSON-RPC messages as text frames, subprotocol ``mcp``."""

from __future__ import annotations

import contextlib

import aiohttp

from toolmesh.errors import ConnectionFailedError
from toolmesh.hub.transports.stream import StreamConnection
from toolmesh.net.addrguard import guarded_connector


class WebSocketConnection(StreamConnection):
    session: aiohttp.ClientSession | None = None
    ws: aiohttp.ClientWebSocketResponse | None = None

    async def _open(self) -> None:
        assert self.config.url is not None
        self.session = aiohttp.ClientSession(connector=guarded_connector(self.config.connect_guard))
        try:
            self.ws = await self.session.ws_connect(
                self.config.url, protocols=("mcp",), headers=self.config.headers,
                max_msg_size=64 * 1024 * 1024, heartbeat=30.0,
            )
        except (aiohttp.ClientError, OSError) as exc:
            raise ConnectionFailedError(f"server {self.config.name!r}: WebSocket connect failed: {exc}") from exc
        self._start_reader()

    async def _read_loop(self) -> None:
        assert self.ws is not None
        async for frame in self.ws:
            if frame.type == aiohttp.WSMsgType.TEXT:
                await self._feed(frame.data)
            elif frame.type == aiohttp.WSMsgType.BINARY:
                await self._feed(frame.data)
            elif frame.type == aiohttp.WSMsgType.ERROR:
                raise ConnectionFailedError(f"server {self.config.name!r}: WebSocket error: {self.ws.exception()}")

    async def _write(self, data: bytes) -> None:
        ws = self.ws
        if ws is None or ws.closed:
            raise ConnectionFailedError(f"server {self.config.name!r}: WebSocket is closed")
        try:
            await ws.send_str(data.decode())
        except (aiohttp.ClientError, ConnectionResetError) as exc:
            raise ConnectionFailedError(f"server {self.config.name!r}: WebSocket send failed: {exc}") from exc

    async def _close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
        await self._stop_reader()
        if self.session is not None:
            await self.session.close()
