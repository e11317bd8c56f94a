"""The Hub's tool-result cache: a TTL'd, byte-bounded LRU of serialised results.

One cache per :class:`~toolmesh.hub.hub.Hub`, shared by its server handles so one byte budget
bounds them all. Every handle (one registration of one server for one tenant and user) has its
own *scope*: keys are ``(scope, tool, canonical params, caller identity)``, so nothing cached for
one registration can be found through another, and a scope is dropped as a whole when its server
announces a change or is unregistered. Entries are stored as JSON bytes: each hit decodes a
fresh copy (callers mutate results), and the size bound counts real bytes.

Invalidation is race-free: :meth:`ResultCache.invalidate` bumps the scope's generation, and a
result whose call began under an older generation is not stored (it may predate the change).

:attr:`ResultCache.shared` is an optional second level that every process shares (the gateway's,
in Redis, with ``state.url``): a local miss looks there before calling the server, and a stored
result goes there too, so N workers or replicas call a cached tool once per TTL instead of N
times. It has generations of its own, by scope name, with the same rule. A call that stores a
result there returns once the shared level holds it (up to a short bound): the caller's next
call finds it on any process.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["DEFAULT_MAX_BYTES", "CacheKey", "RemoteLookup", "ResultCache", "SharedResults"]

#: Default budget of a Hub's result cache (JSON bytes of results and keys).
DEFAULT_MAX_BYTES = 64 << 20
#: What an entry costs beyond its bytes (tuple, dict slot, bookkeeping): keeps tiny entries honest.
_OVERHEAD = 200

#: ``(scope, tool, canonical params, caller identity)``.
CacheKey = tuple[int, str, bytes, bytes]


#: What the shared level holds for one key: (the stored result's JSON bytes, None on a miss;
#: seconds it stays fresh; the scope's shared generation now, which a result stored for a call
#: that starts now carries).
RemoteLookup = tuple[bytes | None, float, int]


class SharedResults(Protocol):
    """The result cache's second level, shared by every process. ``scope`` names one registration
    the same way in every process; ``key`` one call in it."""

    async def get(self, scope: str, key: str) -> RemoteLookup | None:
        """The entry and the scope's generation; None when the shared level cannot be read now."""

    def put(self, scope: str, key: str, body: bytes, ttl: float, generation: int) -> asyncio.Future[Any] | None:
        """Store ``body`` for ``ttl`` seconds, as of ``generation`` (never blocks or raises); a
        future done once the shared level holds it (or failed to), None when nothing was sent."""

    def invalidate(self, scope: str) -> None:
        """The registration changed: no entry stored before now is served again, anywhere."""


class _Entry:
    __slots__ = ("body", "expires", "size")

    def __init__(self, body: bytes, expires: float, size: int) -> None:
        self.body = body
        self.expires = expires
        self.size = size


class ResultCache:
    """LRU by bytes with a TTL per entry; ``clock`` is injectable (tests use a fake one)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, *, clock: Callable[[], float] = time.monotonic) -> None:
        """``max_bytes``: the budget of stored results and keys; the least recently used go first."""
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = max_bytes
        self.clock = clock
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()
        self._by_scope: dict[int, set[CacheKey]] = {}
        self._generations: dict[int, int] = {}
        self._next_scope = 0
        #: The optional second level every process shares (see the module doc).
        self.shared: SharedResults | None = None
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.stores = 0
        self.evictions = 0
        self.expirations = 0
        self.invalidations = 0

    def new_scope(self) -> int:
        """A fresh scope (one per server handle): never reused, so a re-registration starts empty."""
        self._next_scope += 1
        self._generations[self._next_scope] = 0
        return self._next_scope

    def generation(self, scope: int) -> int:
        """The scope's generation now: pass it to :meth:`put` for a call that starts now."""
        return self._generations.get(scope, -1)

    def get(self, key: CacheKey) -> bytes | None:
        """The fresh body stored under ``key`` (and marks it recently used), else None."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        if self.clock() >= entry.expires:
            self._remove(key)
            self.expirations += 1
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry.body

    def put(self, key: CacheKey, body: bytes, ttl: float, generation: int) -> bool:
        """Store ``body`` for ``ttl`` seconds unless the scope changed since ``generation`` (or was
        dropped), the TTL is not positive or the entry alone exceeds the budget. True if stored."""
        scope = key[0]
        if ttl <= 0 or self._generations.get(scope) != generation:
            return False
        size = len(body) + len(key[2]) + len(key[3]) + len(key[1]) + _OVERHEAD
        if size > self.max_bytes:
            return False
        if key in self._entries:
            self._remove(key)
        self._entries[key] = _Entry(body, self.clock() + ttl, size)
        self._by_scope.setdefault(scope, set()).add(key)
        self.bytes += size
        self.stores += 1
        while self.bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._remove(oldest)
            self.evictions += 1
        return True

    def invalidate(self, scope: int) -> int:
        """Drop every entry of ``scope`` and refuse results of calls begun before now; how many dropped."""
        if scope in self._generations:
            self._generations[scope] += 1
        keys = self._by_scope.pop(scope, set())
        for key in keys:
            entry = self._entries.pop(key)
            self.bytes -= entry.size
        if keys:
            self.invalidations += 1
        return len(keys)

    def drop_scope(self, scope: int) -> None:
        """Forget ``scope`` for good (its handle was unregistered)."""
        self.invalidate(scope)
        self._generations.pop(scope, None)

    def _remove(self, key: CacheKey) -> None:
        entry = self._entries.pop(key)
        self.bytes -= entry.size
        keys = self._by_scope.get(key[0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_scope[key[0]]

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict[str, Any]:
        """Counters and occupancy, JSON-serialisable."""
        lookups = self.hits + self.misses
        return {
            "entries": len(self._entries),
            "bytes": self.bytes,
            "max_bytes": self.max_bytes,
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": self.hits / lookups if lookups else 0.0,
            "stores": self.stores,
            "evictions": self.evictions,
            "expirations": self.expirations,
            "invalidations": self.invalidations,
        }
