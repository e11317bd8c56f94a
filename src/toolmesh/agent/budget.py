"""Budgets with reservations (AGT-4).

A call first *reserves* its estimated tokens/cost/steps against every scope that
applies (run, session, user's day, tenant's day); the reservation fails with
:class:`BudgetExceededError` if it would pass a limit. After the call, the
reservation is *committed* with the reported usage. Because reservation is a
synchronous check-and-add on one event loop, concurrent runs of the same user can
overshoot a limit by at most the estimate error of the calls in flight, never by
whole calls.

Reservations are upper bounds, so while calls are in flight a scope looks fuller than
its real spend. :meth:`BudgetSet.reserve_call` therefore does not refuse a model call that
only *reservations* block: it waits (bounded) for calls in flight to settle and checks
again, and when the remaining budget allows fewer output tokens than asked it grants
fewer (the caller caps the request's ``max_tokens``), so the last call that fits is
admitted and spend still never passes the limit.

:class:`Budget` is the in-process implementation of :class:`BudgetScope`; a shared
implementation (e.g. Redis, for several gateway workers) fills the same Protocol and is
handed to :class:`DailySpend` as its ``scope_factory``, with :class:`BudgetSet` unchanged.
Such a :class:`SharedScope` answers the synchronous checks from its view of the shared store,
and its :attr:`~SharedScope.store` confirms each reservation there (one round trip for all the
scopes of a call that share a store) before :meth:`BudgetSet.reserve_call` returns it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from toolmesh.errors import BudgetExceededError

__all__ = ["Budget", "BudgetScope", "BudgetSet", "CallAsk", "DailySpend", "Headroom", "Reservation",
           "ScopeFactory", "ScopeStore", "SharedScope", "SpendBudgets"]

#: Tolerance of cost comparisons (sums of float prices).
COST_EPSILON = 1e-12


@dataclass(slots=True)
class Reservation:
    """What one call holds against its scopes until it is committed or released."""

    tokens: int = 0
    cost: float = 0.0
    steps: int = 0
    done: bool = False
    #: Its id in a shared store (set by the store; idempotency of holds and settlements).
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Headroom:
    """What a scope can still admit; ``None`` = unlimited."""

    tokens: int | None = None
    cost: float | None = None
    steps: int | None = None


@dataclass(frozen=True, slots=True)
class CallAsk:
    """What one model call may use at most, for :meth:`BudgetSet.reserve_call`.

    ``output_tokens`` is the output wanted; the grant may be lower, down to
    ``min_output_tokens`` (``None``: no lower grant, the full output or a refusal)."""

    input_tokens: int
    output_tokens: int
    input_cost: float = 0.0
    output_price: float = 0.0
    min_output_tokens: int | None = None
    steps: int = 1

    def cost(self, output_tokens: int) -> float:
        """Cost of the call with ``output_tokens`` of output."""
        return self.input_cost + self.output_price * output_tokens


class BudgetScope(Protocol):
    """One scope's usage against its limits: the operations :class:`BudgetSet` composes.

    ``check``/``hold``/``settle``/``release`` are synchronous, so a reservation on several
    scopes is one check-and-add on the event loop with nothing interleaved. A scope kept in a
    shared store answers them from a local share of its limit that it syncs with the store
    between calls; ``settled`` may poll."""

    @property
    def name(self) -> str: ...

    @property
    def limited(self) -> bool:
        """Whether any limit is set (unlimited scopes are not tracked by a BudgetSet)."""
        ...

    @property
    def in_flight(self) -> int:
        """Reservations held now."""
        ...

    def check(self, tokens: int, cost: float, steps: int) -> str | None:
        """Why reserving this would pass a limit, or None."""
        ...

    def headroom(self, *, reserved: bool = True) -> Headroom:
        """What is left under the limits, after the reservations in flight when ``reserved``."""
        ...

    def hold(self, r: Reservation) -> None:
        """Add a reservation (after :meth:`check` passed)."""
        ...

    def settle(self, r: Reservation, tokens: int, cost: float, steps: int) -> list[str]:
        """Replace a reservation by actual usage; returns newly crossed warning messages."""
        ...

    def release(self, r: Reservation) -> None:
        """Drop a reservation unused."""
        ...

    async def settled(self, timeout: float) -> None:
        """Return when a reservation of this scope ends, or after ``timeout`` seconds."""
        ...

    def report(self) -> dict[str, Any]:
        """JSON-ready usage and limits."""
        ...


class ScopeStore(Protocol):
    """Where :class:`SharedScope` usage is kept for several processes (e.g. Redis)."""

    async def confirm(self, scopes: Sequence[SharedScope], r: Reservation) -> bool:
        """Hold ``r``, already held locally on ``scopes``, in the store too: all or none, in one
        round trip. False when the store refuses (the scopes then show why in :meth:`~BudgetScope.check`);
        raises :class:`~toolmesh.errors.StateUnavailableError` when the store cannot be reached."""
        ...


@runtime_checkable
class SharedScope(BudgetScope, Protocol):
    """A :class:`BudgetScope` kept in a store several processes share; :class:`BudgetSet` confirms
    each local hold through :attr:`store` before the call may go ahead."""

    @property
    def store(self) -> ScopeStore: ...

    def seed(self, spent: float) -> None:
        """Spend already recorded elsewhere (the ledger): the shared count is never below it."""
        ...


@dataclass
class Budget:
    """Usage of one scope against its limits (``None`` = unlimited), kept in process."""

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
    in_flight: int = 0
    _warned: set[str] = field(default_factory=set)
    _waiters: list[asyncio.Future[None]] = field(default_factory=list)

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
        if (self.max_cost_usd is not None
                and self.used_cost + self.reserved_cost + cost > self.max_cost_usd + COST_EPSILON):
            return (f"{self.name}: cost limit ${self.max_cost_usd:.4f} would be exceeded "
                    f"(${self.used_cost:.6f} used, next call about ${cost:.6f})")
        return None

    def headroom(self, *, reserved: bool = True) -> Headroom:
        """What is left under the limits, after the reservations in flight when ``reserved``."""
        k = 1 if reserved else 0
        return Headroom(
            None if self.max_tokens is None else self.max_tokens - self.used_tokens - k * self.reserved_tokens,
            None if self.max_cost_usd is None else self.max_cost_usd - self.used_cost - k * self.reserved_cost,
            None if self.max_steps is None else self.max_steps - self.used_steps - k * self.reserved_steps,
        )

    def hold(self, r: Reservation) -> None:
        self.reserved_tokens += r.tokens
        self.reserved_cost += r.cost
        self.reserved_steps += r.steps
        self.in_flight += 1

    def settle(self, r: Reservation, tokens: int, cost: float, steps: int) -> list[str]:
        """Replace the reservation by actual usage; returns newly crossed warning messages."""
        self.release(r)
        self.used_tokens += tokens
        self.used_cost += cost
        self.used_steps += steps
        return self._warnings()

    def release(self, r: Reservation) -> None:
        self.reserved_tokens -= r.tokens
        self.reserved_cost -= r.cost
        self.reserved_steps -= r.steps
        self.in_flight -= 1
        if self.in_flight == 0:  # no float residue once nothing is held
            self.reserved_cost = 0.0
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    async def settled(self, timeout: float) -> None:
        """Return when a reservation of this scope ends, or after ``timeout`` seconds."""
        if self.in_flight == 0 or timeout <= 0:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await waiter
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

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

    def __init__(self, budgets: Sequence[BudgetScope]) -> None:
        self.budgets = [b for b in budgets if b.limited]
        # Scopes kept in a shared store, grouped by store: one confirmation round trip per store.
        self._shared: dict[int, tuple[ScopeStore, list[SharedScope]]] = {}
        for b in self.budgets:
            if isinstance(b, SharedScope):
                self._shared.setdefault(id(b.store), (b.store, []))[1].append(b)

    def reserve(self, tokens: int, cost: float, steps: int) -> Reservation:
        """Hold ``tokens``/``cost``/``steps`` on every scope now, or raise :class:`BudgetExceededError`."""
        for b in self.budgets:
            why = b.check(tokens, cost, steps)
            if why is not None:
                raise BudgetExceededError(f"budget exceeded: {why}", report=self.report())
        r = Reservation(tokens, cost, steps)
        for b in self.budgets:
            b.hold(r)
        return r

    async def reserve_call(self, ask: CallAsk, *, wait: float,
                           confirm: Callable[[Reservation], Awaitable[bool]] | None = None,
                           ) -> tuple[Reservation, int]:
        """Reserve one model call; returns the reservation and the output tokens granted.

        The grant is ``ask.output_tokens`` when it fits, else the most that fits if that is at
        least ``ask.min_output_tokens``. When only reservations in flight stand in the way,
        waits up to ``wait`` seconds for them to settle before refusing.

        ``confirm`` replaces the confirmation in the shared stores: the caller holds the local
        reservation there itself (e.g. in the request's admission script, one round trip with its
        rate limits), all or nothing, and returns False when a store refused it. It is awaited
        for every local reservation made; an exception it raises releases the reservation."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            granted = self._fit(ask, reserved=True)
            if granted is not None:
                r = self.reserve(ask.input_tokens + granted, ask.cost(granted), ask.steps)
                if confirm is not None:
                    if await self._confirm_with(confirm, r):
                        return r, granted
                elif not self._shared or await self._confirm(r):
                    return r, granted
                # A shared store refused (other processes' spend or holds): its scopes now say why.
            left = deadline - loop.time()
            blocker = self._blocking_reservations(ask)
            if blocker is None or left <= 0:
                need = ask.min_output_tokens if ask.min_output_tokens is not None else ask.output_tokens
                why = next((w for b in self.budgets
                            if (w := b.check(ask.input_tokens + need, ask.cost(need), ask.steps)) is not None),
                           "no headroom left")
                raise BudgetExceededError(f"budget exceeded: {why}", report=self.report())
            await blocker.settled(left)

    async def _confirm(self, r: Reservation) -> bool:
        """Confirm a local hold in every shared store; on a refusal or an error it is released."""
        try:
            for store, scopes in self._shared.values():
                if not await store.confirm(scopes, r):
                    self.release(r)
                    return False
        except BaseException:
            self.release(r)
            raise
        return True

    async def _confirm_with(self, confirm: Callable[[Reservation], Awaitable[bool]], r: Reservation) -> bool:
        try:
            if await confirm(r):
                return True
        except BaseException:
            self.release(r)
            raise
        self.release(r)
        return False

    def shared_scopes(self) -> list[SharedScope]:
        """The scopes kept in shared stores (what a caller's own ``confirm`` must hold)."""
        return [s for _, scopes in self._shared.values() for s in scopes]

    def _fit(self, ask: CallAsk, *, reserved: bool) -> int | None:
        """Output tokens that fit every scope now, or None when fewer than the minimum fit."""
        out = ask.output_tokens
        for b in self.budgets:
            fit = _fit_scope(b.headroom(reserved=reserved), ask)
            if fit is None:
                return None
            out = min(out, fit)
        least = ask.output_tokens if ask.min_output_tokens is None else ask.min_output_tokens
        return out if out >= max(least, 0) else None

    def _blocking_reservations(self, ask: CallAsk) -> BudgetScope | None:
        """A scope with reservations in flight that alone keep the call out, if the call would
        fit on used spend alone; None when a real limit refuses it (waiting cannot help)."""
        if self._fit(ask, reserved=False) is None:
            return None
        least = ask.output_tokens if ask.min_output_tokens is None else ask.min_output_tokens
        for b in self.budgets:
            fit = _fit_scope(b.headroom(reserved=True), ask)
            if b.in_flight and (fit is None or fit < least):
                return b
        return None

    def commit(self, r: Reservation, tokens: int, cost: float, steps: int) -> list[str]:
        """Replace the reservation by the call's actual usage; returns warnings newly crossed."""
        if r.done:
            return []
        r.done = True
        warnings: list[str] = []
        for b in self.budgets:
            warnings.extend(b.settle(r, tokens, cost, steps))
        return warnings

    def release(self, r: Reservation) -> None:
        """Give the reservation back unused (idempotent; a no-op once committed)."""
        if not r.done:
            r.done = True
            for b in self.budgets:
                b.release(r)

    def report(self) -> dict[str, Any]:
        return {"budgets": [b.report() for b in self.budgets]}


