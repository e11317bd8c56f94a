"""Limits shared by every worker and replica (STO-2): the configuration, the types and the local fallback.

One request is admitted against all the limits that apply to it at once (tenant and key token
buckets, the user's sliding window and concurrency slots), all or nothing. Two implementations
share the :class:`RequestLimiter` shape:

* :class:`~toolmesh.store.redis_state.SharedLimiter`: one Lua script in Redis decides, exactly,
  for every process that talks to the same Redis (``state: {url: redis://...}``);
* :class:`LocalLimiter`: this process only. It is what :class:`SharedLimiter` falls back to while
  Redis is unreachable, with each limit divided by the number of replicas, so the fleet as a whole
  stays near the configured limit instead of multiplying it.

Configuration (top-level ``state`` section)::

    state:
      url: redis://redis.internal:6379/0   # or rediss:// (TLS), unix:///run/redis.sock
      replicas: 6          # processes sharing the limits (for the fallback share); default: --workers
      timeout: 0.5         # seconds per Redis command before it counts as down
      lease: 30            # seconds a concurrency slot outlives a crashed request
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from toolmesh.errors import StateUnavailableError, validate_section
from toolmesh.resilience.limits import TokenBucket

__all__ = ["Admission", "Limit", "LocalLimiter", "RequestLimiter", "StateSettings", "StateUnavailableError"]

logger = logging.getLogger(__name__)

_SCHEMES = ("redis://", "rediss://", "unix://")


class StateSettings(BaseModel):
    """The validated ``state`` section; ``url`` unset means every limit stays per process."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    #: Processes sharing the limits; the fallback share of each is limit ÷ replicas. None: the caller's default.
    replicas: int | None = Field(default=None, ge=1, le=10_000)
    timeout: float = Field(default=0.5, gt=0, le=60)
    connect_timeout: float = Field(default=0.5, gt=0, le=60)
    #: Seconds a concurrency slot is held without renewal (renewed every lease/3 while its request runs).
    lease: float = Field(default=30.0, ge=1, le=86_400)
    #: Cap of the reconnect back-off while Redis is down (seconds).
    max_backoff: float = Field(default=5.0, gt=0, le=300)
    #: First part of every key (several deployments can share one Redis).
    prefix: str = Field(default="tm", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    #: Cached tool results larger than this (JSON bytes) stay in each process's own cache; 0 keeps
    #: every result there (no shared level). Redis holds them for their TTL: size its memory for them.
    shared_results_max_bytes: int = Field(default=256 * 1024, ge=0, le=64 << 20)

    @model_validator(mode="before")
    @classmethod
    def _retired(cls, data: Any) -> Any:
        # state.max_connections sized redis-py's pool; the pipelined client keeps one connection
        # per process, so the key is accepted (old configs still load) and ignored, with a warning.
        if isinstance(data, dict) and "max_connections" in data:
            data = {k: v for k, v in data.items() if k != "max_connections"}
            logger.warning("state.max_connections is no longer used (one pipelined Redis connection per process)")
        return data

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(_SCHEMES):
            raise ValueError(f"state.url must start with one of {', '.join(_SCHEMES)}, not {v.split(':', 1)[0]!r}")
        return v

    @classmethod
    def from_section(cls, section: dict[str, Any], source: str | None = None) -> StateSettings:
        """Validate the raw section; a :class:`ConfigError` names the first bad key."""
        return validate_section(cls, section or {}, "state", source)


Kind = Literal["bucket", "window", "slots"]


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit on a request. Build with :meth:`bucket`, :meth:`window` or :meth:`slots`.

    ``name`` identifies the limit inside its tenant (``"t"``, ``"k:<key id>"``, ``"uw:<user>"``);
    ``label`` is what a refusal reports (``"tenant acme"``).
    """

    kind: Kind
    name: str
    amount: float  # bucket: refill rate per second; window / slots: the maximum count
    span: float  # bucket: capacity; window: seconds; slots: lease seconds
    label: str
    cost: float = 1.0  # bucket: tokens a request takes (windows and slots: always one)

    @classmethod
    def bucket(cls, name: str, rate: float, capacity: float, label: str = "", cost: float = 1.0) -> Limit:
        """A token bucket of ``capacity`` tokens refilled at ``rate`` per second; a request takes ``cost``."""
        if not (rate > 0 and capacity >= 1 and 0 < cost <= capacity):
            raise ValueError(f"bucket {name!r}: rate must be > 0, capacity >= 1 and 0 < cost <= capacity")
        return cls("bucket", name, float(rate), float(capacity), label or name, float(cost))

    @classmethod
    def window(cls, name: str, limit: int, seconds: float, label: str = "") -> Limit:
        """At most ``limit`` admissions in any ``seconds``-long window (an exact sliding log)."""
        if not (limit >= 1 and seconds > 0):
            raise ValueError(f"window {name!r}: limit must be >= 1 and seconds > 0")
        return cls("window", name, float(limit), float(seconds), label or name)

    @classmethod
    def slots(cls, name: str, limit: int, lease: float = 30.0, label: str = "") -> Limit:
        """At most ``limit`` requests in flight; a slot is held until released (or its lease lapses)."""
        if not (limit >= 1 and lease > 0):
            raise ValueError(f"slots {name!r}: limit must be >= 1 and lease > 0")
        return cls("slots", name, float(limit), float(lease), label or name)

    def share(self, replicas: int) -> Limit:
        """This limit divided among ``replicas`` processes (never below one request)."""
        if replicas <= 1:
            return self
        if self.kind == "bucket":
            span = max(1.0, self.cost, self.span / replicas)
            return Limit(self.kind, self.name, self.amount / replicas, span, self.label, self.cost)
        return Limit(self.kind, self.name, float(max(1, math.floor(self.amount / replicas))), self.span, self.label)


@dataclass(slots=True)
class Admission:
    """The decision on one request. When admitted, :meth:`release` must follow the response
    (it frees concurrency slots; a no-op otherwise, safe to call twice)."""

    admitted: bool
    retry_after: float = 0.0
    #: The label of the limit that refused (``None`` when admitted).
    refused_by: str | None = None
    #: False when decided by this process alone (no shared state configured, or Redis down).
    shared: bool = False
    on_release: Callable[[], Awaitable[None]] | None = field(default=None, repr=False)

    async def release(self) -> None:
        """Free what the admission holds (concurrency slots)."""
        hook, self.on_release = self.on_release, None
        if hook is not None:
            await hook()


class RequestLimiter(Protocol):
    """Admits requests against a set of limits per tenant, all or nothing."""

    async def admit(self, tenant: str, limits: Sequence[Limit], request_id: str | None = None) -> Admission:
        """Charge every limit, or none and say which refused and when to retry."""
        ...


class _Window:
    __slots__ = ("starts",)

    def __init__(self) -> None:
        self.starts: deque[float] = deque()


class LocalLimiter:
    """:class:`RequestLimiter` for one process (single event loop: plain counters, no locks).

    ``replicas`` > 1 divides every limit by that many processes (the fallback share).
    """

    def __init__(self, replicas: int = 1, *, busy_retry_after: float = 1.0, max_entries: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if replicas < 1:
            raise ValueError("replicas must be >= 1")
        self.replicas = replicas
        self.busy_retry_after = busy_retry_after
        self.max_entries = max_entries
        self._clock = clock
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._windows: dict[tuple[str, str], _Window] = {}
        self._slots: dict[tuple[str, str], int] = {}

    def _bucket(self, key: tuple[str, str], lim: Limit) -> TokenBucket:
        tb = self._buckets.get(key)
        if tb is None or tb.rate != lim.amount or tb.capacity != lim.span:
            if len(self._buckets) >= self.max_entries:
                self._buckets.clear()  # bounded: forgetting a bucket only refills it
            tb = self._buckets[key] = TokenBucket(lim.amount, lim.span, self._clock, name=lim.label)
        return tb

    def _window(self, key: tuple[str, str], lim: Limit, now: float) -> deque[float]:
        w = self._windows.get(key)
        if w is None:
            if len(self._windows) >= self.max_entries:
                horizon = now - lim.span
                for k in [k for k, v in self._windows.items() if not v.starts or v.starts[-1] <= horizon]:
                    del self._windows[k]
            w = self._windows[key] = _Window()
        starts, horizon = w.starts, now - lim.span
        while starts and starts[0] <= horizon:
            starts.popleft()
        return starts

    async def admit(self, tenant: str, limits: Sequence[Limit], request_id: str | None = None) -> Admission:
        """Decide now (never awaits anything: the fallback path must stay cheap)."""
        return self.admit_now(tenant, limits)

    def admit_now(self, tenant: str, limits: Sequence[Limit]) -> Admission:
        """:meth:`admit` without the coroutine (for synchronous callers)."""
        now = self._clock()
        shares = [lim.share(self.replicas) for lim in limits]
        for lim in shares:  # first pass: would every limit admit?
            key = (tenant, lim.name)
            if lim.kind == "bucket":
                wait = self._bucket(key, lim).time_until(lim.cost)
                if wait > 0:
                    return Admission(False, wait, lim.label)
            elif lim.kind == "window":
                starts = self._window(key, lim, now)
                if len(starts) >= lim.amount:
                    return Admission(False, max(0.001, starts[0] + lim.span - now), lim.label)
            elif self._slots.get(key, 0) >= lim.amount:
                return Admission(False, self.busy_retry_after, lim.label)
        held: list[tuple[str, str]] = []
        for lim in shares:  # second pass: charge them all
            key = (tenant, lim.name)
            if lim.kind == "bucket":
                self._bucket(key, lim).try_acquire(lim.cost)
            elif lim.kind == "window":
                self._windows[key].starts.append(now)
            else:
                self._slots[key] = self._slots.get(key, 0) + 1
                held.append(key)
        if not held:
            return Admission(True)

        async def release() -> None:
            self.release_slots(held)

        return Admission(True, on_release=release)

    def release_slots(self, keys: Sequence[tuple[str, str]]) -> None:
        """Give back concurrency slots taken by :meth:`admit_now`."""
        for key in keys:
            left = self._slots.get(key, 0) - 1
            if left > 0:
                self._slots[key] = left
            else:
                self._slots.pop(key, None)

    def in_flight(self, tenant: str, name: str) -> int:
        """Slots of one concurrency limit held in this process."""
        return self._slots.get((tenant, name), 0)
