"""Budgets with reservations (AGT-4).

A call first *reserves* its estimated tokens/cost/steps against every scope that
applies (run, session, user's day, tenant's day); the reservation fails with
:class:`BudgetExceededError` if it would pass a limit. After the call, the
reservation is *committed* with the reported usage. Because reservation is a
synchronous check-and-add on one event loop, concurrent runs of the same user can
overshoot a limit by at most the estimate error of the calls in flight, never by
whole calls.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from toolmesh.errors import BudgetExceededError


@dataclass(slots=True)
class Reservation:
    tokens: int = 0
    cost: float = 0.0
    steps: int = 0
    done: bool = False


@dataclass
class Budget:
    """Usage of one scope against its limits (``None`` = unlimited)."""

    name: str
    max_tokens: int | None = None
    max_steps: int | None = None
    max_cost_usd: float | None = None
    warn_at: float = 0.7
    used_tokens: int = 0
    used_steps: int = 0
    used_cost: float = 0.0
    reserved_tokens: int = 0
    reserved_steps: int = 0
    reserved_cost: float = 0.0
    _warned: set[str] = field(default_factory=set)

    @property
    def limited(self) -> bool:
        return self.max_tokens is not None or self.max_steps is not None or self.max_cost_usd is not None

    def check(self, tokens: int, cost: float, steps: int) -> str | None:
        """Why reserving this would pass a limit, or None."""
        if self.max_steps is not None and self.used_steps + self.reserved_steps + steps > self.max_steps:
            return f"{self.name}: step limit {self.max_steps} reached ({self.used_steps} used)"
        if self.max_tokens is not None and self.used_tokens + self.reserved_tokens + tokens > self.max_tokens:
            return (f"{self.name}: token limit {self.max_tokens} would be exceeded "
                    f"({self.used_tokens} used, next call needs about {tokens})")
        if self.max_cost_usd is not None and self.used_cost + self.reserved_cost + cost > self.max_cost_usd + 1e-12:
            return (f"{self.name}: cost limit ${self.max_cost_usd:.4f} would be exceeded "
                    f"(${self.used_cost:.6f} used, next call about ${cost:.6f})")
        return None

    def hold(self, r: Reservation) -> None:
        self.reserved_tokens += r.tokens
        self.reserved_cost += r.cost
        self.reserved_steps += r.steps

    def settle(self, r: Reservation, tokens: int, cost: float, steps: int) -> list[str]:
        """Replace the reservation by actual usage; returns newly crossed warning messages."""
        self.reserved_tokens -= r.tokens
        self.reserved_cost -= r.cost
        self.reserved_steps -= r.steps
        self.used_tokens += tokens
        self.used_cost += cost
        self.used_steps += steps
        return self._warnings()

    def release(self, r: Reservation) -> None:
        self.reserved_tokens -= r.tokens
        self.reserved_cost -= r.cost
        self.reserved_steps -= r.steps

    def _warnings(self) -> list[str]:
        out = []
        for kind, used, limit in (("tokens", self.used_tokens, self.max_tokens),
                                  ("steps", self.used_steps, self.max_steps),
                                  ("cost", self.used_cost, self.max_cost_usd)):
            if limit and kind not in self._warned and used >= self.warn_at * limit:
                self._warned.add(kind)
                out.append(f"{self.name}: {used / limit:.0%} of the {kind} budget used ({used:g} of {limit:g})")
        return out

    def report(self) -> dict[str, Any]:
        return {
            "scope": self.name,
            "tokens": {"used": self.used_tokens, "limit": self.max_tokens},
            "steps": {"used": self.used_steps, "limit": self.max_steps},
            "cost_usd": {"used": round(self.used_cost, 8), "limit": self.max_cost_usd},
        }


class BudgetSet:
    """The budgets one call is charged against; reserve on all or none."""

    def __init__(self, budgets: list[Budget]) -> None:
        self.budgets = [b for b in budgets if b.limited]

    def reserve(self, tokens: int, cost: float, steps: int) -> Reservation:
        for b in self.budgets:
            why = b.check(tokens, cost, steps)
            if why is not None:
                raise BudgetExceededError(f"budget exceeded: {why}", report=self.report())
        r = Reservation(tokens, cost, steps)
        for b in self.budgets:
            b.hold(r)
        return r

    def commit(self, r: Reservation, tokens: int, cost: float, steps: int) -> list[str]:
        if r.done:
            return []
        r.done = True
        warnings: list[str] = []
        for b in self.budgets:
            warnings.extend(b.settle(r, tokens, cost, steps))
        return warnings

    def release(self, r: Reservation) -> None:
        if not r.done:
            r.done = True
            for b in self.budgets:
                b.release(r)

    def report(self) -> dict[str, Any]:
        return {"budgets": [b.report() for b in self.budgets]}


class DailySpend:
    """Per-day spend budgets per user and per tenant, kept in memory (seeded from the ledger)."""

    def __init__(self, per_user: float | None, per_tenant: float | None, *, max_keys: int = 100_000) -> None:
        self.per_user = per_user
        self.per_tenant = per_tenant
        self.max_keys = max_keys
        self._budgets: dict[tuple[str, str | None, str], Budget] = {}

    @staticmethod
    def today() -> str:
        return time.strftime("%Y-%m-%d", time.gmtime())

    def budgets(self, tenant: str, user: str, seed: Any = None) -> list[Budget]:
        day = self.today()
        out = []
        for key, limit in (((tenant, user, day), self.per_user), ((tenant, None, day), self.per_tenant)):
            if limit is None:
                continue
            b = self._budgets.get(key)
            if b is None:
                if len(self._budgets) >= self.max_keys:
                    self._budgets = {k: v for k, v in self._budgets.items() if k[2] == day}
                who = f"user {user}" if key[1] is not None else f"tenant {tenant}"
                b = self._budgets[key] = Budget(f"daily spend of {who}", max_cost_usd=limit)
                if seed is not None:
                    b.used_cost = float(seed(tenant, key[1], day) or 0.0)
            out.append(b)
        return out
