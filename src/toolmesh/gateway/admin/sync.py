"""Run-time changes made through the admin API, shared by every worker through the store.

Each worker has its own Hub and Router. A change (register or unregister a server, switch
a routing rule) is written to one ``checkpoints`` row with a version number, inside one
SQLite transaction, and then applied locally. Every worker checks that version before
each admin request and once a second in the background, and applies what changed, so
all workers (and a restarted gateway) converge on the same servers and rules.

With ``state.url`` set the store stays the record but Redis is the fast path: a change is
announced on the admin-change channel (:mod:`toolmesh.store.redis_events`) and every worker
syncs on the message, or when the channel's version key shows it missed one; the once-a-second
store poll then only runs while that channel is down.

The row holds an overlay over the configuration file::

    {"version": 7,
     "servers": {"acme": {"crm": {...ServerConfig...}, "old": null}},   # null: unregistered
     "routing": {"default": {"strategy": "cost", "models": []}} | null}  # null: the file's rules
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from pydantic import ValidationError

from toolmesh.gateway.admin.upstreams import RESOLVER_KEY, connect_guard
from toolmesh.gateway.state import Gateway
from toolmesh.hub.config import ServerConfig
from toolmesh.store.sqlite import Connection, transaction

__all__ = ["Overlay"]

log = logging.getLogger("toolmesh.gateway")

_KEY = "gateway/admin/overlay"
_SQL_GET = "SELECT value FROM checkpoints WHERE key = ?"
_SQL_PUT = ("INSERT INTO checkpoints (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT(key)"
            " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at")

Doc = dict[str, Any]


def _empty() -> Doc:
    return {"version": 0, "servers": {}, "routing": None}


def _read(conn: Connection) -> Doc:
    row = conn.execute(_SQL_GET, (_KEY,)).fetchone()
    if row is None:
        return _empty()
    doc = orjson.loads(row[0])
    return doc if isinstance(doc, dict) else _empty()


class Overlay:
    """The admin overlay of one worker: :meth:`change` writes it, :meth:`sync` applies it."""

    def __init__(self, gw: Gateway, *, interval: float = 1.0) -> None:
        self.gw = gw
        self.interval = interval
        self.version = -1
        self.doc: Doc = _empty()
        self._applied_routing: Any = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin the background check (first check at once: a restarted worker gets the overlay back)."""
        if self._task is None:
            events = self.gw.shared_events
            if events is not None:
                events.on("admin-overlay", self._pushed)
                events.on_resync(self.sync)
            self._task = asyncio.get_running_loop().create_task(self._poll(), name="toolmesh-admin-sync")

    async def _pushed(self, data: Any) -> None:
        # Another worker changed the overlay: read it back from the store (the record).
        if not (isinstance(data, int) and data == self.version):
            await self.sync()

    async def _poll(self) -> None:
        gw = self.gw
        while not (gw.draining or gw.hub.closed):
            try:
                events = gw.shared_events
                if events is None or not events.live:  # while Redis pushes changes, no need to poll
                    await self.sync()
            except Exception:  # the store may be busy or closing: try again next round
                log.debug("admin overlay sync failed", exc_info=True)
            await asyncio.sleep(self.interval)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def sync(self) -> None:
        """Apply the stored overlay if its version moved (one small query otherwise)."""
        doc = await self.gw.store.run(_read)
        if doc.get("version") != self.version:
            await self._apply(doc)

    async def change(self, mutate: Callable[[Doc], Any]) -> Any:
        """Run ``mutate(doc)`` on the stored overlay in one transaction (it may raise to abort),
        bump the version, store it, and apply it here. Returns what ``mutate`` returned."""

        def job(conn: Connection) -> tuple[Doc, Any]:
            def tx(c: Connection) -> tuple[Doc, Any]:
                doc = _read(c)
                result = mutate(doc)
                doc["version"] = int(doc.get("version", 0)) + 1
                c.execute(_SQL_PUT, (_KEY, orjson.dumps(doc), time.time()))
                return doc, result

            return transaction(conn, tx)

        doc, result = await self.gw.store.run(job)
        await self._apply(doc)
        if self.gw.shared_events is not None:
            await self.gw.shared_events.publish("admin-overlay", doc["version"])
        return result

    async def _apply(self, doc: Doc) -> None:
        async with self._lock:
            if doc.get("version") == self.version:
                return
            for tenant, entries in (doc.get("servers") or {}).items():
                for name, raw in entries.items():
                    try:
                        if raw is None:
                            await self._unregister(name, tenant)
                        else:
                            await self._register(ServerConfig.model_validate(raw), tenant)
                    except (ValidationError, ValueError) as exc:  # written by a newer/older toolmesh?
                        log.error("admin overlay: cannot apply server %s/%s: %s", tenant, name, exc)
            routing = doc.get("routing")
            if routing is not None and routing != self._applied_routing:
                set_rules = getattr(self.gw.llm, "set_rules", None)
                if set_rules is not None:
                    try:
                        set_rules(routing)
                    except Exception as exc:
                        log.error("admin overlay: cannot apply routing rules %s: %s", routing, exc)
                self._applied_routing = routing
            self.doc = doc
            self.version = doc.get("version", 0)

    async def _register(self, cfg: ServerConfig, tenant: str) -> None:
        """Register ``cfg`` unless the same configuration is registered already (any field changed: replace)."""
        existing = self.gw.hub.servers(tenant=tenant).get(cfg.name)
        if existing is not None and existing.config.model_dump() == cfg.model_dump():
            return
        if cfg.url is not None:  # every connection checks its address again (DNS rebinding)
            guard = connect_guard(self.gw.settings, self.gw.extras.get(RESOLVER_KEY))
            cfg = cfg.model_copy(update={"connect_guard": guard})
        # The Gateway's helpers also handle the server's handshake-era twin connection.
        await self.gw.register_server(cfg, tenant)

    async def _unregister(self, name: str, tenant: str) -> None:
        await self.gw.unregister_server(name, tenant)

    # -- views -----------------------------------------------------------------------------
    def source(self, tenant: str, name: str) -> str | None:
        """``"admin"`` for a server registered at run time, ``"config"`` for one from the file."""
        entries = self.doc.get("servers", {}).get(tenant, {})
        if entries.get(name) is not None:
            return "admin"
        if name in entries:
            return None  # unregistered through the admin API
        return "config" if name in self.gw.config.tenants.get(tenant, {}) else None

