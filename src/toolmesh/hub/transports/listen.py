"""2026-07-28 change notifications: one ``subscriptions/listen`` stream per connection (SEP-2575).

A modern server has no standing GET stream. A client that wants ``notifications/*/list_changed``
opens a ``subscriptions/listen`` request whose response *is* the stream: the server acknowledges
(``notifications/subscriptions/acknowledged``, always first), then sends the notifications the
client asked for, each tagged with ``_meta["io.modelcontextprotocol/subscriptionId"]``. Nothing
is replayed after a drop, so the client re-listens and refetches.

:class:`ListenLoop` keeps that stream open for as long as its connection lives: it asks for
exactly the kinds whose ``listChanged`` the server advertised, reopens a stream that ended or
failed with a backoff, and stops with the connection. The stream is optional: it never fails or
delays a call. Each transport supplies how to open the stream once; what arrives on it goes
through the connection's usual dispatch (so the Hub invalidates its catalogue and tells its
change listeners), and the acknowledgement makes the Hub drop its cached listings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from toolmesh.hub.config import ServerConfig
from toolmesh.hub.transports.types import ServerIdentity

log = logging.getLogger("toolmesh.hub")

LISTEN = "subscriptions/listen"
LISTEN_ACK = "notifications/subscriptions/acknowledged"
#: Capability -> the ``SubscriptionFilter`` flag that asks for its list_changed notifications.
FLAGS = {"tools": "toolsListChanged", "prompts": "promptsListChanged", "resources": "resourcesListChanged"}
#: ``subscriptions/listen`` filter flag → the notification it stands for.
LIST_FLAGS = {
    "toolsListChanged": "notifications/tools/list_changed",
    "promptsListChanged": "notifications/prompts/list_changed",
    "resourcesListChanged": "notifications/resources/list_changed",
}
#: Wait before reopening a stream that ended or failed: doubles up to the maximum, seconds.
FIRST_DELAY = 0.5
MAX_DELAY = 30.0
#: A stream replaced for a new filter is retired when its successor is acknowledged, at the latest after this.
RETIRE_AFTER = 10.0

#: Opens the stream once and reads it until it ends: ``open_once(notifications, loop)``. Returns
#: when the server ended the stream (or answered with a result); raises when it failed.
OpenOnce = Callable[[dict[str, Any], "ListenLoop"], Coroutine[Any, Any, None]]


class ListenHost(Protocol):
    """What a :class:`ListenLoop` needs of its connection (a
    :class:`~toolmesh.hub.transports.base.Connection` is one; typed here so this module does not
    import the connection that imports it)."""

    @property
    def config(self) -> ServerConfig: ...

    @property
    def identity(self) -> ServerIdentity: ...

    @property
    def alive(self) -> bool: ...

    @property
    def modern(self) -> bool: ...

    @property
    def resource_uris(self) -> Callable[[], list[str]] | None: ...

    async def request(self, method: str, params: dict[str, Any] | None = None, *,
                      timeout: float | None = None) -> dict[str, Any]: ...


class ListenRefused(Exception):
    """The server will not serve ``subscriptions/listen`` at all: stop asking."""


def listen_filter(capabilities: Any) -> dict[str, Any]:
    """The ``notifications`` filter for a server's capabilities: every kind advertising ``listChanged``."""
    if not isinstance(capabilities, dict):
        return {}
    out: dict[str, Any] = {}
    for kind, flag in FLAGS.items():
        cap = capabilities.get(kind)
        if isinstance(cap, dict) and cap.get("listChanged") is True:
            out[flag] = True
    return out


