"""Retries with exponential backoff and jitter, only for retryable failures (HUB-6).

Backoff for retry ``n`` (1-based) has the ceiling ``min(max_delay, base_delay * multiplier**(n-1))``.
Jitter modes (see the AWS Architecture Blog, "Exponential Backoff And Jitter"):

* ``"full"`` — uniform in ``[0, ceiling]``: spreads a thundering herd best (the default);
* ``"equal"`` — uniform in ``[ceiling/2, ceiling]``: keeps a minimum wait;
* ``"none"`` — exactly the ceiling (deterministic; for tests and tooling).
"""

from __future__ import annotations

import asyncio
import inspect
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Literal, TypeVar

__all__ = ["Jitter", "RetryPolicy", "default_is_retryable"]

T = TypeVar("T")
Jitter = Literal["full", "equal", "none"]


def default_is_retryable(exc: BaseException) -> bool:
    """True when the exception says so through a truthy ``retryable`` attribute (see errors.py)."""
    return bool(getattr(exc, "retryable", False))


class RetryPolicy:
    """How often and how long to wait before repeating a failed operation.

    Immutable in use and shareable between concurrent callers (the RNG is the only shared
    state, which is fine on one event loop).
    """

    __slots__ = (
        "_clock",
        "_rng",
        "_sleep",
        "base_delay",
        "jitter",
        "max_attempts",
        "max_delay",
        "multiplier",
        "respect_retry_after",
    )

    def __init__(
        self,
        max_attempts: int = 3,
        base_delay: float = 0.05,
        max_delay: float = 2.0,
        multiplier: float = 2.0,
        jitter: Jitter = "full",
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        respect_retry_after: bool = True,
    ) -> None:
        """Args:
        max_attempts: total attempts including the first (1 = never retry).
        base_delay: ceiling of the first backoff, seconds.
        max_delay: cap of every backoff ceiling, seconds.
        multiplier: growth of the ceiling per retry.
        jitter: ``"full"``, ``"equal"`` or ``"none"``.
        rng: random source (pass ``random.Random(seed)`` in tests).
        clock: monotonic clock used against ``deadline``.
        sleep: awaitable sleep (inject a fake one in tests).
        respect_retry_after: wait at least an error's numeric ``retry_after`` attribute
            (a server's hint), still within the deadline.
        """
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if base_delay < 0 or max_delay < 0:
            raise ValueError("delays must be >= 0")
        if multiplier < 1:
            raise ValueError("multiplier must be >= 1")
        if jitter not in ("full", "equal", "none"):
            raise ValueError(f"unknown jitter mode {jitter!r}; expected 'full', 'equal' or 'none'")
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.multiplier = multiplier
        self.jitter: Jitter = jitter
        self.respect_retry_after = respect_retry_after
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock
        self._sleep = sleep

    def ceiling(self, retry: int) -> float:
        """Upper bound of the backoff before retry number ``retry`` (1-based)."""
        try:
            raw = self.base_delay * self.multiplier ** (retry - 1)
        except OverflowError:
            return self.max_delay
        return raw if raw < self.max_delay else self.max_delay

    def delay(self, retry: int) -> float:
        """A jittered backoff before retry number ``retry`` (1-based)."""
        cap = self.ceiling(retry)
        if self.jitter == "full":
            return self._rng.uniform(0.0, cap)
        if self.jitter == "equal":
            half = cap / 2.0
            return half + self._rng.uniform(0.0, half)
        return cap

    def delays(self) -> Iterator[float]:
        """The ``max_attempts - 1`` backoffs a full run would sleep (jittered)."""
        for retry in range(1, self.max_attempts):
            yield self.delay(retry)

    async def run(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        is_retryable: Callable[[BaseException], bool] | None = None,
        on_retry: Callable[[int, BaseException, float], Any] | None = None,
        deadline: float | None = None,
    ) -> T:
        """Await ``fn()`` until it succeeds, a failure is not retryable, attempts run out, or the
        next backoff would end past ``deadline``; then the last error is raised unchanged.

        Args:
            fn: zero-argument coroutine function: one attempt.
            is_retryable: decides what to retry; replaces :func:`default_is_retryable` (compose
                with it to widen, or pass a stricter one, e.g. for non-idempotent tools).
                Cancellation and other non-``Exception`` errors are never retried.
            on_retry: ``(retry_number, error, delay)`` before each backoff; may be async.
            deadline: absolute time on this policy's clock after which no retry starts.
        """
        check = default_is_retryable if is_retryable is None else is_retryable
        attempt = 1
        while True:
            try:
                return await fn()
            except Exception as exc:
                wait = self.backoff(attempt, exc, deadline) if check(exc) else None
                if wait is None:
                    raise
                if on_retry is not None:
                    res = on_retry(attempt, exc, wait)
                    if inspect.isawaitable(res):
                        await res
            await self._sleep(wait)
            attempt += 1

    def backoff(self, attempt: int, exc: BaseException, deadline: float | None = None) -> float | None:
        """The wait before the next attempt after attempt number ``attempt`` (1-based) failed with
        a retryable ``exc``; ``None`` when there is none (attempts used up, or the wait would end
        past ``deadline``). For callers that run their own loop (the Hub's call path)."""
        if attempt >= self.max_attempts:
            return None
        wait = self.delay(attempt)
        if self.respect_retry_after:
            hint = getattr(exc, "retry_after", None)
            if isinstance(hint, int | float) and hint > wait:
                wait = float(hint)
        if deadline is not None and self._clock() + wait >= deadline:
            return None
        return wait

    async def sleep(self, seconds: float) -> None:
        """Sleep with this policy's (injectable) sleep function."""
        await self._sleep(seconds)

    def __repr__(self) -> str:
        return (
            f"RetryPolicy(max_attempts={self.max_attempts}, base_delay={self.base_delay}, "
            f"max_delay={self.max_delay}, multiplier={self.multiplier}, jitter={self.jitter!r})"
        )
