"""Circuit breaker state machine, probe exclusivity, fallback, classification, registry."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolmesh.errors import (
    CircuitOpenError,
    ConnectionFailedError,
    InvalidArgumentsError,
    McpRemoteError,
    ToolNotFoundError,
    ToolTimeoutError,
)
from toolmesh.observability import dispatch
from toolmesh.resilience import CircuitBreaker, CircuitRegistry, CircuitState, default_is_failure


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(threshold: int = 3, reset: float = 10.0, **kw: Any) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    return CircuitBreaker("inv", failure_threshold=threshold, reset_timeout=reset, clock=clock, **kw), clock


def trip(b: CircuitBreaker) -> None:
    for _ in range(b.failure_threshold):
        b.allow()
        b.record_failure()


def test_opens_after_consecutive_failures_only() -> None:
    b, _ = make(threshold=3)
    b.record_failure()
    b.record_failure()
    b.record_success()  # resets the run
    b.record_failure()
    b.record_failure()
    assert b.state is CircuitState.CLOSED
    b.record_failure()
    assert b.state is CircuitState.OPEN
    assert b.opens == 1


def test_open_fails_fast_with_retry_after_and_name() -> None:
    b, clock = make(threshold=2, reset=10.0)
    trip(b)
    clock.now += 4.0
    with pytest.raises(CircuitOpenError) as info:
        b.allow()
    assert info.value.retry_after == pytest.approx(6.0)
    assert "'inv'" in str(info.value) and "open" in str(info.value)


def test_half_open_probe_success_closes() -> None:
    b, clock = make()
    trip(b)
    clock.now += 10.0
    assert b.state is CircuitState.HALF_OPEN
    b.allow()  # the probe
    with pytest.raises(CircuitOpenError):
        b.allow()  # second caller during the probe
    b.record_success()
    assert b.state is CircuitState.CLOSED
    assert b.consecutive_failures == 0
    b.allow()
    b.allow()


def test_half_open_probe_failure_reopens_and_resets_timer() -> None:
    b, clock = make(reset=10.0)
    trip(b)
    clock.now += 15.0
    b.allow()
    b.record_failure()
    assert b.state is CircuitState.OPEN
    clock.now += 9.0
    with pytest.raises(CircuitOpenError) as info:
        b.allow()
    assert info.value.retry_after == pytest.approx(1.0)
    clock.now += 1.0
    b.allow()
    assert b.state is CircuitState.HALF_OPEN


def test_late_results_while_open_do_not_change_state() -> None:
    b, clock = make(reset=10.0)
    trip(b)
    clock.now += 5.0
    b.record_success()  # a call admitted before opening finished late
    assert b.state is CircuitState.OPEN
    b.record_failure()
    assert b.retry_after() == pytest.approx(5.0)  # timer not extended


async def test_exactly_one_probe_under_concurrent_callers() -> None:
    b, clock = make(threshold=1, reset=1.0)
    b.allow()
    b.record_failure()
    clock.now += 1.0
    gate = asyncio.Event()
    ran = 0

    async def work() -> str:
        nonlocal ran
        ran += 1
        await gate.wait()
        return "ok"

    async def caller() -> str:
        try:
            return await b.call(work)
        except CircuitOpenError:
            return "refused"

    tasks = [asyncio.create_task(caller()) for _ in range(50)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert ran == 1
    gate.set()
    results = await asyncio.gather(*tasks)
    assert results.count("ok") == 1 and results.count("refused") == 49
    assert b.state is CircuitState.CLOSED


async def test_cancelled_probe_frees_the_slot() -> None:
    b, clock = make(threshold=1, reset=1.0)
    b.record_failure()
    clock.now += 1.0
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.sleep(3600)

    probe = asyncio.create_task(b.call(hang))
    await started.wait()
    with pytest.raises(CircuitOpenError):
        b.allow()
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert b.state is CircuitState.HALF_OPEN
    b.allow()  # a new probe may go


async def test_non_failure_exception_releases_probe_without_verdict() -> None:
    b, clock = make(threshold=1, reset=1.0)
    b.record_failure()
    clock.now += 1.0
    with pytest.raises(InvalidArgumentsError):
        async with b:
            raise InvalidArgumentsError("bad")
    assert b.state is CircuitState.HALF_OPEN
    with pytest.raises(ConnectionFailedError):
        async with b:
            raise ConnectionFailedError("down")
    assert b.state is CircuitState.OPEN


def test_lost_probe_is_replaced_after_probe_timeout() -> None:
    b, clock = make(threshold=1, reset=1.0, probe_timeout=5.0)
    b.record_failure()
    clock.now += 1.0
    b.allow()  # probe that never reports
    clock.now += 4.9
    with pytest.raises(CircuitOpenError):
        b.allow()
    clock.now += 0.2
    b.allow()


async def test_context_manager_counts_only_failures() -> None:
    b, _ = make(threshold=2)
    for exc in (ToolNotFoundError("x"), InvalidArgumentsError("y"), McpRemoteError(-32602, "params")):
        with pytest.raises(type(exc)):
            async with b:
                raise exc
    assert b.consecutive_failures == 0
    for exc in (ToolTimeoutError("slow"), McpRemoteError(-32603, "boom")):
        with pytest.raises(type(exc)):
            async with b:
                raise exc
    assert b.state is CircuitState.OPEN


def test_default_is_failure_classification() -> None:
    assert default_is_failure(ConnectionFailedError("x"))
    assert default_is_failure(ConnectionRefusedError())
    assert default_is_failure(TimeoutError())
    assert default_is_failure(McpRemoteError(-32001, "timeout"))
    assert not default_is_failure(McpRemoteError(-32601, "no method"))
    assert not default_is_failure(ToolNotFoundError("t"))
    assert not default_is_failure(CircuitOpenError("nested"))
    assert not default_is_failure(ValueError("unknown"))


async def test_custom_failure_predicate() -> None:
    b, _ = make(threshold=1, is_failure=lambda e: isinstance(e, KeyError))
    with pytest.raises(ConnectionFailedError):
        await b.call(_raise(ConnectionFailedError("x")))
    assert b.state is CircuitState.CLOSED
    with pytest.raises(KeyError):
        await b.call(_raise(KeyError("k")))
    assert b.state is CircuitState.OPEN


def _raise(exc: BaseException) -> Any:
    async def fn() -> None:
        raise exc

    return fn


async def test_fallback_when_open_sync_and_async() -> None:
    b, _ = make(threshold=1, fallback=lambda err: {"fallback": True, "retry_after": err.retry_after})
    with pytest.raises(ConnectionFailedError):
        await b.call(_raise(ConnectionFailedError("down")))  # failures themselves are not masked

    async def not_called() -> str:
        raise AssertionError("must not run while open")

    result = await b.call(not_called)
    assert result == {"fallback": True, "retry_after": pytest.approx(10.0)}

    async def afb(err: CircuitOpenError) -> str:
        return "async-fallback"

    assert await b.call(not_called, fallback=afb) == "async-fallback"
    b.fallback = None
    with pytest.raises(CircuitOpenError):
        await b.call(not_called)


async def test_state_change_callbacks_sync_async_and_failing() -> None:
    seen: list[tuple[str, str]] = []
    async_seen: list[str] = []

    def sync_cb(br: CircuitBreaker, old: CircuitState, new: CircuitState) -> None:
        seen.append((old.value, new.value))
        raise RuntimeError("listener bug")  # must not break the call path

    b, clock = make(threshold=1, reset=1.0, on_state_change=sync_cb)
    b.record_failure()
    clock.now += 1.0
    b.allow()
    b.record_success()
    assert seen == [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]

    gate = asyncio.Event()

    async def slow_cb(br: CircuitBreaker, old: CircuitState, new: CircuitState) -> None:
        await gate.wait()
        async_seen.append(new.value)
        raise RuntimeError("async listener bug")

    b.on_state_change = slow_cb
    b.record_failure()  # returns at once although the listener blocks
    assert b.state is CircuitState.OPEN and async_seen == []
    gate.set()
    await dispatch.drain(timeout=5)
    assert async_seen == ["open"]


def test_snapshot_and_reset() -> None:
    b, _ = make(threshold=1)
    b.record_failure()
    snap = b.snapshot()
    assert snap["state"] == "open" and snap["name"] == "inv" and snap["retry_after"] == pytest.approx(10.0)
    assert snap["opens"] == 1 and snap["total_failures"] == 1
    b.reset()
    assert b.state is CircuitState.CLOSED


def test_invalid_settings() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker("x", failure_threshold=0)
    with pytest.raises(ValueError):
        CircuitBreaker("x", reset_timeout=-1)


async def test_registry_server_and_tool_breakers() -> None:
    clock = FakeClock()
    reg = CircuitRegistry(failure_threshold=2, reset_timeout=5.0, clock=clock)
    assert reg.server("inv") is reg.server("inv")
    assert reg.tool("inv", "check_stock").name == "inv/check_stock"
    assert reg.get("other") is None and reg.get("inv", "nope") is None
    guard = reg.guard("inv", "check_stock")
    assert reg.guard("inv", "check_stock") is guard

    for _ in range(2):
        with pytest.raises(ToolTimeoutError):
            await guard.call(_raise(ToolTimeoutError("slow")))
    assert reg.tool("inv", "check_stock").state is CircuitState.OPEN
    assert reg.server("inv").state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError, match="'inv'"):
        reg.guard("inv", "other_tool").allow()

    reg.configure("inv", failure_threshold=7)
    assert reg.server("inv").failure_threshold == 7
    assert reg.tool("inv", "new_tool").failure_threshold == 7
    snap = reg.snapshot()
    assert snap["servers"]["inv"]["state"] == "open"
    assert snap["tools"]["inv"]["check_stock"]["state"] == "open"
    assert len(list(reg)) == 4  # inv, check_stock, other_tool, new_tool
    reg.remove("inv")
    assert reg.get("inv") is None and reg.get("inv", "check_stock") is None


def test_guard_does_not_leak_server_probe_when_tool_is_open() -> None:
    clock = FakeClock()
    reg = CircuitRegistry(failure_threshold=1, reset_timeout=1.0, clock=clock)
    server, tool = reg.server("s"), reg.tool("s", "t")
    server.record_failure()
    tool.record_failure()
    clock.now += 1.0
    tool.reset_timeout = 100.0
    with pytest.raises(CircuitOpenError, match="'s/t'"):
        reg.guard("s", "t").allow()
    # The server's half-open probe slot was given back: another tool may probe it.
    reg.guard("s", "u").allow()
    with pytest.raises(CircuitOpenError):
        reg.guard("s", "v").allow()


@settings(max_examples=300, deadline=None)
@given(
    threshold=st.integers(min_value=1, max_value=4),
    ops=st.lists(st.sampled_from(["allow", "success", "failure", "tick", "state"]), max_size=60),
)
def test_property_matches_reference_model(threshold: int, ops: list[str]) -> None:
    """Random operation sequences against an independent model of the state machine."""
    b, clock = make(threshold=threshold, reset=3.0, probe_timeout=1e9)
    state, failures, opened_at, probing = "closed", 0, 0.0, False

    def lazy() -> None:
        nonlocal state, probing
        if state == "open" and clock.now - opened_at >= 3.0:
            state, probing = "half-open", False

    for op in ops:
        if op == "tick":
            clock.now += 1.0
        elif op == "state":
            lazy()
            assert b.state.value == state
        elif op == "allow":
            lazy()
            refused = state == "open" or (state == "half-open" and probing)
            if state == "half-open" and not probing:
                probing = True
            try:
                b.allow()
                assert not refused
            except CircuitOpenError:
                assert refused
        elif op == "success":
            failures = 0
            if state == "half-open":
                state, probing = "closed", False
            b.record_success()
        else:
            failures += 1
            if (state == "closed" and failures >= threshold) or state == "half-open":
                state, opened_at, probing = "open", clock.now, False
            b.record_failure()
        assert b.consecutive_failures == failures
