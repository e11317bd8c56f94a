"""The model deployments' ``rpm``/``tpm`` held once for every worker and replica (LLM-4, STO-2).

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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from toolmesh.store.redis_limits import SharedLimiter, limit_key, lua_script
from toolmesh.store.shared import Limit, StateUnavailableError

__all__ = ["SCOPE", "Bucket", "SharedDeploymentLimits"]

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


class SharedDeploymentLimits:
    """:class:`~toolmesh.llm.ratelimit.FleetLimits` in Redis, through the process's :class:`SharedLimiter`."""

    def __init__(self, limiter: SharedLimiter) -> None:
        self.limiter = limiter
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Corrections that could not be written (Redis down): the bucket keeps the estimate.
        self.unsettled = 0

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
        if not bucket.cost:
            return
        key = limit_key(self.limiter.state.settings.prefix, SCOPE, self._name(deployment, bucket.dimension))
        task = asyncio.get_running_loop().create_task(
            self._adjust(key, [repr(bucket.rate), repr(bucket.capacity), repr(bucket.cost)]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _adjust(self, key: str, args: list[str | float]) -> None:
        try:
            await self.limiter.state.run(_ADJUST, [key], args)
        except (StateUnavailableError, OSError) as exc:
            self.unsettled += 1
            log.debug("deployment bucket %s not corrected: %s", key, exc)
        except Exception:
            self.unsettled += 1
            log.exception("deployment bucket %s not corrected", key)
