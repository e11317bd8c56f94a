"""Circuit-breaker state shared by every process through Redis (a Hub ``circuit_store_factory``).

The breaker (:class:`~toolmesh.resilience.circuit.CircuitBreaker`) reads its store on every call,
synchronously, so each process keeps a local mirror of the shared state and the breaker only ever
reads the mirror. What is shared, and how:

* An open or half-open circuit is one field of the hash ``<prefix>:circuits`` (a closed circuit has
  none): its state, its **owner** (the process that opened it), when it opened (Redis's clock) and
  the owner's lease. Every transition is one script (``circuit.lua``) that also publishes the new
  record; each process applies the message to its mirror, and re-reads the whole hash every
  ``refresh`` seconds in case a message was lost.
* A process whose breaker opens a circuit tells Redis (unless another process opened it first);
  all the others then refuse calls to that server at once (``CircuitOpenError``).
* Only the owner ever sees the circuit's timeout elapse, so only its breaker half-opens it and lets
  one probe through: **one probe across all processes**. The others see the circuit open until the
  owner's probe closes it (or re-opens it). An owner renews its lease every ``lease / 3`` s; when a
  process dies its lease lapses and another process takes the circuit over (and probes).
* Consecutive failures are counted per process (sharing them would cost a Redis write per
  successful call): a circuit opens when one process sees ``failure_threshold`` in a row.
* While Redis cannot be reached (no successful read for ``3 × refresh`` s, at least 2 s) each
  mirror acts as a local store: every process decides for itself, as without ``state.url``.

Mirrors use the breaker's default clock (``time.monotonic``); a record's opening time is carried
over from Redis's clock as an age, so the hosts' clocks do not matter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
import weakref
from collections.abc import Callable
from typing import Any

import orjson

from toolmesh.resilience.circuit_state import CircuitState
from toolmesh.store.redis_state import LuaScript, RedisState
from toolmesh.store.shared import StateUnavailableError

__all__ = ["SharedCircuitStore", "SharedCircuits"]

log = logging.getLogger("toolmesh.store.redis")

_SCRIPT = LuaScript("circuit.lua")
_OPEN, _HALF_OPEN, _CLOSED = CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED


class SharedCircuitStore:
    """One breaker's :class:`~toolmesh.resilience.abc.CircuitStore`: a mirror of its Redis record."""

    __slots__ = ("__weakref__", "_circuits", "_opened_at", "_owner", "_state", "failures", "key", "opens",
                 "pending", "total_failures")

    def __init__(self, circuits: SharedCircuits, key: str) -> None:
        self._circuits = circuits
        self.key = key
        self.failures = 0
        self.total_failures = 0
        self.opens = 0
        self._state = _CLOSED
        self._owner: str | None = None
        self._opened_at = 0.0
        #: Writes of this process on their way to Redis (mirror updates from elsewhere wait for them).
        self.pending = 0

    def _owned(self) -> bool:
        return self._owner == self._circuits.owner or not self._circuits.fresh()

    @property
    def state(self) -> CircuitState:
        """The shared state; an open or half-open circuit owned by another process reads ``OPEN``."""
        state = self._state
        if state is _CLOSED or self._owned():
            return state
        return _OPEN

    @property
    def opened_at(self) -> float:
        """When it opened (owner), else "now": another process's circuit never times out here."""
        if self._state is _CLOSED or self._owned():
            return self._opened_at
        return self._circuits.clock()

    @property
    def owner(self) -> str | None:
        """The process owning the open circuit (None when closed)."""
        return self._owner

    def add_failure(self) -> int:
        """Count one failure (in this process); returns the consecutive count after it."""
        self.total_failures += 1
        self.failures += 1
        return self.failures

    def clear_failures(self) -> None:
        """A success: the consecutive count goes back to 0."""
        self.failures = 0

    def set_state(self, state: CircuitState, now: float) -> None:
        """Store a transition here at once and in Redis in the background."""
        circuits = self._circuits
        if state is _OPEN:
            self.opens += 1
            self._state, self._owner, self._opened_at = _OPEN, circuits.owner, now
            circuits.send(self, "open")
        elif state is _HALF_OPEN:
            if not self._owned():
                return  # another process owns the circuit and runs the one probe
            self._state, self._owner = _HALF_OPEN, circuits.owner
            circuits.send(self, "half")
        else:
            self._state, self._owner = _CLOSED, None
            circuits.send(self, "close")

    def apply(self, raw: bytes | str | None, redis_now: float) -> None:
        """Take the Redis record (``None``: closed) into the mirror."""
        if not raw:
            self._state, self._owner = _CLOSED, None
            return
        rec = orjson.loads(raw)
        state = _OPEN if rec["s"] == "open" else _HALF_OPEN
        owner = str(rec["o"])
        me = self._circuits.owner
        if owner == me and self._owner == me and self._state is state:
            return  # our own transition: the local opening time is exact
        self._state, self._owner = state, owner
        self._opened_at = self._circuits.clock() - max(0.0, redis_now - float(rec["t"]))

    def __repr__(self) -> str:
        return f"SharedCircuitStore({self.key!r}, state={self._state.value}, owner={self._owner})"


