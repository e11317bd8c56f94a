"""The tool-result cache's shared level in Redis (``state.url``): one cached result for the fleet.

Without it each worker and replica caches a tool's results on its own, so N processes call a
cached tool N times per TTL and each holds its own copy. With it a local miss looks in Redis
before calling the server, and a stored result is written there too (see
:mod:`toolmesh.hub.resultcache`).

* ``<prefix>:rc:<scope>:g``: the scope's generation (one registration of one server: its tenant,
  user, name and a digest of its configuration), bumped by ``INCR`` when any process hears the
  server's tools change.
* ``<prefix>:rc:<scope>:<key digest>``: ``<generation>:<result JSON>``, with the result's TTL
  (``SET … PX``; the call that stored it returns once Redis answered, up to half a second). A
  lookup reads the generation, the entry and its remaining TTL in one round trip; an entry of an
  older generation is a miss, so a result whose call began before a change is never served after
  it (the local cache's rule, across processes).

Redis is a cache here, never a reason to fail a call: while it is down a lookup is a miss (the
server is called), stores are skipped, and invalidations are kept and written once it answers.
Entries are bounded by ``state.shared_results_max_bytes`` (256 KiB; larger results stay in each
process's own cache) and by their TTL. Redis holds them next to the limits: give it the memory
for them (docs/scale.md § Deployment notes), or set the bound to 0 to keep no results there.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from toolmesh.store.redis_state import RedisState
from toolmesh.store.resp import pack
from toolmesh.store.shared import StateUnavailableError

__all__ = ["RedisResults"]

log = logging.getLogger("toolmesh.store.redis")


class RedisResults:
    """:class:`~toolmesh.hub.resultcache.SharedResults` in Redis, on the process's one client."""

    def __init__(self, state: RedisState, *, max_bytes: int | None = None) -> None:
        """``max_bytes``: larger results are not written here (default ``state.shared_results_max_bytes``)."""
        self.state = state
        self.max_bytes = state.settings.shared_results_max_bytes if max_bytes is None else max_bytes
        self.prefix = f"{state.settings.prefix}:rc:"
        self._owed: set[str] = set()  # scopes invalidated while Redis was down
        #: Lookups answered from Redis, missed there, or not made (Redis down); for tests and metrics.
        self.hits = 0
        self.misses = 0
        self.unavailable = 0

    async def get(self, scope: str, key: str) -> tuple[bytes | None, float, int] | None:
        if not self.state.available:
            self.unavailable += 1
            return None
        if self._owed:
            self._pay_owed()
        base = self.prefix + scope
        entry = f"{base}:{key}"
        try:
            gen_raw, stored, left_ms = await asyncio.gather(
                self.state.command("GET", f"{base}:g"), self.state.command("GET", entry),
                self.state.command("PTTL", entry))
        except (StateUnavailableError, OSError) as exc:
            self.unavailable += 1
            log.debug("result cache lookup in Redis failed: %s", exc)
            return None
        generation = int(gen_raw or 0)
        if isinstance(stored, bytes) and int(left_ms or 0) > 0:
            mark, _, body = stored.partition(b":")
            if mark.isdigit() and int(mark) == generation:
                self.hits += 1
                return body, int(left_ms) / 1000.0, generation
        self.misses += 1
        return None, 0.0, generation

    def put(self, scope: str, key: str, body: bytes, ttl: float, generation: int) -> asyncio.Future[Any] | None:
        ms = int(ttl * 1000)
        if ms <= 0 or len(body) > self.max_bytes:
            return None  # (a large result stays in each process's own cache)
        return self.state.post(pack("SET", f"{self.prefix}{scope}:{key}", b"%d:" % generation + body, "PX", ms))

    def invalidate(self, scope: str) -> None:
        if not self.state.available:
            self._owed.add(scope)  # written once Redis answers (the next lookup or store)
            return
        self._post(pack("INCR", f"{self.prefix}{scope}:g"), owed=scope)

    def _pay_owed(self) -> None:
        owed, self._owed = self._owed, set()
        for scope in owed:
            self._post(pack("INCR", f"{self.prefix}{scope}:g"), owed=scope)

    def _post(self, packed: bytes, owed: str | None = None) -> None:
        """Queue one command without waiting for its reply; a failed invalidation is owed again."""
        fut = self.state.post(packed)
        if owed is None:
            return
        if fut is None:
            self._owed.add(owed)
            return

        def seen(f: asyncio.Future[Any]) -> None:
            if f.cancelled() or f.exception() is not None:
                self._owed.add(owed)

        fut.add_done_callback(seen)
