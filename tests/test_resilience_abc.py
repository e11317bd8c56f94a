"""The resilience protocols: the local classes implement them, and a breaker works through any store."""

from __future__ import annotations

import random

import pytest

from toolmesh.errors import CircuitOpenError, ConcurrencyLimitError
from toolmesh.resilience import (
    CapacityLimiter,
    CircuitBreaker,
    CircuitState,
    CircuitStore,
    ClientRateLimiter,
    ConcurrencyLimiter,
    LocalCircuitStore,
    RateLimiter,
    RetryPolicy,
    TokenBucket,
)
from toolmesh.servers.policy import TokenBucket as ClientBuckets


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class SharedStore:
    """A store kept apart from the breakers, as a shared (Redis) one would be: a dict of facts,
    with a log of every write so the test sees the breaker go through it."""

    def __init__(self) -> None:
        self.facts: dict[str, object] = {"state": CircuitState.CLOSED, "failures": 0, "opened_at": 0.0,
                                         "opens": 0, "total_failures": 0}
        self.writes: list[str] = []

    @property
    def state(self) -> CircuitState:
        value = self.facts["state"]
        assert isinstance(value, CircuitState)
        return value

    @property
    def failures(self) -> int:
        return int(self.facts["failures"])  # type: ignore[call-overload]

    @property
    def opened_at(self) -> float:
        return float(self.facts["opened_at"])  # type: ignore[arg-type]

    @property
    def opens(self) -> int:
        return int(self.facts["opens"])  # type: ignore[call-overload]

    @property
    def total_failures(self) -> int:
        return int(self.facts["total_failures"])  # type: ignore[call-overload]

    def add_failure(self) -> int:
        self.writes.append("add_failure")
        self.facts["failures"] = self.failures + 1
        self.facts["total_failures"] = self.total_failures + 1
        return self.failures

    def clear_failures(self) -> None:
        self.writes.append("clear_failures")
        self.facts["failures"] = 0

    def set_state(self, state: CircuitState, now: float) -> None:
        self.writes.append(f"set_state:{state.value}")
        self.facts["state"] = state
        if state is CircuitState.OPEN:
            self.facts["opened_at"] = now
            self.facts["opens"] = self.opens + 1


async def test_take_answers_with_the_retry_after() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2.0, 2.0, clock)
    limiter: RateLimiter = bucket
    assert [await limiter.take(), await limiter.take()] == [0.0, 0.0]
    assert await limiter.take() == pytest.approx(0.5)  # refused: one token comes in 0.5 s
    assert bucket.tokens == pytest.approx(0.0)  # the refusal took nothing
    clock.now += 0.5
    assert await limiter.take() == 0.0
    clients: ClientRateLimiter = ClientBuckets(1.0, burst=1)
    assert await clients.take("a") == 0.0
    assert 0 < await clients.take("a") <= 1.0
    assert await clients.take("b") == 0.0


def test_local_classes_implement_the_protocols() -> None:
    assert isinstance(TokenBucket(1.0, 2.0), RateLimiter)
    assert isinstance(ConcurrencyLimiter(2), CapacityLimiter)
    assert isinstance(ClientBuckets(1.0), ClientRateLimiter)
    assert isinstance(LocalCircuitStore(), CircuitStore)
    assert isinstance(SharedStore(), CircuitStore)
    # And what is not one is told apart (the checks are not vacuous).
    assert not isinstance(ConcurrencyLimiter(2), RateLimiter)
    assert not isinstance(TokenBucket(1.0, 2.0), CircuitStore)


def test_two_breakers_on_one_store_share_the_circuit() -> None:
    """What a shared store buys: failures seen by one worker's breaker open every worker's circuit,
    and one probe's success closes it for all."""
    clock = FakeClock()
    store = SharedStore()
    worker_a = CircuitBreaker("inventory", failure_threshold=2, reset_timeout=5.0, clock=clock, store=store)
    worker_b = CircuitBreaker("inventory", failure_threshold=2, reset_timeout=5.0, clock=clock, store=store)

    worker_a.allow()
    worker_a.record_failure()
    worker_b.allow()
    worker_b.record_failure()  # the second failure, counted across both breakers
    assert store.writes == ["add_failure", "add_failure", "set_state:open"]
    assert worker_a.state is CircuitState.OPEN and worker_a.opens == 1
    with pytest.raises(CircuitOpenError) as refused:
        worker_a.allow()
    assert refused.value.retry_after == pytest.approx(5.0)

    clock.now += 5.0
    worker_b.allow()  # the probe
    worker_b.record_success()
    assert worker_a.state is CircuitState.CLOSED
    assert worker_a.consecutive_failures == 0 and worker_a.total_failures == 2
    assert store.writes[-2:] == ["clear_failures", "set_state:closed"]


def test_local_store_counts() -> None:
    store = LocalCircuitStore()
    assert (store.add_failure(), store.add_failure()) == (1, 2)
    store.set_state(CircuitState.OPEN, 7.0)
    store.clear_failures()
    assert (store.state, store.failures, store.opened_at, store.opens, store.total_failures) == (
        CircuitState.OPEN, 0, 7.0, 1, 2)


def test_retry_backoff_is_what_run_waits() -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=0.1, max_delay=1.0, jitter="none", rng=random.Random(1))
    err = ConnectionError("down")
    assert policy.backoff(1, err) == pytest.approx(0.1)
    assert policy.backoff(2, err) == pytest.approx(0.2)
    assert policy.backoff(3, err) is None  # attempts used up
    hinted = ConcurrencyLimitError("slow down")
    hinted.retry_after = 0.75  # type: ignore[attr-defined]
    assert policy.backoff(1, hinted) == pytest.approx(0.75)
    clock = FakeClock()
    timed = RetryPolicy(max_attempts=5, base_delay=1.0, jitter="none", clock=clock)
    assert timed.backoff(1, err, deadline=clock.now + 0.5) is None  # would end past the deadline
    assert timed.backoff(1, err, deadline=clock.now + 2.0) == pytest.approx(1.0)