class SharedCircuits:
    """The shared circuit stores of one process; call it with a key to get a store (the factory)."""

    def __init__(self, state: RedisState, *, refresh: float = 0.5, lease: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if refresh <= 0 or lease <= refresh:
            raise ValueError("need refresh > 0 and lease > refresh")
        self.state = state
        self.refresh = refresh
        self.lease = lease
        self.clock = clock
        prefix = state.settings.prefix
        self.hash_key = f"{prefix}:circuits"
        self.channel = f"{prefix}:circuits:changes"
        #: This process, as an owner of circuits (host, pid and a random part: unique per start).
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._stores: weakref.WeakValueDictionary[str, SharedCircuitStore] = weakref.WeakValueDictionary()
        self._synced_at = clock()
        self._stale_after = max(3 * refresh, 2.0)
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None

    def __call__(self, key: str) -> SharedCircuitStore:
        """A new store for the breaker ``key`` (a later store for the same key replaces it)."""
        store = SharedCircuitStore(self, key)
        self._stores[key] = store
        return store

    def fresh(self) -> bool:
        """True while the mirrors are recent enough to trust (else every store acts locally)."""
        return self.clock() - self._synced_at < self._stale_after

    # -- writes ------------------------------------------------------------------------------
    def send(self, store: SharedCircuitStore, op: str) -> None:
        """Run ``op`` for ``store`` in Redis in the background; its answer updates the mirror."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (sync use): the mirror stays local
            return
        store.pending += 1
        task = loop.create_task(self._write(store, op))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, store: SharedCircuitStore, op: str) -> None:
        try:
            reply = await self._call(op, store.key)
        except (StateUnavailableError, OSError) as exc:
            log.debug("circuit %s: %s not shared (%s)", store.key, op, exc)
            return
        finally:
            store.pending -= 1
        store.apply(reply[0], float(reply[1]))

    async def _call(self, op: str, field: str = "") -> Any:
        return await self.state.run(_SCRIPT, [self.hash_key], [op, field, self.owner, self.lease, self.channel])

    # -- reads -------------------------------------------------------------------------------
    def on_message(self, data: bytes) -> None:
        """A transition published by any process (``field\\nredis time\\nrecord``; no record: closed)."""
        text = data.decode() if isinstance(data, bytes) else str(data)
        field, stamp, raw = text.rsplit("\n", 2)
        store = self._stores.get(field)
        if store is not None and not store.pending:
            store.apply(raw or None, float(stamp))

    async def sync(self) -> None:
        """Read every shared record into the mirrors, and take over circuits whose owner is gone."""
        # Plain commands, not the script: both go out in one pipeline, and the steady state costs
        # no EVALSHA (which the scripts' per-request accounting counts).
        pairs, clock = await asyncio.gather(self.state.command("HGETALL", self.hash_key), self.state.command("TIME"))
        now = int(clock[0]) + int(clock[1]) / 1_000_000
        if isinstance(pairs, dict):  # redis-py answers HGETALL with a dict
            pairs = [x for kv in pairs.items() for x in kv]
        records = {_text(pairs[i]): pairs[i + 1] for i in range(0, len(pairs), 2)}
        self._synced_at = self.clock()
        for key, store in list(self._stores.items()):
            raw = records.get(key)
            if not store.pending:
                store.apply(raw, now)
            if raw is not None:
                rec = orjson.loads(raw)
                if rec["o"] != self.owner and float(rec["l"]) < now:
                    self.send(store, "claim")

    def start(self) -> None:
        """Start refreshing the mirrors and renewing this process's leases (needs a running loop)."""
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._run(), name="toolmesh-circuits")

    async def _run(self) -> None:
        renew_at = 0.0
        while True:
            try:
                await self.sync()
                if self.clock() >= renew_at and any(st.owner == self.owner for st in list(self._stores.values())):
                    await self._call("renew")
                    renew_at = self.clock() + self.lease / 3
            except (StateUnavailableError, OSError) as exc:
                log.debug("circuit state not refreshed: %s", exc)
            except Exception:
                log.exception("circuit state refresh failed")
            await asyncio.sleep(self.refresh)

    async def aclose(self) -> None:
        task, self._loop_task = self._loop_task, None
        for t in [task, *self._tasks]:
            if t is not None and not t.done():
                t.cancel()
                with contextlib.suppress(BaseException):
                    await t


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
