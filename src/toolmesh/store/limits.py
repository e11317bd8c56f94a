"""Per-user limits (AGT-6): concurrent runs in flight and requests per minute.

``async with limits.run(tenant, user):`` admits a run or raises
:class:`~toolmesh.errors.RequestRejectedError` with ``retry_after`` (seconds). The
requests-per-minute limit is a sliding one-minute log of admitted runs, exact and
bounded: at most ``requests_per_minute`` timestamps per user, and users idle for a
minute are forgotten.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from types import TracebackType

from toolmesh.errors import RequestRejectedError

__all__ = ["RunSlot", "UserLimits"]

_SWEEP_EVERY = 4096


class _State:
    __slots__ = ("in_flight", "starts")

    def __init__(self) -> None:
        self.in_flight = 0
        self.starts: deque[float] = deque()


class RunSlot:
    """One run slot of (tenant, user), held while the ``async with`` block runs."""

    __slots__ = ("_key", "_limits")

    def __init__(self, limits: UserLimits, key: tuple[str, str]) -> None:
        self._limits = limits
        self._key = key

    async def __aenter__(self) -> None:
        self._limits.acquire(*self._key)

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._limits.release(*self._key)


class UserLimits:
    """Limits per (tenant, user); None disables a limit."""

    def __init__(self, max_concurrent_runs: int | None = 4, requests_per_minute: int | None = 60, *,
                 busy_retry_after: float = 1.0, window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        for name, v in (("max_concurrent_runs", max_concurrent_runs), ("requests_per_minute", requests_per_minute)):
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ValueError(f"{name} must be a positive int or None, not {v!r}")
        self.max_concurrent_runs = max_concurrent_runs
        self.requests_per_minute = requests_per_minute
        self.busy_retry_after = busy_retry_after
        self.window = window
        self._clock = clock
        self._users: dict[tuple[str, str], _State] = {}
        self._admitted = 0

    def run(self, tenant: str, user: str) -> RunSlot:
        """An async context manager holding one run slot of (tenant, user)."""
        if not isinstance(tenant, str) or not isinstance(user, str):
            raise TypeError("tenant and user must be str")
        return RunSlot(self, (tenant, user))

    def acquire(self, tenant: str, user: str) -> None:
        """Admit one run now or raise ``RequestRejectedError``; pair with :meth:`release`."""
        now = self._clock()
        key = (tenant, user)
        st = self._users.get(key)
        if st is None:
            st = self._users[key] = _State()
        if self.max_concurrent_runs is not None and st.in_flight >= self.max_concurrent_runs:
            raise RequestRejectedError(
                f"too many runs in flight for this user (limit {self.max_concurrent_runs})",
                reason="concurrency", retry_after=self.busy_retry_after)
        rpm = self.requests_per_minute
        if rpm is not None:
            starts, horizon = st.starts, now - self.window
            while starts and starts[0] <= horizon:
                starts.popleft()
            if len(starts) >= rpm:
                raise RequestRejectedError(
                    f"request rate limit exceeded for this user ({rpm}/min)",
                    reason="rate", retry_after=max(0.0, starts[0] + self.window - now))
            starts.append(now)
        st.in_flight += 1
        self._admitted += 1
        if self._admitted % _SWEEP_EVERY == 0:
            self._sweep(now)

    def release(self, tenant: str, user: str) -> None:
        """End one run admitted by :meth:`acquire`."""
        st = self._users.get((tenant, user))
        if st is None or st.in_flight <= 0:
            raise RuntimeError("release() without a matching acquire()")
        st.in_flight -= 1

    def in_flight(self, tenant: str, user: str) -> int:
        """Runs of (tenant, user) in flight now."""
        st = self._users.get((tenant, user))
        return st.in_flight if st else 0

    def _sweep(self, now: float) -> None:
        horizon = now - self.window
        idle = [k for k, st in self._users.items()
                if st.in_flight == 0 and (not st.starts or st.starts[-1] <= horizon)]
        for k in idle:
            del self._users[k]

    def __len__(self) -> int:
        """Users currently tracked (bounded: idle users are swept)."""
        return len(self._users)
