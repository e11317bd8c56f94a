"""Budgets with reservations: limits hold, warnings fire once at the threshold, concurrency cannot overshoot."""

from __future__ import annotations

import asyncio
import random

import pytest

from toolmesh.agent.budget import Budget, BudgetSet, DailySpend
from toolmesh.errors import BudgetExceededError


def test_reserve_commit_and_limits() -> None:
    b = Budget("run", max_tokens=1000, max_steps=3)
    bs = BudgetSet([b])
    r = bs.reserve(400, 0.0, 1)
    assert b.reserved_tokens == 400
    assert bs.commit(r, 350, 0.0, 1) == []
    assert (b.used_tokens, b.reserved_tokens, b.used_steps) == (350, 0, 1)
    with pytest.raises(BudgetExceededError, match="token limit 1000") as info:
        bs.reserve(700, 0.0, 1)
    assert info.value.report["budgets"][0]["tokens"] == {"used": 350, "limit": 1000}
    r2 = bs.reserve(600, 0.0, 1)
    bs.commit(r2, 600, 0.0, 1)
    with pytest.raises(BudgetExceededError, match="step limit 3"):
        bs.reserve(10, 0.0, 2)


def test_warning_once_at_threshold() -> None:
    b = Budget("session", max_cost_usd=1.0, warn_at=0.7)
    bs = BudgetSet([b])
    assert bs.commit(bs.reserve(0, 0.5, 1), 0, 0.5, 1) == []
    warnings = bs.commit(bs.reserve(0, 0.25, 1), 0, 0.25, 1)
    assert len(warnings) == 1 and "75%" in warnings[0] and "cost" in warnings[0]
    assert bs.commit(bs.reserve(0, 0.1, 1), 0, 0.1, 1) == []  # not repeated


def test_release_returns_the_reservation() -> None:
    b = Budget("run", max_tokens=100)
    bs = BudgetSet([b])
    r = bs.reserve(90, 0.0, 1)
    with pytest.raises(BudgetExceededError):
        bs.reserve(20, 0.0, 1)
    bs.release(r)
    bs.release(r)  # idempotent
    assert b.reserved_tokens == 0
    bs.reserve(100, 0.0, 1)


def test_all_or_nothing_across_scopes() -> None:
    run, day = Budget("run", max_tokens=10_000), Budget("day", max_cost_usd=0.01)
    bs = BudgetSet([run, day])
    with pytest.raises(BudgetExceededError, match="day"):
        bs.reserve(100, 0.02, 1)
    assert run.reserved_tokens == 0  # nothing held when one scope refuses


async def test_concurrent_runs_never_overshoot_by_more_than_estimate_error() -> None:
    """100 concurrent 'calls' of one user share a daily budget: spend stays within limit + estimate error."""
    spend = DailySpend(per_user=1.0, per_tenant=None)
    rng = random.Random(7)
    actual_total = 0.0
    max_error = 0.0

    async def call() -> None:
        nonlocal actual_total, max_error
        bs = BudgetSet(spend.budgets("t", "u"))
        estimate = 0.03
        try:
            r = bs.reserve(0, estimate, 1)
        except BudgetExceededError:
            return
        await asyncio.sleep(rng.random() / 100)
        actual = estimate * rng.uniform(0.8, 1.2)
        max_error = max(max_error, actual - estimate)
        actual_total += actual
        bs.commit(r, 0, actual, 1)

    await asyncio.gather(*(call() for _ in range(100)))
    budget = spend.budgets("t", "u")[0]
    assert budget.used_cost == pytest.approx(actual_total)
    # at most ~1.0/0.03 = 33 calls admitted; overshoot bounded by their estimate errors, never a whole call
    assert actual_total <= 1.0 + 34 * max_error
    assert actual_total > 0.8


def test_daily_spend_is_per_user_and_per_tenant() -> None:
    spend = DailySpend(per_user=1.0, per_tenant=1.5, )
    a = BudgetSet(spend.budgets("t", "alice"))
    b = BudgetSet(spend.budgets("t", "bob"))
    a.commit(a.reserve(0, 0.9, 1), 0, 0.9, 1)
    with pytest.raises(BudgetExceededError, match="alice"):
        a.reserve(0, 0.2, 1)
    b.commit(b.reserve(0, 0.5, 1), 0, 0.5, 1)
    with pytest.raises(BudgetExceededError, match="tenant t"):
        b.reserve(0, 0.2, 1)  # bob is under his own limit but the tenant is at 1.4 of 1.5
    seeded = DailySpend(per_user=1.0, per_tenant=None)
    (bud,) = seeded.budgets("t", "carol", seed=lambda tenant, user, day: 0.95)
    assert bud.used_cost == 0.95
