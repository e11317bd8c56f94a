"""One server handle's upstream notifications and resource subscriptions.

A :class:`~toolmesh.hub.handle.ServerHandle` owns one :class:`UpstreamWatch`. Its connections
deliver their notifications to :meth:`UpstreamWatch.on_notification`: catalogue changes drop the
handle's cached listings before the change listeners hear of them; a 2026-07-28 listen stream
that (re)opens drops everything, since what changed while none was open is not replayed.

Resource subscriptions are counted per URI (the server is asked once however many owners watch):
handshake era, ``resources/(un)subscribe`` on the session, again after every reconnect;
2026-07-28, the URIs join the connection's ``subscriptions/listen`` filter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

from toolmesh.errors import ConnectionFailedError
from toolmesh.hub.config import ServerConfig
from toolmesh.hub.owner import HandleOwner
from toolmesh.hub.transports import Connection
from toolmesh.hub.transports.listen import LIST_FLAGS, LISTEN_ACK

__all__ = ["UpstreamWatch", "WatchedHandle"]

log = logging.getLogger("toolmesh.hub")


class WatchedHandle(Protocol):
    """What an :class:`UpstreamWatch` needs of the handle it serves."""

    @property
    def name(self) -> str:
        """The registered server name."""

    @property
    def tenant(self) -> str:
        """The tenant the server is registered for."""

    @property
    def user(self) -> str | None:
        """The user the server is registered for (``None``: the tenant's own)."""

    @property
    def config(self) -> ServerConfig:
        """The server's configuration (its ``connect_timeout`` bounds a subscription's wait)."""

    @property
    def closed(self) -> bool:
        """True once the server was unregistered: nothing more reaches the listeners."""

    @property
    def conn(self) -> Connection | None:
        """The current connection, if any."""

    async def connection(self) -> Connection:
        """The live connection, opening one if needed."""

    def catalog_changed(self, method: str) -> bool:
        """Apply a ``notifications/*/list_changed``; False for other methods."""

    def forget_catalog(self, *, fleet: bool = True) -> None:
        """Drop every cached listing, argument validator and tool result (``fleet``: shared ones too)."""


class UpstreamWatch:
    """A handle's notification handler and its resource subscriptions."""

    def __init__(self, handle: WatchedHandle, owner: HandleOwner) -> None:
        """Serve ``handle``; ``owner`` (the Hub) hears of catalogue changes and delivers events."""
        self._handle = handle
        self._owner = owner
        #: Resource URI → how many owners want its ``notifications/resources/updated``.
        self.resources: dict[str, int] = {}
        self._listen_acks = 0

    def uris(self) -> list[str]:
        """The watched resource URIs (what a 2026-07-28 listen stream asks for)."""
        return sorted(self.resources)

    async def on_notification(self, method: str, params: dict[str, Any]) -> None:
        """Handle one notification from the server (a connection's ``on_notification``)."""
        handle = self._handle
        if handle.catalog_changed(method):
            self._owner.on_catalog_changed(handle.name)
            if not handle.closed:  # listeners hear of it after the invalidation: what they list is fresh
                self._owner.emit_change(handle.tenant, handle.user, handle.name, method, params)
        elif method == "notifications/resources/updated":
            if not handle.closed:
                self._owner.emit_change(handle.tenant, handle.user, handle.name, method, params)
        elif method == LISTEN_ACK:
            # A 2026-07-28 listen stream (re)opened: what changed while none was open is not replayed.
            self._listen_acks += 1
            conn = handle.conn
            loop = conn.listen_loop if conn is not None else None
            gap = self._listen_acks > 1 and not (loop is not None and loop.last_ack_refilter)
            # This process forgets what it holds. The results every process shares go too only after
            # a stream that was open broke: a first stream, or one reopened to change its filter, has
            # no gap that the other processes' streams did not cover, and each worker's first stream
            # wiping the fleet's results would leave the shared level all but useless.
            handle.forget_catalog(fleet=gap)
            if gap and not handle.closed:
                # Listeners' own clients may hold lists from before the gap: tell them to refetch.
                honoured = params.get("notifications")
                for flag, changed in LIST_FLAGS.items():
                    if isinstance(honoured, dict) and honoured.get(flag) is True:
                        self._owner.emit_change(handle.tenant, handle.user, handle.name, changed, {})
        elif method == "notifications/message":
            log.info("server %s: %s", handle.name, params.get("data"))

    async def watch_resource(self, uri: str, on: bool) -> bool:
        """Count one owner in (or out) of ``uri``'s updates; False if the server cannot send them.

        Handshake era: ``resources/(un)subscribe`` on the session (again after a reconnect).
        2026-07-28: the connection's listen stream is replaced by one that also asks for the URI."""
        count = self.resources.get(uri, 0) + (1 if on else -1)
        if count > 0:
            self.resources[uri] = count
        else:
            self.resources.pop(uri, None)
        if (on and count != 1) or (not on and count != 0):
            return True
        handle = self._handle
        try:
            conn = await handle.connection()
            if conn.modern:
                loop = conn.listen_loop
                if loop is None or not loop.active:
                    raise ConnectionFailedError(f"server {handle.name!r} keeps no listen stream")
                acked = loop.refilter()
                if acked is not None and on:
                    # Watching starts when the server acknowledged the new filter (bounded wait).
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(acked, handle.config.connect_timeout)
            else:
                await conn.request("resources/subscribe" if on else "resources/unsubscribe", {"uri": uri})
        except Exception as exc:
            if on:
                self.resources.pop(uri, None)
                log.info("server %s: cannot watch %s: %s", handle.name, uri, exc)
                return False
        return True

    async def resubscribe(self, conn: Connection) -> None:
        """Ask a new handshake-era session for every watched URI (a failed one is logged)."""
        if conn.modern:  # the listen stream asks for them itself (see :meth:`uris`)
            return
        for uri in list(self.resources):
            try:
                await conn.request("resources/subscribe", {"uri": uri})
            except Exception as exc:  # the others still count
                log.info("server %s: cannot re-subscribe to %s: %s", self._handle.name, uri, exc)