def _fit_scope(h: Headroom, ask: CallAsk) -> int | None:
    """Output tokens one scope's headroom allows (None: not even the input and steps fit)."""
    if h.steps is not None and ask.steps > h.steps:
        return None
    out = ask.output_tokens
    if h.tokens is not None:
        out = min(out, h.tokens - ask.input_tokens)
    if h.cost is not None:
        spare = h.cost - ask.input_cost
        if spare < -COST_EPSILON:
            return None
        if ask.output_price > 0:
            # the tolerance keeps an exact fit (e.g. 1000 tokens) from rounding down to 999
            out = min(out, math.floor(spare / ask.output_price + 1e-6))
    return out if out >= 0 else None


class ScopeFactory(Protocol):
    """Makes the scope of one key (e.g. ``spend:acme:u1:2026-01-31``) with a cost limit."""

    def __call__(self, key: str, name: str, max_cost_usd: float) -> BudgetScope: ...


class SpendBudgets(Protocol):
    """Daily spend scopes per user and per tenant (what the agent and the gateway charge)."""

    @property
    def per_user(self) -> float | None: ...

    @property
    def per_tenant(self) -> float | None: ...

    def budgets(self, tenant: str, user: str, seed: Callable[[str, str | None, str], float] | None = None,
                ) -> list[BudgetScope]:
        """The scopes of (tenant, user) today; ``seed`` gives spend already recorded (the ledger)."""
        ...


