"""Per-user limits (AGT-6) kept in the shared state: the same rules as
:class:`~toolmesh.store.limits.UserLimits`, exact across every worker and replica.

``async with limits.run(tenant, user):`` admits one run (a requests-per-minute sliding window and
a concurrency slot, checked and charged together in one Redis round trip) or raises
:class:`~toolmesh.errors.RequestRejectedError` with ``retry_after``. The slot is released when
the block ends; a crashed worker's slots lapse with their lease.
"""

from __future__ import annotations

import hashlib
from contextvars import ContextVar
from types import TracebackType

from toolmesh.errors import RequestRejectedError
from toolmesh.store.shared import Admission, Limit, RequestLimiter

__all__ = ["SharedUserLimits", "user_limits"]

#: (tenant, user) whose next run in this task was admitted already, together with the request's
#: tenant and key limits in the same script (see :meth:`SharedUserLimits.preadmit`).
_PREADMITTED: ContextVar[tuple[str, str] | None] = ContextVar("toolmesh_preadmitted_run", default=None)

_RATE_LABEL = "user requests per minute"
_BUSY_LABEL = "user runs in flight"


def user_limits(user: str, max_concurrent_runs: int | None, requests_per_minute: int | None,
                *, window: float = 60.0, lease: float = 30.0) -> list[Limit]:
    """The limits of one user's run, for a :class:`~toolmesh.store.shared.RequestLimiter`."""
    # Users come from request bodies: keep keys short whatever they send.
    name = user if len(user) <= 64 else "h:" + hashlib.sha256(user.encode()).hexdigest()[:32]
    limits = []
    if requests_per_minute is not None:
        limits.append(Limit.window("uw:" + name, requests_per_minute, window, _RATE_LABEL))
    if max_concurrent_runs is not None:
        limits.append(Limit.slots("uc:" + name, max_concurrent_runs, lease, _BUSY_LABEL))
    return limits


class _Run:
    __slots__ = ("admission", "limits", "tenant", "user")

    def __init__(self, limits: SharedUserLimits, tenant: str, user: str) -> None:
        self.limits = limits
        self.tenant = tenant
        self.user = user
        self.admission: Admission | None = None

    async def __aenter__(self) -> None:
        if _PREADMITTED.get() == (self.tenant, self.user):
            _PREADMITTED.set(None)  # admitted with the request; its caller releases the slot
            return
        self.admission = await self.limits.acquire(self.tenant, self.user)

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self.admission is not None:
            await self.admission.release()


class SharedUserLimits:
    """A ``UserLimiter`` (see :mod:`toolmesh.agent.protocols`) over a shared :class:`RequestLimiter`."""

    def __init__(self, limiter: RequestLimiter, max_concurrent_runs: int | None = 4,
                 requests_per_minute: int | None = 60, *, window: float = 60.0, lease: float = 30.0) -> None:
        for what, v in (("max_concurrent_runs", max_concurrent_runs), ("requests_per_minute", requests_per_minute)):
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ValueError(f"{what} must be a positive int or None, not {v!r}")
        self.limiter = limiter
        self.max_concurrent_runs = max_concurrent_runs
        self.requests_per_minute = requests_per_minute
        self.window = window
        self.lease = lease

    def run(self, tenant: str, user: str) -> _Run:
        """An async context manager holding one run slot of (tenant, user)."""
        if not isinstance(tenant, str) or not isinstance(user, str):
            raise TypeError("tenant and user must be str")
        return _Run(self, tenant, user)

    def limits_for(self, user: str) -> list[Limit]:
        """The limits one run of ``user`` is admitted against."""
        return user_limits(user, self.max_concurrent_runs, self.requests_per_minute, window=self.window,
                           lease=self.lease)

    def preadmit(self, tenant: str, user: str) -> None:
        """The caller admitted :meth:`limits_for` itself (with other limits, in one round trip): the
        next :meth:`run` of (tenant, user) in this task enters at once, and the caller releases."""
        _PREADMITTED.set((tenant, user))

    @staticmethod
    def clear_preadmitted() -> None:
        """Forget a :meth:`preadmit` that no run used (the request ended before its run)."""
        _PREADMITTED.set(None)

    def is_user_limit(self, label: str | None) -> bool:
        """Whether a refusal came from one of these limits."""
        return label in (_RATE_LABEL, _BUSY_LABEL)

    async def acquire(self, tenant: str, user: str) -> Admission:
        """Admit one run or raise ``RequestRejectedError``; ``release()`` the result when the run ends."""
        admission = await self.limiter.admit(tenant, self.limits_for(user))
        if admission.admitted:
            return admission
        raise self.rejection(admission)

    def rejection(self, admission: Admission) -> RequestRejectedError:
        """The error for a run refused by one of these limits."""
        if admission.refused_by == _BUSY_LABEL:
            return RequestRejectedError(
                f"too many runs in flight for this user (limit {self.max_concurrent_runs})",
                reason="concurrency", retry_after=admission.retry_after)
        return RequestRejectedError(
            f"request rate limit exceeded for this user ({self.requests_per_minute}/min)",
            reason="rate", retry_after=admission.retry_after)
