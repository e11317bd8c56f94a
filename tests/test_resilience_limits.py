"""ConcurrencyLimiter, MultiLimiter and TokenBucket."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolmesh.errors import ConcurrencyLimitError
from toolmesh.resilience import ConcurrencyLimiter, MultiLimiter, TokenBucket


async def test_never_exceeds_limit_under_500_tasks() -> None:
    lim = ConcurrencyLimiter(7, name="server inv")
    rng = random.Random(3)
    current = peak = done = 0

    async def job(delay_steps: int) -> None:
        nonlocal current, peak, done
        async with lim:
            current += 1
            peak = max(peak, current)
            assert lim.in_flight <= 7
            for _ in range(delay_steps):
                await asyncio.sleep(0)
            current -= 1
            done += 1

    await asyncio.gather(*(job(rng.randint(0, 5)) for _ in range(500)))
    assert done == 500 and peak == 7
    assert lim.in_flight == 0 and lim.waiting == 0


async def test_fifo_handoff_and_counters() -> None:
    lim = ConcurrencyLimiter(1)
    order: list[int] = []
    await lim.acquire()
    assert not lim.try_acquire()

    async def waiter(i: int) -> None:
        async with lim:
            order.append(i)

    tasks = [asyncio.create_task(waiter(i)) for i in range(5)]
    await asyncio.sleep(0)
    assert lim.waiting == 5 and lim.in_flight == 1
    lim.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]
    assert lim.in_flight == 0


async def test_acquire_timeout_raises_and_cleans_up() -> None:
    lim = ConcurrencyLimiter(1, name="tenant acme")
    await lim.acquire()
    with pytest.raises(ConcurrencyLimitError, match="tenant acme"):
        await lim.acquire(timeout=0.01)
    with pytest.raises(ConcurrencyLimitError):
        await lim.acquire(timeout=0)
    assert lim.waiting == 0 and lim.in_flight == 1
    lim.release()
    assert lim.try_acquire()
    lim.release()
    assert lim.in_flight == 0


async def test_cancelled_waiter_does_not_take_a_slot() -> None:
    lim = ConcurrencyLimiter(1)
    await lim.acquire()
    t = asyncio.create_task(lim.acquire())
    await asyncio.sleep(0)
    assert lim.waiting == 1
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t
    assert lim.waiting == 0
    lim.release()
    assert lim.in_flight == 0


async def test_slot_granted_then_cancelled_is_passed_on() -> None:
    lim = ConcurrencyLimiter(1)
    await lim.acquire()
    first = asyncio.create_task(lim.acquire())
    second = asyncio.create_task(lim.acquire())
    await asyncio.sleep(0)
    lim.release()  # hands the slot to `first`...
    first.cancel()  # ...which is cancelled before it runs: the slot must reach `second`
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 5)
    assert lim.in_flight == 1 and lim.waiting == 0
    lim.release()
    assert lim.in_flight == 0


async def test_set_limit_up_and_down() -> None:
    lim = ConcurrencyLimiter(1)
    await lim.acquire()
    waiters = [asyncio.create_task(lim.acquire()) for _ in range(3)]
    await asyncio.sleep(0)
    lim.set_limit(3)
    await asyncio.sleep(0)
    assert lim.in_flight == 3 and lim.waiting == 1
    lim.set_limit(1)
    lim.release()  # 3 -> 2, over the new limit: the waiter keeps waiting
    await asyncio.sleep(0)
    assert lim.in_flight == 2 and lim.waiting == 1
    lim.release()
    lim.release()  # now 1 in flight was handed over
    await asyncio.gather(*waiters)
    assert lim.in_flight == 1
    lim.release()
    assert lim.in_flight == 0


def test_release_without_acquire_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        ConcurrencyLimiter(2).release()
    with pytest.raises(ValueError):
        ConcurrencyLimiter(0)


async def test_multilimiter_holds_all_and_orders_globally() -> None:
    server = ConcurrencyLimiter(2, name="server")
    tenant = ConcurrencyLimiter(3, name="tenant")
    a = MultiLimiter(tenant, server)
    b = MultiLimiter(server, tenant, server)
    assert a.limiters == b.limiters == (server, tenant)
    peak_server = peak_tenant = 0

    async def job(m: MultiLimiter) -> None:
        nonlocal peak_server, peak_tenant
        async with m:
            peak_server = max(peak_server, server.in_flight)
            peak_tenant = max(peak_tenant, tenant.in_flight)
            await asyncio.sleep(0)

    # Opposite argument orders would deadlock without the global order.
    await asyncio.wait_for(asyncio.gather(*(job(a if i % 2 else b) for i in range(200))), 10)
    assert peak_server == 2 and peak_tenant <= 3
    assert server.in_flight == tenant.in_flight == 0


async def test_multilimiter_timeout_releases_partial() -> None:
    server = ConcurrencyLimiter(5)
    tenant = ConcurrencyLimiter(1)
    await tenant.acquire()
    m = MultiLimiter(server, tenant)
    with pytest.raises(ConcurrencyLimitError):
        await m.acquire(timeout=0.01)
    assert server.in_flight == 0 and tenant.in_flight == 1


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def test_token_bucket_math() -> None:
    t = FakeTime()
    b = TokenBucket(rate=10.0, capacity=5.0, clock=t.clock)
    assert b.tokens == 5.0
    assert all(b.try_acquire() for _ in range(5))
    assert not b.try_acquire()
    assert b.time_until(1) == pytest.approx(0.1)
    assert b.time_until(5) == pytest.approx(0.5)
    t.now += 0.25
    assert b.tokens == pytest.approx(2.5)
    assert b.try_acquire(2)
    assert not b.try_acquire(1)
    t.now += 100.0
    assert b.tokens == 5.0  # capped at capacity
    with pytest.raises(ValueError):
        b.try_acquire(6)
    with pytest.raises(ValueError):
        TokenBucket(0, 1)


async def test_token_bucket_acquire_waits_and_is_fifo() -> None:
    t = FakeTime()
    b = TokenBucket(rate=2.0, capacity=2.0, clock=t.clock, sleep=t.sleep)
    await b.acquire(2)
    assert t.slept == []
    await b.acquire(1)  # needs 0.5 s
    assert t.slept == [pytest.approx(0.5)]
    # Reservations queue callers: each waits for the tokens of everyone ahead of it.
    waits: list[float] = []
    gate = asyncio.Event()

    async def blocking_sleep(s: float) -> None:
        waits.append(s)
        await gate.wait()

    b2 = TokenBucket(rate=1.0, capacity=1.0, clock=t.clock, sleep=blocking_sleep, initial=0.0)
    tasks = [asyncio.create_task(b2.acquire(1)) for _ in range(3)]
    await asyncio.sleep(0)
    assert waits == [pytest.approx(1.0), pytest.approx(2.0), pytest.approx(3.0)]
    assert b2.tokens == pytest.approx(-3.0)
    gate.set()
    await asyncio.gather(*tasks)


async def test_token_bucket_timeout_fails_fast_without_reserving() -> None:
    t = FakeTime()
    b = TokenBucket(rate=1.0, capacity=3.0, clock=t.clock, sleep=t.sleep, initial=0.0, name="llm rpm")
    with pytest.raises(ConcurrencyLimitError, match="llm rpm"):
        await b.acquire(2, timeout=1.0)
    assert t.slept == [] and b.tokens == 0.0
    await b.acquire(2, timeout=2.0)
    assert t.slept == [pytest.approx(2.0)]


async def test_token_bucket_cancelled_wait_refunds() -> None:
    b = TokenBucket(rate=1.0, capacity=1.0, initial=0.0)  # real clock; the wait is cancelled
    task = asyncio.create_task(b.acquire(1))
    await asyncio.sleep(0)
    assert b.tokens < 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert 0.0 <= b.tokens <= 1.0


def test_token_bucket_set_rate() -> None:
    t = FakeTime()
    b = TokenBucket(rate=10.0, capacity=10.0, clock=t.clock, initial=0.0)
    t.now += 0.5
    b.set_rate(2.0, capacity=4.0)  # refill at the old rate first: 5 tokens, capped to 4
    assert b.tokens == pytest.approx(4.0)
    b.try_acquire(4)
    t.now += 1.0
    assert b.tokens == pytest.approx(2.0)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=0.1, max_value=1000),
    capacity=st.floats(min_value=1, max_value=100),
    steps=st.lists(st.tuples(st.floats(min_value=0, max_value=5), st.floats(min_value=0.01, max_value=1)), max_size=50),
)
def test_property_token_bucket_matches_model(rate: float, capacity: float, steps: list[tuple[float, float]]) -> None:
    t = FakeTime()
    b = TokenBucket(rate=rate, capacity=capacity, clock=t.clock)
    model = capacity
    for dt, frac in steps:
        t.now += dt
        model = min(capacity, model + dt * rate)
        n = frac * capacity
        assert b.time_until(n) == pytest.approx(max(0.0, (n - model) / rate), rel=1e-6, abs=1e-9)
        took = b.try_acquire(n)
        if abs(model - n) > 1e-6:  # at the exact boundary float rounding may go either way
            assert took == (model >= n)
        if took:
            model -= n
        assert b.tokens == pytest.approx(model, rel=1e-6, abs=1e-6)
        assert b.tokens <= capacity
