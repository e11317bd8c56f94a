"""Background probes of an open circuit (pure logic: the prober is a local coroutine)."""

from __future__ import annotations

import asyncio

import pytest

from toolmesh.resilience.circuit import CircuitBreaker, CircuitState


class Upstream:
    """What the prober reaches: down or up; counts the probes it received."""

    def __init__(self) -> None:
        self.up = False
        self.probes = 0

    async def probe(self) -> None:
        self.probes += 1
        if not self.up:
            raise ConnectionError("down")


async def wait_for_state(breaker: CircuitBreaker, state: CircuitState) -> None:
    for _ in range(1000):
        if breaker.store.state is state:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"circuit still {breaker.store.state.value}, not {state.value}")


async def test_successful_probe_half_opens_and_the_next_call_closes() -> None:
    up = Upstream()
    breaker = CircuitBreaker("s", failure_threshold=1, reset_timeout=60, prober=up.probe, probe_backoff=0.01)
    breaker.record_failure()
    assert breaker.state is CircuitState.OPEN
    await asyncio.sleep(0.05)
    assert breaker.store.state is CircuitState.OPEN and up.probes >= 1  # still down: still open
    up.up = True
    await wait_for_state(breaker, CircuitState.HALF_OPEN)
    breaker.allow()  # the first caller is the trial call
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED


async def test_probes_back_off_up_to_the_cap_while_down() -> None:
    up = Upstream()
    breaker = CircuitBreaker("s", failure_threshold=1, reset_timeout=60, prober=up.probe,
                             probe_backoff=0.02, probe_max=0.08)
    breaker.record_failure()
    await asyncio.sleep(0.5)
    # Waits 0.02, 0.04, 0.08, 0.08...: about 7 probes in 0.5 s, not one per event-loop turn.
    assert 2 <= up.probes <= 12
    assert breaker.state is CircuitState.OPEN
    breaker.stop_probing()
    seen = up.probes
    await asyncio.sleep(0.2)
    assert up.probes == seen  # stopped


async def test_failed_trial_reopens_and_keeps_the_longer_wait() -> None:
    up = Upstream()
    up.up = True  # answers probes, but the calls themselves keep failing
    breaker = CircuitBreaker("s", failure_threshold=1, reset_timeout=60, prober=up.probe,
                             probe_backoff=0.01, probe_max=10)
    breaker.record_failure()
    for _ in range(4):
        await wait_for_state(breaker, CircuitState.HALF_OPEN)
        breaker.allow()
        breaker.record_failure()  # the trial call failed: open again, the next probe waits longer
    assert breaker.state is CircuitState.OPEN
    assert breaker.snapshot()["background_probe"] is True
    # 4 probes waited 0.01, 0.02, 0.04, 0.08: the next waits 0.16 (doubled per opening, not restarted).
    assert breaker._next_probe == pytest.approx(0.16)
    breaker.reset()
    assert breaker._next_probe == pytest.approx(0.01)  # closing restarts the backoff
    breaker.stop_probing()


def test_without_a_loop_the_reset_timeout_still_applies() -> None:
    now = [0.0]
    up = Upstream()
    breaker = CircuitBreaker("s", failure_threshold=1, reset_timeout=5, clock=lambda: now[0], prober=up.probe)
    breaker.record_failure()
    assert breaker.state is CircuitState.OPEN and up.probes == 0
    now[0] = 5.0
    assert breaker.state is CircuitState.HALF_OPEN


def test_bad_probe_backoff_is_refused() -> None:
    with pytest.raises(ValueError, match="probe_backoff"):
        CircuitBreaker("s", probe_backoff=0)
