"""Exact limits across every worker and replica: one Lua script in Redis per request (STO-2).

:meth:`SharedLimiter.admit` sends the request's limits (tenant and key buckets, the user's
window and concurrency slots) in one EVALSHA; the script reads Redis's clock (``TIME``), checks
them all, and charges all or none. Keys are ``<prefix>:{<tenant>}:<limit>``: the hash tag puts
one tenant's keys in one Redis Cluster slot, which a multi-key script needs.

Nothing is decided locally in batches (that would over-admit by replicas × local rate × sync
interval; only the transport is coalesced, see :class:`~toolmesh.store.resp.RespClient`).
The one local shortcut: a bucket or window Redis just refused is refused here too until the
retry time Redis gave, which ends no later than Redis would admit again.

While Redis is down, decisions fall back to a :class:`~toolmesh.store.shared.LocalLimiter`
holding this process's share of each limit (limit ÷ replicas).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any, Protocol

from toolmesh.errors import ConcurrencyLimitError
from toolmesh.store.redis_state import LuaScript, RedisState
from toolmesh.store.resp import pack_tail
from toolmesh.store.shared import Admission, Limit, LocalLimiter, RequestLimiter, StateUnavailableError

__all__ = ["AdmissionRider", "SharedBucket", "SharedClientBuckets", "SharedLimiter", "limit_key", "lua_script",
           "spend_script"]

log = logging.getLogger("toolmesh.store.redis")

_KIND_CODES = {"bucket": "b", "window": "w", "slots": "c"}


def lua_script(name: str, *libs: str) -> LuaScript:
    """A script of ``toolmesh/store/lua/`` with the function files ``libs`` prepended."""
    lua = resources.files("toolmesh.store").joinpath("lua")
    return LuaScript(name, "\n".join(lua.joinpath(part).read_text(encoding="utf-8") for part in (*libs, name)))


def spend_script(name: str) -> LuaScript:
    """A script of ``toolmesh/store/lua/`` with ``spend_lib.lua`` (the spend scopes' functions) prepended."""
    return lua_script(name, "spend_lib.lua")


ADMIT = lua_script("admit.lua", "spend_lib.lua", "bucket_lib.lua")
RENEW = LuaScript("renew.lua")


class AdmissionRider(Protocol):
    """Holds decided in the same admission script as the limits, all or nothing with them: a
    request's daily spend hold (:class:`toolmesh.store.redis_budget.SpendHold`)."""

    @property
    def keys(self) -> Sequence[str]:
        """Two keys per spend scope (hash, lease set), hash-tagged like the limits' keys."""
        ...

    @property
    def args(self) -> Sequence[str]:
        """The hold's id, lease, key TTL, then limit, amount, floor per scope (see admit.lua)."""
        ...

    def unavailable(self) -> Exception:
        """What to raise when Redis cannot decide (a hold has no local fallback)."""
        ...

    def answered(self, held: bool, refused: bool, stats: Sequence[Any]) -> None:
        """The script's decision: ``held`` (admitted), else ``refused`` when the hold itself was
        refused (False: a limit refused first); ``stats``: used, reserved, in flight per scope."""
        ...

    def abandoned(self) -> None:
        """The script may have run but its answer was lost (cancelled): give back what it held."""
        ...


def limit_key(prefix: str, tenant: str, name: str) -> str:
    """The Redis key of one limit: hash-tagged by tenant so a request's keys share a Cluster slot."""
    # Braces in a tenant name would move the hash tag: replace them (names are ours, not user data).
    safe = tenant.replace("{", "(").replace("}", ")")
    return f"{prefix}:{{{safe}}}:{name}"


class _Prepared:
    """One tenant's limits as the admission script takes them: keys, arguments after the
    request's member, and their packed bytes (the whole command when the member is ``-``)."""

    __slots__ = ("command", "head", "keys", "needs_member", "tail", "tail_packed")

    def __init__(self, keys: list[str], limits: Sequence[Limit]) -> None:
        self.keys = keys
        tail: list[str] = [str(len(limits))]
        for lim in limits:
            tail += (_KIND_CODES[lim.kind], repr(lim.amount), repr(lim.span), repr(lim.cost))
        self.tail = tail
        self.needs_member = any(lim.kind != "bucket" for lim in limits)
        self.head = ADMIT.head(keys, 1 + len(tail))
        self.tail_packed = pack_tail(tail)
        self.command = self.head + pack_tail(("-",)) + self.tail_packed


class SharedLimiter:
    """:class:`~toolmesh.store.shared.RequestLimiter` over Redis, with the local share as fallback."""

    def __init__(self, state: RedisState, *, replicas: int = 1, busy_retry_after: float = 1.0,
                 max_denied: int = 100_000) -> None:
        """``replicas``: processes sharing the limits (each falls back to 1/replicas of every limit)."""
        self.state = state
        self.prefix = state.settings.prefix
        self.busy_retry_after = busy_retry_after
        self.fallback = LocalLimiter(replicas, busy_retry_after=busy_retry_after)
        self.max_denied = max_denied
        self._denied: dict[str, float] = {}  # limit key -> monotonic time until which Redis will refuse
        self._prepared_cache: dict[tuple[str, tuple[Limit, ...]], _Prepared] = {}
        self._freeing: dict[str, tuple[list[str], asyncio.Future[None]]] = {}  # slot key -> members, sent
        #: Admissions decided with this process's share because Redis could not decide them.
        self.local_decisions = 0
        #: Requests refused without a round trip: a key Redis refused, until its retry-at.
        self.denied_locally = 0
        #: Admission scripts sent to Redis (one per request that was not decided locally).
        self.round_trips = 0
        #: Lease renewals of long requests' slots in progress.
        self.renewals: set[asyncio.Task[None]] = set()

    @property
    def replicas(self) -> int:
        return self.fallback.replicas

    async def admit(self, tenant: str, limits: Sequence[Limit], request_id: str | None = None, *,
                    rider: AdmissionRider | None = None) -> Admission:
        """Charge every limit in one round trip, or none (see the module doc).

        ``rider``: holds taken in the same script, all or nothing with the limits (a refused hold
        takes no token, a refused limit no hold). Without Redis a rider raises its
        :meth:`~AdmissionRider.unavailable` error instead of the local fallback."""
        if not limits and rider is None:
            return Admission(True, shared=True)
        prepared = self._prepared(tenant, limits)
        keys = prepared.keys
        now = time.monotonic()
        for key, lim in zip(keys, limits, strict=True):
            until = self._denied.get(key)
            if until is not None:
                if until > now:
                    self.denied_locally += 1
                    return Admission(False, until - now, lim.label, shared=True)
                del self._denied[key]
        if not self.state.available:
            if rider is not None:
                raise rider.unavailable()
            self.local_decisions += 1
            return self.fallback.admit_now(tenant, limits)
        member = request_id or (uuid.uuid4().hex if prepared.needs_member else "-")
        if rider is not None:
            keys = [*keys, *rider.keys]
            packed = ADMIT.head(keys, 1 + len(prepared.tail) + len(rider.args)) + pack_tail((member,)) \
                + prepared.tail_packed + pack_tail(rider.args)
        elif member == "-":
            packed = prepared.command
        else:
            packed = prepared.head + pack_tail((member,)) + prepared.tail_packed
        self.round_trips += 1
        try:
            reply = await self.state.run_packed(ADMIT, packed)
        except StateUnavailableError:
            if rider is not None:
                raise rider.unavailable() from None
            self.local_decisions += 1
            return self.fallback.admit_now(tenant, limits)
        except asyncio.CancelledError:
            if rider is not None:
                rider.abandoned()
            raise
        admitted = int(reply[0]) == 1
        retry_ms, index = (0, -1) if admitted else (int(reply[1]), int(reply[2]) - 1)
        if rider is not None:
            rider.answered(admitted, index >= len(limits), reply[3:])
        if admitted:
            held = [(key, lim.span) for key, lim in zip(keys, limits, strict=False) if lim.kind == "slots"]
            if not held:
                return Admission(True, shared=True)
            return Admission(True, shared=True, on_release=self._hold(held, member))
        if index >= len(limits):  # a spend scope of the rider refused: the rider knows which and why
            return Admission(False, 0.0, "spend", shared=True)
        lim, key = limits[index], keys[index]
        if retry_ms < 0:  # concurrency: a slot frees when some request ends, not at a known time
            return Admission(False, self.busy_retry_after, lim.label, shared=True)
        retry = retry_ms / 1000
        if lim.cost == 1:  # a retry time for more tokens says nothing about fewer
            # ``now`` was taken before the script ran, and the script rounds up to the millisecond:
            # take a millisecond off so this shortcut ends no later than Redis's own refusal.
            if len(self._denied) >= self.max_denied:
                self._denied.clear()
            self._denied[key] = now + retry - 0.001
        return Admission(False, retry, lim.label, shared=True)

    def _prepared(self, tenant: str, limits: Sequence[Limit]) -> _Prepared:
        # The keys and script arguments of a tenant's limits, built and packed once (the hot path
        # reuses them: packing them anew was ~3.5 µs of a ~100 µs tool call).
        ck = (tenant, tuple(limits))
        found = self._prepared_cache.get(ck)
        if found is None:
            if len(self._prepared_cache) >= self.max_denied:
                self._prepared_cache.clear()
            found = self._prepared_cache[ck] = _Prepared(
                [limit_key(self.prefix, tenant, lim.name) for lim in limits], limits)
        return found

    def _hold(self, held: list[tuple[str, float]], member: str) -> _Release:
        return _Release(self, held, member, min(span for _, span in held))

    async def renew(self, held: list[tuple[str, float]], member: str) -> None:
        """Extend the leases of held slots (a long request keeps them; a crashed one lets them lapse)."""
        for key, span in held:
            with contextlib.suppress(StateUnavailableError):
                await self.state.run(RENEW, [key], [member, repr(span)])

    async def release(self, held: list[tuple[str, float]], member: str) -> None:
        """Free the concurrency slots of one admitted request (best effort: leases expire anyway).

        Releases of one key in the same event-loop turn (requests of one user ending together)
        go out as one ``ZREM key m1 m2 …``: one command instead of one each, and none is delayed
        past the turn it was asked in. Every caller returns once its slot is freed in Redis."""
        for key, _ in held:
            joining = self._freeing.get(key)
            if joining is not None:
                joining[0].append(member)
                await asyncio.shield(joining[1])
                continue
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            members = [member]
            self._freeing[key] = (members, done)
            try:
                await asyncio.sleep(0)  # the other releases of this turn join in the meantime
            except asyncio.CancelledError:  # still free them (the joiners wait for it)
                del self._freeing[key]
                task = asyncio.get_running_loop().create_task(self._zrem(key, members, done))
                self.renewals.add(task)
                task.add_done_callback(self.renewals.discard)
                raise
            del self._freeing[key]
            await self._zrem(key, members, done)

    async def _zrem(self, key: str, members: list[str], done: asyncio.Future[None]) -> None:
        try:
            await self.state.command("ZREM", key, *members)
        except StateUnavailableError:
            log.debug("slots %s of %s not released (Redis down): they lapse with their lease", key, members)
        except Exception as exc:
            log.warning("slots %s of %s not released (%s): they lapse with their lease", key, members, exc)
        finally:
            if not done.done():
                done.set_result(None)

    async def aclose(self) -> None:
        """Stop lease renewals (their slots then lapse)."""
        for task in list(self.renewals):
            task.cancel()


class SharedBucket:
    """One token bucket in the shared state, with the shape of
    :class:`toolmesh.resilience.abc.RateLimiter` (e.g. an upstream's or a model's request rate
    shared by every replica). ``scope`` plays the tenant's part in the key (its Cluster slot)."""

    def __init__(self, limiter: RequestLimiter, scope: str, name: str, rate: float, capacity: float, *,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        Limit.bucket(name, rate, capacity)  # validates
        self.limiter = limiter
        self.scope = scope
        self.name = name
        self._rate = float(rate)
        self._capacity = float(capacity)
        self._sleep = sleep
        self._limits: dict[float, list[Limit]] = {}

    @property
    def rate(self) -> float:
        """Tokens added per second."""
        return self._rate

    @property
    def capacity(self) -> float:
        """The most tokens the bucket holds."""
        return self._capacity

    async def take(self, n: float = 1) -> float:
        """Take ``n`` tokens if they are there now: 0.0 when taken, else seconds until they would be."""
        limits = self._limits.get(n)
        if limits is None:
            limits = self._limits[n] = [Limit.bucket(self.name, self._rate, self._capacity, self.name, cost=n)]
        admission = await self.limiter.admit(self.scope, limits)
        return 0.0 if admission.admitted else max(admission.retry_after, 1e-3)

    async def acquire(self, n: float = 1, timeout: float | None = None) -> None:
        """Take ``n`` tokens, waiting for them; raises :class:`ConcurrencyLimitError` at once when
        the wait would exceed ``timeout`` (other replicas may take the tokens meanwhile: then it waits again)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = await self.take(n)
            if wait <= 0:
                return
            if deadline is not None and time.monotonic() + wait > deadline:
                raise ConcurrencyLimitError(
                    f"rate limit {self.name!r} ({self._rate:g}/s, burst {self._capacity:g}): {n:g} tokens "
                    f"need {wait:.3f}s, timeout {timeout}s")
            await self._sleep(wait)


class SharedClientBuckets:
    """A bucket per client key in the shared state, with the shape of
    :class:`toolmesh.resilience.abc.ClientRateLimiter` (a hosted server's per-client rate limit
    held across all its replicas)."""

    def __init__(self, limiter: RequestLimiter, scope: str, rate: float, capacity: float,
                 max_entries: int = 100_000) -> None:
        Limit.bucket("c", rate, capacity)  # validates
        self.limiter = limiter
        self.scope = scope
        self.rate = float(rate)
        self.capacity = float(capacity)
        self.max_entries = max_entries
        self._limits: dict[str, list[Limit]] = {}

    async def take(self, key: str) -> float:
        """Take a token for ``key``: 0.0 when granted, else the seconds until one is there."""
        limits = self._limits.get(key)
        if limits is None:
            if len(self._limits) >= self.max_entries:
                self._limits.clear()
            name = "c:" + (key if len(key) <= 64 else hashlib.sha256(key.encode()).hexdigest()[:32])
            limits = self._limits[key] = [Limit.bucket(name, self.rate, self.capacity, f"client {key[:64]}")]
        admission = await self.limiter.admit(self.scope, limits)
        return 0.0 if admission.admitted else max(admission.retry_after, 1e-3)


class _Release:
    """The release hook of an admission holding concurrency slots; renews them every lease/3 meanwhile."""

    __slots__ = ("held", "lease", "limiter", "member", "task", "timer")

    def __init__(self, limiter: SharedLimiter, held: list[tuple[str, float]], member: str, lease: float) -> None:
        self.limiter = limiter
        self.held = held
        self.member = member
        self.lease = lease
        self.task: asyncio.Task[None] | None = None
        # A timer, not a task, so the usual short request costs no task at all.
        self.timer: asyncio.TimerHandle = asyncio.get_running_loop().call_later(lease / 3, self._start)

    def _start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._renew_loop())
        self.limiter.renewals.add(self.task)
        self.task.add_done_callback(self.limiter.renewals.discard)

    async def _renew_loop(self) -> None:
        while True:
            await self.limiter.renew(self.held, self.member)
            await asyncio.sleep(self.lease / 3)

    async def __call__(self) -> None:
        self.timer.cancel()
        if self.task is not None:
            self.task.cancel()
        await self.limiter.release(self.held, self.member)
