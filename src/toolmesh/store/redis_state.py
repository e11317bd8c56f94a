"""The connection to the shared state in Redis: one client per process, its health, and Lua scripts.

Commands and scripts go through :class:`~toolmesh.store.resp.RespClient`: one pipelined
connection per process, the commands of every caller in one event-loop turn written together
and answered in order (measured: several times less client CPU per admission than redis-py's
pooled asyncio client; see docs/scale.md). Pub/sub (the admin-change channel) stays on redis-py,
imported on first use, so a deployment without ``state.url`` never pays for either.

When a command fails with a connection error or times out, Redis is marked down, every caller
gets :class:`~toolmesh.store.shared.StateUnavailableError` at once (no connect timeout per
request), and one background task pings, on a fresh connection, with exponential back-off until
Redis answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from importlib import resources
from typing import Any, Protocol, cast

from toolmesh.store.resp import (
    Endpoint,
    RedisConnectionError,
    RedisTimeoutError,
    ReplyError,
    RespClient,
    pack,
    pack_tail,
)
from toolmesh.store.shared import StateSettings, StateUnavailableError

__all__ = ["LuaScript", "RedisState", "process_state"]

log = logging.getLogger("toolmesh.store.redis")

#: Error replies that refuse a write (out of memory, a replica promoted away): the call cannot be
#: decided in Redis, so its caller falls back; Redis itself is not down.
_REFUSALS = frozenset({"OOM", "READONLY"})


class PubSubClient(Protocol):
    """The part of ``redis.asyncio.Redis`` still used: the admin-change channel's subscription."""

    def pubsub(self, **kwargs: Any) -> Any: ...

    async def aclose(self) -> None: ...

    @property
    def connection_pool(self) -> Any: ...


class LuaScript:
    """A script run with EVALSHA; after a NOSCRIPT (a restarted or flushed Redis) it is loaded again."""

    def __init__(self, name: str, source: str | None = None) -> None:
        """``name`` is a file under ``toolmesh/store/lua/`` unless ``source`` is given."""
        self.name = name
        if source is None:
            source = resources.files("toolmesh.store").joinpath("lua", name).read_text(encoding="utf-8")
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        # Packed once: every call only adds its keys and arguments.
        self._prefix = b"$7\r\nEVALSHA\r\n$40\r\n" + self.sha.encode() + b"\r\n"

    def packed(self, keys: list[str], args: list[str | float]) -> bytes:
        """The EVALSHA command of one call, ready to send."""
        return self.head(keys, len(args)) + pack_tail(args)

    def head(self, keys: list[str], nargs: int) -> bytes:
        """The start of an EVALSHA command with ``keys`` and ``nargs`` arguments to follow (as
        :func:`~toolmesh.store.resp.pack_tail` packs them): callers that run the same keys again
        pack this once (packing is a few µs of a hot admission)."""
        n = str(len(keys)).encode()
        return b"".join((b"*%d\r\n" % (3 + len(keys) + nargs), self._prefix, b"$%d\r\n%s\r\n" % (len(n), n),
                         pack_tail(keys)))


