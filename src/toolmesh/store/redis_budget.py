"""Daily spend budgets shared by every worker and replica through Redis (STO-2).

The agent's budgets (:mod:`toolmesh.agent.budget`) reserve a call's worst-case cost before it
runs and settle the actual cost afterwards. With ``state.url`` set, the daily spend scopes (per
user, per tenant) are :class:`RedisSpendScope` objects made by :class:`SharedSpend`, the
``scope_factory`` of :class:`~toolmesh.agent.budget.DailySpend`, and :class:`BudgetSet` is
unchanged:

* the synchronous checks answer from this process's view of Redis (the day's spend and the holds
  in flight across the fleet, as the last reply said, plus this process's holds not yet sent);
* :meth:`SharedSpend.confirm` then holds the estimate in Redis: one script, one round trip for
  the user's and the tenant's scope (keys hash-tagged by tenant), on Redis's clock, all or none.
  A refusal refreshes the view, so ``BudgetSet.reserve_call`` waits for holds to settle (polling
  Redis) or refuses, exactly as it does with in-process budgets;
* or the hold rides on the request's admission script (:meth:`SharedSpend.rider`, a
  :class:`SpendHold` given to :meth:`~toolmesh.store.redis_limits.SharedLimiter.admit`): the
  rate limits and the hold in one round trip, all or nothing (a pass-through chat completion);
* after the response the hold is replaced by the actual cost (one script, sent in the
  background, retried while Redis is down); holding or settling one id twice counts once;
* a hold lives ``state.lease`` seconds unless renewed (every lease/3 while its call runs), so a
  crashed process's holds lapse by themselves.

Redis unreachable: confirming raises :class:`~toolmesh.errors.StateUnavailableError` (the
gateway answers 503) rather than spending without a shared check; the client's own recovery
brings budgets back when Redis answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

from toolmesh.agent.budget import COST_EPSILON, Headroom, Reservation, SharedScope
from toolmesh.store.redis_limits import limit_key, spend_script
from toolmesh.store.redis_state import RedisState
from toolmesh.store.shared import StateUnavailableError

__all__ = ["RedisSpendScope", "SharedSpend", "SpendHold", "spend_keys"]

log = logging.getLogger("toolmesh.store.redis")

SPEND = spend_script("spend.lua")
#: A day's keys live two days after their last write (a day is a UTC date in the key).
KEY_TTL_MS = 2 * 86_400_000
#: How often a call blocked by other processes' holds asks Redis again.
POLL = 0.05


def spend_keys(prefix: str, scope_key: str) -> tuple[str, str]:
    """The hash and the lease set of one scope key (``spend:<tenant>:<user or *>:<day>``)."""
    if not scope_key.startswith("spend:"):
        raise ValueError(f"not a spend scope key: {scope_key!r}")
    rest = scope_key[len("spend:"):]
    # The first segment is the tenant (the hash tag). A tenant name with a colon only moves the
    # tag; the whole key stays unique, and a user's and a tenant's scope still share the slot.
    tenant = rest.split(":", 1)[0]
    h = limit_key(prefix, tenant, "sp:" + rest)
    return h, h + ":x"


class RedisSpendScope:
    """One daily spend scope kept in Redis (a :class:`~toolmesh.agent.budget.SharedScope`)."""

    def __init__(self, store: SharedSpend, key: str, name: str, max_cost_usd: float, warn_at: float = 0.7) -> None:
        if max_cost_usd < 0:
            raise ValueError(f"{name}: max_cost_usd must be >= 0")
        self._store = store
        self.key = key
        self.name = name
        self.max_cost_usd = max_cost_usd
        self.warn_at = warn_at
        self.hash_key, self.lease_key = spend_keys(store.prefix, key)
        #: The fleet's figures as Redis last said (holds include this process's confirmed ones).
        self.used_cost = 0.0
        self.held_cost = 0.0
        self.held_count = 0
        #: This process's holds not confirmed yet (between hold() and the reply).
        self.pending_cost = 0.0
        self.pending_count = 0
        self.floor = 0.0
        self._warned = False
        self._peek: asyncio.Future[None] | None = None

    # -- BudgetScope --------------------------------------------------------------------------
    @property
    def store(self) -> SharedSpend:
        return self._store

    @property
    def limited(self) -> bool:
        return True

    @property
    def in_flight(self) -> int:
        return self.held_count + self.pending_count

    def seed(self, spent: float) -> None:
        """Spend this process's ledger already recorded today: Redis's count starts there at least."""
        self.floor = max(self.floor, spent)
        self.used_cost = max(self.used_cost, spent)

    def check(self, tokens: int, cost: float, steps: int) -> str | None:
        if self.used_cost + self.held_cost + self.pending_cost + cost > self.max_cost_usd + COST_EPSILON:
            return (f"{self.name}: cost limit ${self.max_cost_usd:.4f} would be exceeded "
                    f"(${self.used_cost:.6f} used, next call about ${cost:.6f})")
        return None

    def headroom(self, *, reserved: bool = True) -> Headroom:
        held = self.held_cost + self.pending_cost if reserved else 0.0
        return Headroom(cost=self.max_cost_usd - self.used_cost - held)

    def hold(self, r: Reservation) -> None:
        self.pending_cost += r.cost
        self.pending_count += 1

    def settle(self, r: Reservation, tokens: int, cost: float, steps: int) -> list[str]:
        # Seen at once here; Redis's reply to the settlement corrects the view.
        self.used_cost += cost
        self._end(r, cost)
        if not self._warned and self.max_cost_usd > 0 and self.used_cost >= self.warn_at * self.max_cost_usd:
            self._warned = True
            return [f"{self.name}: {self.used_cost / self.max_cost_usd:.0%} of the cost budget used "
                    f"({self.used_cost:g} of {self.max_cost_usd:g})"]
        return []

    def release(self, r: Reservation) -> None:
        self._end(r, 0.0)

    def _end(self, r: Reservation, cost: float) -> None:
        if self._store.is_held(r, self):
            self.held_cost = max(self.held_cost - r.cost, 0.0)
            self.held_count = max(self.held_count - 1, 0)
            self._store.settle_later(self, r, cost)
        else:  # never confirmed (refused, or reserved without a confirmation: a zero-cost step)
            self.pending_cost = max(self.pending_cost - r.cost, 0.0) if self.pending_count > 1 else 0.0
            self.pending_count = max(self.pending_count - 1, 0)
            if cost > 0:  # spent without a shared hold: still counted, once
                self._store.settle_later(self, r, cost)

    async def settled(self, timeout: float) -> None:
        """Wait a moment, then read the fleet's figures again (other processes' holds end there)."""
        if timeout <= 0:
            return
        await asyncio.sleep(min(timeout, POLL))
        if self._peek is None:
            self._peek = asyncio.ensure_future(self._store.peek(self))
        peek = self._peek
        try:
            with contextlib.suppress(StateUnavailableError):
                await asyncio.shield(peek)
        finally:
            if self._peek is peek and peek.done():
                self._peek = None

    def report(self) -> dict[str, Any]:
        return {"scope": self.name, "shared": True,
                "tokens": {"used": None, "limit": None}, "steps": {"used": None, "limit": None},
                "cost_usd": {"used": round(self.used_cost, 8), "limit": self.max_cost_usd,
                             "reserved": round(self.held_cost + self.pending_cost, 8)}}

    def observe(self, used: float, held: float, count: int) -> None:
        """Take the fleet's figures from a Redis reply."""
        self.used_cost, self.held_cost, self.held_count = used, max(held, 0.0), max(count, 0)
        # A day's spend only grows: what Redis said once is a floor sent with every hold, so a
        # restarted (emptied) Redis starts again from the last spend any process saw.
        self.floor = max(self.floor, used)


