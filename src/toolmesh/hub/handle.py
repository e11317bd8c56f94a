"""One registered server: its connection lifecycle, catalogue and call path.

Its circuit breakers live in :mod:`toolmesh.hub.breakers`, its notifications and resource
subscriptions in :mod:`toolmesh.hub.watch`.

Lifecycle (HUB-3): connect lazily; one connection at a time, opened by whoever
needs it first (single-flight); a lost session or dead process is dropped and
the next call reconnects; a server that keeps failing to start is retried
with exponential backoff; idle connections are closed by the Hub's janitor.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from toolmesh.errors import (
    CircuitOpenError,
    ConnectionFailedError,
    InvalidArgumentsError,
    SessionLostError,
    ToolmeshError,
    ToolNotFoundError,
    ToolTimeoutError,
    did_you_mean,
)
from toolmesh.hub.argcheck import ArgumentValidator
from toolmesh.hub.breakers import ServerBreakers
from toolmesh.hub.catalog import Catalog
from toolmesh.hub.coalesce import SharedCalls
from toolmesh.hub.config import ServerConfig
from toolmesh.hub.mrtr import complete as complete_input
from toolmesh.hub.mrtr import needs_input
from toolmesh.hub.owner import HandleOwner
from toolmesh.hub.result import ToolResult
from toolmesh.hub.toolcall import ToolCall, idempotent, is_retryable
from toolmesh.hub.transports import Connection, make_connection
from toolmesh.hub.transports.base import LogHandler, ProgressCallback, ServerRequestHandler
from toolmesh.hub.types import JsonDict
from toolmesh.hub.watch import UpstreamWatch
from toolmesh.resilience.abc import CapacityLimiter
from toolmesh.resilience.circuit_registry import CircuitGuard
from toolmesh.resilience.retry import RetryPolicy

#: Backoff between attempts to (re)start a server that keeps failing, seconds. Capped at 0.5 s
#: so that a restarted server is used within half a second of listening again (it was 5 s:
#: the first success came 1.5 s after the port opened); a server that stays down is spared
#: by its circuit, which opens after a few failures and then probes with its own backoff.
RESTART_BACKOFF = (0.0, 0.05, 0.1, 0.25, 0.5)


class ServerHandle:
    """Everything the Hub keeps for one server of one tenant."""

    def __init__(self, config: ServerConfig, tenant: str, user: str | None, owner: HandleOwner) -> None:
        """A handle of ``config`` for ``tenant`` (and ``user``); ``owner`` (the Hub) hears what happens."""
        self.config = config
        self.tenant = tenant
        self.user = user
        self.name = config.name
        #: Name used in metrics: tenant-qualified outside the default tenant.
        self.label = config.name if tenant == "default" and user is None else f"{tenant}/{user or '*'}/{config.name}"
        self._owner = owner
        self._metrics = owner.tool_metrics
        self.catalog = Catalog(config.catalog_ttl, on_lookup=self._record_lookup)
        self.limiter: CapacityLimiter = owner.new_limiter(config.max_concurrency, f"server {config.name}")
        #: The server's and its tools' circuit breakers (see :mod:`toolmesh.hub.breakers`).
        self.breakers = ServerBreakers(self, owner)
        self.circuit = self.breakers.server
        self.retry = RetryPolicy(max_attempts=config.retries + 1, base_delay=0.05, max_delay=1.0)
        self.health = owner.new_health(config)
        self.conn: Connection | None = None
        self._connecting: asyncio.Lock = asyncio.Lock()
        self._connect_failures = 0
        self._last_failure_at = 0.0
        self.last_used = time.monotonic()
        self.connects = 0
        self.sessions_lost = 0
        self._validators: dict[str, ArgumentValidator] = {}
        #: Coalescing of identical calls in flight and the result cache (HUB: issue 14).
        self.shared = SharedCalls(config, owner.result_cache, self._record_shared, self.label)
        self.closed = False
        #: Owners that need this connection kept open (Hub.watch): the idle janitor skips it.
        self.watchers = 0
        #: The server's notifications and the resource subscriptions (see :mod:`toolmesh.hub.watch`).
        self.upstream = UpstreamWatch(self, owner)
        #: The connection attempt in flight (see :meth:`connection`).
        self._attempt: asyncio.Future[Connection] | None = None

    # -- connection -------------------------------------------------------------------
    async def connection(self) -> Connection:
        """The live connection, opening one if needed (single-flight).

        The attempt runs in a task of its own: a caller that stops waiting (its deadline passed)
        does not cut it, so a server slower to start than one call's timeout still comes up for
        the next caller. (Each cut killed the half-started process: a stdio server starting in
        2-3 s on a busy machine was never reconnected by 2 s calls.)"""
        conn = self.conn
        if conn is not None and conn.alive:
            return conn
        attempt = self._attempt
        if attempt is None or attempt.done():
            attempt = self._attempt = asyncio.ensure_future(self._connect())
            attempt.add_done_callback(lambda t: t.cancelled() or t.exception())  # seen even if nobody waits
        try:
            return await asyncio.shield(attempt)
        except asyncio.CancelledError:
            if attempt.cancelled() and self.closed:  # close() stopped it, not this caller's cancellation
                raise ConnectionFailedError(f"server {self.name!r} was unregistered") from None
            raise

    async def _connect(self) -> Connection:
        async with self._connecting:
            conn = self.conn
            if conn is not None and conn.alive:
                return conn
            if conn is not None:
                self.conn = None
                await conn.close()
            if self.closed:
                raise ConnectionFailedError(f"server {self.name!r} was unregistered")
            wait = RESTART_BACKOFF[min(self._connect_failures, len(RESTART_BACKOFF) - 1)]
            wait -= time.monotonic() - self._last_failure_at
            if wait > 0:
                await asyncio.sleep(wait)
            caps = self.config.client_capabilities
            conn = make_connection(self.config, caps if caps is not None else self._owner.client_capabilities)
            conn.on_notification = self.upstream.on_notification
            conn.tool_definition = self.catalog.tool
            conn.resource_uris = self.upstream.uris
            try:
                await conn.start()
            except ToolmeshError:
                self._connect_failures += 1
                self._last_failure_at = time.monotonic()
                raise
            except Exception as exc:
                self._connect_failures += 1
                self._last_failure_at = time.monotonic()
                raise ConnectionFailedError(f"server {self.name!r}: cannot connect: {exc}") from exc
            self._connect_failures = 0
            await self.upstream.resubscribe(conn)
            self.connects += 1
            if self.connects == 1:
                self._metrics.record_connect(self.label)
            else:
                self._metrics.record_reconnect(self.label)
            self.conn = conn
            self._owner.on_connected()
            return conn

    async def drop(self, conn: Connection | None = None) -> None:
        """Close the current connection (or ``conn`` if it is still current)."""
        current = self.conn
        if current is None or (conn is not None and current is not conn):
            return
        self.conn = None
        await current.close()

    async def close(self) -> None:
        self.closed = True
        self.shared.close()  # (re-registration: a new handle, a new cache scope)
        self.breakers.stop()
        attempt = self._attempt
        if attempt is not None and not attempt.done():
            attempt.cancel()  # start() closes what it opened
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await attempt
        await self.drop()

    def reshare(self, config: ServerConfig) -> None:
        """Take ``config``'s ``cache`` and ``coalesce`` sections (nothing else); cached results go."""
        self.config = self.config.model_copy(update={"cache": config.cache, "coalesce": config.coalesce})
        self.shared.close()
        self.shared = SharedCalls(self.config, self._owner.result_cache, self._record_shared, self.label)

    def catalog_changed(self, method: str) -> bool:
        """Apply a ``notifications/*/list_changed`` (heard here or on a twin connection): drop the
        cached listings, argument validators and tool results. False for other methods."""
        if not self.catalog.on_notification(method):
            return False
        self._validators.clear()
        self.shared.invalidate()
        return True

    def forget_catalog(self, *, fleet: bool = True) -> None:
        """Drop every cached listing, argument validator and tool result (a listen stream's gap);
        ``fleet``: the results every process shares too (see :meth:`SharedCalls.invalidate`)."""
        self.catalog.invalidate()
        self._validators.clear()
        self.shared.invalidate(fleet=fleet)

    # -- resource subscriptions -------------------------------------------------------------
    @property
    def resource_watch(self) -> dict[str, int]:
        """Resource URI → how many owners want its ``notifications/resources/updated``."""
        return self.upstream.resources

    async def watch_resource(self, uri: str, on: bool) -> bool:
        """Count one owner in (or out) of ``uri``'s updates; False if the server cannot send them."""
        return await self.upstream.watch_resource(uri, on)

    async def request(self, method: str, params: dict[str, Any] | None = None, *,
                      call: ToolCall | None = None, **kw: Any) -> dict[str, Any]:
        """One raw request with reconnect-once on a lost session; with ``call`` (armed), the
        reconnect and the request both end by the call's deadline."""
        self.last_used = time.monotonic()
        for attempt in (1, 2):
            conn = self.conn  # the usual case, a live connection, costs no coroutine
            if conn is None or not conn.alive:
                conn = await self.connection() if call is None else await self._connection_by(call, method)
            if call is not None:
                kw["remaining"], kw["hard_remaining"] = call.budget()
            try:
                return await conn.request(method, params, **kw)
            except SessionLostError:
                self.sessions_lost += 1
                self._metrics.record_session_lost(self.label)
                await self.drop(conn)
                if attempt == 2:
                    raise
            except ConnectionFailedError:
                await self.drop(conn)
                raise
        raise AssertionError("unreachable")

    async def _connection_by(self, call: ToolCall, method: str) -> Connection:
        """:meth:`connection`, given up when ``call``'s deadline passes (the attempt itself goes
        on for the next caller, up to the server's ``connect_timeout``)."""
        conn = self.conn
        if conn is not None and conn.alive:
            return conn
        left, _ = call.budget()
        scope = asyncio.timeout(left)
        try:
            async with scope:
                return await self.connection()
        except TimeoutError:
            if not scope.expired():
                raise
            if self._connect_failures:  # the cause is the server being unreachable, not slowness
                raise ConnectionFailedError(
                    f"server {self.name!r}: cannot connect within the call's {call.extend_by:g}s "
                    f"({self._connect_failures} failed attempts in a row)"
                ) from None
            raise ToolTimeoutError(
                f"server {self.name!r}: {method} did not finish within {call.extend_by:g}s (no connection in time)"
            ) from None

    # -- catalogue --------------------------------------------------------------------
    async def list(self, kind: str, *, refresh: bool = False) -> list[dict[str, Any]]:
        items = await self.catalog.get(kind, self.request, refresh=refresh)
        return items

    async def tool_definition(self, tool: str) -> dict[str, Any]:
        """The tool's definition; refreshes the listing once before declaring it unknown."""
        definition = self.catalog.tool(tool)
        if definition is None:
            await self.list("tools", refresh=self.catalog.has_tools)
            definition = self.catalog.tool(tool)
        if definition is None:
            hint = did_you_mean(tool, self.catalog.tool_names())
            raise ToolNotFoundError(f"server {self.name!r} has no tool {tool!r}{hint}")
        return definition

    def validate(self, tool: str, definition: dict[str, Any], arguments: dict[str, Any]) -> None:
        validator = self._validators.get(tool)
        if validator is None:
            schema = definition.get("inputSchema") or {"type": "object"}
            validator = self._validators[tool] = ArgumentValidator(schema, f"{self.name}/{tool}")
        validator(arguments)

    def guard(self, tool: str) -> CircuitGuard:
        """The circuit guard of ``tool``'s calls (the server's breaker and the tool's)."""
        return self.breakers.guard(tool)

    # -- the call path ----------------------------------------------------------------
    async def call_tool(
        self,
        tool: str,
        arguments: dict[str, Any] | None,
        *,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        validate: bool = True,
        on_request: ServerRequestHandler | None = None,
    ) -> ToolResult:
        """Call ``tool``; raises a :class:`ToolmeshError` subclass for anything but a tool-reported error.

        ``on_request`` answers what the server asks the user or model during the call: handshake-era
        requests (sampling, elicitation, roots) and 2026-07-28 ``input_required`` rounds. Without it
        an ``input_required`` answer becomes an error result saying what the server wanted."""
        args = arguments if arguments is not None else {}
        if not isinstance(args, dict):
            raise InvalidArgumentsError(f"arguments for {self.name}/{tool} must be a JSON object")
        params = {"name": tool, "arguments": args}
        call = ToolCall(tool, params, args if validate else None, timeout, on_progress, on_request)
        result = await self._send_shared(call)
        if call.circuit_open is not None:
            return ToolResult(
                server=self.name, tool=tool, ok=False, is_error=True, content=result["content"],
                error=str(call.circuit_open), error_type="CircuitOpenError", latency_ms=call.elapsed_ms(), attempts=0,
            )
        if needs_input(result):
            if on_request is None:
                asked = sorted({str(r.get("method")) for r in (result.get("inputRequests") or {}).values()
                                if isinstance(r, dict)})
                text = f"{self.name}/{tool} needs input this call cannot give ({', '.join(asked) or 'unspecified'})"
                return ToolResult(
                    server=self.name, tool=tool, ok=False, is_error=True, content=[{"type": "text", "text": text}],
                    error=text, error_type="InputRequired", latency_ms=call.elapsed_ms(), attempts=call.attempts,
                )

            async def again(retry: JsonDict) -> JsonDict:
                return await self._send(ToolCall(tool, retry, None, timeout, on_progress, on_request))

            result = await complete_input(again, params, result, on_request)
        return ToolResult.from_mcp(self.name, tool, result, call.elapsed_ms(), call.attempts)

    async def forward_tool(
        self,
        params: dict[str, Any],
        *,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        on_request: ServerRequestHandler | None = None,
        on_log: LogHandler | None = None,
    ) -> dict[str, Any]:
        """``tools/call`` with the caller's ``params`` as they are; the server's raw ``result``.

        Same breakers, limits, retries and records as :meth:`call_tool`, but the arguments
        are not validated here (the server does that)."""
        tool = params.get("name")
        if not isinstance(tool, str):
            raise InvalidArgumentsError(f"tools/call to {self.name!r}: params.name must be a string")
        return await self._send_shared(ToolCall(tool, params, None, timeout, on_progress, on_request, on_log))

    # The one guarded ``tools/call`` path, one concern per step; each hands ``call`` to the next.
    async def _send_shared(self, call: ToolCall) -> JsonDict:
        """Sharing: a fresh cached result, or a share of an identical call in flight, or a new
        call (see :mod:`toolmesh.hub.coalesce`); which tools qualify depends on their annotations."""
        shared = self.shared
        if not shared.enabled:
            return await self._send(call)
        definition = self.catalog.tool(call.tool)
        if definition is None and not self.catalog.has_tools:
            with contextlib.suppress(ToolmeshError):  # the steps below report what is wrong
                definition = await self.tool_definition(call.tool)
        coalesce, ttl = shared.policy(call.tool, definition)
        if not coalesce and ttl <= 0:  # neither shared nor cached (most tools): no sharing step at all
            return await self._send(call)
        return await shared.send(call, definition, self._send)

    async def _send(self, call: ToolCall) -> JsonDict:
        """Circuit guard: fail fast while the server's or the tool's circuit is open, or answer
        with the server's fallback text (then ``call.circuit_open`` is set)."""
        guard = self.guard(call.tool)
        try:
            guard.allow()
        except CircuitOpenError as exc:
            fallback = self.config.circuit.fallback
            if fallback is None:
                raise
            call.circuit_open = exc
            return {"content": [{"type": "text", "text": fallback}], "isError": True}
        return await self._send_validated(call, guard)

    async def _send_validated(self, call: ToolCall, guard: CircuitGuard) -> JsonDict:
        """Argument validation against the tool's schema (when asked); the tool's annotations
        decide whether an ambiguous failure may be retried."""
        definition: dict[str, Any] | None
        try:
            if call.arguments is not None:
                definition = await self.tool_definition(call.tool)
                self.validate(call.tool, definition, call.arguments)
            else:
                definition = self.catalog.tool(call.tool)  # known annotations still decide what is safe to retry
        except BaseException as exc:
            guard.release()
            if isinstance(exc, ConnectionFailedError | ToolTimeoutError):
                self._record(call, guard, exc)  # the server failed to list its tools: that counts
            raise
        call.safe_retry = idempotent(definition)
        return await self._send_recorded(call, guard)

    async def _send_recorded(self, call: ToolCall, guard: CircuitGuard) -> JsonDict:
        """The server's concurrency limit, held across the retries; then recording: the outcome
        reaches the breakers, the health tracker and the metrics (after the slot is released)."""
        try:
            async with self.limiter:
                result = await self._send_retrying(call)
        except BaseException as exc:
            self._record(call, guard, exc)
            raise
        self._record(call, guard, None, tool_error=bool(result.get("isError")))
        return result

    async def _send_retrying(self, call: ToolCall) -> JsonDict:
        """Retries with backoff, of what is safe to repeat (see :func:`is_retryable`)."""
        retry = self.retry
        # The call's timeout is a deadline from here (once it holds a slot): attempts, reconnects
        # and backoffs all end by then; a retry that would start in its last tenth is not tried.
        call.arm(call.timeout or self.config.timeout, self.config.max_timeout)
        attempt = 1
        while True:
            try:
                # One attempt (inlined: a coroutine less per call); reconnects once if the session was lost.
                call.attempts += 1
                return await self.request(
                    "tools/call", call.params, call=call, timeout=call.timeout, on_progress=call.progress_hook(),
                    on_request=call.on_request, on_log=call.on_log,
                )
            except Exception as exc:
                wait = None
                if is_retryable(exc, call.safe_retry) and call.deadline is not None:
                    wait = retry.backoff(attempt, exc, call.deadline - 0.1 * call.extend_by)
                if wait is None:
                    raise
            await retry.sleep(wait)
            attempt += 1

    def _record(self, call: ToolCall, guard: CircuitGuard, exc: BaseException | None, *,
                tool_error: bool = False) -> None:
        latency = call.elapsed_ms()
        if exc is None:
            guard.record_success()
        else:
            guard.record_exception(exc)
        timeout = isinstance(exc, ToolTimeoutError)
        infra_failure = exc is not None and not isinstance(
            exc, InvalidArgumentsError | ToolNotFoundError | CircuitOpenError | asyncio.CancelledError
        )
        self.health.record(not infra_failure, latency, timeout=timeout)
        self._metrics.record_call(self.label, call.tool, ok=exc is None and not tool_error, latency_ms=latency,
                                  timeout=timeout)

    def _record_lookup(self, hit: bool) -> None:
        self._metrics.record_cache(self.label, hit)

    def _record_shared(self, tool: str, event: str) -> None:
        self._metrics.record_shared(self.label, event)

    def snapshot(self) -> dict[str, Any]:
        conn = self.conn
        return {
            "name": self.name,
            "tenant": self.tenant,
            "user": self.user,
            "transport": self.config.transport,
            "connected": conn is not None and conn.alive,
            "protocol": conn.identity.protocol if conn is not None else None,
            "server_info": {"name": conn.identity.name, "version": conn.identity.version} if conn else None,
            "status": self.health.status,
            "circuit": self.circuit.state.value,
            "connects": self.connects,
            "sessions_lost": self.sessions_lost,
            "in_flight": self.limiter.in_flight,
            "catalog": self.catalog.stats(),
            "results": self.shared.stats(),
        }

