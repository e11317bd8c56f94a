"""Adaptive rate limits (LLM-4): buckets, header parsing, slow-down before the limit, AIMD.

All with a fake clock: no real sleeping, no timing assertions."""

from __future__ import annotations

import asyncio
from email.utils import formatdate

import pytest

from toolmesh.errors import RateLimitedError
from toolmesh.llm.ratelimit import AdaptiveLimiter, KeyedLimits, parse_duration, parse_reset, parse_retry_after

WALL = 1_800_000_000.0  # a fixed "now" for epoch and date formats


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    async def sleep(self, d: float) -> None:
        self.slept.append(d)
        self.t += d


@pytest.fixture
def fc() -> FakeClock:
    return FakeClock()


def limiter(fc: FakeClock, rpm=None, tpm=None, **kw) -> AdaptiveLimiter:
    return AdaptiveLimiter(rpm, tpm, name="d", clock=fc, sleep=fc.sleep, wall_clock=lambda: WALL, **kw)


# -- header formats -----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "secs"), [
    ("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0.5s", 0.5), ("500us", 0.0005),
    ("250µs", 0.00025), ("100ns", 1e-7), ("2m", 120.0), ("1.5", 1.5), ("30", 30.0), (" 7 ", 7.0), ("0", 0.0),
])
def test_parse_duration(text, secs):
    assert parse_duration(text) == pytest.approx(secs)


@pytest.mark.parametrize("text", ["", "soon", "1x", "-3", "nan", "1s2", "s"])
def test_parse_duration_rejects(text):
    assert parse_duration(text) is None


@pytest.mark.parametrize(("text", "secs"), [
    ("6m0s", 360.0), ("0.25", 0.25),
    (str(int(WALL + 42)), 42.0),                 # epoch seconds
    (str(int((WALL + 3) * 1000)), 3.0),          # epoch milliseconds
    (str(int(WALL - 10)), 0.0),                  # in the past: now
    ("2027-01-15T08:00:05Z", None),              # ISO 8601 / RFC 3339 (computed below)
])
def test_parse_reset(text, secs):
    got = parse_reset(text, WALL)
    if secs is None:
        from datetime import datetime
        secs = max(0.0, datetime.fromisoformat(text).timestamp() - WALL)
    assert got == pytest.approx(secs)


def test_parse_retry_after_http_date_and_seconds():
    assert parse_retry_after("12", WALL) == 12.0
    assert parse_retry_after(formatdate(WALL + 30, usegmt=True), WALL) == pytest.approx(30.0)
    assert parse_retry_after(formatdate(WALL - 30, usegmt=True), WALL) == 0.0
    assert parse_retry_after("whenever", WALL) is None


# -- buckets ------------------------------------------------------------------------------------


async def test_rpm_bucket_waits_then_times_out(fc):
    lim = limiter(fc, rpm=60)  # one minute of allowance: 60 at once, then 1/s
    for _ in range(60):
        assert lim.time_until() == 0
        await lim.acquire(timeout=0)
    assert lim.time_until() == pytest.approx(1.0)
    with pytest.raises(RateLimitedError) as ei:
        await lim.acquire(timeout=0.5)
    assert ei.value.retry_after == pytest.approx(1.0)
    await lim.acquire(timeout=2)  # waits one second (fake)
    assert fc.slept == [pytest.approx(1.0)]
    # the waiter reserved its slot: the next one waits two seconds from the original moment
    assert lim.time_until() == pytest.approx(1.0)


async def test_tpm_bucket_and_reconcile(fc):
    lim = limiter(fc, tpm=6000)  # 100 tokens/s
    await lim.acquire(5000)
    assert lim.time_until(2000) == pytest.approx(10.0)  # 1000 left, 1000 missing
    lim.reconcile(5000, 3000)  # used less than estimated: refund 2000
    assert lim.time_until(2000) == 0
    lim.reconcile(0, 3500)  # unannounced usage is charged: 3000 - 3500 = -500
    assert lim.time_until(1) == pytest.approx(5.01)
    assert lim.time_until(0) == 0  # a request with no token estimate only needs RPM (unlimited)


async def test_estimate_larger_than_tpm_is_clamped(fc):
    lim = limiter(fc, tpm=1000)
    await lim.acquire(50_000, timeout=0)  # a huge request drains the bucket but is not impossible
    # drained to zero, not below: one token is 60/1000 s away, a full bucket one minute
    assert lim.time_until(1) == pytest.approx(0.06)
    assert lim.time_until(1000) == pytest.approx(60.0)


