"""What callers of the resilience layer depend on (like ``anyio.abc``): limiters and circuit state.

The classes of :mod:`toolmesh.resilience.limits`, :mod:`toolmesh.resilience.circuit_state` and
:class:`toolmesh.servers.policy.TokenBucket` are the local, single-process implementations. A
shared one (say on Redis, so that several workers draw on one budget or see one open circuit)
implements these protocols and plugs in without a fork of the Hub, the servers or the breaker.

Where a shared implementation must ask the store to decide exactly (taking tokens, holding a
slot), the protocol method is ``async``: one round trip, e.g. one Lua script, answers it. The
local classes also keep their synchronous shortcuts (``try_acquire``, ``time_until``...) for
callers that hold a local instance. Circuit state is different: it is advisory, read on every
call, and may lag (a breaker that opens a failure late is harmless, a limit that admits too
much is not), so :class:`CircuitStore` is synchronous: a shared store keeps a local mirror that
it updates from the shared one, and pushes its own writes.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, runtime_checkable

from toolmesh.resilience.circuit_state import CircuitState

__all__ = ["CapacityLimiter", "CircuitStore", "ClientRateLimiter", "RateLimiter"]


@runtime_checkable
class RateLimiter(Protocol):
    """A token bucket: ``rate`` tokens a second up to ``capacity``
    (:class:`~toolmesh.resilience.limits.TokenBucket`)."""

    @property
    def rate(self) -> float:
        """Tokens added per second."""

    @property
    def capacity(self) -> float:
        """The most tokens the bucket holds (the burst)."""

    async def take(self, n: float = 1) -> float:
        """Take ``n`` tokens if they are there now: 0.0 when taken, else the seconds until they
        would be (the ``Retry-After`` of the refusal; nothing is taken)."""

    async def acquire(self, n: float = 1, timeout: float | None = None) -> None:
        """Take ``n`` tokens, waiting for them; raises
        :class:`~toolmesh.errors.ConcurrencyLimitError` at once when that takes over ``timeout``."""


@runtime_checkable
class ClientRateLimiter(Protocol):
    """Per-client rate limits of a hosted server (:class:`~toolmesh.servers.policy.TokenBucket`):
    one bucket per client key."""

    async def take(self, key: str) -> float:
        """Take a token for ``key``: 0.0 when granted, else the seconds until one is there."""


@runtime_checkable
class CapacityLimiter(Protocol):
    """At most ``limit`` holders at once, the others wait in order
    (:class:`~toolmesh.resilience.limits.ConcurrencyLimiter`). ``async with`` holds one slot."""

    @property
    def limit(self) -> int:
        """Maximum concurrent holders."""

    @property
    def in_flight(self) -> int:
        """Holders (a shared limiter: this process's)."""

    @property
    def waiting(self) -> int:
        """Callers waiting for a slot (a shared limiter: this process's)."""

    async def __aenter__(self) -> object:
        """Take a slot, waiting in order."""

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Give the slot back."""


@runtime_checkable
class CircuitStore(Protocol):
    """Where one circuit breaker keeps its facts (:class:`~toolmesh.resilience.circuit_state.LocalCircuitStore`).

    Only storage: the transitions (when to open, probe, close) stay in
    :class:`~toolmesh.resilience.circuit.CircuitBreaker`, which reads and writes through this.
    The half-open probe slot is not stored here: it belongs to the task holding it."""

    @property
    def state(self) -> CircuitState:
        """The stored state (an open circuit past its timeout still reads ``OPEN`` here)."""

    @property
    def failures(self) -> int:
        """Consecutive failures since the last success."""

    @property
    def opened_at(self) -> float:
        """When the circuit last opened, on the breaker's clock."""

    @property
    def opens(self) -> int:
        """How many times it opened (lifetime)."""

    @property
    def total_failures(self) -> int:
        """Failures reported (lifetime)."""

    def add_failure(self) -> int:
        """Count one failure; returns the consecutive count after it."""

    def clear_failures(self) -> None:
        """A success: the consecutive count goes back to 0."""

    def set_state(self, state: CircuitState, now: float) -> None:
        """Store a transition; entering ``OPEN`` records ``now`` as ``opened_at`` and counts an opening."""
