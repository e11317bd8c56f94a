"""Circuit breakers per server and per (server, tool), created on first use (HUB-5)."""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar, cast

from toolmesh.errors import CircuitOpenError
from toolmesh.resilience.circuit import (
    CircuitBreaker,
    FailurePredicate,
    Guarded,
    StateChangeCallback,
    default_is_failure,
)
from toolmesh.resilience.circuit_state import CircuitState

__all__ = ["CircuitGuard", "CircuitRegistry"]

T = TypeVar("T")
_CLOSED = CircuitState.CLOSED


class CircuitGuard(Guarded):
    """The server breaker and the tool breaker of one (server, tool), used together.

    ``allow()`` checks the server circuit first, then the tool circuit (undoing the server
    admission if the tool refuses, so a half-open probe slot is never leaked). Outcomes are
    reported to both: a tool that keeps timing out also counts against its server, but any
    success on the server resets the server's consecutive count. Guards are cached by the
    registry and hold no per-call state, so one guard serves concurrent calls.
    """

    __slots__ = ("server", "tool")

    def __init__(self, server: CircuitBreaker, tool: CircuitBreaker) -> None:
        self.server = server
        self.tool = tool

    def allow(self) -> None:
        """Admit a call or raise :class:`CircuitOpenError` naming the open circuit."""
        if self.server.store.state is _CLOSED and self.tool.store.state is _CLOSED:
            return  # the common case, without two method calls
        self.server.allow()
        try:
            self.tool.allow()
        except CircuitOpenError:
            self.server.release()
            raise

    def record_success(self) -> None:
        """Report success to both breakers."""
        tool, server = self.tool.store, self.server.store
        if tool.state is _CLOSED and server.state is _CLOSED:
            # The common case: nothing can change state, only the counts are cleared.
            if tool.failures:
                tool.clear_failures()
            if server.failures:
                server.clear_failures()
            return
        self.tool.record_success()
        self.server.record_success()

    def record_failure(self) -> None:
        """Report a failure to both breakers."""
        self.tool.record_failure()
        self.server.record_failure()

    def record_exception(self, exc: BaseException) -> None:
        """Classify ``exc`` per breaker and report it."""
        self.tool.record_exception(exc)
        self.server.record_exception(exc)

    def release(self) -> None:
        """Report a call that ended without a verdict."""
        self.tool.release()
        self.server.release()

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        fallback: Callable[[CircuitOpenError], T | Awaitable[T]] | None = None,
    ) -> T:
        """Like :meth:`CircuitBreaker.call`; the default fallback is the tool breaker's, else the
        server breaker's."""
        try:
            self.allow()
        except CircuitOpenError as err:
            fb = fallback or self.tool.fallback or self.server.fallback
            if fb is None:
                raise
            result = fb(err)
            if inspect.isawaitable(result):
                result = await result
            return cast(T, result)
        try:
            value = await fn()
        except BaseException as exc:
            self.record_exception(exc)
            raise
        self.record_success()
        return value


class CircuitRegistry:
    """Lazily created breakers keyed by server and by (server, tool).

    Defaults apply to every new breaker; :meth:`configure` overrides them per server (for
    example from that server's config) for its server breaker and its tool breakers.
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        is_failure: FailurePredicate = default_is_failure,
        on_state_change: StateChangeCallback | None = None,
    ) -> None:
        """See :class:`CircuitBreaker` for the meaning of each argument."""
        self._defaults: dict[str, Any] = {
            "failure_threshold": failure_threshold,
            "reset_timeout": reset_timeout,
        }
        self._clock = clock
        self._is_failure = is_failure
        self._on_state_change = on_state_change
        self._overrides: dict[str, dict[str, Any]] = {}
        self._servers: dict[str, CircuitBreaker] = {}
        self._tools: dict[str, dict[str, CircuitBreaker]] = {}
        self._guards: dict[str, dict[str, CircuitGuard]] = {}

    def _new(self, server: str, name: str) -> CircuitBreaker:
        opts = self._overrides.get(server)
        kw = self._defaults if opts is None else {**self._defaults, **opts}
        return CircuitBreaker(
            name,
            clock=self._clock,
            is_failure=self._is_failure,
            on_state_change=self._on_state_change,
            **kw,
        )

    def configure(
        self,
        server: str,
        *,
        failure_threshold: int | None = None,
        reset_timeout: float | None = None,
        fallback: Callable[[CircuitOpenError], Any] | None = None,
    ) -> None:
        """Override settings for one server's breakers (existing and future); ``None`` keeps."""
        opts = self._overrides.setdefault(server, {})
        if failure_threshold is not None:
            if failure_threshold < 1:
                raise ValueError("failure_threshold must be >= 1")
            opts["failure_threshold"] = failure_threshold
        if reset_timeout is not None:
            if reset_timeout < 0:
                raise ValueError("reset_timeout must be >= 0")
            opts["reset_timeout"] = reset_timeout
        if fallback is not None:
            opts["fallback"] = fallback
        for breaker in self._breakers_of(server):
            for key, value in opts.items():
                setattr(breaker, key, value)

    def server(self, server: str) -> CircuitBreaker:
        """The breaker of ``server`` (created on first use)."""
        breaker = self._servers.get(server)
        if breaker is None:
            breaker = self._servers[server] = self._new(server, server)
        return breaker

    def tool(self, server: str, tool: str) -> CircuitBreaker:
        """The breaker of ``tool`` on ``server`` (created on first use); named ``server/tool``."""
        tools = self._tools.get(server)
        if tools is None:
            tools = self._tools[server] = {}
        breaker = tools.get(tool)
        if breaker is None:
            breaker = tools[tool] = self._new(server, f"{server}/{tool}")
        return breaker

    def guard(self, server: str, tool: str) -> CircuitGuard:
        """The cached :class:`CircuitGuard` combining the server and tool breakers."""
        guards = self._guards.get(server)
        if guards is None:
            guards = self._guards[server] = {}
        guard = guards.get(tool)
        if guard is None:
            guard = guards[tool] = CircuitGuard(self.server(server), self.tool(server, tool))
        return guard

    def get(self, server: str, tool: str | None = None) -> CircuitBreaker | None:
        """An existing breaker, or ``None`` (never creates)."""
        if tool is None:
            return self._servers.get(server)
        return self._tools.get(server, {}).get(tool)

    def remove(self, server: str) -> None:
        """Forget every breaker of ``server`` (on unregister)."""
        self._servers.pop(server, None)
        self._tools.pop(server, None)
        self._guards.pop(server, None)
        self._overrides.pop(server, None)

    def _breakers_of(self, server: str) -> Iterator[CircuitBreaker]:
        if server in self._servers:
            yield self._servers[server]
        yield from self._tools.get(server, {}).values()

    def __iter__(self) -> Iterator[CircuitBreaker]:
        for server in list(self._servers.keys() | self._tools.keys()):
            yield from self._breakers_of(server)

    def snapshot(self) -> dict[str, Any]:
        """``{"servers": {server: snap}, "tools": {server: {tool: snap}}}`` (JSON-serialisable)."""
        return {
            "servers": {name: b.snapshot() for name, b in self._servers.items()},
            "tools": {
                server: {tool: b.snapshot() for tool, b in tools.items()} for server, tools in self._tools.items()
            },
        }
