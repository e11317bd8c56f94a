"""One routed LLM call's bookkeeping: admission against rate limits, the next deployment to try,
fallback and cooldown on failure, latency on success (used by :class:`~toolmesh.llm.router.Router`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from toolmesh.errors import (
    ContextOverflowError,
    MalformedResponseError,
    ProviderUnavailableError,
    RateLimitedError,
    UnknownModelError,
)
from toolmesh.llm.ratelimit import FleetLimits, KeyLimiter
from toolmesh.llm.routing import INF, PROBE_MAX_S, PROBE_MIN_S, TYPICAL_OUTPUT_TOKENS, Attempt, DeploymentState
from toolmesh.llm.types import ChatRequest, ChatResponse

__all__ = ["CallPolicy", "RoutedCall"]


class CallPolicy(Protocol):
    """What a call needs from its router: the clock, cooldown settings, keyed limits and the
    latency recorder (:class:`~toolmesh.llm.router.Router` provides these)."""

    clock: Callable[[], float]
    cooldown: float
    failure_threshold: int
    tenant_limits: KeyLimiter | None
    user_limits: KeyLimiter | None
    fleet: FleetLimits | None

    def record_latency(self, st: DeploymentState, ttft_ms: float | None, total_ms: float) -> None: ...


class RoutedCall:
    """One request's walk along its candidate chain."""

    __slots__ = ("attempts", "deadline", "est", "last_exc", "min_window", "order", "request", "router",
                 "tenant", "user_key")

    def __init__(self, router: CallPolicy, request: ChatRequest, order: list[DeploymentState], est_in: int,
                 tenant: str | None, user: str | None, timeout: float | None) -> None:
        self.router = router
        self.request = request
        self.est = est_in + (request.max_tokens or TYPICAL_OUTPUT_TOKENS)
        self.order = order
        self.deadline = None if timeout is None else router.clock() + timeout
        self.tenant = tenant
        self.user_key = None if user is None else f"{tenant or ''}/{user}"
        self.attempts: list[Attempt] = []
        self.last_exc: BaseException | None = None
        self.min_window: int | None = None

    def _remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - self.router.clock()

    async def admit(self) -> None:
        """Tenant and user limits, before any deployment is chosen."""
        r = self.router
        if r.tenant_limits is not None and self.tenant is not None:
            await r.tenant_limits.acquire(self.tenant, self.est, self._remaining())
        if r.user_limits is not None and self.user_key is not None:
            await r.user_limits.acquire(self.user_key, self.est, self._remaining())

    def _reconcile_keys(self, actual: int) -> None:
        r = self.router
        if r.tenant_limits is not None and self.tenant is not None:
            r.tenant_limits.reconcile(self.tenant, self.est, actual)
        if r.user_limits is not None and self.user_key is not None:
            r.user_limits.reconcile(self.user_key, self.est, actual)

    def refund(self) -> None:
        """The call was abandoned (cancelled): give the keyed token estimate back."""
        self._reconcile_keys(0)

    async def next(self) -> tuple[DeploymentState, float]:
        """The next deployment to try (its limiter slot taken, and the fleet's) and the attempt's timeout."""
        fleet = self.router.fleet
        while True:
            best, t = await self._next_here()
            if fleet is None:
                break
            wait = await fleet.take(best.dep.name, best.limiter.fleet_buckets(self.est))
            if wait <= 0:
                break
            # Other processes used the deployment's allowance: wait here for it, or take another.
            best.limiter.defer(wait, self.est)
        self.order.remove(best)
        return best, t

    async def _next_here(self) -> tuple[DeploymentState, float]:
        """:meth:`next` by this process's own view of the limits (the chosen one stays in ``order``)."""
        clock = self.router.clock
        now = clock()
        best: DeploymentState | None = None
        best_wait = INF
        cool_until, cool_reason = INF, ""
        for st in self.order:
            if self.min_window is not None and (st.context_window is None or st.context_window <= self.min_window):
                continue
            if st.cooldown_until > now:
                if st.cooldown_until < cool_until:
                    cool_until, cool_reason = st.cooldown_until, st.cooldown_reason
                continue
            wait = st.limiter.time_until(self.est)
            if wait <= 0:
                best, best_wait = st, 0.0
                break
            if wait < best_wait:
                best, best_wait = st, wait
        if best is None:
            best, best_wait = self._trial(now), 0.0
            if best is None:
                raise self._exhausted(cool_until - now, cool_reason)
        remaining = None if self.deadline is None else self.deadline - now
        if best_wait > 0:
            if remaining is not None and best_wait > remaining:
                raise self._final(RateLimitedError(
                    f"model {self.request.model!r}: every deployment is at its rate limit for "
                    f"{best_wait:.3f}s more, past the request timeout", retry_after=best_wait))
            await best.limiter.acquire(self.est, timeout=remaining)
            remaining = self._remaining()
        else:
            best.limiter.try_acquire(self.est)
        t = best.dep.timeout if remaining is None else min(best.dep.timeout, remaining)
        if t <= 0:
            raise self._final(ProviderUnavailableError(
                f"model {self.request.model!r}: request timeout reached after {len(self.attempts)} attempt(s)",
                model=self.request.model))
        return best, t

    def _settle(self, st: DeploymentState, actual: int) -> None:
        """The deployment's token buckets (its own and the fleet's) learn the real usage."""
        fleet = self.router.fleet
        if fleet is not None and (correction := st.limiter.fleet_settlement(self.est, actual)) is not None:
            fleet.settle(st.dep.name, correction)
        st.limiter.reconcile(self.est, actual)

    def _trial(self, now: float) -> DeploymentState | None:
        """Every candidate is cooling: one that cools after failures (not a rate limit, which
        says when to come back) may take this request as a trial once its probe wait is over.
        Without trials a recovered provider stayed unused for the whole cooldown (30 s)."""
        for st in self.order:
            if self.min_window is not None and (st.context_window is None or st.context_window <= self.min_window):
                continue
            if st.cooldown_reason == "unavailable" and now >= st.probe_at and st.limiter.time_until(self.est) <= 0:
                st.probe_at = now + st.probe_gap  # one trial at a time; the next only after the gap
                st.probe_gap = min(st.probe_gap * 2, PROBE_MAX_S)
                return st
        return None

    def _exhausted(self, cool_left: float, reason: str) -> BaseException:
        if self.last_exc is not None:
            return self._final(self.last_exc)
        what = f"model {self.request.model!r}: every deployment is cooling down"
        if reason == "rate_limited":
            return self._final(RateLimitedError(f"{what} after rate limiting", retry_after=cool_left))
        return self._final(ProviderUnavailableError(f"{what} after failures (next in {cool_left:.1f}s)",
                                                    model=self.request.model))

    def _final(self, exc: BaseException) -> BaseException:
        self._reconcile_keys(0)
        vars(exc)["attempts"] = tuple(self.attempts)
        if self.attempts:
            exc.add_note("router attempts: " + "; ".join(f"{a.deployment} ({a.model}): {a.error}"
                                                          for a in self.attempts))
        return exc

    def failed(self, st: DeploymentState, exc: BaseException, t0: float, timeout: float, *,
               final: bool = False) -> BaseException:
        """Record a failed attempt (cooldown, AIMD); returns the error to report."""
        r = self.router
        dep = st.dep
        if isinstance(exc, TimeoutError):
            exc = ProviderUnavailableError(f"deployment {dep.name!r} timed out after {timeout:.3g}s",
                                           provider=dep.provider.name, model=dep.model)
        self.attempts.append(Attempt(dep.name, st.model, f"{type(exc).__name__}: {exc}",
                                     (r.clock() - t0) * 1000.0))
        self._settle(st, 0)
        if isinstance(exc, ContextOverflowError):
            self.min_window = max(self.min_window or 0, st.context_window or 0)
        elif isinstance(exc, RateLimitedError):
            st.failures += 1
            st.limiter.on_429(exc.retry_after)
            _cool(st, r, exc.retry_after if exc.retry_after is not None else r.cooldown, "rate_limited")
        elif isinstance(exc, ProviderUnavailableError | MalformedResponseError | UnknownModelError):
            st.failures += 1
            st.consecutive += 1
            if st.consecutive >= r.failure_threshold or isinstance(exc, UnknownModelError):
                _cool(st, r, r.cooldown, "unavailable")
        self.last_exc = exc
        return self._final(exc) if final else exc

    def succeeded(self, st: DeploymentState, response: ChatResponse | None, t0: float,
                  ttft_ms: float | None = None) -> None:
        """Record success: counts, latency EWMA, limiter headers/usage, AIMD recovery."""
        r = self.router
        total = (r.clock() - t0) * 1000.0
        st.successes += 1
        st.consecutive = 0
        if st.cooldown_until:  # a trial succeeded: the deployment is back
            st.cooldown_until = 0.0
            st.probe_gap = PROBE_MIN_S
        lim = st.limiter
        if response is not None:
            if response.latency_ms > 0:
                total = response.latency_ms
            if response.ttft_ms is not None:
                ttft_ms = response.ttft_ms
            actual = response.usage.total_tokens
            if actual:
                self._settle(st, actual)
                self._reconcile_keys(actual)
            if response.headers:
                lim.observe(response.headers)
        lim.on_success()
        r.record_latency(st, ttft_ms, total)
        self.attempts.append(Attempt(st.dep.name, st.model, None, total))


def _cool(st: DeploymentState, r: CallPolicy, seconds: float, reason: str) -> None:
    now = r.clock()
    until = now + seconds
    if until > st.cooldown_until:
        st.cooldown_until = until
        st.cooldown_reason = reason
    if st.probe_at <= now:
        st.probe_at = now + st.probe_gap
