"""Tombstones of ended handshake-era MCP sessions in Redis, so every replica refuses them.

A sealed session id (:class:`~toolmesh.gateway.mcp.endpoints.SealedSessions`) is valid on any
worker of any replica until it expires, so ending it (``DELETE``) must be recorded where all of
them look. With ``state: {url: redis://…}`` that is Redis:

* ``<prefix>:{sessions}:ended:<digest>`` — one key per ended session, with a TTL of the
  sessions' maximum age (after that the sealed id is refused anyway);
* ``<prefix>:{sessions}:recent`` — a sorted set of the digests ended in the last
  :data:`WINDOW` seconds, scored by Redis's clock, which each process reads (only what is new
  since its last read) at most every ``interval`` seconds, and only while requests come.

A worker that already holds a session learns of its end from the recent set (so within
``interval`` of a request, one Redis command per interval per process, not per request); a
worker that meets a sealed id for the first time asks for its key. Both keys share the
``{sessions}`` hash tag (Redis Cluster). Only a digest of the session id is stored.

When Redis is unreachable the DELETE is honoured at once by the worker that received it, and the
tombstone is written when Redis answers again; meanwhile other processes keep serving the session.
"""

from __future__ import annotations

import asyncio
import logging
import time

from toolmesh.store.redis_state import LuaScript, RedisState
from toolmesh.store.shared import StateUnavailableError

__all__ = ["WINDOW", "RedisTombstones"]

log = logging.getLogger("toolmesh.gateway.mcp")

#: How long an ended session stays in the recent set (longer than any sync gap it covers).
WINDOW = 60.0

_END = LuaScript("session_end.lua", source="""
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ms, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ms - tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return ms
""")


class RedisTombstones:
    """The ended sessions of every replica, for one process (shared by its endpoints)."""

    def __init__(self, state: RedisState, max_age: float, *, interval: float = 0.2) -> None:
        if max_age <= 0 or interval <= 0:
            raise ValueError("max_age and interval must be > 0")
        self.state = state
        self.ttl_ms = int(max_age * 1000)
        self.interval = interval
        base = f"{state.settings.prefix}:{{sessions}}"
        self.key_prefix = f"{base}:ended:"
        self.recent_key = f"{base}:recent"
        self._recent: dict[str, float] = {}  # digest → Redis time (ms) it was ended
        self._since = 0.0  # Redis time (ms) of the newest tombstone read
        self._synced = float("-inf")
        self._sync_task: asyncio.Task[None] | None = None
        self._owed: set[str] = set()  # ended while Redis was down: written once it answers
        self._retry_task: asyncio.Task[None] | None = None

    async def end(self, digest: str) -> None:
        """Record that the session with ``digest`` ended (idempotent)."""
        self._recent[digest] = self._since
        try:
            await self._write(digest)
        except StateUnavailableError as exc:
            self._owed.add(digest)
            log.warning("session end not shared (Redis unavailable, written when it is back): %s", exc)
            if self._retry_task is None or self._retry_task.done():
                self._retry_task = asyncio.get_running_loop().create_task(self._pay_owed())

    async def _pay_owed(self) -> None:
        """Write the tombstones owed since Redis went away, once it answers (even with no traffic)."""
        while self._owed:
            if not await self.state.wait_available(5.0):
                await asyncio.sleep(0.5)  # no recovery under way yet: look again shortly
                continue
            for digest in list(self._owed):
                try:
                    await self._write(digest)
                except StateUnavailableError:
                    break
                self._owed.discard(digest)
            else:
                continue
            await asyncio.sleep(0.5)

    async def _write(self, digest: str) -> None:
        await self.state.run(_END, [self.key_prefix + digest, self.recent_key],
                             [digest, self.ttl_ms, int(WINDOW * 1000)])

    async def exists(self, digest: str) -> bool:
        """Whether any replica ended this session (one Redis command; False if Redis is down)."""
        if digest in self._recent:
            return True
        try:
            found = bool(await self.state.command("EXISTS", self.key_prefix + digest))
        except StateUnavailableError:
            return False  # keep serving: the DELETE is honoured once Redis is back
        if found:
            self._recent[digest] = self._since
        return found

    async def ended(self, digest: str) -> bool:
        """Whether the session ended, as known from the recent set read at most ``interval`` ago."""
        now = time.monotonic()
        if now - self._synced > self.interval:
            stale = now - self._synced > WINDOW / 2  # the recent set may have dropped what we missed
            self._synced = now  # concurrent requests use what is known until the read returns
            await self._sync()
            if stale:
                return await self.exists(digest)
        return digest in self._recent

    async def _sync(self) -> None:
        task = self._sync_task
        if task is None or task.done():
            task = self._sync_task = asyncio.get_running_loop().create_task(self._read())
        await asyncio.shield(task)

    async def _read(self) -> None:
        try:
            # A second of overlap: a tombstone written by a Redis whose clock stepped back is not missed.
            rows = await self.state.command("ZRANGEBYSCORE", self.recent_key, max(0.0, self._since - 1000), "+inf",
                                            "WITHSCORES")
        except StateUnavailableError:
            return
        for member, score in _pairs(rows):
            self._recent[member] = score
            self._since = max(self._since, score)
        horizon = self._since - 2 * WINDOW * 1000
        for digest in [d for d, at in self._recent.items() if at and at < horizon]:
            del self._recent[digest]  # older than the window: the per-session key answers for them


def _pairs(rows: object) -> list[tuple[str, float]]:
    """``ZRANGEBYSCORE … WITHSCORES`` as (member, score), whatever shape the client returned."""
    if not isinstance(rows, list):
        return []
    if rows and isinstance(rows[0], list | tuple):
        items = [(m, s) for m, s in rows]
    else:
        items = list(zip(rows[::2], rows[1::2], strict=False))
    return [(m.decode() if isinstance(m, bytes) else str(m), float(s)) for m, s in items]
