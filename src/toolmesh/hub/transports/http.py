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
from contextvars import ContextVar
from typing import Any

import aiohttp
import orjson

from toolmesh.errors import ConnectionFailedError, ProtocolError, SessionLostError, ToolmeshError
from toolmesh.hub.transports.base import MODERN, Connection, Pending
from toolmesh.hub.transports.headers import encode_header_value, header_map, param_headers
from toolmesh.hub.transports.listen import LISTEN, LISTEN_ACK, ListenLoop, check_final, listen_message
from toolmesh.net.addrguard import guarded_connector
from toolmesh.net.fasthttp import FastHttpPool, HttpError, Response
from toolmesh.net.sse import STREAM_PAUSED, EventTooLarge, iter_sse

log = logging.getLogger("toolmesh.hub")
#: Extra header lines (``b"Name: value\r\n"...``) for the POSTs of the current task: how a
#: gateway passes on the caller headers a server's ``forward_headers`` allows. Empty by default.
FORWARDED_HEADERS: ContextVar[bytes] = ContextVar("toolmesh_forwarded_headers", default=b"")

_NAME_PARAM = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
#: Cached (method, name) header blocks per connection, at most this many (then the cache starts over).
_NAMED_HEADS_MAX = 1024
#: Resumption attempts (SEP-1699) for one request stream, and the wait when the server set no retry time.
MAX_RESUMES = 5
DEFAULT_RETRY_MS = 1000


class _Resume:
    """Where a request's SSE stream can be resumed from."""

    __slots__ = ("attempts", "last_id", "retry_ms")

    def __init__(self) -> None:
        self.last_id: str | None = None
        self.retry_ms: int | None = None
        self.attempts = 0

    def more(self) -> bool:
        return self.last_id is not None and self.attempts < MAX_RESUMES

    def delay(self) -> float:
        return (self.retry_ms if self.retry_ms is not None else DEFAULT_RETRY_MS) / 1000.0