async def test_cancelled_waiter_gives_back_its_reservation(fc):
    lim = limiter(fc, rpm=60)
    for _ in range(60):
        await lim.acquire()
    gate = asyncio.Event()

    async def blocking_sleep(d):
        await gate.wait()

    lim._sleep = blocking_sleep
    task = asyncio.create_task(lim.acquire())
    await asyncio.sleep(0)
    assert lim.time_until() == pytest.approx(2.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert lim.time_until() == pytest.approx(1.0)


async def test_unlimited_limiter_never_waits(fc):
    lim = limiter(fc)
    for _ in range(1000):
        await lim.acquire(10_000, timeout=0)
    assert fc.slept == [] and lim.state()["requests_per_min"] is None


# -- headers: slowing down before the limit -----------------------------------------------------


async def test_low_remaining_spreads_what_is_left_until_reset(fc):
    lim = limiter(fc, rpm=600)  # 10/s, bucket full (600)
    # 20 requests left for the next 10 s: at 10/s they would be gone in 2 s
    lim.observe({"x-ratelimit-remaining-requests": "20", "x-ratelimit-reset-requests": "10s"})
    assert lim.state()["requests_per_min"] == pytest.approx(120.0)  # 2/s = 20 over 10 s
    n = 0
    while lim.try_acquire():
        n += 1
    assert n == 20  # the full bucket was cut down to what the provider says is left
    assert lim.time_until() == pytest.approx(0.5)
    fc.t += 10.0  # past the reset: full configured rate again
    assert lim.time_until() == 0
    assert lim.state()["requests_per_min"] == pytest.approx(600.0)


async def test_plenty_remaining_changes_nothing(fc):
    lim = limiter(fc, rpm=600)
    lim.observe({"x-ratelimit-remaining-requests": "590", "x-ratelimit-reset-requests": "6s"})
    assert lim.state()["requests_per_min"] == pytest.approx(600.0)
    lim.observe({"x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-requests": "6s"})
    assert lim.state()["requests_per_min"] == pytest.approx(50.0)
    lim.observe({"x-ratelimit-remaining-requests": "599", "x-ratelimit-reset-requests": "1s"})  # newer news
    assert lim.state()["requests_per_min"] == pytest.approx(600.0)


async def test_token_headers_with_go_durations(fc):
    lim = limiter(fc, tpm=600_000)
    lim.observe({"x-ratelimit-remaining-tokens": "1000", "x-ratelimit-reset-tokens": "6m0s"})
    assert lim.state()["tokens_per_min"] == pytest.approx(1000 / 360 * 60, abs=1e-3)
    assert lim.time_until(1000) == 0
    assert lim.time_until(1001) == pytest.approx(0.36)  # 1000 tokens per 6 min: one more is 0.36 s away


async def test_zero_remaining_pauses_until_reset(fc):
    lim = limiter(fc, rpm=600)
    lim.observe({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "20ms"})
    assert lim.time_until() == pytest.approx(0.02)
    fc.t += 0.02
    assert lim.time_until() == 0


async def test_limit_header_teaches_an_unconfigured_limiter(fc):
    lim = limiter(fc)
    lim.observe({"x-ratelimit-limit-requests": "120", "x-ratelimit-remaining-requests": "119",
                 "x-ratelimit-reset-requests": "500ms", "x-ratelimit-limit-tokens": "30000"})
    st = lim.state()
    assert st["requests_per_min"] == pytest.approx(120.0) and st["tokens_per_min"] == pytest.approx(30000.0)


async def test_remaining_without_limit_creates_a_temporary_bucket(fc):
    lim = limiter(fc)
    lim.observe({"anthropic-ratelimit-requests-remaining": "3",
                 "anthropic-ratelimit-requests-reset": "2027-01-15T08:00:05Z"})
    for _ in range(3):
        assert lim.try_acquire()
    assert not lim.try_acquire()


async def test_epoch_reset_header(fc):
    lim = limiter(fc, rpm=6000)
    lim.observe({"x-ratelimit-remaining-requests": "10", "x-ratelimit-reset-requests": str(WALL + 5)})
    assert lim.state()["requests_per_min"] == pytest.approx(120.0)  # 10 over 5 s


@pytest.mark.parametrize(("headers", "pause"), [
    ({"retry-after": "3"}, 3.0),
    ({"retry-after": formatdate(WALL + 7, usegmt=True)}, 7.0),
    ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
])
async def test_retry_after_header_pauses(fc, headers, pause):
    lim = limiter(fc, rpm=600)
    lim.observe(headers)
    assert lim.time_until() == pytest.approx(pause)
    assert lim.factor == 1.0  # a hint, not a 429: no cut


async def test_garbage_headers_are_ignored(fc):
    lim = limiter(fc, rpm=600)
    lim.observe({"x-ratelimit-remaining-requests": "lots", "x-ratelimit-reset-requests": "later",
                 "retry-after": "tomorrow", "x-ratelimit-limit-requests": "many"})
    assert lim.state() == {"factor": 1.0, "paused_s": 0.0, "requests_per_min": 600.0, "tokens_per_min": None}


# -- AIMD -----------------------------------------------------------------------------------------


async def test_429_cuts_multiplicatively_and_pauses(fc):
    lim = limiter(fc, rpm=600, tpm=60_000)
    lim.on_429(retry_after=2.0)
    assert lim.factor == 0.5
    assert lim.state()["requests_per_min"] == pytest.approx(300.0)
    assert lim.state()["tokens_per_min"] == pytest.approx(30_000.0)
    assert lim.time_until() == pytest.approx(2.0)
    lim.on_429(retry_after=1.0)  # same burst of in-flight failures: counted once
    assert lim.factor == 0.5
    fc.t += 2.0
    lim.on_429(retry_after=None)  # next window: cut again, default pause
    assert lim.factor == 0.25
    assert lim.time_until() == pytest.approx(1.0)


async def test_429_floor(fc):
    lim = limiter(fc, rpm=600, min_fraction=0.1)
    for _ in range(10):
        lim.on_429(0)
        fc.t += 1.0
    assert lim.factor == pytest.approx(0.1)
    assert lim.state()["requests_per_min"] == pytest.approx(60.0)


async def test_429_empties_the_bucket_so_we_restart_slowly(fc):
    lim = limiter(fc, rpm=600)
    lim.on_429(retry_after=0)
    assert not lim.try_acquire()
    assert lim.time_until() == pytest.approx(1 / 5)  # 300/min at the cut rate


async def test_success_recovers_additively(fc):
    lim = limiter(fc, rpm=600, increase=0.1)
    lim.on_429(1)
    assert lim.factor == 0.5
    for i in range(1, 5):
        lim.on_success()
        assert lim.factor == pytest.approx(0.5 + 0.1 * i)
    for _ in range(10):
        lim.on_success()
    assert lim.factor == 1.0
    assert lim.state()["requests_per_min"] == pytest.approx(600.0)


# -- keyed limits ---------------------------------------------------------------------------------


async def test_keyed_limits_are_per_key_and_bounded(fc):
    kl = KeyedLimits(rpm=2, max_keys=3, clock=fc, sleep=fc.sleep, name="user")
    await kl.acquire("alice", timeout=0)
    await kl.acquire("alice", timeout=0)
    with pytest.raises(RateLimitedError):
        await kl.acquire("alice", timeout=0)
    await kl.acquire("bob", timeout=0)  # independent
    for k in ("c", "d", "e"):
        await kl.acquire(k, timeout=0)
    assert len(kl) == 3 and "alice" not in kl._limiters  # least recently used evicted


async def test_keyed_tpm_reconcile_and_disabled(fc):
    kl = KeyedLimits(tpm=600, clock=fc, sleep=fc.sleep)
    await kl.acquire("t1", 600, timeout=0)
    with pytest.raises(RateLimitedError):
        await kl.acquire("t1", 100, timeout=0)
    kl.reconcile("t1", 600, 100)
    await kl.acquire("t1", 100, timeout=0)
    off = KeyedLimits()
    assert not off.enabled
    for _ in range(100):
        await off.acquire("x", 10**6, timeout=0)
    assert len(off) == 0


def test_invalid_parameters():
    with pytest.raises(ValueError):
        AdaptiveLimiter(rpm=0)
    with pytest.raises(ValueError):
        AdaptiveLimiter(decrease=1.5)
    with pytest.raises(ValueError):
        KeyedLimits(max_keys=0)
