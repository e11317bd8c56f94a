"""One Redis round trip per admission (STO-2): a pass-through chat's tenant, key and user limits
and its daily spend hold are decided by one script, all or nothing (a refused hold takes no rate
token, a refused limit no hold); the spend holds, settlements and round trips in /metrics.
A real redis-server, real ``toolmesh serve`` processes and the scripted LLM over HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import scale_support
import services
from gateway_support import Gateway
from scale_support import MODEL, PRICES, WEATHER, commands, figures, make_key
from services import RedisServer
from toolmesh.agent.budget import BudgetSet, CallAsk, DailySpend, Reservation
from toolmesh.errors import BudgetExceededError, StateUnavailableError
from toolmesh.store.redis_budget import SharedSpend
from toolmesh.store.redis_limits import SharedLimiter, limit_key
from toolmesh.store.redis_state import RedisState
from toolmesh.store.shared import Limit, StateSettings

pytestmark = pytest.mark.timeout(120)

SLOW = 1 / 3600  # tokens per second: an hour per token, so the test's duration adds none


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with services.redis_server() as server:
        yield server


class RateRefused(Exception):
    pass


class Process:
    """One simulated gateway process: its own Redis client, limiter and spend store."""

    def __init__(self, server: RedisServer, per_user: float) -> None:
        self.state = RedisState(StateSettings.model_validate({"url": server.url, "timeout": 5.0,
                                                              "max_backoff": 0.2}))
        self.limiter = SharedLimiter(self.state)
        self.spend = SharedSpend(self.state)
        self.days = DailySpend(per_user, None, scope_factory=self.spend)

    async def call(self, limits: list[Limit], cost: float, tenant: str = "acme") -> str:
        """One model call admitted with its spend hold in one script: ok, budget or rate."""
        budgets = BudgetSet(self.days.budgets(tenant, "u1"))

        async def confirm(r: Reservation) -> bool:
            rider = self.spend.rider(budgets.shared_scopes(), r)
            admission = await self.limiter.admit(tenant, limits, rider=rider)
            if admission.admitted:
                return True
            if rider.refused:
                return False
            raise RateRefused(admission.refused_by)

        try:
            r, _ = await budgets.reserve_call(CallAsk(0, 0, input_cost=cost), wait=0, confirm=confirm)
        except BudgetExceededError:
            return "budget"
        except RateRefused:
            return "rate"
        budgets.commit(r, 0, cost, 1)
        return "ok"


async def test_limits_and_spend_hold_in_one_script_all_or_nothing(redis_server: RedisServer) -> None:
    a, b = Process(redis_server, 0.002), Process(redis_server, 0.002)
    tenant = [Limit.bucket("t", SLOW, 3, "tenant acme")]
    bucket = limit_key("tm", "acme", "t")
    spend_key = f"spend:acme:u1:{DailySpend.today()}"
    try:
        assert await a.call(tenant, 0.0, "warm") == "ok"  # the scripts loaded (a first EVALSHA is a NOSCRIPT)
        await a.spend.drain()
        before = commands(redis_server)["evalsha"]
        assert await a.call(tenant, 0.0015) == "ok"
        assert commands(redis_server)["evalsha"] - before == 1  # limits and hold: one script
        await a.spend.drain()
        assert commands(redis_server)["evalsha"] - before == 2  # and the settlement
        # b has not seen a's spend: its hold goes to Redis, which refuses it, and takes no token.
        assert await b.call(tenant, 0.001) == "budget"
        assert float(redis_server.cli("HGET", bucket, "tk")) == pytest.approx(2, abs=0.01)
        assert b.spend.refused_holds == 1 and b.limiter.round_trips == 1
        # Two calls that cost nothing take the last tokens; then the bucket refuses, and no hold is taken.
        assert [await a.call(tenant, 0.0) for _ in range(2)] == ["ok", "ok"]
        await a.spend.drain()
        assert await a.call(tenant, 0.0001) == "rate"
        assert figures(redis_server, spend_key) == pytest.approx({"used": 0.0015, "res": 0.0, "n": 0.0})
        assert (a.spend.holds, a.spend.joined_holds, a.spend.refused_holds) == (4, 4, 0)
        assert a.spend.round_trips == 0  # no hold script of its own: they rode on the admissions
        # Redis down: no local fallback for a call with a spend hold (it would spend unchecked).
        redis_server.stop()
        with pytest.raises(StateUnavailableError, match="spend budgets are kept in Redis"):
            await a.call(tenant, 0.0001, "beta")
        assert a.limiter.local_decisions == 0
    finally:
        await a.state.aclose()
        await b.state.aclose()


# -- a gateway process ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scripted_llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with scale_support.scripted_llm(tmp_path_factory.mktemp("llm"), latency_ms=5) as url:
        yield url


def metric(text: str, name: str) -> float:
    """The value of one sample line (``name`` with its labels, as printed)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name!r} in /metrics")


