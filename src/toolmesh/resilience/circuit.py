"""Circuit breakers (HUB-5): stop calling a server or tool that keeps failing, probe it later.

States::

    closed --(failure_threshold consecutive failures)--> open
    open --(reset_timeout elapsed; next allow())--> half-open (that caller is the probe)
    half-open --probe succeeds--> closed        half-open --probe fails--> open (timer reset)

Failures are counted as *consecutive* failures: any success resets the count. This is O(1)
per call with no allocation, and it is the signal a breaker needs ("the server is down now").
A rate of errors over a window is the job of :class:`toolmesh.observability.health.HealthTracker`.

Only one probe is let through in half-open; other callers fail fast until its verdict. A probe
whose caller neither reports success nor failure (cancelled, or a non-failure exception such
as bad arguments) releases the slot; if a caller never reports at all, another probe is allowed
after ``probe_timeout``.

Background probes (``prober``): while open, a cheap request (the Hub pings the server) is
tried after ``probe_backoff`` seconds, then after doubling waits capped at ``probe_max``;
the first that succeeds half-opens the circuit at once, so a recovered server is noticed
within about a probe interval instead of a whole ``reset_timeout``, while callers still fail
fast and a dead server sees one cheap request per interval. The backoff restarts only when
the circuit closes: a server that answers pings but keeps failing calls is not hammered.

All methods are plain synchronous code meant for a single event loop: no locks.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self, TypeVar, cast

from toolmesh.errors import (
    CircuitOpenError,
    ConcurrencyLimitError,
    ConfigError,
    InvalidArgumentsError,
    McpRemoteError,
    ProtocolError,
    ServerNotFoundError,
    ToolNotFoundError,
)
from toolmesh.observability.dispatch import notify
from toolmesh.resilience.abc import CircuitStore
from toolmesh.resilience.circuit_state import CircuitState, LocalCircuitStore

__all__ = [
    "CircuitBreaker",
    "CircuitState",
    "FailurePredicate",
    "Guarded",
    "StateChangeCallback",
    "default_is_failure",
]

log = logging.getLogger("toolmesh.resilience")

T = TypeVar("T")


# Module constants: enum attribute access costs ~5x a global lookup on the hot path.
_CLOSED = CircuitState.CLOSED
_OPEN = CircuitState.OPEN
_HALF_OPEN = CircuitState.HALF_OPEN

#: Decides whether an exception counts against the circuit.
FailurePredicate = Callable[[BaseException], bool]
#: ``cb(breaker, old_state, new_state)``; may be ``async def`` (then it is scheduled, not awaited).
StateChangeCallback = Callable[["CircuitBreaker", CircuitState, CircuitState], Any]

# Mistakes of the caller or local refusals: the server is not at fault.
_NOT_FAILURES = (
    InvalidArgumentsError,
    ToolNotFoundError,
    ServerNotFoundError,
    CircuitOpenError,
    ConcurrencyLimitError,
    ConfigError,
)
# Connection failures (ConnectionError is an OSError), timeouts, garbage from the peer.
_FAILURES = (OSError, TimeoutError, ProtocolError)


def default_is_failure(exc: BaseException) -> bool:
    """Default classification: connection failures, timeouts, protocol garbage and remote
    internal errors (JSON-RPC -32603 / -32001) count; client mistakes, local refusals,
    cancellation and unknown exceptions do not. A tool's own ``isError`` result is not an
    exception at all, so it never counts."""
    if isinstance(exc, _NOT_FAILURES):
        return False
    if isinstance(exc, McpRemoteError):
        return exc.code in (-32603, -32001)
    return isinstance(exc, _FAILURES)


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop (sync use)
        return None


class Guarded:
    """``async with`` for anything with allow / record_success / record_exception (a mixin)."""

    __slots__ = ()

    def allow(self) -> None:
        raise NotImplementedError

    def record_success(self) -> None:
        raise NotImplementedError

    def record_exception(self, exc: BaseException) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self.allow()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.record_success()
        else:
            self.record_exception(exc)


class CircuitBreaker(Guarded):
    """A circuit breaker for one server or one (server, tool).

    Use either the explicit protocol (``allow()`` then ``record_success()`` /
    ``record_failure()`` / ``release()``), ``async with breaker:``, or ``await breaker.call(fn)``.
    The state and counts live in ``store`` (a :class:`~toolmesh.resilience.abc.CircuitStore`);
    the transitions are decided here, whatever the store.
    """

    __slots__ = (
        "_clock",
        "_next_probe",
        "_probe_started",
        "_probe_task",
        "_prober_task",
        "_probing",
        "failure_threshold",
        "fallback",
        "is_failure",
        "name",
        "on_state_change",
        "probe_backoff",
        "probe_max",
        "probe_timeout",
        "prober",
        "reset_timeout",
        "store",
    )

    def __init__(
        self,
        name: str,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        is_failure: FailurePredicate = default_is_failure,
        on_state_change: StateChangeCallback | None = None,
        fallback: Callable[[CircuitOpenError], Any] | None = None,
        probe_timeout: float | None = None,
        store: CircuitStore | None = None,
        prober: Callable[[], Awaitable[object]] | None = None,
        probe_backoff: float = 0.25,
        probe_max: float | None = None,
    ) -> None:
        """Create a closed breaker.

        Args:
            name: names the circuit in errors and snapshots (e.g. ``"inventory"`` or
                ``"inventory/check_stock"``).
            failure_threshold: consecutive failures that open the circuit (>= 1).
            reset_timeout: seconds the circuit stays open before one probe is allowed.
            clock: monotonic clock in seconds (inject a fake one in tests).
            is_failure: which exceptions count as failures (see :func:`default_is_failure`).
            on_state_change: called on every transition; an async callback is scheduled.
            fallback: default for :meth:`call` when the circuit is open: called with the
                :class:`CircuitOpenError`, its (awaited, if awaitable) result is returned.
            probe_timeout: after this many seconds without a verdict a half-open probe is
                presumed lost and another is allowed (default: ``reset_timeout``).
            store: where state and counts are kept (default: a new
                :class:`~toolmesh.resilience.circuit_state.LocalCircuitStore`).
            prober: while open, awaited in the background with backoff; returning (not
                raising) half-opens the circuit. Needs a running event loop when it opens.
            probe_backoff: first wait before a background probe, seconds (> 0).
            probe_max: cap of the doubling waits between probes (default: ``reset_timeout``).
        """
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if reset_timeout < 0:
            raise ValueError("reset_timeout must be >= 0")
        if probe_backoff <= 0:
            raise ValueError("probe_backoff must be > 0")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.probe_timeout = reset_timeout if probe_timeout is None else probe_timeout
        self.is_failure = is_failure
        self.on_state_change = on_state_change
        self.fallback = fallback
        self._clock = clock
        self.store: CircuitStore = LocalCircuitStore() if store is None else store
        self._probing = False
        self._probe_started = 0.0
        self._probe_task: asyncio.Task[Any] | None = None
        self.prober = prober
        self.probe_backoff = probe_backoff
        self.probe_max = max(probe_backoff, reset_timeout if probe_max is None else probe_max)
        self._next_probe = probe_backoff
        self._prober_task: asyncio.Task[None] | None = None

    # -- state -----------------------------------------------------------------------------

    @property
    def state(self) -> CircuitState:
        """Current state; an open circuit whose timeout has elapsed reports (and becomes) half-open."""
        store = self.store
        if store.state is _OPEN and self._clock() - store.opened_at >= self.reset_timeout:
            self._transition(_HALF_OPEN)
        return store.state

    @property
    def consecutive_failures(self) -> int:
        """Failures since the last success (0 after closing)."""
        return self.store.failures

    @property
    def opens(self) -> int:
        """How many times the circuit opened (lifetime)."""
        return self.store.opens

    @property
    def total_failures(self) -> int:
        """Failures reported (lifetime)."""
        return self.store.total_failures

    def retry_after(self) -> float | None:
        """Seconds until an open circuit lets a probe through; 0 when calls may go now;
        ``None`` while a half-open probe is in flight (the wait depends on its outcome)."""
        state = self.state
        if state is _OPEN:
            return max(0.0, self.store.opened_at + self.reset_timeout - self._clock())
        if state is _HALF_OPEN and self._probing:
            return None
        return 0.0

    def _transition(self, new: CircuitState) -> None:
        store = self.store
        old = store.state
        if old is new:
            return
        store.set_state(new, self._clock())
        if new is _OPEN:
            log.warning("circuit %s opened after %d failures", self.name, store.failures)
        elif new is _CLOSED:
            log.info("circuit %s closed", self.name)
        if new is not _HALF_OPEN:
            self._probing = False
            self._probe_task = None
        if new is _OPEN:
            self._start_prober()
        elif new is _CLOSED:
            self._next_probe = self.probe_backoff
        if self.on_state_change is not None:
            notify(self.on_state_change, self, old, new)

    # -- background probes (while open) -------------------------------------------------

    def _start_prober(self) -> None:
        if self.prober is None or (self._prober_task is not None and not self._prober_task.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # sync use: probes need a loop; reset_timeout still applies
            return
        self._prober_task = loop.create_task(self._probe_loop(self.prober), name=f"circuit-probe {self.name}")

    async def _probe_loop(self, prober: Callable[[], Awaitable[object]]) -> None:
        """Probe until one succeeds (then half-open) or the circuit leaves ``OPEN`` another way."""
        while True:
            delay = self._next_probe
            self._next_probe = min(delay * 2.0, self.probe_max)
            await asyncio.sleep(delay)
            if self.store.state is not _OPEN:
                return
            try:
                await prober()
            except Exception as exc:  # still down: wait longer
                log.debug("circuit %s: probe failed: %s", self.name, exc)
                continue
            if self.store.state is _OPEN:
                log.info("circuit %s: probe succeeded, half-open", self.name)
                self._transition(_HALF_OPEN)
            return

    def stop_probing(self) -> None:
        """Cancel a background probe (the guarded server is going away)."""
        task, self._prober_task = self._prober_task, None
        if task is not None and not task.done():
            task.cancel()

    # -- call protocol ---------------------------------------------------------------------

    def allow(self) -> None:
        """Admit a call or raise :class:`CircuitOpenError` (with ``retry_after`` seconds).

        In half-open the first caller becomes the probe; the others are refused until the
        probe reports."""
        store = self.store
        state = store.state
        if state is _CLOSED:
            return
        now = self._clock()
        if state is _OPEN:
            remaining = store.opened_at + self.reset_timeout - now
            if remaining > 0:
                raise CircuitOpenError(
                    f"circuit {self.name!r} is open after {store.failures} consecutive failures; "
                    f"retry in {remaining:.2f}s",
                    retry_after=remaining,
                )
            self._transition(_HALF_OPEN)
        if self._probing and now - self._probe_started < self.probe_timeout:
            raise CircuitOpenError(
                f"circuit {self.name!r} is half-open and its probe call is in flight",
                retry_after=None,
            )
        self._probing = True
        self._probe_started = now
        self._probe_task = _current_task()

    def record_success(self) -> None:
        """Report a successful call: resets the failure count; closes a half-open circuit.
        A late success while open (a call admitted before it opened) is ignored."""
        store = self.store
        store.clear_failures()
        if store.state is _HALF_OPEN:
            self._transition(_CLOSED)

    def record_failure(self) -> None:
        """Report a failed call: may open a closed circuit; re-opens a half-open one."""
        store = self.store
        failures = store.add_failure()
        state = store.state
        if state is _CLOSED:
            if failures >= self.failure_threshold:
                self._transition(_OPEN)
        elif state is _HALF_OPEN:
            self._transition(_OPEN)
        # OPEN: a late failure of a call admitted before opening; the timer is not extended.

    def release(self) -> None:
        """Report a call that ended without a verdict (cancelled, or an exception that is not a
        failure). If it was the half-open probe, the probe slot is freed for the next caller."""
        if self._probing and self.store.state is _HALF_OPEN and self._probe_task is _current_task():
            self._probing = False
            self._probe_task = None

    def record_exception(self, exc: BaseException) -> None:
        """Classify ``exc`` with ``is_failure`` and report it as failure or :meth:`release`."""
        if isinstance(exc, Exception) and self.is_failure(exc):
            self.record_failure()
        else:
            self.release()

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        fallback: Callable[[CircuitOpenError], T | Awaitable[T]] | None = None,
    ) -> T:
        """Run ``await fn()`` through the breaker.

        When the circuit is open and a fallback is configured (argument, else the breaker's
        ``fallback``), return ``fallback(error)`` (awaited if awaitable) instead of raising.
        Failures of ``fn`` itself are re-raised, never replaced by the fallback."""
        try:
            self.allow()
        except CircuitOpenError as err:
            fb = fallback if fallback is not None else self.fallback
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

    def reset(self) -> None:
        """Force the circuit closed (admin action)."""
        self.store.clear_failures()
        self._transition(_CLOSED)

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable view for admin API, dashboard and metrics."""
        return {
            "name": self.name,
            "state": self.state.value,
            "consecutive_failures": self.store.failures,
            "failure_threshold": self.failure_threshold,
            "reset_timeout": self.reset_timeout,
            "retry_after": self.retry_after(),
            "probe_in_flight": self._probing,
            "background_probe": self._prober_task is not None and not self._prober_task.done(),
            "opens": self.opens,
            "total_failures": self.total_failures,
        }

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, state={self.store.state.value}, failures={self.store.failures})"
