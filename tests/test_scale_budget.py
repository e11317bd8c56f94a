"""Daily spend budgets shared through a real redis-server (STO-2): reservations held in Redis at
admission and settled after the response, idempotent by id, lapsing with a crashed process, 503
while Redis is down; and a daily budget across three ``toolmesh serve`` replicas behind haproxy.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

import scale_support
import services
from gateway_support import Gateway
from scale_support import MODEL, PRICES, WEATHER, commands, figures, make_key
from services import RedisServer
from toolmesh.agent.budget import BudgetSet, CallAsk, DailySpend, Reservation, SharedScope
from toolmesh.errors import BudgetExceededError, StateUnavailableError
from toolmesh.store.redis_budget import RedisSpendScope, SharedSpend, spend_keys
from toolmesh.store.redis_state import RedisState
from toolmesh.store.shared import StateSettings

pytestmark = pytest.mark.timeout(120)

PRICE = 0.001  # every call here costs $0.001, reserved and settled alike


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with services.redis_server() as server:
        yield server


def state(server: RedisServer, **kw: Any) -> RedisState:
    """A separate client: one per simulated process."""
    return RedisState(StateSettings.model_validate({"url": server.url, "timeout": 2.0, "max_backoff": 0.2, **kw}))


def spend(st: RedisState, per_user: float | None, per_tenant: float | None = None, lease: float = 30.0,
          ) -> tuple[DailySpend, SharedSpend]:
    store = SharedSpend(st, lease=lease)
    return DailySpend(per_user, per_tenant, scope_factory=store), store


async def charge(ds: DailySpend, user: str, cost: float = PRICE, actual: float | None = None, *,
                 wait: float = 5.0, hold_for: float = 0.01) -> bool:
    """One model call of ``user``: reserve ``cost``, 'run', settle ``actual``; False when refused."""
    budgets = BudgetSet(ds.budgets("acme", user))
    try:
        r, _ = await budgets.reserve_call(CallAsk(10, 10, input_cost=cost / 2, output_price=cost / 20), wait=wait)
    except BudgetExceededError:
        return False
    await asyncio.sleep(hold_for)
    budgets.commit(r, 20, cost if actual is None else actual, 1)
    return True


async def test_two_processes_share_a_daily_budget_exactly(redis_server: RedisServer) -> None:
    """60 calls at $0.001 through two processes against $0.010 a day: exactly 10 spent, never more."""
    a, b = state(redis_server), state(redis_server)
    (one, store_one), (two, store_two) = spend(a, 0.010), spend(b, 0.010)
    try:
        got = await asyncio.gather(*(charge((one, two)[i % 2], "u1") for i in range(60)))
        assert sum(got) == 10
        await store_one.drain()
        await store_two.drain()
        key = f"spend:acme:u1:{DailySpend.today()}"
        assert figures(redis_server, key) == pytest.approx({"used": 0.010, "res": 0.0, "n": 0.0})
        # Both processes see the fleet's spend: a user with room elsewhere, and none here.
        assert not await charge(one, "u1", wait=0.2)
        assert await charge(two, "u2")
        [scope] = two.budgets("acme", "u1")
        assert isinstance(scope, RedisSpendScope) and isinstance(scope, SharedScope)
        assert scope.report()["cost_usd"]["used"] == pytest.approx(0.010)
        # One confirmation round trip per call, refused or not (calls refused locally send none).
        assert store_one.round_trips + store_two.round_trips >= 11
    finally:
        await a.aclose()
        await b.aclose()


async def test_user_and_tenant_scopes_all_or_nothing(redis_server: RedisServer) -> None:
    """A call refused by the tenant's day takes nothing from the user's, in one script."""
    st = state(redis_server)
    ds, store = spend(st, per_user=0.005, per_tenant=0.003)
    try:
        got = await asyncio.gather(*(charge(ds, f"user{i % 2}") for i in range(8)))
        assert sum(got) == 3
        await store.drain()
        day = DailySpend.today()
        tenant, u0, u1 = (figures(redis_server, f"spend:acme:{who}:{day}") for who in ("*", "user0", "user1"))
        assert tenant["used"] == pytest.approx(0.003) and u0["used"] + u1["used"] == pytest.approx(0.003)
        assert tenant["n"] == u0["n"] == u1["n"] == 0
        # Both scopes' keys carry the tenant's hash tag (one Cluster slot).
        assert spend_keys("tm", f"spend:acme:*:{day}")[0].startswith("tm:{acme}:")
        assert spend_keys("tm", f"spend:acme:user0:{day}")[1].startswith("tm:{acme}:")
        with pytest.raises(ValueError, match="not a spend scope key"):
            spend_keys("tm", "acme:user0")
        with pytest.raises(ValueError, match="max_cost_usd must be >= 0"):
            store(f"spend:acme:u:{day}", "daily spend of user u", -1.0)
        with pytest.raises(ValueError, match="lease must be > 0"):
            SharedSpend(st, lease=0)
        # One model call on both scopes: one script to hold, one to settle.
        before = commands(redis_server).get("evalsha", 0)
        budgets = BudgetSet(ds.budgets("beta", "bob"))
        r, _ = await budgets.reserve_call(CallAsk(10, 10, input_cost=0.001), wait=0)
        budgets.commit(r, 20, 0.0005, 1)
        await store.drain()
        assert commands(redis_server).get("evalsha", 0) - before == 2
        assert figures(redis_server, f"spend:beta:*:{day}")["used"] == pytest.approx(0.0005)
        assert figures(redis_server, f"spend:beta:bob:{day}")["used"] == pytest.approx(0.0005)
    finally:
        await st.aclose()


async def test_holds_and_settlements_are_idempotent_by_id(redis_server: RedisServer) -> None:
    st = state(redis_server)
    ds, store = spend(st, 0.010)
    try:
        [scope] = ds.budgets("acme", "ida")
        assert isinstance(scope, RedisSpendScope)
        r = Reservation(cost=0.004, key="req-1")
        scope.hold(r)
        assert await store.confirm([scope], r)
        # A retried confirmation (its reply lost) holds nothing more.
        again = Reservation(cost=0.004, key="req-1")
        scope.hold(again)
        assert await store.confirm([scope], again)
        key = f"spend:acme:ida:{DailySpend.today()}"
        assert figures(redis_server, key) == pytest.approx({"used": 0.0, "res": 0.004, "n": 1.0})
        scope.settle(r, 0, 0.003, 1)
        await store.drain()
        # The same settlement sent twice (a retry after a timeout) counts once.
        store.settle_later(scope, Reservation(cost=0.004, key="req-1"), 0.003)
        await store.drain()
        assert figures(redis_server, key) == pytest.approx({"used": 0.003, "res": 0.0, "n": 0.0})
    finally:
        await st.aclose()


HOLD_AND_DIE = """
import asyncio, sys
from toolmesh.agent.budget import BudgetSet, CallAsk, DailySpend
from toolmesh.store.redis_budget import SharedSpend
from toolmesh.store.redis_state import RedisState
from toolmesh.store.shared import StateSettings
async def main():
    ds = DailySpend(0.010, None, scope_factory=SharedSpend(RedisState(StateSettings(url=sys.argv[1])), lease=1.0))
    held = [await BudgetSet(ds.budgets("acme", "kim")).reserve_call(CallAsk(1, 1, input_cost=0.004), wait=0)
            for _ in range(2)]
    print(len(held), flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""


async def test_a_crashed_process_holds_lapse_with_their_lease(redis_server: RedisServer) -> None:
    """A process killed with SIGKILL while holding $0.008 of $0.010: its holds block others only
    until their lease (1 s) lapses; a live process's long call keeps its hold by renewing it."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", HOLD_AND_DIE, redis_server.url,
                                                stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and (await proc.stdout.readline()).strip() == b"2"
    finally:
        proc.kill()  # SIGKILL: no settlement, no more renewals
        await proc.wait()
    st = state(redis_server)
    ds, store = spend(st, 0.010, lease=1.0)
    try:
        assert not await charge(ds, "kim", cost=0.004, wait=0)  # 0.008 held by the dead process
        assert await charge(ds, "kim", cost=0.004, wait=5.0)  # ...until the lease lapses
        # A call longer than three leases keeps its hold: nobody else gets that money meanwhile.
        other_state = state(redis_server)
        other, _ = spend(other_state, 0.010, lease=1.0)
        try:
            long_call = asyncio.create_task(charge(ds, "kim", cost=0.005, hold_for=3.5))
            await asyncio.sleep(2.5)
            assert not await charge(other, "kim", cost=0.002, wait=0)
            assert await long_call
        finally:
            await other_state.aclose()
        await store.drain()
        assert figures(redis_server, f"spend:acme:kim:{DailySpend.today()}") == pytest.approx(
            {"used": 0.009, "res": 0.0, "n": 0.0})
    finally:
        await st.aclose()


async def test_redis_down_refuses_then_recovers(redis_server: RedisServer) -> None:
    st = state(redis_server)
    ds, store = spend(st, 0.010)
    try:
        assert all([await charge(ds, "dana") for _ in range(3)])
        await store.drain()
        redis_server.stop()
        with pytest.raises(StateUnavailableError, match="spend budgets are kept in Redis"):
            await charge(ds, "dana")
        with pytest.raises(StateUnavailableError):  # known down: refused without a connect attempt
            await charge(ds, "dana")
        redis_server.start()  # empty: what survives is the floor the process sends with its holds
        assert await st.wait_available(10.0)
        key = f"spend:acme:dana:{DailySpend.today()}"
        assert await charge(ds, "dana")
        await store.drain()
        assert figures(redis_server, key)["used"] == pytest.approx(0.004)  # the $0.003 it had seen, + 1
        [scope] = ds.budgets("acme", "dana")
        assert isinstance(scope, RedisSpendScope)
        scope.seed(0.008)  # e.g. the host's ledger says more
        assert await charge(ds, "dana")
        assert await charge(ds, "dana")
        assert not await charge(ds, "dana", wait=0)
        await store.drain()
        assert figures(redis_server, key)["used"] == pytest.approx(0.010)
    finally:
        await st.aclose()


# -- three replicas behind haproxy --------------------------------------------------------------

DAILY = 1.0  # USD per user per day


def gateway_config(redis: RedisServer, store: Path, llm_url: str) -> dict[str, Any]:
    # Generous timeouts: on a crowded test machine a starved event loop must not count as Redis
    # down (spend budgets would answer 503 then, as they should with Redis really away).
    return {
        "store": {"path": str(store)},
        "models": {MODEL: {"provider": "openai", "price": PRICES}},
        "llm": {"deployments": [{"name": "m", "provider": "openai", "base_url": llm_url, "api_key": "x",
                                 "model": MODEL}]},
        "state": {"url": redis.url, "timeout": 10.0, "connect_timeout": 10.0, "replicas": 6, "lease": 10,
                  "max_backoff": 0.5},
        "agent": {"spend": {"per_user_daily_usd": DAILY}, "budget_wait": 20, "max_output_tokens": 50,
                  "user_limits": {"max_concurrent_runs": 1000, "requests_per_minute": 100_000}},
        "gateway": {"metrics_public": True},
    }


@pytest.fixture(scope="module")
def scripted_llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with scale_support.scripted_llm(tmp_path_factory.mktemp("llm"), latency_ms=50) as url:
        yield url


def test_daily_spend_across_three_replicas(tmp_path: Path, scripted_llm: str) -> None:
    """3 ``toolmesh serve`` processes (2 workers each) behind haproxy round-robin, one user with
    a $1.00 day, 60 concurrent pass-through chats. Each reserves its worst case ($0.080: the
    counted input, 30 tokens, and max_tokens 50 at $0.001 a token) and costs $0.070 (the model
    reports 20 + 50): admission stops once the day's spend plus one estimate would pass the limit,
    so exactly 1 + floor((1.00 - 0.080) / 0.070) = 14 are answered, $0.98, never above $1.00."""
    with services.redis_server() as redis:
        store = tmp_path / "tm.db"
        key = make_key(store, "acme")
        cfg = gateway_config(redis, store, scripted_llm)
        fleet = [Gateway(tmp_path / f"r{i}", cfg, workers=2) for i in range(3)]
        try:
            with ThreadPoolExecutor(3) as pool:  # the replicas start at once
                list(pool.map(Gateway.start, fleet))
            with services.haproxy([g.port for g in fleet]) as proxy:
                url = f"http://127.0.0.1:{proxy.port}"
                answers = asyncio.run(_chats(url, key, 60))
                used = figures(redis, f"spend:acme:ursula:{DailySpend.today()}")
                # Redis stopped: no money spent unchecked, a clear 503 from every replica...
                redis.stop()
                down = asyncio.run(_chats(url, key, 6, user="victor")) + asyncio.run(
                    _chats(url, key, 2, user="victor", agent=True))
                redis.start()  # empty, same port
                # ...and back by itself once Redis answers (each process pings within max_backoff).
                time.sleep(2)
                again = asyncio.run(_chats(url, key, 6, user="victor")) + asyncio.run(
                    _chats(url, key, 2, user="victor", agent=True))
        finally:
            for g in fleet:
                g.stop()
        ok = [r for r in answers if r.status_code == 200]
        refused = [r for r in answers if r.status_code != 200]
        costs = [r.json()["toolmesh"]["cost_usd"] for r in ok]
        estimate, actual = 0.080, 0.070
        assert all(c == pytest.approx(actual) for c in costs)
        assert len(ok) == 1 + math.floor((DAILY - estimate) / actual + 1e-9) == 14
        assert DAILY - estimate < sum(costs) <= DAILY
        assert {r.status_code for r in refused} == {429}, [r.text[:400] for r in refused if r.status_code != 429][:3]
        assert all(r.json()["error"]["code"] == "budget_exceeded" and "daily spend" in r.json()["error"]["message"]
                   for r in refused)
        assert "next call about $0.080000" in refused[0].json()["error"]["message"]
        # Redis held the fleet's day: every hold settled, the spend that of the answered calls.
        assert used == pytest.approx({"used": sum(costs), "res": 0.0, "n": 0.0})
        assert [r.status_code for r in down] == [503] * 8, [r.text[:200] for r in down]
        assert all(r.json()["error"]["code"] == "shared_state_unavailable" and r.headers["retry-after"] == "1"
                   for r in down)
        assert [r.status_code for r in again] == [200] * 8, [r.text[:200] for r in again]


async def _chats(url: str, key: str, n: int, user: str = "ursula", agent: bool = False) -> list[httpx.Response]:
    """``n`` concurrent chat completions: pass-through (the caller's tools), or agent runs."""
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)  # fresh connections: every replica
    body: dict[str, Any] = {"model": MODEL, "user": user, "messages": [{"role": "user", "content": "hi"}]}
    if not agent:
        body.update(max_tokens=50, tools=WEATHER)
    async with httpx.AsyncClient(limits=limits, timeout=60.0) as client:
        async def one(i: int) -> httpx.Response:
            return await client.post(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                     json=body)
        return list(await asyncio.gather(*(one(i) for i in range(n))))
