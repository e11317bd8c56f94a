"""Shared tool calls: identical calls in flight share one upstream call; read-only results are cached.

The outermost step of a :class:`~toolmesh.hub.handle.ServerHandle`'s ``tools/call`` path
(before the circuit guard): :meth:`SharedCalls.send` answers from the Hub's
:class:`~toolmesh.hub.resultcache.ResultCache` when it can, joins an identical call already in
flight when there is one, and otherwise starts the call — in a task of its own, so that no
caller owns it.

*Identical* means the same registration (tenant, user, server: the handle's cache scope), the
same ``params`` serialised with sorted keys (tool name, arguments, ``_meta``), the same caller
identity where the server can tell callers apart (the values of the caller headers it receives
through ``forward_headers``), and the same kinds of hooks (progress, log, server requests), so
every caller of a shared call is served the way it would have been alone.

Each caller keeps its own deadline (its timeout, extended by progress up to ``max_timeout``)
and its own cancellation: a caller that gives up leaves the shared call running for the
others; the shared call is cancelled only when all its callers left. Each caller gets its own
copy of the result (callers mutate results).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from toolmesh.errors import ConnectionFailedError, McpRemoteError, ToolTimeoutError
from toolmesh.hub.config import ServerConfig
from toolmesh.hub.resultcache import CacheKey, ResultCache
from toolmesh.hub.toolcall import ToolCall
from toolmesh.hub.transports.http import FORWARDED_HEADERS
from toolmesh.hub.types import JsonDict

__all__ = ["Send", "SharedCalls", "caller_identity"]

log = logging.getLogger("toolmesh.hub")

#: How long a call that stored a result in the shared level waits for Redis to hold it.
SHARED_WRITE_WAIT = 0.5


async def _settle(written: asyncio.Future[Any]) -> None:
    """Return once the shared level holds a stored result, so that the caller's next call finds
    it on any process (without the wait, the answer could reach the caller, and its next request
    another process, before the write reached Redis). A slow or failed store only ends the wait:
    the result stands, and the next miss calls the server."""
    if not written.done():
        await asyncio.wait((written,), timeout=SHARED_WRITE_WAIT)


#: The rest of the call path: what a shared call runs.
Send = Callable[[ToolCall], Awaitable[JsonDict]]
#: ``(tool, event)`` with event ``"hit"``, ``"miss"`` or ``"coalesced"``: for the metrics.
EventSink = Callable[[str, str], None]
#: Params that continue an earlier exchange: never shared or cached.
_CONTINUATIONS = ("inputResponses", "requestState")


def caller_identity(forward_headers: list[str], passed: bytes) -> bytes:
    """The values of the caller headers a server receives (``forward_headers``) from the header
    lines ``passed`` to it: part of the sharing key, so callers with different credentials never
    share an answer. Other lines (e.g. a per-call ``traceparent``) do not count."""
    if not forward_headers or not passed:
        return b""
    wanted = set(forward_headers)
    kept = []
    for line in passed.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep and name.strip().decode("latin-1").lower() in wanted:
            kept.append(name.strip().lower() + b":" + value.strip())
    return b"\n".join(sorted(kept))


class _Waiter:
    """One caller of a shared call."""

    __slots__ = ("call", "progressed")

    def __init__(self, call: ToolCall) -> None:
        self.call = call
        #: Loop time of the last progress notification (extends this caller's deadline).
        self.progressed = 0.0


class _Flight:
    """One upstream call and the callers waiting for it."""

    __slots__ = ("asked", "body", "key", "shared", "taken", "task", "waiters")

    def __init__(self, key: CacheKey, shared: ToolCall) -> None:
        self.key = key
        self.shared = shared
        self.waiters: list[_Waiter] = []
        self.task: asyncio.Task[JsonDict] | None = None
        #: Whether the server asked a caller something during the call (then it is not cached).
        self.asked = False
        self.body: bytes | None = None
        self.taken = False

    async def on_progress(self, progress: float, total: float | None, message: str | None) -> None:
        now = asyncio.get_running_loop().time()
        for w in list(self.waiters):
            w.progressed = now
            hook = w.call.on_progress
            try:
                r = hook(progress, total, message) if hook is not None else None
                if r is not None:
                    await r
            except Exception:  # one caller's broken hook must not starve the others
                log.exception("progress callback failed")

    async def on_log(self, params: dict[str, Any]) -> None:
        for w in list(self.waiters):
            hook = w.call.on_log
            try:
                r = hook(params) if hook is not None else None
                if r is not None:
                    await r
            except Exception:
                log.exception("log callback failed")

    async def on_request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        # The caller that is still waiting and came first answers for the call.
        self.asked = True
        for w in list(self.waiters):
            if w.call.on_request is not None:
                return await w.call.on_request(method, params)
        raise McpRemoteError(-32603, "no caller is waiting for this call any more")

    def result(self, task: asyncio.Task[JsonDict]) -> JsonDict:
        """This caller's copy of the outcome (the first caller takes the original)."""
        if task.cancelled():
            raise ConnectionFailedError(f"{self.shared.tool}: the shared call was cancelled")
        exc = task.exception()
        if exc is not None:
            raise exc
        result = task.result()
        if not self.taken:
            self.taken = True
            if len(self.waiters) > 1 and self.body is None:
                # Copied before the first caller gets the original (and perhaps mutates it). Nobody
                # joins any more: the flight left the map when the call ended, before any waiter woke.
                self.body = orjson.dumps(result)
            return result
        assert self.body is not None
        decoded: JsonDict = orjson.loads(self.body)
        return decoded


