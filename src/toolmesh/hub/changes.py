"""Change notifications: the Hub tells its owner when an upstream server's catalogue changes.

    def on_change(event: ChangeEvent) -> None:
        print(event.tenant, event.server, event.method, event.params)

    remove = hub.add_change_listener(on_change)
    ...
    remove()

Events come from both protocol eras: handshake-era servers send ``notifications/*/list_changed``
and ``notifications/resources/updated`` on their session (HTTP GET stream, stdio, WebSocket);
2026-07-28 servers send them on the ``subscriptions/listen`` stream the connection keeps open
(see :mod:`toolmesh.hub.transports.listen`). A list change reaches the listeners after the
Hub's catalogue was invalidated, so whatever a listener triggers lists fresh data.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from toolmesh.hub.transports.listen import LIST_FLAGS

if TYPE_CHECKING:
    from toolmesh.hub.handle import ServerHandle

log = logging.getLogger("toolmesh.hub")

#: The ``_meta`` key a 2026-07-28 listen stream stamps on every notification it carries.
SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
#: The notification methods that reach change listeners.
CHANGE_METHODS = frozenset({
    "notifications/tools/list_changed",
    "notifications/prompts/list_changed",
    "notifications/resources/list_changed",
    "notifications/resources/updated",
})


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One upstream change notification, attributed to the registration that received it."""

    #: The tenant the server is registered for.
    tenant: str
    #: The user the server is registered for (``None``: the tenant's own server).
    user: str | None
    #: The registered server name.
    server: str
    #: The notification method, e.g. ``"notifications/tools/list_changed"``.
    method: str
    #: The notification's params (``uri`` for ``resources/updated``), without the listen stream's
    #: ``_meta`` subscription tag.
    params: dict[str, Any]


#: A plain sync callback; what it raises is logged and swallowed.
ChangeListener = Callable[[ChangeEvent], None]


def untagged(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` without ``_meta[SUBSCRIPTION_ID]`` (and without ``_meta`` when that was all of it)."""
    meta = params.get("_meta")
    if not isinstance(meta, dict) or SUBSCRIPTION_ID not in meta:
        return dict(params)
    rest = {k: v for k, v in meta.items() if k != SUBSCRIPTION_ID}
    out = {k: v for k, v in params.items() if k != "_meta"}
    if rest:
        out["_meta"] = rest
    return out


class ChangeSource:
    """The Hub's listener registry (a mixin: keeps the Hub module small)."""

    _change_listeners: dict[object, ChangeListener]

    if TYPE_CHECKING:
        def server(self, name: str, *, tenant: str = ..., user: str | None = None) -> ServerHandle: ...

    def watch(self, server: str, *, tenant: str = "default", user: str | None = None) -> Callable[[], None]:
        """Keep ``server``'s connection open so its change notifications keep arriving.

        The idle janitor skips a watched server, and the connection is opened now in the
        background if there is none. Returns the release (idempotent). Raises
        :class:`~toolmesh.errors.ServerNotFoundError` for an unknown server."""
        handle = self.server(server, tenant=tenant, user=user)
        handle.watchers += 1
        if handle.conn is None:
            tasks: set[asyncio.Task[Any]] = self.__dict__.setdefault("_watch_tasks", set())
            task = asyncio.get_running_loop().create_task(_connect_quietly(handle))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                handle.watchers -= 1

        return release

    async def watch_resource(self, server: str, uri: str, *, tenant: str = "default",
                             user: str | None = None) -> Callable[[], Awaitable[None]] | None:
        """Ask ``server`` for ``notifications/resources/updated`` of ``uri`` (they reach the change
        listeners); returns the async release, or ``None`` when the server cannot send them.

        Counted per URI: the server is asked once however many owners watch it. Handshake era:
        ``resources/subscribe`` on the session; 2026-07-28: the URI joins the connection's
        ``subscriptions/listen`` filter (the stream is replaced at once)."""
        handle = self.server(server, tenant=tenant, user=user)
        if not await handle.watch_resource(uri, True):
            return None
        released = False

        async def release() -> None:
            nonlocal released
            if not released:
                released = True
                await handle.watch_resource(uri, False)

        return release

    def add_change_listener(self, callback: ChangeListener) -> Callable[[], None]:
        """Call ``callback(event)`` for every upstream change notification; returns the remover.

        ``callback`` is a plain sync function run on the Hub's event loop (do the slow part in a
        task of your own); what it raises is logged and swallowed. The remover is idempotent. The
        same function added twice is called twice."""
        if not callable(callback):
            raise TypeError("change listener must be callable")
        listeners = self.__dict__.setdefault("_change_listeners", {})
        token = object()
        listeners[token] = callback

        def remove() -> None:
            listeners.pop(token, None)

        return remove

    def emit_change(self, tenant: str, user: str | None, server: str, method: str, params: dict[str, Any]) -> None:
        """Deliver one notification to every listener (nothing is built when there are none)."""
        listeners = self.__dict__.get("_change_listeners")
        if not listeners:
            return
        event = ChangeEvent(tenant, user, server, method, untagged(params))
        for callback in list(listeners.values()):
            try:
                callback(event)
            except Exception:  # a listener's bug must never break the connection that delivered the event
                log.exception("change listener %r failed for %s from %s", callback, method, server)


async def _connect_quietly(handle: ServerHandle) -> None:
    try:
        await handle.connection()
    except Exception as exc:  # the next call reconnects; watching is best effort
        log.debug("watch: cannot connect %s yet: %s", handle.name, exc)


__all__ = ["CHANGE_METHODS", "LIST_FLAGS", "SUBSCRIPTION_ID", "ChangeEvent", "ChangeListener", "ChangeSource",
           "untagged"]
