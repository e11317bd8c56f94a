"""RetryPolicy: attempt counts, classification, deadline, backoff bounds with a seeded RNG."""

from __future__ import annotations

import random
from typing import Any

import pytest

from toolmesh.errors import (
    CircuitOpenError,
    ConnectionFailedError,
    InvalidArgumentsError,
    McpRemoteError,
    ToolTimeoutError,
)
from toolmesh.resilience import RetryPolicy, default_is_retryable


class FakeTime:
    """A clock and a sleep that advances it, so nothing really waits."""

    def __init__(self) -> None:
        self.now = 50.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def policy(t: FakeTime, **kw: Any) -> RetryPolicy:
    kw.setdefault("rng", random.Random(7))
    return RetryPolicy(clock=t.clock, sleep=t.sleep, **kw)


class Flaky:
    def __init__(self, errors: list[BaseException], result: str = "ok") -> None:
        self.errors = list(errors)
        self.calls = 0
        self.result = result

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.result


async def test_success_first_time_no_sleep() -> None:
    t = FakeTime()
    fn = Flaky([])
    assert await policy(t).run(fn) == "ok"
    assert fn.calls == 1 and t.slept == []


async def test_retries_retryable_until_success() -> None:
    t = FakeTime()
    fn = Flaky([ConnectionFailedError("a"), ToolTimeoutError("b")])
    retries: list[tuple[int, str, float]] = []
    result = await policy(t, max_attempts=3).run(fn, on_retry=lambda n, e, d: retries.append((n, type(e).__name__, d)))
    assert result == "ok" and fn.calls == 3
    assert [r[:2] for r in retries] == [(1, "ConnectionFailedError"), (2, "ToolTimeoutError")]
    assert [r[2] for r in retries] == t.slept


async def test_gives_up_after_max_attempts_with_last_error() -> None:
    t = FakeTime()
    errors = [ConnectionFailedError(f"e{i}") for i in range(5)]
    fn = Flaky(errors)
    with pytest.raises(ConnectionFailedError, match="e3"):
        await policy(t, max_attempts=4).run(fn)
    assert fn.calls == 4 and len(t.slept) == 3


@pytest.mark.parametrize(
    "exc",
    [InvalidArgumentsError("bad"), McpRemoteError(-32602, "params"), ValueError("x"), CircuitOpenError("o")],
)
async def test_non_retryable_not_retried(exc: Exception) -> None:
    t = FakeTime()
    fn = Flaky([exc])
    with pytest.raises(type(exc)):
        await policy(t).run(fn)
    assert fn.calls == 1 and t.slept == []


async def test_remote_internal_error_is_retryable() -> None:
    t = FakeTime()
    fn = Flaky([McpRemoteError(-32603, "internal")])
    assert await policy(t).run(fn) == "ok"
    assert fn.calls == 2


async def test_predicate_replaces_default() -> None:
    t = FakeTime()
    fn = Flaky([KeyError("k")])
    assert await policy(t).run(fn, is_retryable=lambda e: isinstance(e, KeyError)) == "ok"
    fn2 = Flaky([ToolTimeoutError("not idempotent")])
    with pytest.raises(ToolTimeoutError):
        await policy(t).run(fn2, is_retryable=lambda e: False)
    assert fn2.calls == 1


async def test_cancellation_is_never_retried() -> None:
    import asyncio

    t = FakeTime()
    fn = Flaky([asyncio.CancelledError()])
    with pytest.raises(asyncio.CancelledError):
        await policy(t).run(fn, is_retryable=lambda e: True)
    assert fn.calls == 1


async def test_deadline_stops_retries() -> None:
    t = FakeTime()
    # jitter "none": delays 1, 2, 4 ... ; deadline allows the first backoff only.
    p = policy(t, max_attempts=10, base_delay=1.0, max_delay=100.0, jitter="none")
    fn = Flaky([ConnectionFailedError(str(i)) for i in range(10)])
    with pytest.raises(ConnectionFailedError, match="1"):
        await p.run(fn, deadline=t.now + 2.5)
    assert t.slept == [1.0] and fn.calls == 2
    assert t.now <= 52.5


async def test_retry_after_hint_is_respected_within_deadline() -> None:
    t = FakeTime()

    class Busy(ConnectionFailedError):
        retry_after = 3.0

    p = policy(t, base_delay=0.01, jitter="none")
    assert await p.run(Flaky([Busy("busy")])) == "ok"
    assert t.slept == [3.0]
    with pytest.raises(Busy):
        await p.run(Flaky([Busy("busy")]), deadline=t.now + 1.0)


async def test_async_on_retry_is_awaited() -> None:
    t = FakeTime()
    seen: list[int] = []

    async def hook(n: int, e: BaseException, d: float) -> None:
        seen.append(n)

    await policy(t).run(Flaky([ConnectionFailedError("x")]), on_retry=hook)
    assert seen == [1]


def test_full_jitter_bounds_and_seeded_determinism() -> None:
    p1 = RetryPolicy(max_attempts=8, base_delay=0.1, max_delay=1.0, rng=random.Random(42))
    p2 = RetryPolicy(max_attempts=8, base_delay=0.1, max_delay=1.0, rng=random.Random(42))
    d1 = list(p1.delays())
    assert d1 == list(p2.delays())
    assert len(d1) == 7
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    assert [p1.ceiling(i) for i in range(1, 8)] == pytest.approx(ceilings)
    for d, cap in zip(d1, ceilings, strict=True):
        assert 0.0 <= d <= cap
    # Over many draws full jitter spans the range (not stuck at the ceiling).
    many = [p1.delay(5) for _ in range(2000)]
    assert min(many) < 0.1 and max(many) > 0.9
    assert sum(many) / len(many) == pytest.approx(0.5, abs=0.05)


def test_equal_and_no_jitter() -> None:
    eq = RetryPolicy(max_attempts=50, base_delay=1.0, max_delay=8.0, jitter="equal", rng=random.Random(1))
    for i in range(1, 50):
        cap = eq.ceiling(i)
        assert cap / 2 <= eq.delay(i) <= cap
    none = RetryPolicy(max_attempts=4, base_delay=0.5, multiplier=3.0, max_delay=10.0, jitter="none")
    assert list(none.delays()) == [0.5, 1.5, 4.5]


def test_huge_retry_number_is_capped() -> None:
    p = RetryPolicy(base_delay=1.0, max_delay=5.0, multiplier=10.0, jitter="none")
    assert p.ceiling(10_000) == 5.0


def test_invalid_settings() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(jitter="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        RetryPolicy(multiplier=0.5)


def test_default_is_retryable() -> None:
    assert default_is_retryable(ConnectionFailedError("x"))
    assert default_is_retryable(ToolTimeoutError("x"))
    assert not default_is_retryable(InvalidArgumentsError("x"))
    assert not default_is_retryable(RuntimeError("x"))