class RedisState:
    """The Redis behind ``state.url`` for this process, with fail-fast health tracking."""

    def __init__(self, settings: StateSettings) -> None:
        if not settings.url:
            raise ValueError("RedisState needs state.url")
        self.settings = settings
        self.url: str = settings.url
        self.endpoint = Endpoint.from_url(self.url)  # a bad URL fails here, not on the first request
        self._resp: RespClient | None = None
        self._client: PubSubClient | None = None
        self._up = True  # optimistic: the first command finds out
        self._recovery: asyncio.Task[None] | None = None
        self._loading: dict[str, asyncio.Future[Any]] = {}
        #: Times Redis was found down (for metrics and tests).
        self.outages = 0
        self.down_since: float | None = None

    # -- the clients ------------------------------------------------------------------------
    def resp(self) -> RespClient:
        """The pipelined client for commands and scripts (no I/O: it connects on first use)."""
        if self._resp is None:
            s = self.settings
            self._resp = RespClient(self.endpoint, timeout=s.timeout, connect_timeout=s.connect_timeout)
        return self._resp

    def client(self) -> PubSubClient:
        """redis-py's client, for pub/sub only; built on first use (no I/O: connections open on demand)."""
        if self._client is None:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            s = self.settings
            retry = Retry(NoBackoff(), 0)  # our own back-off decides when to try again
            pool = aioredis.BlockingConnectionPool.from_url(
                self.url, max_connections=2, timeout=max(1.0, 4 * s.timeout),
                socket_timeout=s.timeout, socket_connect_timeout=s.connect_timeout, retry=retry,
            )
            self._client = cast(PubSubClient, aioredis.Redis(connection_pool=pool, retry=retry))
        return self._client

    @property
    def available(self) -> bool:
        """False while Redis is known to be down (callers should not even try)."""
        return self._up

    async def run(self, script: LuaScript, keys: list[str], args: list[str | float]) -> Any:
        """EVALSHA ``script``; loads it on NOSCRIPT. Raises :class:`StateUnavailableError` when down
        or when Redis refuses the write (out of memory, read-only), a :class:`ReplyError` for any
        other error reply."""
        return await self.run_packed(script, script.packed(keys, args))

    async def run_packed(self, script: LuaScript, packed: bytes) -> Any:
        """:meth:`run` with the command already packed (see :meth:`LuaScript.head`)."""
        if not self._up:
            raise self._down_error()
        for attempt in range(3):
            resp = self.resp()
            try:
                return await resp.send(packed)
            except ReplyError as exc:
                if exc.code != "NOSCRIPT" or attempt == 2:
                    raise self._map(exc) from None
            except (RedisConnectionError, RedisTimeoutError) as exc:
                raise self._went_down(exc) from None
            # A restarted or flushed Redis: load the script, then call again. Both go out on the
            # one pipelined connection in this order, so the call finds the script; concurrent
            # callers share one load.
            load = self._loading.get(script.sha)
            if load is None or load.done():
                load = self._loading[script.sha] = resp.send(pack("SCRIPT", "LOAD", script.source))
                load.add_done_callback(_consume)
        raise AssertionError("unreachable")

    async def command(self, *args: Any) -> Any:
        """One plain command (e.g. ``ZREM``), with the same health handling as :meth:`run`."""
        if not self._up:
            raise self._down_error()
        try:
            return await self.resp().send(pack(*args))
        except ReplyError as exc:
            raise self._map(exc) from None
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise self._went_down(exc) from None

    def post(self, packed: bytes) -> asyncio.Future[Any] | None:
        """Queue one packed command whose reply nobody waits for (copies, caches, pub/sub); its
        future (a failure is retrieved: never an unhandled-future warning), or None when it was not
        sent (Redis known to be down, the client closed)."""
        if not self._up:
            return None
        try:
            fut = self.resp().send(packed)
        except RedisConnectionError:  # the client was closed (shutting down)
            return None
        fut.add_done_callback(_consume)
        return fut

    def _map(self, exc: ReplyError) -> Exception:
        if exc.code in _REFUSALS:
            return StateUnavailableError(f"Redis at {self.redacted_url} refused: {exc}")
        return exc

    def _down_error(self) -> StateUnavailableError:
        return StateUnavailableError(f"Redis at {self.redacted_url} is unreachable (retrying in the background)")

    # -- health ----------------------------------------------------------------------------
    def _went_down(self, exc: BaseException) -> StateUnavailableError:
        if self._up:
            self._up = False
            self.outages += 1
            self.down_since = time.time()
            log.warning("Redis at %s is unreachable (%s: %s); limits fall back to this replica's share",
                        self.redacted_url, type(exc).__name__, exc)
            self._recovery = asyncio.get_running_loop().create_task(self._recover(), name="toolmesh-redis-recovery")
        return StateUnavailableError(f"Redis at {self.redacted_url} is unreachable: {type(exc).__name__}: {exc}")

    async def _recover(self) -> None:
        delay = 0.05
        resp = self.resp()
        resp.reset()  # the connection to the old server is dead: start over on a fresh one
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.connection_pool.disconnect(inuse_connections=True)
        while True:
            await asyncio.sleep(delay)
            try:
                async with asyncio.timeout(self.settings.connect_timeout + self.settings.timeout):
                    await resp.send(_PING)
            except Exception as exc:
                delay = min(delay * 2, self.settings.max_backoff)
                log.debug("Redis still down (%s); next try in %.2fs", exc, delay)
                resp.reset()
                continue
            self._up = True
            log.warning("Redis at %s is back after %.1fs", self.redacted_url, time.time() - (self.down_since or 0))
            self.down_since = None
            return

    async def wait_available(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until Redis is back; True if it is (for tests and drains)."""
        task = self._recovery
        if not self._up and task is not None and not task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), timeout)
        return self._up

    @property
    def redacted_url(self) -> str:
        """The URL without its password (for logs and errors)."""
        scheme, sep, rest = self.url.partition("://")
        creds, at, host = rest.rpartition("@")
        return f"{scheme}{sep}{'***@' if at and creds else ''}{host}"

    async def aclose(self) -> None:
        """Stop the recovery task and close the client's connections (later calls: unavailable)."""
        self._up = False
        for key in [k for k, v in _process.items() if v is self]:
            del _process[key]  # the next process_state() builds a fresh one
        if self._recovery is not None and not self._recovery.done():
            self._recovery.cancel()
            with contextlib.suppress(BaseException):
                await self._recovery
        if self._resp is not None:
            await self._resp.aclose()
            self._resp = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
                await self._client.connection_pool.disconnect()
            self._client = None


_process: dict[tuple[str, int], RedisState] = {}
_PING = pack("PING")


def _consume(fut: asyncio.Future[Any]) -> None:
    """Retrieve a background command's outcome (its failure shows in the calls that follow it)."""
    if not fut.cancelled():
        fut.exception()


def process_state(settings: StateSettings) -> RedisState:
    """The one :class:`RedisState` of this process (and event loop) for ``settings.url``.

    Every part of a worker (gateway limits, agent limits, budgets) shares it, so a process keeps
    one connection per Redis. A new event loop (e.g. a test) gets a new one.
    """
    if not settings.url:
        raise ValueError("process_state needs state.url")
    key = (settings.url, id(asyncio.get_running_loop()))
    found = _process.get(key)
    if found is None:
        for stale in [k for k in _process if k[0] == settings.url]:
            del _process[stale]  # an earlier event loop's client cannot be used from this one
        found = _process[key] = RedisState(settings)
    return found
