"""Model-call rate limits held once for every worker and replica (LLM-4, STO-2): each deployment's
``rpm``/``tpm``, and the ``llm.limits`` of each tenant and user.

:class:`SharedDeploymentLimits` is the router's :class:`~toolmesh.llm.ratelimit.FleetLimits` over
Redis. A request takes one request and its token estimate from the deployment's two buckets in one
admission (:meth:`SharedLimiter.admit <toolmesh.store.redis_limits.SharedLimiter.admit>`, the
script every shared limit uses: all or nothing, on Redis's clock); once the real usage is known,
the tokens bucket is corrected by the difference (``adjust.lua``). So a deployment with
``rpm: 600`` gets 600 requests a minute from the whole fleet, not 600 from each process, and its
tokens are reserved before the call rather than counted after it (counting after is how limiters
admit many times their token limit under concurrency).

The rates are the ones the deployment's own :class:`~toolmesh.llm.ratelimit.AdaptiveLimiter`
currently allows (lowered after a 429, or by the provider's ``x-ratelimit-*`` headers), so each
process still adapts; the buckets' keys are ``<prefix>:{llm}:d:<deployment>:r`` and ``…:t``.
While Redis is down each process admits its share (limit ÷ replicas), as every shared limit does.

:class:`SharedKeyLimits` is the same for the router's per-tenant and per-user limits (its
:class:`~toolmesh.llm.ratelimit.KeyLimiter`): keys ``<prefix>:{<tenant>}:lt:<tenant>:r`` and
``<prefix>:{<tenant>}:lu:<tenant>/<user>:r`` (and ``…:t``), so a tenant's ``tpm: 100000`` is
100,000 tokens a minute across the fleet, reserved at admission and settled by the real usage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from toolmesh.errors import RateLimitedError
from toolmesh.store.redis_limits import SharedLimiter, limit_key, lua_script
from toolmesh.store.shared import Limit, StateUnavailableError

__all__ = ["SCOPE", "Bucket", "SharedDeploymentLimits", "SharedKeyLimits"]

log = logging.getLogger("toolmesh.store.redis")

#: The hash tag (the "tenant" part of the keys) of every deployment bucket.
SCOPE = "llm"
_ADJUST = lua_script("adjust.lua", "bucket_lib.lua")
_WHAT = {"r": "requests", "t": "tokens"}


class Bucket(Protocol):
    """One deployment bucket as the router describes it (:class:`toolmesh.llm.ratelimit.FleetBucket`)."""

    @property
    def dimension(self) -> str: ...
    @property
    def rate(self) -> float: ...
    @property
    def capacity(self) -> float: ...
    @property
    def cost(self) -> float: ...


class _Settler:
    """Corrections of token buckets (``adjust.lua``), sent without holding up the caller."""

    def __init__(self, limiter: SharedLimiter) -> None:
        self.limiter = limiter
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Corrections that could not be written (Redis down): the bucket keeps the estimate.
        self.unsettled = 0

    def correct(self, scope: str, name: str, rate: float, capacity: float, delta: float) -> None:
        """Take ``delta`` more tokens from one bucket (negative: give them back); never waits or raises."""
        if not delta:
            return
        key = limit_key(self.limiter.state.settings.prefix, scope, name)
        task = asyncio.get_running_loop().create_task(self._adjust(key, [repr(rate), repr(capacity), repr(delta)]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _adjust(self, key: str, args: list[str | float]) -> None:
        try:
            await self.limiter.state.run(_ADJUST, [key], args)
        except (StateUnavailableError, OSError) as exc:
            self.unsettled += 1
            log.debug("bucket %s not corrected: %s", key, exc)
        except Exception:
            self.unsettled += 1
            log.exception("bucket %s not corrected", key)


class SharedDeploymentLimits(_Settler):
    """:class:`~toolmesh.llm.ratelimit.FleetLimits` in Redis, through the process's :class:`SharedLimiter`."""

    def _name(self, deployment: str, dimension: str) -> str:
        return f"d:{deployment}:{dimension}"

    async def take(self, deployment: str, buckets: Sequence[Bucket]) -> float:
        if not buckets:
            return 0.0
        limits = [Limit.bucket(self._name(deployment, b.dimension), b.rate, b.capacity,
                               f"deployment {deployment} {_WHAT.get(b.dimension, b.dimension)}", cost=b.cost)
                  for b in buckets]
        admission = await self.limiter.admit(SCOPE, limits)
        return 0.0 if admission.admitted else max(admission.retry_after, 1e-3)

    def settle(self, deployment: str, bucket: Bucket) -> None:
        self.correct(SCOPE, self._name(deployment, bucket.dimension), bucket.rate, bucket.capacity, bucket.cost)


class SharedKeyLimits(_Settler):
    """The router's per-tenant or per-user limits (``kind`` ``"tenant"`` or ``"user"``; keys are
    ``tenant`` and ``tenant/user``) in Redis: :class:`~toolmesh.llm.ratelimit.KeyLimiter`."""

    def __init__(self, limiter: SharedLimiter, kind: str, rpm: float | None, tpm: float | None, *,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        super().__init__(limiter)
        self.kind = kind
        self.rpm = rpm
        self.tpm = tpm
        self._sleep = sleep

    def _name(self, key: str, dimension: str) -> str:
        return f"l{self.kind[:1]}:{key}:{dimension}"

    def _limits(self, key: str, estimated_tokens: float) -> list[Limit]:
        out = []
        if self.rpm is not None:
            out.append(Limit.bucket(self._name(key, "r"), self.rpm / 60.0, max(1.0, self.rpm),
                                    f"{self.kind} {key} requests"))
        if self.tpm is not None and estimated_tokens > 0:
            capacity = max(1.0, self.tpm)
            out.append(Limit.bucket(self._name(key, "t"), self.tpm / 60.0, capacity, f"{self.kind} {key} tokens",
                                    cost=min(estimated_tokens, capacity)))
        return out

    async def acquire(self, key: str, estimated_tokens: float = 0, timeout: float | None = None) -> None:
        """Take one request (and tokens) for ``key`` from the fleet's buckets, waiting for them;
        :class:`RateLimitedError` at once when the wait would pass ``timeout``."""
        limits = self._limits(key, estimated_tokens)
        if not limits:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            admission = await self.limiter.admit(key.partition("/")[0], limits)
            if admission.admitted:
                return
            wait = max(admission.retry_after, 1e-3)
            if deadline is not None and time.monotonic() + wait > deadline:
                raise RateLimitedError(f"rate limit of {admission.refused_by or self.kind + ' ' + key}: next slot in "
                                       f"{wait:.3f}s, timeout {timeout}s", retry_after=wait)
            await self._sleep(wait)

    def reconcile(self, key: str, estimated: float, actual_tokens: float) -> None:
        """Correct ``key``'s tokens bucket with the real usage (0 gives the estimate back)."""
        if self.tpm is None:
            return
        capacity = max(1.0, self.tpm)
        charged = min(estimated, capacity) if estimated > 0 else 0.0
        self.correct(key.partition("/")[0], self._name(key, "t"), self.tpm / 60.0, capacity, actual_tokens - charged)
