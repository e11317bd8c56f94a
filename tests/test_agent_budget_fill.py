"""A daily budget is used to within one call: the last call that fits is admitted, none above it.

Through the real agent loop, a scripted model over HTTP and the registry's prices."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent_support import MODEL, agent_stack
from toolmesh.agent.budget import Budget, BudgetSet, CallAsk
from toolmesh.errors import BudgetExceededError
from toolmesh.llm.models import ModelRegistry
from toolmesh.llm.types import Usage

LIMIT = 0.0070
# deepseek-chat: $0.10 input, $0.42 output per million tokens -> 2800 in + 1000 out = $0.0007 a call
SCRIPT = {"latency_ms": 20, "rules": [{"when": {}, "respond": {
    "text": "ok", "usage": {"input_tokens": 2800, "output_tokens": 1000}}}]}


def chat_bodies(srv: object) -> list[dict[str, object]]:
    return [r.body for r in srv.requests if r.path.endswith("/chat/completions")]  # type: ignore[attr-defined]


def test_the_scripted_call_costs_what_the_test_assumes() -> None:
    cost = ModelRegistry.load().price(MODEL, Usage(2800, 1000))
    assert cost.priced and cost.usd == pytest.approx(0.0007, rel=1e-9)


async def test_sixty_concurrent_chats_fill_the_daily_budget_to_the_last_call(tmp_path: Path) -> None:
    async with agent_stack(SCRIPT, tmp_path, servers=(), spend={"per_user_daily_usd": LIMIT}) as (agent, srv, _):
        results = await asyncio.gather(*(agent.run("how much is left?", user="spender") for _ in range(60)))
        completed = [r for r in results if r.status == "completed"]
        stopped = [r for r in results if r.status == "budget_exceeded"]
        assert len(completed) + len(stopped) == 60
        assert len(completed) == 10  # $0.0070 / $0.0007: every call that fits, not 80 % of them
        spent = sum(r.cost_usd or 0.0 for r in completed)
        assert LIMIT - 0.0007 < spent <= LIMIT + 1e-12  # within one call of the limit, never above
        bodies = chat_bodies(srv)
        assert len(bodies) == 10  # refused runs never reached the model
        # the last admitted call asked for only the output that still fitted (1000 of 1024 tokens)
        assert sorted(b.get("max_tokens") for b in bodies)[0] == 1000  # type: ignore[type-var]
        assert all("budget" in s.answer for s in stopped)


async def test_a_real_limit_refuses_at_once_without_waiting(tmp_path: Path) -> None:
    async with agent_stack(SCRIPT, tmp_path, servers=(), spend={"per_user_daily_usd": 0.0005},
                           budget_wait=3600.0) as (agent, srv, _):
        # the first call is uncalibrated; its real cost ($0.0007) passes the day's $0.0005 once
        first = await agent.run("q", user="u")
        assert first.status == "completed"
        second = await asyncio.wait_for(agent.run("q", user="u"), timeout=30)  # would hang if it waited
        assert second.status == "budget_exceeded"
        assert len(chat_bodies(srv)) == 1


async def test_reserve_call_waits_for_reservations_then_admits() -> None:
    day = Budget("day", max_cost_usd=0.0010)
    bs = BudgetSet([day])
    ask = CallAsk(input_tokens=100, output_tokens=100, input_cost=0.0002, output_price=0.000003)  # $0.0005
    held, granted = await bs.reserve_call(ask, wait=0)
    assert granted == 100
    other, _ = await bs.reserve_call(ask, wait=0)
    with pytest.raises(BudgetExceededError):
        await bs.reserve_call(ask, wait=0)  # reservations fill the limit and nobody waits
    waiting = asyncio.ensure_future(bs.reserve_call(ask, wait=30))
    await asyncio.sleep(0)
    assert not waiting.done()
    bs.commit(held, 150, 0.0002, 1)  # the call used less than it reserved: still not enough room
    await asyncio.sleep(0)
    assert not waiting.done()
    bs.commit(other, 150, 0.0002, 1)
    third, granted = await asyncio.wait_for(waiting, timeout=5)
    assert granted == 100 and day.used_cost == pytest.approx(0.0004)
    bs.release(third)


async def test_reserve_call_caps_output_to_what_fits() -> None:
    bs = BudgetSet([Budget("day", max_cost_usd=0.0007)])
    ask = CallAsk(input_tokens=2800, output_tokens=1024, input_cost=0.00028, output_price=0.42e-6,
                  min_output_tokens=500)
    r, granted = await bs.reserve_call(ask, wait=0)
    assert granted == 1000 and r.tokens == 3800 and r.cost <= 0.0007 + 1e-12


async def test_reserve_call_refuses_below_the_minimum_output() -> None:
    bs = BudgetSet([Budget("day", max_cost_usd=0.0005)])
    ask = CallAsk(input_tokens=2800, output_tokens=1024, input_cost=0.00028, output_price=0.42e-6,
                  min_output_tokens=1000)
    with pytest.raises(BudgetExceededError, match="daily|day"):
        await bs.reserve_call(ask, wait=0)
    uncapped = CallAsk(input_tokens=2800, output_tokens=1024, input_cost=0.00028, output_price=0.42e-6)
    with pytest.raises(BudgetExceededError):
        await bs.reserve_call(uncapped, wait=0)  # no min_output_tokens: the full output or nothing


async def test_session_budgets_are_kept_only_when_limited_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from toolmesh.agent import Agent, AgentConfig, runtime
    from toolmesh.hub import Hub
    from toolmesh.llm.openai_provider import OpenAIProvider

    provider = OpenAIProvider("http://127.0.0.1:9/v1", "k")  # never called
    agent = Agent(Hub(), provider, AgentConfig(model=MODEL))
    unlimited = AgentConfig(model=MODEL)
    limited = AgentConfig(model=MODEL, session_budget={"max_cost_usd": 1.0})
    assert not agent.session_budget("t", "u", "c0", unlimited).limited
    assert agent.session_budget("t", "u", "c0", limited) is agent.session_budget("t", "u", "c0", limited)
    monkeypatch.setattr(runtime, "MAX_SESSION_BUDGETS", 4)
    busy = agent.session_budget("t", "u", "c1", limited)
    busy.in_flight = 1  # a run of c1 holds a reservation: never forgotten
    kept = [agent.session_budget("t", "u", f"c{i}", limited) for i in range(2, 12)]
    assert agent.session_budget("t", "u", "c1", limited) is busy
    assert agent.session_budget("t", "u", "c11", limited) is kept[-1]
    assert agent.session_budget("t", "u", "c2", limited) is not kept[0]  # the oldest idle one was dropped
    await provider.aclose()
