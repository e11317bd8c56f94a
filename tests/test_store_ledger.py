"""The usage/cost ledger: exact costs, unpriced rows, grouped reports, daily spend, savings."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass

import pytest

from toolmesh.llm.types import Usage
from toolmesh.store import Store, UsageLedger

pytest_plugins = ("store_engines",)  # store_url: each test on SQLite and on PostgreSQL

DAY1 = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC).timestamp()
DAY2 = DAY1 + 86400
# Dyadic prices so sums of costs are exact in binary floating point.
PRICES = {"cheap": (2.0**-20, 2.0**-18), "big": (2.0**-14, 2.0**-12), "ref": (2.0**-12, 2.0**-10)}


@dataclass
class Cost:
    usd: float | None
    priced: bool
    model: str


def price(model: str, usage: Usage) -> Cost:
    p = PRICES.get(model)
    if p is None:
        return Cost(None, False, model)
    return Cost(usage.input_tokens * p[0] + usage.output_tokens * p[1], True, model)


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def rec(ledger: UsageLedger, model: str, inp: int, out: int, *, tenant: str = "acme", user: str = "ann",
        at: float | None = None, session: str | None = "s1") -> None:
    ledger.record(tenant=tenant, user=user, session=session, model=model, provider="p",
                  usage=Usage(inp, out), latency_ms=10.0, at=at)


async def test_costs_exact_and_unpriced_is_null(store_url: str) -> None:
    db = store_url
    async with Store(db) as store:
        ledger = UsageLedger(store, price, clock=Clock(DAY1))
        r = ledger.record(tenant="acme", user="ann", session="s1", model="cheap", provider="p",
                          usage=Usage(1000, 200), latency_ms=12.5, request_id="r1")
        assert r.cost_usd == 1000 * 2.0**-20 + 200 * 2.0**-18 and r.priced
        u = ledger.record(tenant="acme", user="ann", session="s1", model="mystery", provider="p",
                          usage=Usage(5, 5), latency_ms=1)
        assert u.cost_usd is None and not u.priced
    async with Store(db) as store:  # read back through a new store: what reached the database
        rows = await store.fetchall("SELECT model, cost_usd, priced, request_id FROM usage ORDER BY id")
    assert rows == [("cheap", 1000 * 2.0**-20 + 200 * 2.0**-18, 1, "r1"), ("mystery", None, 0, None)]


async def test_reports_grouped(store_url: str) -> None:
    async with Store(store_url) as store:
        ledger = UsageLedger(store, price, clock=Clock(DAY2))
        rec(ledger, "cheap", 1000, 100, at=DAY1)
        rec(ledger, "cheap", 3000, 300, at=DAY2, user="bob")
        rec(ledger, "big", 100, 10, at=DAY2)
        rec(ledger, "mystery", 7, 7, at=DAY2)
        rec(ledger, "big", 50, 50, at=DAY2, tenant="other")

        by_model = {r["model"]: r for r in await ledger.report(("model",))}
        assert by_model["cheap"]["requests"] == 2
        assert by_model["cheap"]["input_tokens"] == 4000 and by_model["cheap"]["output_tokens"] == 400
        assert by_model["cheap"]["cost_usd"] == 4000 * 2.0**-20 + 400 * 2.0**-18
        assert by_model["cheap"]["unpriced_requests"] == 0
        assert by_model["mystery"]["cost_usd"] is None and by_model["mystery"]["unpriced_requests"] == 1
        assert by_model["big"]["requests"] == 2

        by_day = await ledger.report(("tenant", "day"), tenant="acme")
        assert [(r["tenant"], r["day"], r["requests"], r["unpriced_requests"]) for r in by_day] == [
            ("acme", "2026-03-01", 1, 0), ("acme", "2026-03-02", 3, 1)]
        assert by_day[1]["cost_usd"] == 3000 * 2.0**-20 + 300 * 2.0**-18 + 100 * 2.0**-14 + 10 * 2.0**-12

        only_bob = await ledger.report(("user",), user="bob")
        assert [(r["user"], r["requests"]) for r in only_bob] == [("bob", 1)]
        since = await ledger.report(("model",), since=DAY2, until=DAY2 + 1)
        assert sum(r["requests"] for r in since) == 4
        total = await ledger.report(())
        assert total[0]["requests"] == 5
        assert await ledger.report(("model",), tenant="nobody") == []
        with pytest.raises(ValueError, match="cannot group"):
            await ledger.report(("model; DROP TABLE usage",))


async def test_spend_per_day_and_user_survives_reopen(store_url: str) -> None:
    db = store_url
    clock = Clock(DAY2)
    async with Store(db) as store:
        ledger = UsageLedger(store, price, clock=clock)
        rec(ledger, "big", 1024, 0, at=DAY1)            # 2**-4 on day 1
        rec(ledger, "big", 2048, 0)                     # 2**-3 today
        rec(ledger, "big", 0, 1024, user="bob")         # 2**-2 today
        rec(ledger, "mystery", 10**6, 10**6)            # unpriced: adds nothing
        rec(ledger, "big", 4096, 0, tenant="other")
        assert await ledger.spend("acme", "ann") == 2.0**-3
        assert await ledger.spend("acme", "bob") == 2.0**-2
        assert await ledger.spend("acme") == 2.0**-3 + 2.0**-2
        assert await ledger.spend("acme", "ann", day="2026-03-01") == 2.0**-4
        assert await ledger.spend("acme", day="2026-02-01") == 0.0
        rec(ledger, "big", 2048, 0)                     # the cached total follows without a query
        assert ledger.cached_spend("acme", "ann") == 2.0**-2
        assert ledger.cached_spend("acme", "zed") is None
    async with Store(db) as store:  # a new process: totals come back from disk, then grow in memory
        ledger = UsageLedger(store, price, clock=clock)
        assert await ledger.spend("acme", "ann") == 2.0**-2
        rec(ledger, "big", 1024, 0)
        assert await ledger.spend("acme", "ann") == 2.0**-2 + 2.0**-4
        assert await ledger.spend("acme") == 2.0**-1 + 2.0**-4
        clock.t = DAY2 + 86400 * 5  # days later: old days answered from disk
        assert await ledger.spend("acme", "ann", day="2026-03-02") == 2.0**-2 + 2.0**-4
        assert await ledger.spend("acme", "ann") == 0.0


async def test_spend_exact_under_concurrent_recording(store_url: str) -> None:
    async with Store(store_url, batch_rows=16) as store:
        ledger = UsageLedger(store, price, clock=Clock(DAY1))

        async def user(n: int) -> None:
            for i in range(40):
                rec(ledger, "big", 1024, 0, user=f"u{n % 5}")
                if i % 3 == 0:
                    await ledger.spend("acme", f"u{n % 5}")
                await asyncio.sleep(0)

        await asyncio.gather(*(user(n) for n in range(20)))
        for n in range(5):
            assert await ledger.spend("acme", f"u{n}") == 4 * 40 * 2.0**-4
        assert await ledger.spend("acme") == 20 * 40 * 2.0**-4
        rows = await ledger.report(("user",))
        assert [r["requests"] for r in rows] == [160] * 5


async def test_savings_against_reference(store_url: str) -> None:
    async with Store(store_url) as store:
        ledger = UsageLedger(store, price, clock=Clock(DAY1))
        rec(ledger, "cheap", 4096, 1024)
        rec(ledger, "big", 1024, 256)
        rec(ledger, "mystery", 999, 999)
        s = await ledger.savings("ref")
        actual = 4096 * 2.0**-20 + 1024 * 2.0**-18 + 1024 * 2.0**-14 + 256 * 2.0**-12
        reference = 5120 * 2.0**-12 + 1280 * 2.0**-10
        assert s["actual_usd"] == actual and s["reference_usd"] == reference
        assert s["savings_usd"] == reference - actual
        assert s["requests"] == 2 and s["unpriced_requests"] == 1
        unknown = await ledger.savings("nope")
        assert unknown["reference_usd"] is None and unknown["savings_usd"] is None


async def test_record_rejects_bad_input_and_keeps_rows(store_url: str) -> None:
    async with Store(store_url) as store:
        ledger = UsageLedger(store, price)
        rec(ledger, "cheap", 1, 1)
        bad: list[tuple[dict[str, object], type[Exception], str]] = [
            (dict(tenant=1), TypeError, "tenant must be str, not int"),
            (dict(usage={"input_tokens": 1}), TypeError, "usage must be .*Usage, not dict"),
            (dict(latency_ms=-1), ValueError, "latency_ms must be a non-negative number, not -1"),
            (dict(latency_ms=float("nan")), ValueError, "latency_ms must be a non-negative number, not nan"),
            (dict(usage=Usage(-1, 0)), ValueError, "usage.input_tokens must be a non-negative int, not -1"),
            (dict(session=5), TypeError, "session must be str or None, not int"),
            (dict(at="yesterday"), TypeError, "time must be a Unix timestamp, datetime or date, not 'yesterday'"),
        ]
        for kw, error, message in bad:
            args = dict(tenant="acme", user="ann", session=None, model="cheap", provider="p", usage=Usage(1, 1),
                        latency_ms=1.0)
            with pytest.raises(error, match=message):
                ledger.record(**{**args, **kw})  # type: ignore[arg-type]
        assert (await ledger.report(()))[0]["requests"] == 1
        with pytest.raises(TypeError, match="price must be callable"):
            UsageLedger(store, "price")  # type: ignore[arg-type]


async def test_pricing_failure_records_unpriced(store_url: str) -> None:
    def broken(model: str, usage: Usage) -> Cost:
        raise KeyError(model)

    async with Store(store_url) as store:
        ledger = UsageLedger(store, broken)
        r = ledger.record(tenant="a", user="b", session=None, model="m", provider="p", usage=Usage(1, 1),
                          latency_ms=1)
        assert r.cost_usd is None
        assert (await ledger.report(("model",)))[0]["unpriced_requests"] == 1
