"""Per-server health (HUB-4): counts, error rate, latency percentiles and a status.

Status is derived from the error rate over the last ``window`` requests, once at least
``min_requests`` of them were seen: ``active`` below ``warning_error_rate``, ``degraded`` from
it, ``error`` from ``critical_error_rate``; it returns to ``active`` as the window recovers.
There is no hysteresis: the window itself smooths the rate (one request moves it by at most
``1/window``). Timeouts count as errors. The window is a ring of bytes with a running error
count, so :meth:`HealthTracker.record` is O(1) and allocates nothing unless the status changes.

Status changes are delivered as :class:`HealthEvent` to listeners through
:func:`toolmesh.observability.dispatch.notify`: async listeners run as tasks, exceptions are
logged, the recording call never waits for them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from toolmesh.observability.dispatch import notify
from toolmesh.observability.stats import LatencyStats

__all__ = ["HealthEvent", "HealthListener", "HealthStatus", "HealthTracker"]


class HealthStatus(StrEnum):
    """Health of a server as seen from its recent calls."""

    ACTIVE = "active"
    DEGRADED = "degraded"
    ERROR = "error"


_ACTIVE = HealthStatus.ACTIVE
_DEGRADED = HealthStatus.DEGRADED
_ERROR = HealthStatus.ERROR


@dataclass(frozen=True, slots=True)
class HealthEvent:
    """A status change of one server; ``at`` is on the tracker's clock."""

    server: str
    old: HealthStatus
    new: HealthStatus
    error_rate: float
    at: float


#: A listener: ``async def cb(event)`` (scheduled as a task) or a quick sync function.
HealthListener = Callable[[HealthEvent], Any]


class HealthTracker:
    """Request/error counts, error rate, latency and status of one server."""

    __slots__ = (
        "_clock",
        "_listeners",
        "_pos",
        "_ring",
        "_window_count",
        "_window_errors",
        "critical_error_rate",
        "errors",
        "last_change_at",
        "last_error_at",
        "last_request_at",
        "latency",
        "min_requests",
        "requests",
        "server",
        "status",
        "timeouts",
        "warning_error_rate",
        "window",
    )

    def __init__(
        self,
        server: str,
        min_requests: int = 10,
        warning_error_rate: float = 0.2,
        critical_error_rate: float = 0.5,
        window: int = 100,
        clock: Callable[[], float] = time.monotonic,
        *,
        latency_window: int = 1024,
    ) -> None:
        """Args:
        server: the server's name (carried in events and snapshots).
        min_requests: requests in the window before the status may leave ``active``.
        warning_error_rate: error rate (0..1) at which the server is ``degraded``.
        critical_error_rate: error rate at which it is ``error`` (>= warning rate).
        window: number of most recent requests the error rate is computed over.
        clock: monotonic clock for event times.
        latency_window: samples kept for latency percentiles.
        """
        if window < 1:
            raise ValueError("window must be >= 1")
        if not 1 <= min_requests <= window:
            raise ValueError("min_requests must be between 1 and window")
        if not 0 < warning_error_rate <= critical_error_rate <= 1:
            raise ValueError("need 0 < warning_error_rate <= critical_error_rate <= 1")
        self.server = server
        self.min_requests = min_requests
        self.warning_error_rate = warning_error_rate
        self.critical_error_rate = critical_error_rate
        self.window = window
        self._clock = clock
        self._ring = bytearray(window)
        self._pos = 0
        self._window_count = 0
        self._window_errors = 0
        self._listeners: list[HealthListener] = []
        self.latency = LatencyStats(latency_window)
        self.status = _ACTIVE
        self.requests = 0
        self.errors = 0
        self.timeouts = 0
        self.last_request_at: float | None = None
        self.last_error_at: float | None = None
        self.last_change_at: float | None = None

    # -- listeners -------------------------------------------------------------------------

    def add_listener(self, callback: HealthListener) -> Callable[[], None]:
        """Register a status-change listener; returns a function that removes it."""
        self._listeners.append(callback)
        return lambda: self.remove_listener(callback)

    def remove_listener(self, callback: HealthListener) -> None:
        """Unregister a listener (no error if absent)."""
        try:
            self._listeners.remove(callback)
        except ValueError:
            pass

    # -- recording -------------------------------------------------------------------------

    @property
    def error_rate(self) -> float:
        """Errors / requests over the recent window (0.0 when empty)."""
        n = self._window_count
        return self._window_errors / n if n else 0.0

    def record(self, ok: bool, latency_ms: float, *, timeout: bool = False) -> None:
        """Record one request: ``ok`` False (or ``timeout`` True) counts as an error."""
        err = 0 if ok and not timeout else 1
        self.requests += 1
        now = self._clock()
        self.last_request_at = now
        if err:
            self.errors += 1
            self.last_error_at = now
            if timeout:
                self.timeouts += 1
        self.latency.record(latency_ms)
        ring = self._ring
        pos = self._pos
        if self._window_count < self.window:
            self._window_count += 1
        else:
            self._window_errors -= ring[pos]
        ring[pos] = err
        self._window_errors += err
        pos += 1
        self._pos = 0 if pos == self.window else pos
        # Healthy fast path: active with no error in the window cannot change status.
        if self.status is not _ACTIVE or (self._window_errors and self._window_count >= self.min_requests):
            self._update(now)

    def _update(self, now: float) -> None:
        if self._window_count < self.min_requests:
            new = _ACTIVE
        else:
            rate = self._window_errors / self._window_count
            if rate >= self.critical_error_rate:
                new = _ERROR
            elif rate >= self.warning_error_rate:
                new = _DEGRADED
            else:
                new = _ACTIVE
        old = self.status
        if new is old:
            return
        self.status = new
        self.last_change_at = now
        if self._listeners:
            event = HealthEvent(self.server, old, new, self.error_rate, now)
            for cb in tuple(self._listeners):
                notify(cb, event)

    def reset_window(self) -> None:
        """Forget the recent window (e.g. after a reconnect); the status returns to ``active``."""
        self._ring = bytearray(self.window)
        self._pos = 0
        self._window_count = 0
        self._window_errors = 0
        self._update(self._clock())

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable view (admin API, dashboard)."""
        return {
            "server": self.server,
            "status": self.status.value,
            "requests": self.requests,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "error_rate": self.error_rate,
            "window_requests": self._window_count,
            "window_errors": self._window_errors,
            "latency": self.latency.snapshot(),
            "last_request_at": self.last_request_at,
            "last_error_at": self.last_error_at,
            "last_change_at": self.last_change_at,
        }

    def __repr__(self) -> str:
        return f"HealthTracker({self.server!r}, status={self.status.value}, error_rate={self.error_rate:.3f})"
