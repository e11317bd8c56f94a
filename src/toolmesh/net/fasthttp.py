"""A lean HTTP/1.1 keep-alive client for the Streamable HTTP hot path.

Why not aiohttp here: per request aiohttp builds a ClientRequest, a ClientResponse,
a multidict of headers, a timer and a StreamReader; on a 2-core box where client and
server share the CPU that is a large share of a sub-millisecond tool call
(see docs/benchmarks.md). This client does only what an MCP POST needs: a pooled
connection, one request at a time per connection, headers written as one bytes
object, the response parsed by ``httptools`` (the parser uvicorn uses). aiohttp
remains the client for everything else (SSE streams, WebSocket, DELETE).

Responses are either buffered (JSON) or, for ``text/event-stream``, streamed
through :meth:`Response.read_chunk` so progress notifications arrive as sent.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httptools

if TYPE_CHECKING:
    from toolmesh.net.addrguard import Resolver

_EOF = b""


class HttpError(ConnectionError):
    """The connection failed or broke before a complete response arrived."""

    def __init__(self, message: str, *, before_send: bool = False) -> None:
        super().__init__(message)
        self.before_send = before_send


class Response:
    """Status, lower-cased headers and the body (buffered or streamed)."""

    __slots__ = ("_chunks", "_conn", "_done", "_more", "_released", "body", "headers", "status", "streaming")

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""
        self.streaming = False
        self._chunks: deque[bytes] = deque()
        self._done = False
        self._more: asyncio.Future[None] | None = None
        self._released = False  # its connection and slot are back in the pool (exactly once)

    async def read_chunk(self) -> bytes:
        """Next body chunk of a streamed response; ``b""`` at the end."""
        while not self._chunks:
            if self._done:
                return _EOF
            if self._conn.error is not None:
                raise self._conn.error
            self._more = asyncio.get_running_loop().create_future()
            await self._more
        return self._chunks.popleft()

    def _wake(self) -> None:
        if self._more is not None and not self._more.done():
            self._more.set_result(None)


class _Connection(asyncio.Protocol):
    """One keep-alive TCP connection; httptools parser callbacks fill the current response."""

    def __init__(self, pool: FastHttpPool) -> None:
        self.pool = pool
        # The loop, looked up once: on Python 3.11 every asyncio.get_running_loop() is a getpid() syscall.
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.error: HttpError | None = None
        self.closed = False
        self._resp: Response | None = None
        self._headers_ready: asyncio.Future[Response] | None = None
        self._complete: asyncio.Future[None] | None = None
        self._body: list[bytes] = []
        self._hname = b""
        self.idle_since = 0.0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpError(f"malformed HTTP response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._resp is not None and self._complete is not None and not self._complete.done():
            self._fail(HttpError("server closed the connection" + (f": {exc}" if exc else "")))
        self.pool._discard(self)

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._resp is not None
        self._resp.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        resp = self._resp
        assert resp is not None
        resp.status = self.parser.get_status_code()
        resp.streaming = resp.headers.get("content-type", "").startswith("text/event-stream")
        if resp.streaming and self._headers_ready is not None and not self._headers_ready.done():
            self._headers_ready.set_result(resp)

    def on_body(self, body: bytes) -> None:
        resp = self._resp
        assert resp is not None
        if resp.streaming:
            resp._chunks.append(body)
            resp._wake()
        else:
            self._body.append(body)

    def on_message_complete(self) -> None:
        resp = self._resp
        assert resp is not None
        if not resp.streaming:
            resp.body = b"".join(self._body) if len(self._body) != 1 else self._body[0]
        resp._done = True
        resp._wake()
        keep = self.parser.should_keep_alive()
        if self._headers_ready is not None and not self._headers_ready.done():
            self._headers_ready.set_result(resp)
        if self._complete is not None and not self._complete.done():
            self._complete.set_result(None)
        self._resp = None
        self._body = []
        if not keep:
            self.close()

    # requests
    def _fail(self, exc: HttpError) -> None:
        self.error = exc
        for fut in (self._headers_ready, self._complete):
            if fut is not None and not fut.done():
                fut.set_exception(exc)
                fut.exception()  # mark retrieved: the waiter may already be gone
        if self._resp is not None:
            self._resp._wake()

    async def send(self, head: bytes, body: bytes) -> Response:
        assert self.transport is not None
        loop = self.loop
        self._resp = Response(self)
        self._headers_ready = loop.create_future()
        self._complete = loop.create_future()
        self.transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.transport.write(body)
        return await self._headers_ready

    async def wait_complete(self) -> None:
        assert self._complete is not None
        await self._complete

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Slots:
    """A counting gate like ``asyncio.Semaphore`` with a synchronous fast path.

    ``try_acquire`` takes a free slot without creating a coroutine; ``acquire`` waits FIFO;
    ``release`` hands the slot straight to the oldest waiter.
    """

    __slots__ = ("_free", "_waiters")

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_acquire(self) -> bool:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed over just as we gave up: pass it on
            else:
                self._waiters.remove(fut)
            raise

    def release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self._free += 1


class FastHttpPool:
    """Keep-alive connections to one origin; at most ``limit`` requests in flight.

    A connection left idle for ``idle_timeout`` seconds is closed, and never reused: a burst of
    concurrency must not hold its sockets for as long as the server tolerates them (the soak
    benchmark found 90 idle sockets to the LLM provider kept after 150 chats ended). The default
    stays below uvicorn's 5 s keep-alive, so a request is not sent on a connection the server is
    closing at that very moment (a non-idempotent tool call could not be retried).
    """

    def __init__(self, url: str, *, limit: int = 64, connect_timeout: float = 10.0,
                 idle_timeout: float = 4.0, resolve: Resolver | None = None) -> None:
        """``resolve``: look the host up with this (e.g. :meth:`ConnectGuard.addresses`, which
        refuses forbidden addresses) and connect to the addresses it returns, in order."""
        if idle_timeout <= 0:
            raise ValueError(f"idle_timeout must be positive, got {idle_timeout!r}")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if parts.scheme == "https" else None
        default_port = self.port == (443 if self.ssl else 80)
        host_header = self.host if default_port else f"{self.host}:{self.port}"
        if ":" in self.host and not self.host.startswith("["):
            host_header = f"[{self.host}]" + ("" if default_port else f":{self.port}")
        self._host_line = f"Host: {host_header}\r\n".encode()
        self.connect_timeout = connect_timeout
        self.resolve = resolve
        self._idle: list[_Connection] = []
        self._slots = _Slots(limit)
        self._request_line = b"POST " + self.path.encode() + b" HTTP/1.1\r\n" + self._host_line
        self._all: set[_Connection] = set()
        self.closed = False
        self.idle_timeout = idle_timeout
        self._sweep_at: asyncio.TimerHandle | None = None

    @property
    def connections(self) -> int:
        """Open connections (in use or idle)."""
        return len(self._all)

    def _discard(self, conn: _Connection) -> None:
        self._all.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)

    def _idle_connection(self) -> _Connection | None:
        expire: float | None = None
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                if expire is None:
                    expire = conn.loop.time() - self.idle_timeout
                if conn.idle_since > expire:
                    return conn
                conn.close()  # idle too long (the sweep is late: a busy loop): the server may be closing it
            self._all.discard(conn)
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.resolve is None:
                    _, proto = await loop.create_connection(
                        lambda: _Connection(self), self.host, self.port, ssl=self.ssl,
                        server_hostname=self.host if self.ssl else None,
                    )
                else:  # connect to exactly the addresses that were checked (no second lookup)
                    proto = await self._connect_resolved(loop)
        except (OSError, TimeoutError) as exc:
            raise HttpError(f"cannot connect to {self.host}:{self.port}: {exc}", before_send=True) from exc
        self._all.add(proto)
        return proto

    async def _connect_resolved(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        assert self.resolve is not None
        error: OSError | None = None
        for address in await self.resolve(self.host, self.port):
            try:
                _, proto = await loop.create_connection(
                    lambda: _Connection(self), address, self.port, ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None,
                )
                return proto
            except OSError as exc:
                error = exc
        raise error or OSError(f"{self.host} resolved to no address")

    def _release(self, conn: _Connection) -> None:
        if conn.closed or self.closed or conn.error is not None:
            conn.close()
            self._all.discard(conn)
        else:
            loop = conn.loop
            conn.idle_since = loop.time()
            self._idle.append(conn)
            if self._sweep_at is None:  # a timer handle, not a task: nothing to cancel per request
                self._sweep_at = loop.call_later(self.idle_timeout, self._sweep)

    def _sweep(self) -> None:
        """Close the connections idle for ``idle_timeout``; come back for the rest."""
        self._sweep_at = None
        if self.closed:
            return
        loop = asyncio.get_running_loop()
        expire = loop.time() - self.idle_timeout
        keep: list[_Connection] = []
        for conn in self._idle:  # oldest first: _idle_connection reuses the newest
            if conn.idle_since <= expire:
                conn.close()
                self._all.discard(conn)
            else:
                keep.append(conn)
        self._idle = keep
        if keep:
            self._sweep_at = loop.call_later(keep[0].idle_since - expire, self._sweep)

    async def post(self, body: bytes, headers: bytes, consume: bool = True) -> tuple[Response, _Connection]:
        """POST ``body``; ``headers`` are pre-encoded ``Name: value\\r\\n`` lines.

        For a buffered response the connection is already back in the pool on return.
        For a streamed one the caller must read it to the end and call :meth:`done`.
        """
        if self.closed:
            raise HttpError("client is closed", before_send=True)
        # Fast paths: a free slot and an idle connection cost no await at all.
        if not self._slots.try_acquire():
            await self._slots.acquire()
        conn: _Connection | None = None
        try:
            conn = self._idle_connection() or await self._connect()
            head = (self._request_line + headers + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
            resp = await conn.send(head, body)
            if not resp.streaming:
                done = conn._complete
                if done is None or not done.done():
                    await conn.wait_complete()
                resp._released = True
                self._release(conn)
                self._slots.release()
            return resp, conn
        except BaseException:
            if conn is not None:
                conn.close()
                self._all.discard(conn)
            self._slots.release()
            raise

    async def done(self, conn: _Connection, resp: Response) -> None:
        """Finish a streamed response: reuse the connection if it ended cleanly.

        Safe to call for any response, and more than once: a buffered response was released by
        :meth:`post`. (A second release put one connection in the pool twice, so two requests
        could share it and one waited for an answer that went to the other.)"""
        if resp._released:
            return
        resp._released = True
        if not resp._done:
            conn.close()
            self._all.discard(conn)
        else:
            self._release(conn)
        self._slots.release()

    async def aclose(self) -> None:
        self.closed = True
        if self._sweep_at is not None:
            self._sweep_at.cancel()
            self._sweep_at = None
        for conn in list(self._all):
            conn.close()
        self._all.clear()
        self._idle.clear()