def test_a_passthrough_chat_is_one_admission_round_trip(tmp_path: Path, scripted_llm: str) -> None:
    """Every limit configured (tenant, key, user rate and concurrency, daily spend): each pass-through
    chat costs one admission script, then (after the response) one settlement script and one ZREM
    freeing its run slot; a chat its budget refuses takes no tenant or key token."""
    with services.redis_server() as redis:
        store = tmp_path / "tm.db"
        key = make_key(store, "acme")
        cfg = {
            "store": {"path": str(store)},
            "models": {MODEL: {"provider": "openai", "price": PRICES}},
            "llm": {"deployments": [{"name": "m", "provider": "openai", "base_url": scripted_llm, "api_key": "x",
                                     "model": MODEL}]},
            "state": {"url": redis.url, "timeout": 10.0, "connect_timeout": 10.0},
            "agent": {"spend": {"per_user_daily_usd": 1.0}, "budget_wait": 5,
                      "user_limits": {"max_concurrent_runs": 10, "requests_per_minute": 1000}},
            "gateway": {"metrics_public": True, "rate_limits": {
                "tenant": {"requests_per_minute": 60, "burst": 100},
                "key": {"requests_per_minute": 60, "burst": 100}}},
        }
        gw = Gateway(tmp_path / "g", cfg).start()
        try:
            with httpx.Client(base_url=gw.url, timeout=30.0, headers={"Authorization": f"Bearer {key}"}) as client:
                def chat(user: str, **extra: Any) -> httpx.Response:
                    return client.post("/v1/chat/completions", json={
                        "model": MODEL, "user": user, "max_tokens": 50, "tools": WEATHER,
                        "messages": [{"role": "user", "content": "hi"}], **extra})

                assert chat("warm").status_code == 200  # connections, scripts loaded
                settle(client, 1)
                before = commands(redis)
                n = 5
                for i in range(n):
                    assert chat("u1", stream=i % 2 == 1).status_code == 200
                text = settle(client, n + 1)
                after = commands(redis)
                assert after.get("evalsha", 0) - before.get("evalsha", 0) == 2 * n  # admission + settlement
                assert after.get("zrem", 0) - before.get("zrem", 0) == n  # the run slot freed
                assert metric(text, "toolmesh_shared_limits_round_trips_total") == n + 1
                assert metric(text, 'toolmesh_spend_holds_total{outcome="held"}') == n + 1
                assert metric(text, 'toolmesh_spend_holds_total{outcome="joined"}') == n + 1
                assert metric(text, 'toolmesh_spend_holds_total{outcome="refused"}') == 0
                assert metric(text, 'toolmesh_spend_round_trips_total{op="hold"}') == 0
                assert metric(text, "toolmesh_spend_lost_settlements_total") == 0
                assert figures(redis, f"spend:acme:u1:{DailySpend.today()}") == pytest.approx(
                    {"used": n * 0.070, "res": 0.0, "n": 0.0})
                # A chat whose estimate passes the budget: a 429, and its tenant's bucket untouched.
                tokens = float(redis.cli("HGET", limit_key("tm", "acme", "t"), "tk"))
                refused = chat("u1", max_tokens=2000)
                assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"
                assert float(redis.cli("HGET", limit_key("tm", "acme", "t"), "tk")) == pytest.approx(tokens, abs=0.5)
        finally:
            gw.stop()


def settle(client: httpx.Client, n: int) -> str:
    """/metrics once ``n`` settlements were written (they are sent after the response)."""
    for _ in range(200):
        text = client.get("/metrics").text
        if metric(text, "toolmesh_spend_settlements_total") >= n:
            return text
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} settlements written")
