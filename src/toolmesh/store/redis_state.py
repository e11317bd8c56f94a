"""The connection to the shared state in Redis: one client per process, its health, and Lua scripts.

``redis`` (redis-py's asyncio client, parsing with hiredis) is imported on first use, so a
deployment without ``state.url`` never pays for it. The client is built once, lazily, with its
own retries off: when a command fails with a connection error or times out, Redis is marked
down, every caller gets :class:`~toolmesh.store.shared.StateUnavailableError` at once (no
connect timeout per request), and one background task pings with exponential back-off until
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

from toolmesh.store.shared import StateSettings, StateUnavailableError

__all__ = ["LuaScript", "RedisState", "process_state"]

log = logging.getLogger("toolmesh.store.redis")


class RedisClient(Protocol):
    """The part of ``redis.asyncio.Redis`` used here."""

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: str | float) -> Any: ...

    async def script_load(self, script: str) -> Any: ...

    async def execute_command(self, *args: Any) -> Any: ...

    async def ping(self) -> Any: ...

    def pipeline(self, transaction: bool = True) -> Any: ...

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


#: One queued call: a script and its EVALSHA arguments after the SHA, or None and a plain command.
_Call = tuple[LuaScript | None, tuple[Any, ...]]


class RedisState:
    """The Redis behind ``state.url`` for this process, with fail-fast health tracking."""

    def __init__(self, settings: StateSettings) -> None:
        if not settings.url:
            raise ValueError("RedisState needs state.url")
        self.settings = settings
        self.url: str = settings.url
        self._client: RedisClient | None = None
        self._up = True  # optimistic: the first command finds out
        self._recovery: asyncio.Task[None] | None = None
        self._errors: tuple[type[BaseException], ...] = ()
        self._pending: list[tuple[_Call, asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._noscript: type[BaseException] = LookupError
        self._refusals: tuple[type[BaseException], ...] = ()
        #: Times Redis was found down (for metrics and tests).
        self.outages = 0
        self.down_since: float | None = None

    # -- the client ------------------------------------------------------------------------
    def client(self) -> RedisClient:
        """The process's client, built on first use (no I/O: connections open on demand)."""
        if self._client is None:
            import redis.asyncio as aioredis
            from redis import exceptions
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            s = self.settings
            retry = Retry(NoBackoff(), 0)  # our own back-off decides when to try again
            pool = aioredis.BlockingConnectionPool.from_url(
                self.url, max_connections=s.max_connections, timeout=max(1.0, 4 * s.timeout),
                socket_timeout=s.timeout, socket_connect_timeout=s.connect_timeout, retry=retry,
            )
            self._client = cast(RedisClient, aioredis.Redis(connection_pool=pool, retry=retry))
            # No answer (BusyLoadingError, a Redis still loading its data, is a ConnectionError too).
            self._errors = (exceptions.ConnectionError, exceptions.TimeoutError, OSError, TimeoutError)
            # An answer that refuses the write (out of memory, a replica promoted away): this call
            # cannot be decided in Redis, so its caller falls back; Redis itself is not down.
            self._refusals = (exceptions.OutOfMemoryError, exceptions.ReadOnlyError)
            self._noscript = exceptions.NoScriptError
        return self._client

    @property
    def available(self) -> bool:
        """False while Redis is known to be down (callers should not even try)."""
        return self._up

    async def run(self, script: LuaScript, keys: list[str], args: list[str | float]) -> Any:
        """EVALSHA ``script``; loads it on NOSCRIPT. Raises :class:`StateUnavailableError` when down."""
        return await self._submit((script, (len(keys), *keys, *args)))

    async def command(self, *args: Any) -> Any:
        """One plain command (e.g. ``ZREM``), with the same health handling as :meth:`run`."""
        return await self._submit((None, args))

    # -- coalescing --------------------------------------------------------------------------
    # Calls made while the event loop handles one burst of ready callbacks (e.g. the requests that
    # arrived together) are written to Redis together, in one pipeline on one connection, and their
    # replies read back in order. Each is still its own script call with its own exact decision:
    # only the transport is shared. redis-py costs several times less per command that way.
    def _submit(self, item: _Call) -> asyncio.Future[Any]:
        if not self._up:
            raise StateUnavailableError(f"Redis at {self.redacted_url} is unreachable (retrying in the background)")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending.append((item, fut))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[_Call, asyncio.Future[Any]]]) -> None:
        calls = [item for item, _ in batch]
        try:
            async with asyncio.timeout(self.settings.timeout * 2):
                results = await self._execute(calls)
        except self._errors as exc:
            error = self._went_down(exc)
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(error)
            return
        except Exception as exc:  # an error reply to a lone call: it is that caller's
            if isinstance(exc, self._refusals):
                exc = StateUnavailableError(f"Redis at {self.redacted_url} refused: {exc}")
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        except asyncio.CancelledError:  # shutting down: never leave a caller waiting
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(StateUnavailableError("shared state closed"))
            raise
        for (_, fut), result in zip(batch, results, strict=True):
            if fut.done():
                continue  # the caller gave up (its request was cancelled)
            if isinstance(result, self._refusals):
                fut.set_exception(StateUnavailableError(f"Redis at {self.redacted_url} refused: {result}"))
            elif isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)

    async def _execute(self, calls: list[_Call]) -> list[Any]:
        client = self.client()
        if len(calls) == 1:
            script, args = calls[0]
            if script is None:
                return [await client.execute_command(*args)]
            try:
                return [await client.evalsha(script.sha, *args)]
            except self._noscript:
                await client.script_load(script.source)
                return [await client.evalsha(script.sha, *args)]
        results = await self._pipeline(client, calls)
        missing = {calls[i][0] for i, r in enumerate(results) if isinstance(r, self._noscript)}
        if missing:  # a restarted or flushed Redis: load the scripts, then send those calls again
            for script in missing:
                if script is not None:
                    await client.script_load(script.source)
            again = [i for i, r in enumerate(results) if isinstance(r, self._noscript)]
            for i, r in zip(again, await self._pipeline(client, [calls[i] for i in again]), strict=True):
                results[i] = r
        return results

    @staticmethod
    async def _pipeline(client: RedisClient, calls: list[_Call]) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for script, args in calls:
            if script is None:
                pipe.execute_command(*args)
            else:
                pipe.evalsha(script.sha, *args)
        return list(await pipe.execute(raise_on_error=False))

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
        client = self.client()
        with contextlib.suppress(Exception):
            # Pooled connections to the old server are dead: start over with fresh ones.
            await client.connection_pool.disconnect(inuse_connections=True)
        while True:
            await asyncio.sleep(delay)
            try:
                async with asyncio.timeout(self.settings.connect_timeout + self.settings.timeout):
                    await client.ping()
            except Exception as exc:
                delay = min(delay * 2, self.settings.max_backoff)
                log.debug("Redis still down (%s); next try in %.2fs", exc, delay)
                with contextlib.suppress(Exception):
                    await client.connection_pool.disconnect(inuse_connections=True)
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
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
                await self._client.connection_pool.disconnect()
            self._client = None


_process: dict[tuple[str, int], RedisState] = {}


def process_state(settings: StateSettings) -> RedisState:
    """The one :class:`RedisState` of this process (and event loop) for ``settings.url``.

    Every part of a worker (gateway limits, agent limits, budgets) shares it, so a process keeps
    one connection pool per Redis. A new event loop (e.g. a test) gets a new one.
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
