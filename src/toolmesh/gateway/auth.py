"""API keys (GW-3): creation, hashing, lookup with a short cache, scopes, and edge rate limits.

A key is ``tm_`` + 43 url-safe characters (256 random bits). Only its SHA-256 is stored:
with that much entropy a slow hash buys nothing and would cost every request. Workers
cache lookups for ``key_cache_ttl`` seconds, so a revoked key stops working everywhere
within that time — or within a second with ``state.url`` set, where a revocation through the
admin API is pushed to every worker (:mod:`toolmesh.store.redis_events`).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from toolmesh.gateway.config import GatewaySettings, RateLimit
from toolmesh.resilience.limits import TokenBucket
from toolmesh.store.shared import Admission, Limit, RequestLimiter

#: Scopes a key can carry: the OpenAI API, the MCP endpoints, the admin API (and /metrics).
SCOPES: tuple[str, ...] = ("chat", "mcp", "admin")
KEY_PREFIX = "tm_"


def new_key() -> str:
    """A fresh API key (shown once, never stored)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


def parse_scopes(text: str | list[str] | None) -> list[str]:
    """``"chat,mcp"`` → ``["chat", "mcp"]``; unknown scopes raise ``ValueError``."""
    if text is None:
        return list(SCOPES)
    items = text.split(",") if isinstance(text, str) else list(text)
    scopes = [s.strip() for s in items if s.strip()]
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise ValueError(f"unknown scope(s) {bad or scopes!r}: choose from {', '.join(SCOPES)}")
    return sorted(set(scopes), key=SCOPES.index)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's tenant and scopes (``key_id`` is a short, loggable hash prefix)."""

    tenant: str
    scopes: frozenset[str]
    key_id: str
    name: str | None = None
    user: str | None = None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


#: The principal of every request when the gateway runs with ``--no-auth`` (loopback only).
ANONYMOUS = Principal(tenant="default", scopes=frozenset(SCOPES), key_id="anonymous")


class KeyStore(Protocol):
    """Where keys live (:class:`toolmesh.store.sqlite.Store`): by the SHA-256 of the key, never the key."""

    async def put_api_key(self, key_hash: str, tenant: str, scopes: Sequence[str], name: str | None = None) -> None: ...

    async def get_api_key(self, key_hash: str) -> dict[str, Any] | None: ...

    async def flush(self) -> None: ...


async def create_key(store: KeyStore, tenant: str, scopes: list[str], name: str | None = None) -> dict[str, Any]:
    """Create and store a key; returns ``{key, tenant, scopes}`` (the only time the key is seen)."""
    if not tenant or not isinstance(tenant, str):
        raise ValueError("tenant must be a non-empty string")
    key = new_key()
    await store.put_api_key(hash_key(key), tenant, scopes, name)
    await store.flush()
    return {"key": key, "tenant": tenant, "scopes": scopes}


class KeyRing:
    """Resolves bearer tokens to principals through the store, with a per-worker cache."""

    def __init__(self, store: KeyStore, ttl: float = 10.0, max_entries: int = 100_000) -> None:
        self.store = store
        self.ttl = ttl
        self.max_entries = max_entries
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def resolve(self, token: str) -> Principal | None:
        """The principal for ``token``, or ``None`` when it is unknown or revoked."""
        now = time.monotonic()
        hit = self._cache.get(token)
        if hit is not None and hit[0] > now:
            return hit[1]
        row = await self.store.get_api_key(hash_key(token)) if token.startswith(KEY_PREFIX) else None
        principal = None
        if row is not None:
            principal = Principal(row["tenant"], frozenset(row["scopes"]), row["key_hash"][:12], row.get("name"))
        if len(self._cache) >= self.max_entries:
            self._cache.clear()  # bounded: a flood of random tokens cannot grow memory
        self._cache[token] = (now + self.ttl, principal)
        return principal

    def forget(self, token: str | None = None) -> None:
        """Drop one token's cached lookup, or every one (``None``)."""
        if token is None:
            self._cache.clear()
        else:
            self._cache.pop(token, None)

    def forget_key(self, key_hash: str) -> None:
        """Drop the cached lookups of the key stored as ``key_hash`` (revoked on another worker)."""
        key_id = key_hash[:12]
        stale = [t for t, (_, p) in self._cache.items() if p is not None and p.key_id == key_id]
        for token in stale:
            del self._cache[token]


