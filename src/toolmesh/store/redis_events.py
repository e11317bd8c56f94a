"""Admin changes pushed to every process through Redis: pub/sub for speed, a version key for certainty.

A process that changes something every replica must honour (a key revoked, a server registered,
a routing rule switched) writes it to the store first — the store stays the record — and then
calls :meth:`SharedEvents.publish`, which in one script bumps the version key
``<prefix>:events:v`` and publishes ``"<version> <change>"`` on the channel ``<prefix>:events``.
Every process listens on that channel and hands each change to the handlers of its kind.

Pub/sub is at-most-once: a message sent while a subscriber reconnects is lost. So every process
also reads the version key on each (re)connection and every ``check_interval`` seconds, and when
it differs from the last version it saw (or a message skipped one), it runs the resync handlers,
which reload from the store whatever they cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from toolmesh.store.redis_state import LuaScript, RedisState
from toolmesh.store.shared import StateUnavailableError

__all__ = ["ChangeHandler", "ResyncHandler", "SharedEvents"]

log = logging.getLogger("toolmesh.store.redis")

#: Called with the change's data when a change of its kind arrives.
ChangeHandler = Callable[[Any], Awaitable[None]]
#: Called when changes may have been missed: reload everything cached from the store.
ResyncHandler = Callable[[], Awaitable[None]]

_PUBLISH = LuaScript("publish.lua")


class SharedEvents:
    """The admin-change channel of one process (built from its :class:`RedisState`)."""

    def __init__(self, state: RedisState, *, check_interval: float = 0.5) -> None:
        if check_interval <= 0:
            raise ValueError("check_interval must be > 0")
        self.state = state
        self.check_interval = check_interval
        prefix = state.settings.prefix
        self.channel = f"{prefix}:events"
        self.version_key = f"{prefix}:events:v"
        self._handlers: dict[str, list[ChangeHandler]] = {}
        self._resync: list[ResyncHandler] = []
        self._channels: dict[str, Callable[[bytes], None]] = {}
        self._seen: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._live = False
        self._owed = False  # a change could not be announced: bump the version once Redis answers
        #: Times the handlers reloaded from the store (missed messages, reconnections; for tests).
        self.resyncs = 0
        #: Changes received on the channel.
        self.received = 0

    # -- registration --------------------------------------------------------------------
    def on(self, kind: str, handler: ChangeHandler) -> None:
        """Call ``handler(data)`` for every change of ``kind`` (from any process, this one included)."""
        self._handlers.setdefault(kind, []).append(handler)

    def on_resync(self, handler: ResyncHandler) -> None:
        """Call ``handler()`` whenever changes may have been missed."""
        self._resync.append(handler)

    def listen(self, channel: str, handler: Callable[[bytes], None]) -> None:
        """Also hand every message of another ``channel`` to ``handler`` (no version key: the
        caller re-reads what it mirrors by itself). Call before :meth:`start`."""
        if channel == self.channel:
            raise ValueError(f"{channel!r} is the admin-change channel")
        self._channels[channel] = handler

    @property
    def live(self) -> bool:
        """True while subscribed: changes arrive within a round trip (else the callers' own polling applies)."""
        return self._live

    # -- publishing ----------------------------------------------------------------------
    async def publish(self, kind: str, data: Any = None) -> bool:
        """Announce a change already written to the store; False (logged) when Redis is unreachable,
        in which case the other processes pick it up through their own store polling or cache TTLs."""
        if not kind or " " in kind:
            raise ValueError(f"bad change kind {kind!r}")
        payload = orjson.dumps({"kind": kind, "data": data}).decode()
        try:
            await self.state.run(_PUBLISH, [self.version_key], [self.channel, payload])
        except (StateUnavailableError, OSError) as exc:
            # The change is in the store: once Redis answers again the version is bumped, and every
            # process reloads (until then: their store polling and cache TTLs).
            self._owed = True
            log.warning("admin change %r not pushed to the other processes (%s); announced once Redis is back",
                        kind, exc)
            return False
        return True

    # -- listening -----------------------------------------------------------------------
    def start(self) -> None:
        """Start listening in the background (needs a running event loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="toolmesh-admin-events")

    async def aclose(self) -> None:
        self._live = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = 0.05
        while True:
            started = time.monotonic()
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis went away (or a handler's bug): reconnect with back-off
                if self._live:
                    log.warning("admin change channel lost (%s: %s); reconnecting", type(exc).__name__, exc)
            self._live = False
            if time.monotonic() - started > 5 * self.check_interval:
                delay = 0.05  # it was up for a while: a fresh outage starts the back-off again
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.state.settings.max_backoff)

    async def _listen(self) -> None:
        client = self.state.client()
        pubsub = client.pubsub(ignore_subscribe_messages=True)  # one pooled connection, held while listening
        try:
            await pubsub.subscribe(self.channel, *self._channels)
            await self._check_version()  # anything published before the subscription counts as missed
            self._live = True
            next_check = time.monotonic() + self.check_interval
            while True:
                wait = max(0.0, next_check - time.monotonic())
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
                if message is not None and message.get("type") == "message":
                    channel = message["channel"]
                    other = self._channels.get(channel.decode() if isinstance(channel, bytes) else channel)
                    if other is None:
                        await self._dispatch(message["data"])
                    else:
                        try:
                            other(message["data"])
                        except Exception:
                            log.exception("handler of channel %r failed", channel)
                if self._owed or time.monotonic() >= next_check:
                    if self._owed:
                        self._owed = False
                        try:
                            await self.state.command("INCR", self.version_key)
                        except BaseException:
                            self._owed = True
                            raise
                    await self._check_version()
                    next_check = time.monotonic() + self.check_interval
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _check_version(self) -> None:
        # On the pipelined client: it shares a write with the requests' commands of that loop turn.
        async with asyncio.timeout(self.state.settings.timeout + self.state.settings.connect_timeout):
            raw = await self.state.command("GET", self.version_key)
        version = int(raw or 0)
        if version != self._seen:  # a change was missed, or Redis restarted (the key went back)
            await self._resync_all()
            self._seen = version

    async def _dispatch(self, raw: bytes | str) -> None:
        text = raw.decode() if isinstance(raw, bytes) else raw
        head, _, body = text.partition(" ")
        try:
            version = int(head)
            change = orjson.loads(body)
            kind, data = change["kind"], change.get("data")
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            log.error("admin change channel: unreadable message %.200r", text)
            return
        self.received += 1
        for handler in self._handlers.get(kind, ()):
            try:
                await handler(data)
            except Exception:
                log.exception("admin change handler for %r failed", kind)
        if self._seen is not None and version > self._seen + 1:  # messages in between were lost
            await self._resync_all()
        if self._seen is None or version > self._seen:
            self._seen = version

    async def _resync_all(self) -> None:
        self.resyncs += 1
        for handler in self._resync:
            try:
                await handler()
            except Exception:
                log.exception("admin change resync failed")