class SharedSpend:
    """The daily spend scopes of one process, kept in Redis: the ``scope_factory`` of
    :class:`~toolmesh.agent.budget.DailySpend` and the :class:`~toolmesh.agent.budget.ScopeStore`
    of its scopes."""

    def __init__(self, state: RedisState, *, lease: float = 30.0, retry_for: float | None = None) -> None:
        """``lease``: seconds a hold lives unrenewed; ``retry_for``: how long a settlement is retried
        while Redis is down (default 2 × lease, as long as Redis remembers a settled id)."""
        if lease <= 0:
            raise ValueError("lease must be > 0")
        self.state = state
        self.prefix = state.settings.prefix
        self.lease = lease
        self.retry_for = 2 * lease if retry_for is None else retry_for
        # reservation id -> (its scopes, when confirmed): what is held in Redis now
        self._held: dict[str, tuple[list[RedisSpendScope], float]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # reservation id -> the scopes and costs to settle in one script (sent on the next loop turn)
        self._settling: dict[str, tuple[list[RedisSpendScope], list[float]]] = {}
        self._renewer: asyncio.Task[None] | None = None
        #: Scripts of its own sent to Redis, by op: "hold" (a confirmation, one per model call not
        #: held with its admission), "settle", "renew", "peek" (a blocked call polling).
        self.scripts: dict[str, int] = dict.fromkeys(("hold", "settle", "renew", "peek"), 0)
        #: Holds Redis took / refused (with their admission or on their own).
        self.holds = 0
        self.refused_holds = 0
        #: Holds taken inside an admission script (no round trip of their own; see :class:`SpendHold`).
        self.joined_holds = 0
        #: Settlements written to Redis.
        self.settlements = 0
        #: Settlements given up after ``retry_for`` (Redis down that long): their holds lapse.
        self.lost_settlements = 0

    @property
    def round_trips(self) -> int:
        """Confirmation scripts sent (one per model call whose hold did not ride on its admission)."""
        return self.scripts["hold"]

    def __call__(self, key: str, name: str, max_cost_usd: float) -> RedisSpendScope:
        """Make the scope of ``key`` (``spend:<tenant>:<user or *>:<day>``)."""
        return RedisSpendScope(self, key, name, max_cost_usd)

    def is_held(self, r: Reservation, scope: RedisSpendScope) -> bool:
        """Whether ``r`` is held in Redis on ``scope``."""
        entry = self._held.get(r.key) if r.key is not None else None
        return entry is not None and scope in entry[0]

    # -- one round trip per model call ----------------------------------------------------------
    async def confirm(self, scopes: Sequence[SharedScope], r: Reservation) -> bool:
        """Hold ``r`` on every scope in Redis, or none (see :class:`~toolmesh.agent.budget.ScopeStore`)."""
        mine = self._mine(scopes)
        if r.key is None:
            r.key = uuid.uuid4().hex
        keys, args = self.hold_call(mine, r)
        if not self.state.available:
            raise self.unavailable("retrying in the background")
        self.scripts["hold"] += 1
        try:
            reply = await self.state.run(SPEND, keys, ["hold", *args])
        except StateUnavailableError as exc:
            raise self.unavailable(str(exc)) from None
        except asyncio.CancelledError:
            self.abandon(mine, r)
            raise
        held = int(reply[0]) == 1
        return self.answered(mine, r, held, reply[2:], refused=not held)

    def rider(self, scopes: Sequence[SharedScope], r: Reservation) -> SpendHold:
        """The hold of ``r`` on ``scopes`` as a rider of the request's admission script
        (:meth:`toolmesh.store.redis_limits.SharedLimiter.admit`): no round trip of its own."""
        mine = self._mine(scopes)
        if r.key is None:
            r.key = uuid.uuid4().hex
        return SpendHold(self, mine, r)

    def _mine(self, scopes: Sequence[SharedScope]) -> list[RedisSpendScope]:
        mine = [s for s in scopes if isinstance(s, RedisSpendScope) and s.store is self]
        if len(mine) != len(scopes):
            raise TypeError("SharedSpend got scopes of another store")
        return mine

    def hold_call(self, mine: list[RedisSpendScope], r: Reservation) -> tuple[list[str], list[str]]:
        """Keys and arguments of a hold: the id, lease, TTL, then limit, amount, floor per scope
        (admit.lua's spend section; spend.lua wants its op first: :meth:`confirm` adds it)."""
        keys: list[str] = []
        args = [str(r.key), repr(self.lease), str(KEY_TTL_MS)]
        for s in mine:
            keys += (s.hash_key, s.lease_key)
            args += (repr(s.max_cost_usd), repr(r.cost), repr(s.floor))
        return keys, args

    def answered(self, mine: list[RedisSpendScope], r: Reservation, held: bool, stats: Sequence[Any], *,
                 refused: bool) -> bool:
        """Take Redis's decision on the hold of ``r`` and the scopes' figures; returns ``held``.
        ``refused``: the spend itself refused (not held for another reason, e.g. a rate limit)."""
        for s in mine:  # no longer pending: the reply's figures count it when held
            s.pending_cost = max(s.pending_cost - r.cost, 0.0) if s.pending_count > 1 else 0.0
            s.pending_count = max(s.pending_count - 1, 0)
        self._observe(mine, stats)
        if not held:
            self.refused_holds += refused
            # Refused: the local hold is released by the caller; nothing is held in Redis.
            for s in mine:
                s.pending_count += 1  # the caller's release() takes it off again
                s.pending_cost += r.cost
            return False
        self.holds += 1
        self._held[str(r.key)] = (mine, time.monotonic())
        self._start_renewing()
        return True

    def abandon(self, mine: list[RedisSpendScope], r: Reservation) -> None:
        """A hold whose answer was lost may have been taken: give it back (idempotent; its lease would end it)."""
        self._send_later(mine, "settle", str(r.key), [0.0] * len(mine))

    def unavailable(self, why: str) -> StateUnavailableError:
        return StateUnavailableError(
            f"spend budgets are kept in Redis at {self.state.redacted_url}, which cannot be reached now "
            f"({why}): model calls are refused rather than spent unchecked (retry shortly)")

    @staticmethod
    def _observe(scopes: Sequence[RedisSpendScope], stats: Sequence[Any]) -> None:
        for i, s in enumerate(scopes):
            s.observe(float(stats[3 * i]), float(stats[1 + 3 * i]), int(stats[2 + 3 * i]))

    async def peek(self, scope: RedisSpendScope) -> None:
        """Read one scope's figures again (lapsed holds are dropped on the way)."""
        self.scripts["peek"] += 1
        reply = await self.state.run(SPEND, [scope.hash_key, scope.lease_key],
                                     ["peek", "-", repr(self.lease), str(KEY_TTL_MS)])
        self._observe([scope], reply[2:])

    # -- after the response ---------------------------------------------------------------------
    def settle_later(self, scope: RedisSpendScope, r: Reservation, cost: float) -> None:
        """Replace ``r``'s hold on ``scope`` by ``cost`` in Redis, in the background.

        The scopes of one reservation are settled together (``BudgetSet.commit`` settles them one
        after the other, synchronously): one script for all of them."""
        if r.key is None:
            r.key = uuid.uuid4().hex
        entry = self._held.get(r.key)
        if entry is not None:
            entry[0].remove(scope)
            if not entry[0]:
                del self._held[r.key]
        batch = self._settling.get(r.key)
        if batch is None:
            batch = self._settling[r.key] = ([], [])
            asyncio.get_running_loop().call_soon(self._flush_settlement, r.key)
        batch[0].append(scope)
        batch[1].append(cost)

    def _flush_settlement(self, rid: str) -> None:
        scopes, costs = self._settling.pop(rid)
        self._send_later(scopes, "settle", rid, costs)

    def _send_later(self, scopes: list[RedisSpendScope], op: str, rid: str, costs: list[float]) -> None:
        task = asyncio.get_running_loop().create_task(self._send(scopes, op, rid, costs))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, scopes: list[RedisSpendScope], op: str, rid: str, costs: list[float]) -> None:
        keys = [k for s in scopes for k in (s.hash_key, s.lease_key)]
        args: list[str | float] = [op, rid, repr(self.lease), str(KEY_TTL_MS), *(repr(c) for c in costs)]
        give_up = time.monotonic() + self.retry_for
        while True:
            self.scripts[op] += 1
            try:
                reply = await self.state.run(SPEND, keys, args)
            except StateUnavailableError as exc:
                left = give_up - time.monotonic()
                if left <= 0:
                    self.lost_settlements += 1
                    log.warning("spend settlement %s not written to Redis (%s); its hold lapses unsettled", rid, exc)
                    return
                await self.state.wait_available(min(left, 1.0))
                await asyncio.sleep(POLL)
                continue
            except Exception:
                log.exception("spend settlement %s failed", rid)
                return
            self.settlements += 1
            self._observe(scopes, reply[2:])
            return

    # -- leases ---------------------------------------------------------------------------------
    def _start_renewing(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_loop(), name="toolmesh-spend-renew")

    async def _renew_loop(self) -> None:
        """Renew holds older than lease/3 every lease/3 (a running call keeps its hold)."""
        while self._held:
            await asyncio.sleep(self.lease / 3)
            due = time.monotonic() - self.lease / 3
            for rid, (scopes, since) in list(self._held.items()):
                if since > due or not scopes:
                    continue
                keys = [k for s in scopes for k in (s.hash_key, s.lease_key)]
                self.scripts["renew"] += 1
                try:
                    await self.state.run(SPEND, keys, ["renew", rid, repr(self.lease), str(KEY_TTL_MS)])
                except StateUnavailableError:
                    pass  # the hold lapses if Redis stays away longer than its lease
                except Exception:
                    log.exception("renewing spend hold %s failed", rid)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait (bounded) for settlements in flight to be written."""
        await asyncio.sleep(0)  # settlements of this loop turn are sent on the next
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def aclose(self) -> None:
        """Write what is pending (bounded), then stop renewing (held leases then lapse)."""
        await self.drain()
        for task in [*self._tasks, *([self._renewer] if self._renewer is not None else [])]:
            task.cancel()


class SpendHold:
    """One reservation's spend hold sent inside its request's admission script: an
    :class:`~toolmesh.store.redis_limits.AdmissionRider` (the limits and the hold, one round trip)."""

    __slots__ = ("args", "held", "keys", "refused", "reservation", "scopes", "store")

    def __init__(self, store: SharedSpend, scopes: list[RedisSpendScope], r: Reservation) -> None:
        self.store = store
        self.scopes = scopes
        self.reservation = r
        self.keys, self.args = store.hold_call(scopes, r)
        #: Set from the script's answer: whether Redis took the hold / refused it for lack of room.
        self.held = False
        self.refused = False

    def unavailable(self) -> Exception:
        """The 503 of a spend budget that Redis cannot check."""
        return self.store.unavailable("the request's admission could not reach it")

    def answered(self, held: bool, refused: bool, stats: Sequence[Any]) -> None:
        """Record the decision; ``refused``: the spend refused (not a limit; those leave it False)."""
        self.store.joined_holds += held
        self.held = self.store.answered(self.scopes, self.reservation, held, stats, refused=refused)
        self.refused = refused

    def abandoned(self) -> None:
        """The admission was cancelled mid-flight: release whatever it may have held."""
        self.store.abandon(self.scopes, self.reservation)
