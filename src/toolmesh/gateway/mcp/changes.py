"""Change notifications from upstream servers to the gateway's MCP clients (GW-2).

The Hub reports when an upstream's tools, prompts or resources change, or a subscribed
resource is updated (:class:`toolmesh.hub.ChangeEvent`). Each endpoint's
:class:`ChangeFanout` passes the events of its view's servers on to the clients that can
receive them:

* handshake-era clients with an outbound channel (a WebSocket, a legacy SSE stream, or a
  Streamable HTTP session's GET stream) get ``notifications/{tools,prompts,resources}/list_changed``
  and ``notifications/resources/updated`` for the URIs they subscribed to;
* 2026-07-28 clients get the list kinds they asked for on a ``subscriptions/listen`` stream,
  and updates of the resource URIs they named that the view can route to an upstream able to
  send them (the acknowledgement lists those; the Hub watches them upstream while the stream lasts).

A change reaches the gateway once per upstream connection (a server can have a 2026-07-28
and a handshake-era connection), so events coalesce: one notification per kind per window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from toolmesh.errors import ServerNotFoundError
from toolmesh.hub import ChangeEvent, Hub
from toolmesh.net.onewrite import on_shutdown
from toolmesh.servers.reqcontext import Req
from toolmesh.servers.state import INVALID_PARAMS, Conn, RpcError

log = logging.getLogger("toolmesh.gateway.mcp.endpoints")

SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
#: Notification method → the ``subscriptions/listen`` filter flag that asks for it.
LIST_CHANGED = {
    "notifications/tools/list_changed": "toolsListChanged",
    "notifications/prompts/list_changed": "promptsListChanged",
    "notifications/resources/list_changed": "resourcesListChanged",
}
RESOURCE_UPDATED = "notifications/resources/updated"
#: Events arriving within this window are sent as one notification per kind.
COALESCE_S = 0.05
#: Notifications queued for one listen stream whose client is not reading before it is ended.
_BACKLOG = 1000
_END: Any = object()
RouteUri = Callable[[str], Awaitable[tuple[str, str] | None]]


class _Listen:
    """One 2026-07-28 ``subscriptions/listen`` stream."""

    __slots__ = ("kinds", "queue", "resources")

    def __init__(self, kinds: frozenset[str]) -> None:
        self.kinds = kinds
        #: (server, upstream URI) → the URI the client asked for.
        self.resources: dict[tuple[str, str], str] = {}
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    def put(self, method: str, params: dict[str, Any] | None = None) -> None:
        self.queue.put_nowait((method, params or {}) if self.queue.qsize() < _BACKLOG else _END)


class ChangeFanout:
    """Delivers one view's upstream changes to its clients (see the module doc)."""

    def __init__(self, tenant: str, servers: Iterable[str]) -> None:
        self.tenant = tenant
        self.servers = frozenset(servers)
        #: Handshake-era connections whose ``sink`` reaches the client.
        self.channels: dict[Conn, None] = {}
        #: Per connection: (server, upstream URI) → the URI the client subscribed to.
        self.subscriptions: dict[Conn, dict[tuple[str, str], str]] = {}
        self.streams: set[_Listen] = set()
        self._pending: set[str] = set()
        self._updates: dict[tuple[str, str], dict[str, Any]] = {}
        self._flush: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._removers: list[Callable[[], None]] = []
        self._hub: Hub | None = None
        #: Releases of Hub.watch while anyone listens (idle upstream connections would go deaf).
        self._watching: list[Callable[[], None]] = []

    def attach(self, hub: Hub) -> None:
        """Start listening to ``hub``; end the listen streams when the server shuts down."""
        self._hub = hub
        self._removers = [hub.add_change_listener(self.on_change), on_shutdown(self.end_streams)]

    def close(self) -> None:
        """Stop listening; end the open listen streams (the endpoint is being replaced)."""
        self._detach()
        self.end_streams()

    def _detach(self) -> None:
        for remove in self._removers:
            remove()
        self._removers = []
        self._hub = None
        self._unwatch()

    def _watch(self) -> None:
        """Someone listens: keep the view's upstream connections open so changes keep arriving."""
        if self._watching or self._hub is None:
            return
        for server in self.servers:
            with contextlib.suppress(ServerNotFoundError):  # removed meanwhile: the view is being retired
                self._watching.append(self._hub.watch(server, tenant=self.tenant))

    def _unwatch(self) -> None:
        if (not self.channels and not self.streams) or self._hub is None:
            for release in self._watching:
                release()
            self._watching = []

    async def retire(self) -> None:
        """The view changed (servers registered or removed): tell every client its lists
        changed, then end the listen streams so clients come back to the new view."""
        self._detach()
        for stream in list(self.streams):
            for method in sorted(stream.kinds):
                stream.put(method)
            stream.queue.put_nowait(_END)
        sends = [self._notify(conn, {"jsonrpc": "2.0", "method": m}) for conn in self.channels
                 if conn.initialized for m in LIST_CHANGED]
        await asyncio.gather(*sends)

    def end_streams(self) -> None:
        """End every ``subscriptions/listen`` stream with its result (graceful closure)."""
        for stream in list(self.streams):
            stream.queue.put_nowait(_END)

    # -- handshake-era channels ------------------------------------------------------
    def opened(self, conn: Conn) -> None:
        self.channels[conn] = None
        self._watch()

    def closed(self, conn: Conn) -> None:
        self.channels.pop(conn, None)
        self.subscriptions.pop(conn, None)
        self._unwatch()

    def subscribe(self, conn: Conn, server: str, upstream_uri: str, uri: str, on: bool) -> None:
        """Record (or drop) ``conn``'s subscription to ``uri`` (served by ``server`` as ``upstream_uri``)."""
        subs = self.subscriptions.setdefault(conn, {})
        if on:
            subs[(server, upstream_uri)] = uri
        else:
            subs.pop((server, upstream_uri), None)

    # -- 2026-07-28 ----------------------------------------------------------------------
    async def listen(self, req: Req, route: RouteUri) -> dict[str, Any]:
        """``subscriptions/listen``: acknowledge, then stream the requested changes until the client leaves.

        ``route`` maps a served resource URI to (server, upstream URI), or None."""
        wanted = req.params.get("notifications")
        if type(wanted) is not dict:
            raise RpcError(INVALID_PARAMS, "subscriptions/listen: 'notifications' must be an object")
        uris = wanted.get("resourceSubscriptions")
        if uris is not None and (type(uris) is not list or any(type(u) is not str for u in uris)):
            raise RpcError(INVALID_PARAMS, "subscriptions/listen: 'resourceSubscriptions' must be a list of strings")
        honored: dict[str, Any] = {flag: True for flag in LIST_CHANGED.values() if wanted.get(flag) is True}
        meta = {SUBSCRIPTION_ID: req.id}
        notify = req.notify
        assert notify is not None  # the dispatcher refuses listen without a stream
        stream = _Listen(frozenset(m for m, flag in LIST_CHANGED.items() if flag in honored))
        self.streams.add(stream)  # before the ack: a change during its write is queued, not lost
        self._watch()
        releases: list[Callable[[], Awaitable[None]]] = []
        try:
            for uri in dict.fromkeys(uris or ()):
                release = await self._watch_resource(uri, route)
                if release is not None:
                    releases.append(release[0])
                    stream.resources[release[1]] = uri
            if stream.resources:
                honored["resourceSubscriptions"] = list(stream.resources.values())
            await notify({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
                          "params": {"notifications": honored, "_meta": meta}})
            while (item := await stream.queue.get()) is not _END:
                await notify({"jsonrpc": "2.0", "method": item[0], "params": {**item[1], "_meta": meta}})
        finally:
            self.streams.discard(stream)
            self._unwatch()
            for release_one in releases:
                with contextlib.suppress(Exception):
                    await release_one()
        return {"_meta": meta}

    async def _watch_resource(self, uri: str, route: RouteUri
                              ) -> tuple[Callable[[], Awaitable[None]], tuple[str, str]] | None:
        """Have the upstream serving ``uri`` send its updates; None when it cannot (not honoured)."""
        if self._hub is None:
            return None
        try:
            found = await route(uri)
            if found is None:
                return None
            release = await self._hub.watch_resource(found[0], found[1], tenant=self.tenant)
        except Exception as exc:
            log.debug("listen: not watching %s: %s", uri, exc)
            return None
        return (release, found) if release is not None else None

    # -- events from the Hub -------------------------------------------------------------
    def on_change(self, event: ChangeEvent) -> None:
        """Hub listener: queue the event if it concerns this view (sent after the window)."""
        # A handshake-era client's upstream connection is registered as "<tenant>#handshake".
        if event.tenant.partition("#")[0] != self.tenant or event.server not in self.servers:
            return
        if event.method in LIST_CHANGED:
            self._pending.add(event.method)
        elif event.method == RESOURCE_UPDATED and type(event.params.get("uri")) is str:
            self._updates[(event.server, event.params["uri"])] = event.params
        else:
            return
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(COALESCE_S, self._deliver)

    def _deliver(self) -> None:
        self._flush = None
        methods, self._pending = sorted(self._pending), set()
        updates, self._updates = self._updates, {}
        for method in methods:
            for stream in self.streams:
                if method in stream.kinds:
                    stream.put(method)
            for conn in self.channels:
                if conn.initialized:
                    self._send(conn, {"jsonrpc": "2.0", "method": method})
        for key, params in updates.items():
            extra = {k: v for k, v in params.items() if k not in ("uri", "_meta")}
            for stream in self.streams:
                uri = stream.resources.get(key)
                if uri is not None:
                    stream.put(RESOURCE_UPDATED, {**extra, "uri": uri})
            for conn, subs in self.subscriptions.items():
                uri = subs.get(key)
                if uri is not None and conn in self.channels:
                    self._send(conn, {"jsonrpc": "2.0", "method": RESOURCE_UPDATED, "params": {**extra, "uri": uri}})

    def _send(self, conn: Conn, message: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._notify(conn, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _notify(conn: Conn, message: dict[str, Any]) -> None:
        sink = conn.sink
        if sink is not None:
            with contextlib.suppress(Exception):  # a client gone mid-send just misses it
                await sink(message)
