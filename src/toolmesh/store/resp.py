"""A small pipelined Redis client for the shared state's hot path: one connection, FIFO replies.

Why not redis-py here: measured, its asyncio client spent more CPU on one admission ``EVALSHA``
(command packing, pool checkout, the per-command await chain) than Redis spent running the
script. This client keeps one TCP (or TLS, or Unix socket) connection per process and
pipelines on it: the commands of every caller in one event-loop turn go out in one write, and
Redis answers them in order, so each reply goes to the oldest waiting caller. ``hiredis`` parses.

It speaks RESP2 and knows nothing about scripts or health: :class:`~toolmesh.store.redis_state.RedisState`
builds on it (NOSCRIPT reloads, marking Redis down, reconnecting). Errors:

* :class:`RedisConnectionError` — could not connect, or the connection broke with replies owed;
* :class:`RedisTimeoutError` — no reply for ``timeout`` seconds while some were owed (the
  connection is then dropped: its later replies could not be matched any more);
* :class:`ReplyError` — Redis answered with an error (``code`` is its first word, e.g. ``NOSCRIPT``).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["Endpoint", "RedisConnectionError", "RedisTimeoutError", "ReplyError", "RespClient", "pack"]


class ReplyError(Exception):
    """An error reply from Redis; :attr:`code` is its first word (``NOSCRIPT``, ``OOM``, ``ERR``…)."""

    @property
    def code(self) -> str:
        text = str(self.args[0]) if self.args else ""
        return text.split(" ", 1)[0]


class RedisConnectionError(ConnectionError):
    """No connection to Redis, or it broke while replies were owed."""


class RedisTimeoutError(TimeoutError):
    """Redis did not answer within the timeout."""


def _arg(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):  # a bool is an int: say what is meant instead of sending "True"
        raise TypeError("cannot send a bool to Redis (send 1 or 0)")
    if isinstance(value, int | float):
        return repr(value).encode()
    raise TypeError(f"cannot send a {type(value).__name__} to Redis")


def pack(*args: Any) -> bytes:
    """One command as a RESP array of bulk strings (str, bytes, int and float arguments)."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        b = _arg(a)
        parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(parts)


def pack_tail(args: Iterable[Any]) -> bytes:
    """The bulk strings of ``args`` without the array header (to follow a pre-packed prefix)."""
    parts = []
    for a in args:
        b = _arg(a)
        parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(parts)


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect, from a ``redis://``, ``rediss://`` or ``unix://`` URL."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None
    tls: bool = False
    verify: bool = True
    username: str | None = None
    password: str | None = None
    db: int = 0

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        """Parse ``redis://[[user]:password@]host[:port][/db]`` (``rediss://``: TLS; query
        ``ssl_cert_reqs=none`` skips certificate checks) or ``unix://[[user]:password@]/path?db=N``."""
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else query.get("password")
        if parts.scheme == "unix":
            if not parts.path:
                raise ValueError(f"unix:// URL without a socket path: {url!r}")
            return cls(path=unquote(parts.path), username=user, password=password, db=_db(query.get("db", "0"), url))
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"not a Redis URL (redis://, rediss://, unix://): {url!r}")
        db = parts.path.strip("/") or query.get("db", "0")
        return cls(host=parts.hostname or "127.0.0.1", port=parts.port or 6379, tls=parts.scheme == "rediss",
                   verify=query.get("ssl_cert_reqs", "required").lower() != "none",
                   username=user, password=password, db=_db(db, url))

    def handshake(self) -> list[bytes]:
        """The commands a fresh connection sends first (AUTH, SELECT)."""
        out = []
        if self.password is not None:
            out.append(pack("AUTH", self.username, self.password) if self.username else pack("AUTH", self.password))
        if self.db:
            out.append(pack("SELECT", self.db))
        return out


def _db(text: str, url: str) -> int:
    try:
        db = int(text)
    except ValueError:
        raise ValueError(f"bad database number {text!r} in {url!r}") from None
    if db < 0:
        raise ValueError(f"bad database number {db} in {url!r}")
    return db


