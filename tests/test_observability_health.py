"""HealthTracker: windowed error rate, status transitions, listener isolation."""

from __future__ import annotations

import asyncio

import pytest

from toolmesh.observability import HealthEvent, HealthStatus, HealthTracker, dispatch


class FakeClock:
    def __init__(self) -> None:
        self.now = 10.0

    def __call__(self) -> float:
        return self.now


def tracker(**kw: object) -> tuple[HealthTracker, FakeClock]:
    clock = FakeClock()
    kw.setdefault("min_requests", 10)
    kw.setdefault("window", 20)
    return HealthTracker("inventory", clock=clock, **kw), clock  # type: ignore[arg-type]


def test_counts_and_rate() -> None:
    h, _ = tracker()
    for i in range(8):
        h.record(ok=i % 4 != 0, latency_ms=float(i))
    h.record(False, 100.0, timeout=True)
    h.record(True, 5.0, timeout=True)  # a timeout is an error even if ok was passed
    snap = h.snapshot()
    assert snap["requests"] == 10 and snap["errors"] == 4 and snap["timeouts"] == 2
    assert snap["error_rate"] == pytest.approx(0.4)
    assert snap["latency"]["count"] == 10 and snap["latency"]["max_ms"] == 100.0
    assert snap["server"] == "inventory"


def test_no_status_change_before_min_requests() -> None:
    h, _ = tracker(min_requests=10)
    for _ in range(9):
        h.record(False, 1.0)
    assert h.status is HealthStatus.ACTIVE and h.error_rate == 1.0
    h.record(False, 1.0)
    assert h.status is HealthStatus.ERROR


async def test_transitions_and_recovery_with_events() -> None:
    h, clock = tracker(min_requests=10, window=20, warning_error_rate=0.2, critical_error_rate=0.5)
    events: list[HealthEvent] = []

    async def listener(ev: HealthEvent) -> None:
        events.append(ev)

    h.add_listener(listener)
    for _ in range(10):
        h.record(True, 1.0)
    for _ in range(3):  # 3/13 = 0.23 -> degraded
        h.record(False, 1.0)
    assert h.status is HealthStatus.DEGRADED
    clock.now = 20.0
    for _ in range(7):  # window full: 10/20 = 0.5 -> error
        h.record(False, 1.0)
    assert h.status is HealthStatus.ERROR
    clock.now = 30.0
    for _ in range(20):  # errors slide out of the window
        h.record(True, 1.0)
    assert h.status is HealthStatus.ACTIVE and h.error_rate == 0.0
    await dispatch.drain(timeout=5)
    assert [(e.old.value, e.new.value) for e in events] == [
        ("active", "degraded"),
        ("degraded", "error"),
        ("error", "degraded"),
        ("degraded", "active"),
    ]
    assert events[0].server == "inventory" and events[0].error_rate == pytest.approx(3 / 13)
    assert events[1].at == 20.0 and events[1].error_rate == pytest.approx(0.5)
    assert events[-1].at == 30.0
    assert h.requests == 40 and h.errors == 10


async def test_failing_and_slow_listeners_never_break_recording() -> None:
    h, _ = tracker(min_requests=1, window=4)
    gate = asyncio.Event()
    good: list[str] = []

    def sync_bad(ev: HealthEvent) -> None:
        raise RuntimeError("sync listener bug")

    async def async_bad(ev: HealthEvent) -> None:
        raise RuntimeError("async listener bug")

    async def slow(ev: HealthEvent) -> None:
        await gate.wait()
        good.append(ev.new.value)

    for cb in (sync_bad, async_bad, slow):
        h.add_listener(cb)
    h.record(False, 1.0)  # -> error; returns although `slow` blocks
    assert h.status is HealthStatus.ERROR and good == []
    h.record(True, 1.0)
    h.record(True, 1.0)
    h.record(True, 1.0)  # 1/4 -> degraded
    assert h.status is HealthStatus.DEGRADED
    gate.set()
    await dispatch.drain(timeout=5)
    assert good == ["error", "degraded"]


async def test_remove_listener() -> None:
    h, _ = tracker(min_requests=1, window=2)
    seen: list[HealthEvent] = []
    remove = h.add_listener(seen.append)  # a sync listener works too
    h.record(False, 1.0)
    remove()
    h.record(True, 1.0)
    h.record(True, 1.0)
    assert len(seen) == 1
    h.remove_listener(seen.append)  # absent: no error


def test_async_listener_without_loop_is_dropped_not_raised() -> None:
    h, _ = tracker(min_requests=1, window=2)

    async def listener(ev: HealthEvent) -> None:
        raise AssertionError("cannot run without a loop")

    h.add_listener(listener)
    h.record(False, 1.0)
    assert h.status is HealthStatus.ERROR


def test_reset_window() -> None:
    h, _ = tracker(min_requests=2, window=4)
    h.record(False, 1.0)
    h.record(False, 1.0)
    assert h.status is HealthStatus.ERROR
    h.reset_window()
    assert h.status is HealthStatus.ACTIVE and h.error_rate == 0.0 and h.errors == 2


def test_validation() -> None:
    with pytest.raises(ValueError):
        HealthTracker("s", min_requests=0)
    with pytest.raises(ValueError):
        HealthTracker("s", min_requests=200, window=100)
    with pytest.raises(ValueError):
        HealthTracker("s", warning_error_rate=0.6, critical_error_rate=0.5)