class ListenLoop:
    """Keeps one ``subscriptions/listen`` stream open while ``conn`` is alive."""

    def __init__(self, conn: ListenHost, notifications: dict[str, Any] | None, open_once: OpenOnce) -> None:
        self.conn = conn
        self.notifications = notifications
        self._open_once = open_once
        self._task: asyncio.Task[None] | None = None
        self._current: asyncio.Task[None] | None = None
        #: Streams the server acknowledged so far (the first one and every reopening).
        self.opened = 0
        self._acked = False
        self._refiltering = False
        self._replaced: asyncio.Task[None] | None = None
        self._ack_waiters: list[asyncio.Future[None]] = []
        #: Whether the last acknowledged stream replaced one only to change its resource URIs
        #: (no gap: nothing was missed).
        self.last_ack_refilter = False

    @classmethod
    def start_for(cls, conn: ListenHost, open_once: OpenOnce) -> ListenLoop | None:
        """A running loop for a modern ``conn`` whose server advertises ``listChanged``, else ``None``.

        A connection pinned to 2026-07-28 skipped ``server/discover``: the loop asks it first."""
        if not conn.modern:
            return None
        caps = conn.identity.capabilities
        notifications = listen_filter(caps) if caps else None
        if notifications == {}:
            return None
        loop = cls(conn, notifications, open_once)
        loop._task = asyncio.get_running_loop().create_task(loop._run(), name=f"mcp-listen:{conn.config.name}")
        return loop

    def acknowledged(self) -> None:
        """The transport saw the server's acknowledgement of the current stream."""
        self._acked = True
        self.opened += 1
        self.last_ack_refilter = self._refiltering
        self._refiltering = False
        replaced, self._replaced = self._replaced, None
        if replaced is not None and not replaced.done():
            replaced.cancel()
        waiters, self._ack_waiters = self._ack_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    @property
    def active(self) -> bool:
        """Whether the loop still keeps (or is about to open) a stream."""
        return self._task is not None and not self._task.done()

    def refilter(self) -> asyncio.Future[None] | None:
        """The resource URIs to watch changed: open a stream asking for them now; the current one is
        retired once the new one is acknowledged, so no event falls between the two (one may
        arrive twice). Returns a future done at that acknowledgement (None: nothing to wait for)."""
        if self._task is None or self._task.done() or self.notifications is None:
            return None
        old = self._current
        if old is None or old.done():
            return None  # between streams: the next one is opened with the new filter
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ack_waiters.append(acked)
        self._refiltering = True
        if self._replaced is not None and not self._replaced.done():
            self._replaced.cancel()
        self._replaced = old
        self._acked = False
        self._current = asyncio.get_running_loop().create_task(self._open_once(self._filter(), self))
        # Should the new stream never be acknowledged, the old one still goes.
        asyncio.get_running_loop().call_later(RETIRE_AFTER, old.cancel)
        return acked

    def _filter(self) -> dict[str, Any]:
        assert self.notifications is not None
        uris = self.conn.resource_uris() if self.conn.resource_uris is not None else []
        return {**self.notifications, "resourceSubscriptions": uris} if uris else self.notifications

    async def _run(self) -> None:
        delay = FIRST_DELAY
        name = self.conn.config.name
        if self.notifications is None:
            try:
                found = await self.conn.request("server/discover", timeout=self.conn.config.connect_timeout)
            except Exception as exc:
                log.info("server %s: no change notifications: server/discover failed: %s", name, exc)
                return
            self.notifications = listen_filter(found.get("capabilities"))
            if not self.notifications:
                return
        while self.conn.alive:
            task = self._current
            if task is None or task.done():
                self._acked = False
                task = self._current = asyncio.get_running_loop().create_task(self._open_once(self._filter(), self))
            try:
                await task
                if task is not self._current:
                    continue  # a stream replaced for a new filter ended: its successor runs
                log.info("server %s ended its listen stream; listening again", name)
            except asyncio.CancelledError:
                me = asyncio.current_task()
                if (me is not None and me.cancelling()) or task is self._current:
                    raise
                continue  # the replaced stream, retired on purpose
            except ListenRefused as exc:
                log.info("server %s: no change notifications: %s", name, exc)
                return
            except Exception as exc:  # optional: losing the stream never fails a call
                if task is not self._current:
                    continue
                log.info("server %s: listen stream failed: %s", name, exc)
            if not self.conn.alive:
                return
            if self._acked:
                delay = FIRST_DELAY  # the stream worked: a fresh problem starts the backoff over
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)

    async def stop(self) -> None:
        for stream in (self._current, self._replaced):
            if stream is not None and not stream.done():
                stream.cancel()
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def listen_message(rid: int | str, notifications: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """The ``subscriptions/listen`` request (``meta``: the connection's 2026-07-28 envelope)."""
    return {"jsonrpc": "2.0", "id": rid, "method": LISTEN, "params": {"notifications": notifications, "_meta": meta}}


def check_final(response: dict[str, Any], name: str) -> None:
    """The listen request's own response: a result is a graceful end, an error says why."""
    err = response.get("error")
    if isinstance(err, dict):
        message = f"server {name!r} answered {LISTEN} with {err.get('code')}: {err.get('message')}"
        if err.get("code") == -32601:
            raise ListenRefused(message)
        raise ConnectionError(message)


__all__ = ["FLAGS", "LISTEN", "LISTEN_ACK", "LIST_FLAGS", "ListenHost", "ListenLoop", "ListenRefused", "check_final",
           "listen_filter", "listen_message"]