class _Link(asyncio.Protocol):
    """One connection: writes what the client hands it, hands back each parsed reply in order."""

    def __init__(self, client: RespClient) -> None:
        import hiredis  # here, not at the top: a deployment without state.url never loads it

        self.client = client
        self.reader = hiredis.Reader(replyError=ReplyError)
        self.bad_stream: type[Exception] = hiredis.ProtocolError
        self.transport: asyncio.Transport | None = None
        #: Futures of the commands written on this link and not answered yet, oldest first.
        self.owed: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.answered = 0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have asyncio.Transport's methods without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        owed = self.owed
        while True:
            try:
                reply = reader.gets()
            except self.bad_stream as exc:  # not Redis speaking, or a corrupted stream
                self.fail(RedisConnectionError(f"bad reply from Redis: {exc}"))
                return
            if reply is False:
                return
            if not owed:  # a reply nobody asked for: the stream cannot be trusted any more
                self.fail(RedisConnectionError("Redis sent a reply that was not asked for"))
                return
            fut = owed.popleft()
            self.answered += 1
            if fut.done():
                continue  # its caller gave up (cancelled)
            if isinstance(reply, ReplyError):
                fut.set_exception(reply)
            else:
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        why = f": {exc}" if exc else ""
        self.fail(RedisConnectionError(f"connection to Redis lost{why}"))

    def fail(self, error: Exception) -> None:
        """Close the link; every caller still owed a reply gets ``error`` (a new exception each)."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        while self.owed:
            fut = self.owed.popleft()
            if not fut.done():
                fut.set_exception(type(error)(*error.args))
        self.client.link_closed(self)


class RespClient:
    """One pipelined connection to Redis, opened on first use and again after it closed.

    :meth:`send` queues a packed command and returns the future of its reply; everything queued
    in one event-loop turn is written at once. ``timeout``: seconds without any reply while
    replies are owed before the connection counts as dead (like a socket read timeout)."""

    def __init__(self, endpoint: Endpoint, *, timeout: float, connect_timeout: float) -> None:
        if timeout <= 0 or connect_timeout <= 0:
            raise ValueError("timeout and connect_timeout must be > 0")
        self.endpoint = endpoint
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._link: _Link | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._out: list[bytes] = []
        self._waiting: list[asyncio.Future[Any]] = []  # queued, not yet written
        self._flush_soon = False
        self._watch: asyncio.TimerHandle | None = None
        self._watch_mark = -1
        self._closed = False
        #: Connections opened (for tests and metrics).
        self.connects = 0
        #: Writes to the socket (each carries every command queued in one loop turn).
        self.writes = 0

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        """Queue one command (see :func:`pack`); its future gets the reply or an error."""
        if self._closed:
            raise RedisConnectionError("Redis client closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._out.append(packed)
        self._waiting.append(fut)
        if not self._flush_soon:
            self._flush_soon = True
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._flush_soon = False
        link = self._link
        if link is None or link.closed:
            if self._connecting is None and self._waiting:
                self._connecting = asyncio.get_running_loop().create_task(self._connect())
            return  # written once connected
        if not self._out:
            return
        out, self._out = self._out, []
        waiting, self._waiting = self._waiting, []
        link.owed.extend(waiting)
        assert link.transport is not None
        link.transport.write(b"".join(out))
        self.writes += 1
        if self._watch is None:
            self._arm(link)

    # -- a dead Redis is found by silence, not per command: one timer while replies are owed ----
    def _arm(self, link: _Link) -> None:
        self._watch_mark = link.answered
        self._watch = asyncio.get_running_loop().call_later(self.timeout, self._check, link)

    def _check(self, link: _Link) -> None:
        self._watch = None
        if link.closed or not link.owed:
            return
        if link.answered == self._watch_mark:
            link.fail(RedisTimeoutError(f"Redis did not answer within {self.timeout}s"))
            return
        self._arm(link)

    async def _connect(self) -> None:
        try:
            try:
                async with asyncio.timeout(self.connect_timeout):
                    link = await self._open()
            except TimeoutError:
                raise RedisTimeoutError(f"no connection to Redis within {self.connect_timeout}s") from None
            except ReplyError as exc:  # AUTH or SELECT refused: no use trying commands
                raise RedisConnectionError(f"Redis refused the connection's set-up: {exc}") from None
            except OSError as exc:
                raise RedisConnectionError(f"cannot connect to Redis: {exc}") from None
        except Exception as exc:
            self._connecting = None
            waiting, self._waiting, self._out = self._waiting, [], []
            for fut in waiting:
                if not fut.done():
                    fut.set_exception(type(exc)(*exc.args))
            return
        self._connecting = None
        self.connects += 1
        if self._closed:
            link.fail(RedisConnectionError("Redis client closed"))
            return
        self._link = link
        self._flush()

    async def _open(self) -> _Link:
        loop = asyncio.get_running_loop()
        ep = self.endpoint
        link = _Link(self)
        if ep.path is not None:
            await loop.create_unix_connection(lambda: link, ep.path)
        else:
            context = None
            if ep.tls:
                context = ssl.create_default_context()
                if not ep.verify:
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
            await loop.create_connection(lambda: link, ep.host, ep.port, ssl=context)
        try:
            hello = ep.handshake()
            if hello:
                futs = [loop.create_future() for _ in hello]
                link.owed.extend(futs)
                assert link.transport is not None
                link.transport.write(b"".join(hello))
                for fut in futs:
                    await fut
        except BaseException:
            link.fail(RedisConnectionError("connection set-up failed"))
            raise
        return link

    def link_closed(self, link: _Link) -> None:
        """A link ended (called by the link): the next command opens a new one."""
        if self._link is link:
            self._link = None
            if self._watch is not None:
                self._watch.cancel()
                self._watch = None

    def reset(self) -> None:
        """Drop the connection (its owed replies fail); the next command connects again."""
        if self._link is not None:
            self._link.fail(RedisConnectionError("connection dropped"))

    async def aclose(self) -> None:
        """Close for good: queued and owed commands fail, later ones are refused."""
        self._closed = True
        task, self._connecting = self._connecting, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        waiting, self._waiting, self._out = self._waiting, [], []
        for fut in waiting:
            if not fut.done():
                fut.set_exception(RedisConnectionError("Redis client closed"))
        self.reset()