def _local_scope(key: str, name: str, max_cost_usd: float) -> BudgetScope:
    return Budget(name, max_cost_usd=max_cost_usd)


class DailySpend:
    """Per-day spend budgets per user and per tenant, kept in memory (seeded from the ledger).

    ``scope_factory`` makes each scope (default: an in-process :class:`Budget`)."""

    def __init__(self, per_user: float | None, per_tenant: float | None, *, max_keys: int = 100_000,
                 scope_factory: ScopeFactory = _local_scope) -> None:
        self.per_user = per_user
        self.per_tenant = per_tenant
        self.max_keys = max_keys
        self.scope_factory = scope_factory
        self._budgets: dict[tuple[str, str | None, str], BudgetScope] = {}

    @staticmethod
    def today() -> str:
        return time.strftime("%Y-%m-%d", time.gmtime())

    def budgets(self, tenant: str, user: str, seed: Callable[[str, str | None, str], float] | None = None,
                ) -> list[BudgetScope]:
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
                b = self._budgets[key] = self.scope_factory(f"spend:{tenant}:{key[1] or '*'}:{day}",
                                                            f"daily spend of {who}", limit)
                if seed is not None and isinstance(b, Budget):
                    b.used_cost = float(seed(tenant, key[1], day) or 0.0)
                elif seed is not None and isinstance(b, SharedScope):
                    b.seed(float(seed(tenant, key[1], day) or 0.0))
            out.append(b)
        return out
