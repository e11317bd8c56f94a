"""Per-server TTL cache of tools, resources, resource templates and prompts (HUB-7)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from toolmesh.errors import McpRemoteError
from toolmesh.hub.transports.headers import X_MCP_HEADER, invalid_header_reason

log = logging.getLogger("toolmesh.hub")

KINDS = {
    "tools": ("tools/list", "tools"),
    "resources": ("resources/list", "resources"),
    "resource_templates": ("resources/templates/list", "resourceTemplates"),
    "prompts": ("prompts/list", "prompts"),
}
#: Notification method -> catalogue kinds it invalidates.
INVALIDATES = {
    "notifications/tools/list_changed": ("tools",),
    "notifications/resources/list_changed": ("resources", "resource_templates"),
    "notifications/prompts/list_changed": ("prompts",),
}
MAX_PAGES = 100

Fetch = Callable[[str, dict[str, Any] | None], Awaitable[dict[str, Any]]]


@dataclass(slots=True)
class _Entry:
    items: list[dict[str, Any]]
    expires: float


class Catalog:
    """Caches one server's listings. ``ttl`` is the default; a modern server's ``ttlMs`` wins."""

    def __init__(
        self,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
        on_lookup: Callable[[bool], None] | None = None,
    ) -> None:
        self.ttl = ttl
        self._on_lookup = on_lookup
        self.hits = 0
        self.misses = 0
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._tools_by_name: dict[str, dict[str, Any]] = {}

    async def get(self, kind: str, fetch: Fetch, *, refresh: bool = False) -> list[dict[str, Any]]:
        """The listing of ``kind``, from cache when fresh, else fetched (all pages)."""
        entry = self._entries.get(kind)
        if entry is not None and not refresh and self._clock() < entry.expires:
            self.hits += 1
            if self._on_lookup is not None:
                self._on_lookup(True)
            return entry.items
        self.misses += 1
        if self._on_lookup is not None:
            self._on_lookup(False)
        method, key = KINDS[kind]
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        ttl_ms: int | None = None
        try:
            for _ in range(MAX_PAGES):
                page = await fetch(method, {"cursor": cursor} if cursor else None)
                items.extend(page.get(key) or [])
                if isinstance(page.get("ttlMs"), int):
                    ttl_ms = page["ttlMs"] if ttl_ms is None else min(ttl_ms, page["ttlMs"])
                cursor = page.get("nextCursor")
                if not cursor:
                    break
        except McpRemoteError as exc:
            if exc.code != -32601 or kind == "tools":
                raise
            items = []  # server has no such capability: an empty listing, not an error
        if kind == "tools":
            items = [t for t in items if _usable(t)]
            self._tools_by_name = {t["name"]: t for t in items}
        ttl = self.ttl if ttl_ms is None else min(self.ttl, ttl_ms / 1000.0)
        self._entries[kind] = _Entry(items, self._clock() + ttl)
        return items

    def tool(self, name: str) -> dict[str, Any] | None:
        """The last known definition of tool ``name`` (stale is fine: the server still decides)."""
        return self._tools_by_name.get(name)

    def tool_names(self) -> list[str]:
        """The names of the last known tool listing."""
        return list(self._tools_by_name)

    @property
    def has_tools(self) -> bool:
        return "tools" in self._entries

    def invalidate(self, *kinds: str) -> None:
        for kind in kinds or tuple(KINDS):
            entry = self._entries.get(kind)
            if entry is not None:
                entry.expires = 0.0

    def on_notification(self, method: str) -> bool:
        kinds = INVALIDATES.get(method)
        if kinds:
            self.invalidate(*kinds)
            return True
        return False

    def stats(self) -> dict[str, Any]:
        total = self.hits + self.misses
        return {"hits": self.hits, "misses": self.misses, "hit_rate": (self.hits / total) if total else 0.0}


def _usable(tool: Any) -> bool:
    """A listed tool the client may use: named, and with valid ``x-mcp-header`` annotations
    (SEP-2243: clients exclude a tool whose annotations are invalid, and keep the others)."""
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
        return False
    schema = tool.get("inputSchema")
    if isinstance(schema, dict) and X_MCP_HEADER in str(schema):
        reason = invalid_header_reason(schema)
        if reason is not None:
            log.warning("tool %r left out: %s", tool["name"], reason)
            return False
    return True
