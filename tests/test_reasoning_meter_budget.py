"""The reasoning engine's model calls reserve their budget like the agent's (``reserve_call``):
a call kept out only by another call's reservation waits for it, a real limit refuses at once, and
a daily spend kept in Redis is held there before the call (a real redis-server, the scripted LLM
over HTTP)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

import services
from reasoning_support import MODEL, scripted_router
from services import RedisServer
from toolmesh.agent.budget import Budget, BudgetSet, DailySpend
from toolmesh.errors import BudgetExceededError
from toolmesh.llm import types as t
from toolmesh.llm.router import Router
from toolmesh.llm.tokens import count_messages
from toolmesh.reasoning.adapter import Meter
from toolmesh.store.redis_budget import SharedSpend, spend_keys
from toolmesh.store.redis_state import RedisState
from toolmesh.store.shared import StateSettings

pytestmark = pytest.mark.timeout(60)

USAGE = {"input_tokens": 10, "output_tokens": 5}
SCRIPT = {"default": {"text": "ok", "usage": USAGE, "latency_ms": 300}}
OUT = 100  # max_tokens of every call: the estimate reserves that much output


def price(model: str, u: t.Usage) -> float:
    return (u.input_tokens + u.output_tokens) * 0.001  # $0.001 a token


def meter(llm: Router, budgets: BudgetSet, *, wait: float = 30.0) -> Meter:
    return Meter(llm, budgets=budgets, price=price, ledger=None, run_id="r1", tenant="acme",
                 user="u1", timeout=30.0, scenario=None, max_output_tokens=OUT, budget_wait=wait)


def request() -> t.ChatRequest:
    return t.ChatRequest(model=MODEL, messages=[t.Message(role="user", content="hi")], max_tokens=OUT)


def estimate() -> float:
    return price(MODEL, t.Usage(count_messages(MODEL, request().messages)[0], OUT))


async def test_a_call_blocked_only_by_a_reservation_waits_for_it() -> None:
    """Room for one estimate plus one actual cost: two concurrent calls both run, the second
    after the first settled (a synchronous reserve refused it)."""
    actual = price(MODEL, t.Usage(10, 5))
    day = Budget("day", max_cost_usd=estimate() + actual + 0.0005)
    async with scripted_router(SCRIPT) as (router, _):
        m = meter(router, BudgetSet([day]))
        first, second = await asyncio.gather(m.complete(request()), m.complete(request()))
    assert first.message.content == second.message.content == "ok"
    assert day.used_cost == pytest.approx(2 * actual) and day.in_flight == 0


async def test_a_real_limit_refuses_without_waiting() -> None:
    day = Budget("day", max_cost_usd=estimate() / 2)
    async with scripted_router(SCRIPT) as (router, srv):
        with pytest.raises(BudgetExceededError, match="cost limit"):
            await meter(router, BudgetSet([day]), wait=3600.0).complete(request())
        assert srv.requests == []  # refused before any model call


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with services.redis_server() as server:
        yield server


async def test_a_shared_daily_spend_is_held_in_redis_before_the_call(redis_server: RedisServer) -> None:
    st = RedisState(StateSettings.model_validate({"url": redis_server.url, "timeout": 5.0}))
    store = SharedSpend(st)
    ds = DailySpend(1.0, None, scope_factory=store)
    h, _ = spend_keys("tm", f"spend:acme:u1:{DailySpend.today()}")

    def held() -> tuple[int, float]:
        n, used = redis_server.cli("HMGET", h, "n", "used").split("\n")[:2]
        return int(n or 0), float(used or 0)

    try:
        async with scripted_router(SCRIPT) as (router, _):
            call = asyncio.ensure_future(meter(router, BudgetSet(ds.budgets("acme", "u1"))).complete(request()))
            for _ in range(200):  # the hold shows in Redis while the model call runs
                if held()[0] == 1 or call.done():
                    break
                await asyncio.sleep(0.01)
            during = held()
            await call
        await store.drain()
        assert during[0] == 1
        n, used = held()
        assert n == 0 and used == pytest.approx(price(MODEL, t.Usage(10, 5)))
        assert store.round_trips == 1 and store.settlements == 1
    finally:
        await st.aclose()


async def test_the_reasoning_config_sets_how_long_a_call_waits_for_reservations() -> None:
    """``reasoning.budget_wait`` reaches the run's model calls: 0 refuses at once where the
    default waits (the case of the first test)."""
    from toolmesh.reasoning.run import Run, RunParts
    from toolmesh.reasoning.types import ReasoningConfig

    async with scripted_router(SCRIPT) as (router, _):
        for wait in (0.0, 12.5):
            run = Run(RunParts(router, None, None, None, price), ReasoningConfig(budget_wait=wait), "q", "r")
            assert run.meter.budget_wait == wait
    with pytest.raises(ValueError, match="budget_wait"):
        ReasoningConfig(budget_wait=-1)
