"""Streamable HTTP transport, both protocol eras.

Modern (2026-07-28): every request is a self-contained POST with routing
headers; nothing to set up, any replica can answer. Handshake era: the
``Mcp-Session-Id`` from ``initialize`` rides on every request; HTTP 404 means
the server forgot the session (:class:`SessionLostError`).

POSTs go through :mod:`fasthttp` (a lean keep-alive client, ~1.5x aiohttp's
throughput here); the optional legacy GET stream and the closing DELETE use aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp
import orjson
from mcp.shared.inbound import encode_header_value

from toolmesh.errors import ConnectionFailedError, ProtocolError, SessionLostError, ToolmeshError
from toolmesh.hub.transports.base import MODERN, Connection, Pending
from toolmesh.net.fasthttp import FastHttpPool, HttpError, Response
from toolmesh.net.sse import EventTooLarge, iter_sse

log = logging.getLogger("toolmesh.hub")

_NAME_PARAM = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}


class HttpConnection(Connection):
    """Streamable HTTP client connection."""

    pool: FastHttpPool | None = None
    session_id: str | None = None
    _listener: asyncio.Task[None] | None = None
    _aio: aiohttp.ClientSession | None = None

    async def _open(self) -> None:
        assert self.config.url is not None
        self.pool = FastHttpPool(
            self.config.url, limit=self.config.max_concurrency, connect_timeout=self.config.connect_timeout
        )
        lines = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                 "User-Agent": "toolmesh", **self.config.headers}
        self._base = "".join(f"{k}: {v}\r\n" for k, v in lines.items()).encode()
        self._proto_line = b""

    def _adopt(self, version: str, result: dict[str, Any]) -> None:
        super()._adopt(version, result)
        self._proto_line = f"Mcp-Protocol-Version: {version}\r\n".encode()

    def _headers(self, msg: dict[str, Any]) -> bytes:
        proto = self.identity.protocol
        if proto == MODERN:
            method = msg.get("method")
            if method is None:
                return self._base + self._proto_line
            extra = f"Mcp-Protocol-Version: {MODERN}\r\nMcp-Method: {method}\r\n"
            key = _NAME_PARAM.get(method)
            if key is not None:
                value = (msg.get("params") or {}).get(key)
                if isinstance(value, str):
                    extra += f"Mcp-Name: {encode_header_value(value)}\r\n"
            return self._base + extra.encode()
        h = self._base + self._proto_line
        if self.session_id is not None:
            h += f"Mcp-Session-Id: {self.session_id}\r\n".encode()
        return h

    async def _post(self, msg: dict[str, Any], pending: Pending | None) -> dict[str, Any] | None:
        pool = self.pool
        assert pool is not None
        try:
            resp, conn = await pool.post(orjson.dumps(msg), self._headers(msg))
            if resp.streaming:
                try:
                    if resp.status == 200:
                        return await self._read_stream(resp, msg.get("id"), pending)
                finally:
                    await pool.done(conn, resp)
            status = resp.status
            if status == 202 or (status == 200 and pending is None):
                return None
            sid = resp.headers.get("mcp-session-id")
            if sid is not None and self.session_id is None:
                self.session_id = sid
            body = resp.body
            if status == 404 and self.session_id is not None:
                self._raise_for_status(status, body)
            if status == 200 or (resp.headers.get("content-type", "").startswith("application/json") and body):
                return self._parse_body(body, msg, status)
            self._raise_for_status(status, body)
        except ToolmeshError:
            raise
        except HttpError as exc:
            err = ConnectionFailedError(f"server {self.config.name!r}: {exc}")
            err.before_send = exc.before_send  # type: ignore[attr-defined]
            raise err from exc
        except OSError as exc:
            raise ConnectionFailedError(f"server {self.config.name!r}: HTTP request failed: {exc}") from exc
        except EventTooLarge as exc:
            raise ProtocolError(f"server {self.config.name!r}: {exc}") from exc
        return None

    def _parse_body(self, body: bytes, msg: dict[str, Any], status: int) -> dict[str, Any] | None:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            if status != 200:
                self._raise_for_status(status, body)
            raise ProtocolError(f"server {self.config.name!r}: response is not valid JSON") from exc
        if isinstance(data, list):  # a batch answer: pick ours
            for item in data:
                if isinstance(item, dict) and item.get("id") == msg.get("id") and "method" not in item:
                    return item
            return None
        if not isinstance(data, dict):
            raise ProtocolError(f"server {self.config.name!r}: response is not a JSON-RPC object")
        if data.get("id") != msg.get("id") and "error" not in data:
            raise ProtocolError(f"server {self.config.name!r}: response id does not match the request")
        return data

    def _raise_for_status(self, status: int, body: bytes) -> None:
        text = body[:200].decode("utf-8", errors="replace")
        if status == 404 and self.session_id is not None:
            self.session_id = None
            raise SessionLostError(f"server {self.config.name!r}: session not found (HTTP 404)")
        if status >= 500 or status in (408, 429):
            raise ConnectionFailedError(f"server {self.config.name!r}: HTTP {status}: {text}")
        raise ProtocolError(f"server {self.config.name!r}: HTTP {status}: {text}")

    async def _read_stream(self, resp: Response, rid: Any, pending: Pending | None) -> dict[str, Any] | None:
        sid = resp.headers.get("mcp-session-id")
        if sid is not None and self.session_id is None:
            self.session_id = sid
        async for ev in iter_sse(resp.read_chunk):
            if ev.event != "message" or not ev.data:
                continue
            try:
                item = orjson.loads(ev.data)
            except orjson.JSONDecodeError:
                log.warning("server %s sent invalid JSON in an SSE event", self.config.name)
                continue
            if isinstance(item, dict) and "method" not in item and item.get("id") == rid:
                return item
            # Whatever else rides on this request's stream belongs to it (progress, logs, sampling...).
            await self._dispatch(item, pending)
        if pending is not None and pending.future.done():
            return pending.future.result()
        if pending is None:
            return None
        raise ConnectionFailedError(f"server {self.config.name!r}: response stream ended without a result")

    async def _send_request(self, msg: dict[str, Any], pending: Pending) -> dict[str, Any]:
        reply = await self._post(msg, pending)
        if reply is None:
            raise ProtocolError(f"server {self.config.name!r}: no JSON-RPC response to {msg.get('method')}")
        return reply

    async def _send_notification(self, msg: dict[str, Any]) -> None:
        await self._post(msg, None)

    async def _cancel_remote(self, rid: int, reason: str) -> None:
        # Modern HTTP: closing the response stream is the cancellation; nothing to send.
        if self.identity.protocol != MODERN:
            await super()._cancel_remote(rid, reason)

    def _after_initialize(self) -> None:
        if self.session_id is not None:
            self._listener = asyncio.get_running_loop().create_task(self._listen())

    def _aiohttp(self) -> aiohttp.ClientSession:
        if self._aio is None:
            self._aio = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        return self._aio

    async def _listen(self) -> None:
        """Legacy GET stream for server-initiated messages (list_changed...). Optional."""
        assert self.config.url is not None
        headers = {**self.config.headers, "Accept": "text/event-stream",
                   "Mcp-Protocol-Version": self.identity.protocol}
        if self.session_id is not None:
            headers["Mcp-Session-Id"] = self.session_id
        with contextlib.suppress(Exception):
            async with self._aiohttp().get(self.config.url, headers=headers) as resp:
                if resp.status != 200:
                    return
                async for ev in iter_sse(resp.content.readany):
                    if ev.event == "message" and ev.data:
                        with contextlib.suppress(orjson.JSONDecodeError):
                            await self._dispatch(orjson.loads(ev.data))

    async def _close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
        if self.session_id is not None and self.config.url is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    h = {**self.config.headers, "Mcp-Session-Id": self.session_id,
                         "Mcp-Protocol-Version": self.identity.protocol}
                    async with self._aiohttp().delete(self.config.url, headers=h):
                        pass
        if self._aio is not None:
            await self._aio.close()
        if self.pool is not None:
            await self.pool.aclose()