class EdgeLimits:
    """Per-tenant and per-key request buckets; :meth:`check` returns seconds to wait (0 = go)."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.limits = settings.rate_limits
        self._tenants: dict[str, TokenBucket | None] = {}
        self._keys: dict[str, TokenBucket] = {}

    @staticmethod
    def _bucket(limit: RateLimit, name: str) -> TokenBucket:
        return TokenBucket(limit.requests_per_minute / 60.0, limit.capacity, name=name)

    def check(self, principal: Principal) -> float:
        tenant = principal.tenant
        if tenant in self._tenants:
            tb = self._tenants[tenant]
        else:
            limit = self.limits.for_tenant(tenant)
            tb = self._tenants[tenant] = self._bucket(limit, f"tenant {tenant}") if limit else None
        kb: TokenBucket | None = None
        if self.limits.key is not None:
            kb = self._keys.get(principal.key_id)
            if kb is None:
                kb = self._keys[principal.key_id] = self._bucket(self.limits.key, f"key {principal.key_id}")
        if kb is not None and not kb.try_acquire():
            return max(kb.time_until(), 0.001)
        if tb is not None and not tb.try_acquire():
            if kb is not None:
                kb.refund(1)  # refused at the tenant level: the key's token was not spent
            return max(tb.time_until(), 0.001)
        return 0.0


class SharedEdgeLimits:
    """The tenant and key buckets of :class:`EdgeLimits`, decided by a shared limiter (Redis).

    Both buckets of a request go to the limiter together: one round trip, all or nothing, on
    one clock, exact across every worker and replica. :meth:`check` returns seconds to wait.
    """

    def __init__(self, settings: GatewaySettings, limiter: RequestLimiter, max_entries: int = 100_000) -> None:
        self.limits = settings.rate_limits
        self.limiter = limiter
        self.max_entries = max_entries
        self._rules: dict[tuple[str, str], list[Limit]] = {}

    def rules(self, principal: Principal) -> list[Limit]:
        """The limits of one caller (built once per tenant and key)."""
        ck = (principal.tenant, principal.key_id)
        found = self._rules.get(ck)
        if found is None:
            found = []
            tenant = self.limits.for_tenant(principal.tenant)
            if tenant is not None:
                found.append(Limit.bucket("t", tenant.requests_per_minute / 60.0, tenant.capacity,
                                          f"tenant {principal.tenant}"))
            key = self.limits.key
            if key is not None:
                found.append(Limit.bucket("k:" + principal.key_id, key.requests_per_minute / 60.0, key.capacity,
                                          f"key {principal.key_id}"))
            if len(self._rules) >= self.max_entries:
                self._rules.clear()
            self._rules[ck] = found
        return found

    async def check(self, principal: Principal) -> float:
        """Seconds to wait (0 = go), like :meth:`EdgeLimits.check`."""
        rules = self.rules(principal)
        if not rules:
            return 0.0
        admission = await self.limiter.admit(principal.tenant, rules)
        return 0.0 if admission.admitted else max(admission.retry_after, 0.001)

    async def admit(self, principal: Principal, extra: Sequence[Limit] = ()) -> Admission:
        """The caller's limits and ``extra`` ones (e.g. the user's) in one round trip, all or nothing."""
        limits = [*self.rules(principal), *extra]
        if not limits:
            return Admission(True, shared=True)
        return await self.limiter.admit(principal.tenant, limits)
