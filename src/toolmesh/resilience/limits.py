"""Bounded concurrency and token buckets (HUB-6, reused by LLM-4 / AGT-6 rate limits).

Single event loop, no locks: every method runs between awaits, so plain counters suffice.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from toolmesh.errors import ConcurrencyLimitError

__all__ = ["ConcurrencyLimiter", "MultiLimiter", "TokenBucket"]

# A global creation order: MultiLimiter acquires in this order everywhere, so two callers can
# never each hold a limiter the other waits for.
_order = itertools.count()


class ConcurrencyLimiter:
    """At most ``limit`` holders at once; others wait in FIFO order.

    A released slot is handed directly to the oldest waiter, so ``in_flight`` never exceeds
    ``limit`` and a newcomer cannot overtake a waiter. The uncontended path allocates nothing.
    """

    __slots__ = ("_in_flight", "_limit", "_waiters", "name", "order")

    def __init__(self, limit: int, *, name: str = "") -> None:
        """``limit`` >= 1 concurrent holders; ``name`` appears in errors (e.g. ``"server inventory"``)."""
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self._limit = limit
        self._in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.name = name
        self.order = next(_order)

    @property
    def limit(self) -> int:
        """Maximum concurrent holders."""
        return self._limit

    @property
    def in_flight(self) -> int:
        """Current holders."""
        return self._in_flight

    @property
    def waiting(self) -> int:
        """Callers waiting for a slot."""
        return len(self._waiters)

    def set_limit(self, limit: int) -> None:
        """Change the limit at run time; a raised limit admits waiters at once, a lowered one
        takes effect as holders release."""
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self._limit = limit
        while self._waiters and self._in_flight < self._limit:
            self._in_flight += 1
            self._waiters.popleft().set_result(None)

    def try_acquire(self) -> bool:
        """Take a slot without waiting; False when none is free (or others are queued)."""
        if self._in_flight < self._limit and not self._waiters:
            self._in_flight += 1
            return True
        return False

    async def acquire(self, timeout: float | None = None) -> None:
        """Take a slot, waiting at most ``timeout`` seconds (``None``: forever; ``0``: not at all).

        Raises :class:`ConcurrencyLimitError` on timeout."""
        if self._in_flight < self._limit and not self._waiters:
            self._in_flight += 1
            return
        if timeout is not None and timeout <= 0:
            raise self._error(timeout)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            if timeout is None:
                await fut
            else:
                async with asyncio.timeout(timeout):
                    await fut
        except BaseException as exc:
            if fut.done() and not fut.cancelled():
                # The slot was handed to us just as we gave up: pass it on.
                self.release()
            else:
                fut.cancel()
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass
            if isinstance(exc, TimeoutError):
                raise self._error(timeout) from None
            raise

    def _error(self, timeout: float | None) -> ConcurrencyLimitError:
        what = f"concurrency limit {self.name!r}" if self.name else "concurrency limit"
        return ConcurrencyLimitError(
            f"{what} of {self._limit} reached ({self._in_flight} in flight, {len(self._waiters)} waiting); "
            f"no slot within {timeout}s"
        )

    def release(self) -> None:
        """Give a slot back (hand it to the oldest waiter, if any)."""
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                if self._in_flight <= self._limit:
                    fut.set_result(None)  # slot transferred: in_flight unchanged
                    return
                waiters.appendleft(fut)  # limit was lowered: shrink first
                break
        if self._in_flight <= 0:
            raise RuntimeError(f"release() without acquire() on {self!r}")
        self._in_flight -= 1

    async def __aenter__(self) -> ConcurrencyLimiter:
        if self._in_flight < self._limit and not self._waiters:
            self._in_flight += 1
        else:
            await self.acquire()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return (
            f"ConcurrencyLimiter({self.name!r}, limit={self._limit}, in_flight={self._in_flight}, "
            f"waiting={len(self._waiters)})"
        )


class MultiLimiter:
    """Hold several limiters at once (e.g. per server and per tenant).

    They are always acquired in their global creation order, whatever order they were given
    in, which rules out deadlock between callers combining the same limiters differently.
    Create one per combination and reuse it: it holds no per-call state.
    """

    __slots__ = ("limiters",)

    def __init__(self, *limiters: ConcurrencyLimiter) -> None:
        """Duplicates are dropped (acquiring a limiter twice could deadlock at limit 1)."""
        unique = {id(lim): lim for lim in limiters}
        self.limiters: tuple[ConcurrencyLimiter, ...] = tuple(sorted(unique.values(), key=_by_order))

    async def acquire(self, timeout: float | None = None) -> None:
        """Acquire all, within ``timeout`` seconds overall; on failure none is held."""
        deadline = None if timeout is None else time.monotonic() + timeout
        taken = 0
        try:
            for lim in self.limiters:
                if lim.try_acquire():
                    taken += 1
                    continue
                await lim.acquire(None if deadline is None else deadline - time.monotonic())
                taken += 1
        except BaseException:
            for lim in self.limiters[:taken]:
                lim.release()
            raise

    def release(self) -> None:
        """Release all, in reverse order."""
        for lim in reversed(self.limiters):
            lim.release()

    async def __aenter__(self) -> MultiLimiter:
        await self.acquire()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _by_order(lim: ConcurrencyLimiter) -> int:
    return lim.order


class TokenBucket:
    """A token bucket: ``capacity`` tokens, refilled continuously at ``rate`` tokens/second.

    :meth:`acquire` reserves tokens at once and may drive the balance negative, then sleeps
    until the debt is repaid. That makes waiters FIFO-fair and O(1) with no wake-up loop; a
    caller whose wait would exceed its timeout fails immediately without reserving anything.
    """

    __slots__ = ("_clock", "_last", "_sleep", "_tokens", "capacity", "name", "rate")

    def __init__(
        self,
        rate: float,
        capacity: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        name: str = "",
        initial: float | None = None,
    ) -> None:
        """``rate`` > 0 tokens/s, ``capacity`` > 0; starts full unless ``initial`` is given."""
        if rate <= 0 or capacity <= 0:
            raise ValueError("rate and capacity must be > 0")
        self.rate = float(rate)
        self.capacity = float(capacity)
        self.name = name
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.capacity if initial is None else float(initial)
        self._last = clock()

    def _refill(self) -> float:
        now = self._clock()
        elapsed = now - self._last
        if elapsed > 0:
            tokens = self._tokens + elapsed * self.rate
            self._tokens = tokens if tokens < self.capacity else self.capacity
            self._last = now
        return now

    @property
    def tokens(self) -> float:
        """Tokens available now (negative while reserved by waiters)."""
        self._refill()
        return self._tokens

    def _check(self, n: float) -> None:
        if n <= 0 or n > self.capacity:
            raise ValueError(f"cannot take {n} tokens from a bucket of capacity {self.capacity}")

    def try_acquire(self, n: float = 1) -> bool:
        """Take ``n`` tokens if available now."""
        self._check(n)
        self._refill()
        if self._tokens >= n:
            self._tokens -= n
            return True
        return False

    def time_until(self, n: float = 1) -> float:
        """Seconds until ``n`` tokens would be available (0 if now)."""
        self._check(n)
        self._refill()
        missing = n - self._tokens
        return missing / self.rate if missing > 0 else 0.0

    async def take(self, n: float = 1) -> float:
        """Take ``n`` tokens if available now: 0.0 when taken, else the seconds until they would
        be (nothing is taken). The :class:`~toolmesh.resilience.abc.RateLimiter` form of
        :meth:`try_acquire` + :meth:`time_until`."""
        if self.try_acquire(n):
            return 0.0
        return self.time_until(n)

    async def acquire(self, n: float = 1, timeout: float | None = None) -> None:
        """Take ``n`` tokens, waiting for them; raise :class:`ConcurrencyLimitError` at once if
        that would take longer than ``timeout`` seconds."""
        wait = self.time_until(n)
        if wait > 0 and timeout is not None and wait > timeout:
            label = f"rate limit {self.name!r}" if self.name else "rate limit"
            raise ConcurrencyLimitError(
                f"{label} ({self.rate:g}/s, burst {self.capacity:g}): {n:g} tokens need {wait:.3f}s, timeout {timeout}s"
            )
        self._tokens -= n
        if wait <= 0:
            return
        try:
            await self._sleep(wait)
        except BaseException:
            self.refund(n)
            raise

    def refund(self, n: float) -> None:
        """Give back ``n`` tokens (e.g. a reservation that was not used), up to capacity."""
        self._refill()
        self._tokens = min(self.capacity, self._tokens + n)

    def set_rate(self, rate: float, capacity: float | None = None) -> None:
        """Change rate (and capacity) at run time, e.g. for adaptive rate limits."""
        if rate <= 0 or (capacity is not None and capacity <= 0):
            raise ValueError("rate and capacity must be > 0")
        self._refill()
        self.rate = float(rate)
        if capacity is not None:
            self.capacity = float(capacity)
            self._tokens = min(self._tokens, self.capacity)

    def __repr__(self) -> str:
        return f"TokenBucket({self.name!r}, rate={self.rate:g}, capacity={self.capacity:g})"