class HttpConnection(Connection):
    """Streamable HTTP client connection."""

    pool: FastHttpPool | None = None
    session_id: str | None = None
    _listener: asyncio.Task[None] | None = None
    _aio: aiohttp.ClientSession | None = None

    async def _open(self) -> None:
        assert self.config.url is not None
        guard = self.config.connect_guard
        self.pool = FastHttpPool(
            self.config.url, limit=self.config.max_concurrency, connect_timeout=self.config.connect_timeout,
            resolve=guard.addresses if guard is not None else None,
        )
        lines = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                 "User-Agent": "toolmesh", **self.config.headers}
        self._base = "".join(f"{k}: {v}\r\n" for k, v in lines.items()).encode()
        self._proto_line = b""
        self._param_maps: dict[str, tuple[Any, dict[tuple[str, ...], str]]] = {}
        self._named_heads: dict[tuple[str, str], bytes] = {}

    def _adopt(self, version: str, result: dict[str, Any]) -> None:
        super()._adopt(version, result)
        self._proto_line = f"Mcp-Protocol-Version: {version}\r\n".encode()

    def _headers(self, msg: dict[str, Any]) -> bytes:
        proto = self.identity.protocol
        if proto == MODERN:
            method = msg.get("method")
            if method is None:
                return self._base + self._proto_line
            key = _NAME_PARAM.get(method)
            if key is None:
                return self._base + f"Mcp-Protocol-Version: {MODERN}\r\nMcp-Method: {method}\r\n".encode()
            params = msg.get("params") or {}
            value = params.get(key)
            if not isinstance(value, str):
                return self._base + f"Mcp-Protocol-Version: {MODERN}\r\nMcp-Method: {method}\r\n".encode()
            # The header block of (method, name) is the same call after call: built once.
            head = self._named_heads.get((method, value))
            if head is None:
                if len(self._named_heads) >= _NAMED_HEADS_MAX:
                    self._named_heads.clear()  # bounded: names come from callers
                head = self._named_heads[(method, value)] = self._base + (
                    f"Mcp-Protocol-Version: {MODERN}\r\nMcp-Method: {method}\r\n"
                    f"Mcp-Name: {encode_header_value(value)}\r\n").encode()
            if method == "tools/call":
                mapping = self._param_map(value)
                if mapping:
                    return head + param_headers(mapping, params.get("arguments")).encode()
            return head
        h = self._base + self._proto_line
        if self.session_id is not None:
            h += f"Mcp-Session-Id: {self.session_id}\r\n".encode()
        return h

    def _param_map(self, tool: str) -> dict[tuple[str, ...], str] | None:
        """The tool's ``x-mcp-header`` parameters (SEP-2243), cached per schema object."""
        lookup = self.tool_definition
        definition = lookup(tool) if lookup is not None else None
        if definition is None:
            return None
        schema = definition.get("inputSchema")
        cached = self._param_maps.get(tool)
        if cached is not None and cached[0] is schema:
            return cached[1]
        mapping = header_map(schema)
        self._param_maps[tool] = (schema, mapping)
        return mapping

    async def _post(self, msg: dict[str, Any], pending: Pending | None) -> dict[str, Any] | None:
        pool = self.pool
        assert pool is not None
        try:
            resp, conn = await pool.post(orjson.dumps(msg), self._headers(msg) + FORWARDED_HEADERS.get())
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
        resume = _Resume()
        broke = False
        try:
            found = await self._read_events(resp.read_chunk, rid, pending, resume)
        except HttpError as exc:
            if resume.last_id is None or pending is None:
                raise
            # The connection broke mid-stream, but the server gave event ids: resume it like a poll.
            log.info("server %s: response stream broke (%s); resuming it", self.config.name, exc)
            found, broke = None, True
        # SEP-1699: a stream that closes before the answer but carried event ids is resumed
        # with a GET (Last-Event-ID), after the server's retry time.
        polled: asyncio.Event | None = None
        while found is None and pending is not None and not pending.future.done() and resume.more():
            if resume.attempts == 0 and not broke and (paused := STREAM_PAUSED.get()) is not None:
                polled = await paused(resume.retry_ms)  # the server closed it for polling: our client polls too
            if polled is not None:
                # Our own client's poll is passed on upstream at once (else we wait the retry time).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(polled.wait(), resume.delay())
                polled.clear()  # one client poll, one upstream poll
            else:
                await asyncio.sleep(resume.delay())
            found = await self._resume(rid, pending, resume)
        if found is not None:
            return found
        if pending is not None and pending.future.done():
            return pending.future.result()
        if pending is None:
            return None
        raise ConnectionFailedError(f"server {self.config.name!r}: response stream ended without a result")

    async def _read_events(
        self, read_chunk: Any, rid: Any, pending: Pending | None, resume: _Resume
    ) -> dict[str, Any] | None:
        """Read one SSE stream until our response; everything else on it is dispatched."""
        async for ev in iter_sse(read_chunk):
            if ev.id is not None:
                resume.last_id = ev.id
            if ev.retry is not None:
                resume.retry_ms = ev.retry
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
        return None

    async def _resume(self, rid: Any, pending: Pending, resume: _Resume) -> dict[str, Any] | None:
        """One GET that resumes the stream after ``resume.last_id``."""
        assert self.config.url is not None and resume.last_id is not None
        resume.attempts += 1
        headers = {**self.config.headers, "Accept": "text/event-stream", "Last-Event-ID": resume.last_id}
        if self.identity.protocol:
            headers["Mcp-Protocol-Version"] = self.identity.protocol
        if self.session_id is not None:
            headers["Mcp-Session-Id"] = self.session_id
        try:
            async with self._aiohttp().get(self.config.url, headers=headers) as resp:
                if resp.status != 200:
                    resume.last_id = None  # the server cannot resume: give up
                    return None
                return await self._read_events(resp.content.readany, rid, pending, resume)
        except aiohttp.ClientError as exc:
            log.info("server %s: resuming the stream failed: %s", self.config.name, exc)
            return None

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
            loop = asyncio.get_running_loop()
            self._listening: asyncio.Future[None] = loop.create_future()
            self._listener = loop.create_task(self._listen())

    async def _negotiate(self) -> None:
        await super()._negotiate()
        self.listen_loop = ListenLoop.start_for(self, self._listen_modern)
        if self._listener is not None:
            # Have the GET stream in place before the first call, so a server that routes
            # messages to "the" GET stream never sees it open mid-call (bounded wait: optional).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._listening), min(2.0, self.config.connect_timeout))

    def _aiohttp(self) -> aiohttp.ClientSession:
        if self._aio is None:
            self._aio = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None),
                                              connector=guarded_connector(self.config.connect_guard))
        return self._aio

    async def _listen(self) -> None:
        """Legacy GET stream for server-initiated messages (list_changed...). Optional."""
        assert self.config.url is not None
        headers = {**self.config.headers, "Accept": "text/event-stream",
                   "Mcp-Protocol-Version": self.identity.protocol}
        if self.session_id is not None:
            headers["Mcp-Session-Id"] = self.session_id
        try:
            async with self._aiohttp().get(self.config.url, headers=headers) as resp:
                if not self._listening.done():
                    self._listening.set_result(None)
                if resp.status != 200:
                    return
                async for ev in iter_sse(resp.content.readany):
                    if ev.event == "message" and ev.data:
                        with contextlib.suppress(orjson.JSONDecodeError):
                            await self._dispatch(orjson.loads(ev.data))
        except Exception as exc:  # the stream is optional: losing it never fails a call
            log.debug("server %s: GET stream ended: %s", self.config.name, exc)
        finally:
            if not self._listening.done():
                self._listening.set_result(None)

    async def _listen_modern(self, notifications: dict[str, Any], loop: ListenLoop) -> None:
        """One 2026-07-28 ``subscriptions/listen`` POST, read until the server ends it (see listen.py).

        aiohttp, not the fasthttp pool: a stream held for the connection's life must not take
        one of the pool's call slots; and no deadline: it is not a call."""
        assert self.config.url is not None
        rid = f"listen-{next(self._ids)}"
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                   "User-Agent": "toolmesh", **self.config.headers,
                   "Mcp-Protocol-Version": MODERN, "Mcp-Method": LISTEN}
        body = orjson.dumps(listen_message(rid, notifications, self._meta))
        async with self._aiohttp().post(self.config.url, data=body, headers=headers) as resp:
            if resp.content_type == "application/json":
                # An answer instead of a stream: an error (or an immediate graceful end).
                data = orjson.loads(await resp.read())
                check_final(data if isinstance(data, dict) else {}, self.config.name)
                return
            if resp.status != 200 or resp.content_type != "text/event-stream":
                raise ConnectionError(f"HTTP {resp.status} ({resp.content_type}) for {LISTEN}")
            async for ev in iter_sse(resp.content.readany):
                if ev.event != "message" or not ev.data:
                    continue
                try:
                    item = orjson.loads(ev.data)
                except orjson.JSONDecodeError:
                    log.warning("server %s sent invalid JSON on its listen stream", self.config.name)
                    continue
                if isinstance(item, dict) and "method" not in item and item.get("id") == rid:
                    check_final(item, self.config.name)
                    return
                if isinstance(item, dict) and item.get("method") == LISTEN_ACK:
                    loop.acknowledged()
                await self._dispatch(item)

    async def _close(self) -> None:
        if self.listen_loop is not None:
            await self.listen_loop.stop()
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