class SharedCalls:
    """Coalescing and result caching for one server handle (one cache scope)."""

    def __init__(self, config: ServerConfig, cache: ResultCache, on_event: EventSink | None = None,
                 name: str = "") -> None:
        """``cache``: the Hub's result cache (this handle gets a scope of its own in it); ``name``:
        the registration's name in every process (tenant, user, server), for the shared level."""
        self.config = config
        self.cache = cache
        self.scope = cache.new_scope()
        self._name = name or config.name
        self._on_event = on_event
        self.hits = 0
        self.misses = 0
        self.coalesced = 0
        self._flights: dict[CacheKey, _Flight] = {}
        #: tool -> (definition it was decided for, coalesce?, cache ttl)
        self._policy: dict[str, tuple[JsonDict | None, bool, float]] = {}

    @functools.cached_property
    def shared_scope(self) -> str:
        """This registration's scope in the shared level: the same in every process, and new when
        its configuration changes (worked out on first use: most handles never need it)."""
        digest = hashlib.sha256(self.config.model_dump_json().encode()).hexdigest()[:16]
        return f"{self._name}@{digest}"

    @property
    def enabled(self) -> bool:
        """Whether any call of this server could be shared or cached."""
        return self.config.coalesce.enabled or self.config.cache.ttl > 0 or isinstance(self.config.cache.tools, dict)

    @property
    def in_flight(self) -> int:
        """Shared calls running now."""
        return len(self._flights)

    def policy(self, tool: str, definition: JsonDict | None) -> tuple[bool, float]:
        """(coalesce?, cache ttl) for ``tool``, decided once per tool definition."""
        known = self._policy.get(tool)
        if known is not None and known[0] is definition:
            return known[1], known[2]
        coalesce = self.config.coalesce.applies(tool, definition)
        ttl = self.config.cache.ttl_for(tool, definition)
        if definition is not None:  # only listed tools: a caller's made-up names are not remembered
            self._policy[tool] = (definition, coalesce, ttl)
        return coalesce, ttl

    def key(self, call: ToolCall) -> CacheKey | None:
        """The sharing key of ``call``; None when it must go alone (continuations, non-JSON params)."""
        params = call.params
        if any(k in params for k in _CONTINUATIONS):
            return None
        try:
            canonical = orjson.dumps(params, option=orjson.OPT_SORT_KEYS)
        except TypeError:
            return None
        hooks = b"%d%d%d" % (call.on_progress is not None, call.on_log is not None, call.on_request is not None)
        identity = hooks + caller_identity(self.config.forward_headers, FORWARDED_HEADERS.get())
        return (self.scope, call.tool, canonical, identity)

    async def send(self, call: ToolCall, definition: JsonDict | None, send: Send) -> JsonDict:
        """``call``'s result: from the cache, from an identical call in flight, or from ``send``."""
        coalesce, ttl = self.policy(call.tool, definition)
        key = self.key(call) if coalesce or ttl > 0 else None
        if key is None:
            return await send(call)
        shared: int | None = None  # the shared level's generation at the lookup (None: not looked up)
        if ttl > 0:
            body = self.cache.get(key)
            if body is None:
                body, shared = await self._shared_get(key)
            if body is not None:
                self._event(call.tool, "hit")
                call.attempts = 0
                cached: JsonDict = orjson.loads(body)
                return cached
            self._event(call.tool, "miss")
        if not coalesce:
            generation = self.cache.generation(self.scope)
            result = await send(call)
            _, written = self._store(key, result, ttl, generation, asked=False,
                                     circuit_open=call.circuit_open is not None, shared=shared)
            if written is not None:
                await _settle(written)
            return result
        flight = self._flights.get(key)
        if flight is None or (call.timeout or self.config.timeout) > (flight.shared.timeout or 0.0):
            # A caller that would wait longer than the call in flight gets a call of its own.
            flight = self._start(key, call, ttl, send, shared)
        else:
            self._event(call.tool, "coalesced")
        waiter = _Waiter(call)
        flight.waiters.append(waiter)
        try:
            return await self._wait(flight, waiter)
        finally:
            self._leave(flight, waiter)

    def invalidate(self, *, fleet: bool = True) -> None:
        """The server changed: drop its cached results; calls in flight finish for their callers
        but nobody new joins them and their results are not stored. ``fleet`` False: only this
        process may have missed a change, so the shared level's results stand (every process's
        generation bump there would wipe them all)."""
        self.cache.invalidate(self.scope)
        if fleet and self.cache.shared is not None:
            self.cache.shared.invalidate(self.shared_scope)
        self._flights.clear()
        self._policy.clear()

    def close(self) -> None:
        """The handle is gone: forget its scope."""
        self.cache.drop_scope(self.scope)
        self._flights.clear()

    # -- internals ----------------------------------------------------------------------------
    async def _shared_get(self, key: CacheKey) -> tuple[bytes | None, int | None]:
        """A local miss, looked up in the shared level: (body, None) on a hit (kept locally too, for
        what is left of its TTL), else (None, the shared generation), or (None, None) without one."""
        remote = self.cache.shared
        if remote is None:
            return None, None
        found = await remote.get(self.shared_scope, self._shared_key(key))
        if found is None:
            return None, None  # unreadable now: call the server (and store nothing there)
        body, ttl, generation = found
        if body is not None:
            self.cache.put(key, body, ttl, self.cache.generation(self.scope))
            return body, None
        return None, generation

    @staticmethod
    def _shared_key(key: CacheKey) -> str:
        _, tool, canonical, identity = key
        return hashlib.sha256(b"\0".join((tool.encode(), canonical, identity))).hexdigest()[:40]

    def _start(self, key: CacheKey, call: ToolCall, ttl: float, send: Send, shared_gen: int | None) -> _Flight:
        cfg = self.config
        # The shared call has its starter's timeout, so a hung server times it out (and the circuit
        # counts it) when the callers give up; a joiner with a shorter timeout leaves at its own deadline.
        timeout = call.timeout or cfg.timeout
        shared = ToolCall(call.tool, call.params, call.arguments, timeout, None, start=call.start)
        flight = _Flight(key, shared)
        if call.on_progress is not None:
            shared.on_progress = flight.on_progress
        if call.on_log is not None:
            shared.on_log = flight.on_log
        if call.on_request is not None:
            shared.on_request = flight.on_request
        generation = self.cache.generation(self.scope)

        async def run() -> JsonDict:
            result = await send(shared)
            flight.body, written = self._store(key, result, ttl, generation, asked=flight.asked,
                                               circuit_open=shared.circuit_open is not None, shared=shared_gen)
            if written is not None:
                await _settle(written)
            return result

        task = asyncio.get_running_loop().create_task(run(), name=f"toolmesh-shared-{cfg.name}/{call.tool}")
        flight.task = task
        self._flights[key] = flight

        def done(t: asyncio.Task[JsonDict]) -> None:
            if self._flights.get(key) is flight:
                del self._flights[key]
            if not t.cancelled():
                t.exception()  # retrieved: a failure nobody waits for any more is not an asyncio warning

        task.add_done_callback(done)
        return flight

    async def _wait(self, flight: _Flight, waiter: _Waiter) -> JsonDict:
        """Wait for the shared call until this caller's own deadline (progress extends it)."""
        task = flight.task
        assert task is not None
        call = waiter.call
        loop = asyncio.get_running_loop()
        timeout = call.timeout or self.config.timeout
        if timeout >= (flight.shared.timeout or 0.0):
            await asyncio.wait((task,))  # the shared call's own deadline is this caller's: no timer
        started = loop.time()
        hard = started + max(self.config.max_timeout, timeout)
        while not task.done():
            deadline = min(max(started, waiter.progressed) + timeout, hard)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ToolTimeoutError(f"server {self.config.name!r}: tools/call did not finish within {timeout:g}s")
            await asyncio.wait((task,), timeout=remaining)  # never cancels the shared call
        shared = flight.shared
        call.attempts = shared.attempts
        call.safe_retry = shared.safe_retry
        call.circuit_open = shared.circuit_open
        return flight.result(task)

    def _leave(self, flight: _Flight, waiter: _Waiter) -> None:
        flight.waiters.remove(waiter)
        task = flight.task
        if not flight.waiters and task is not None and not task.done():
            # The last caller left: nobody wants the answer any more.
            if self._flights.get(flight.key) is flight:
                del self._flights[flight.key]
            task.cancel()

    def _store(self, key: CacheKey, result: JsonDict, ttl: float, generation: int, *, asked: bool,
               circuit_open: bool, shared: int | None = None) -> tuple[bytes | None, asyncio.Future[Any] | None]:
        """Cache ``result`` if it may be (in the shared level too when it was looked up there, as of
        ``shared``, its generation then); returns its JSON bytes when they were made, and the
        shared level's store when one was sent (see :func:`_settle`)."""
        if ttl <= 0 or asked or circuit_open or not isinstance(result, dict) or result.get("isError"):
            return None, None
        if result.get("resultType", "complete") != "complete":
            return None, None  # e.g. input_required: the answer belongs to one exchange
        hint = result.get("ttlMs")
        if type(hint) is int:  # a server's own freshness hint can only shorten the TTL
            ttl = min(ttl, hint / 1000.0)
        try:
            body = orjson.dumps(result)
        except TypeError:
            return None, None
        written = None
        if len(body) <= self.config.cache.max_entry_bytes:
            self.cache.put(key, body, ttl, generation)
            if shared is not None and self.cache.shared is not None:
                written = self.cache.shared.put(self.shared_scope, self._shared_key(key), body, ttl, shared)
        return body, written

    def _event(self, tool: str, event: str) -> None:
        if event == "hit":
            self.hits += 1
        elif event == "miss":
            self.misses += 1
        else:
            self.coalesced += 1
        if self._on_event is not None:
            self._on_event(tool, event)

    def stats(self) -> dict[str, Any]:
        """Result-cache hits and misses, calls coalesced, shared calls in flight (this registration)."""
        return {"hits": self.hits, "misses": self.misses, "coalesced": self.coalesced,
                "in_flight": len(self._flights)}
