"""A handshake-era session's messages for another process, over Redis pub/sub (``state.url``).

See :mod:`toolmesh.servers.relay`: a ``notifications/cancelled`` or a client's answer that reaches
a process without the request it targets is published on ``<prefix>:relay``; every gateway
process hears it, and the one holding the target in one of its endpoints delivers it. The others
ignore it. Pub/sub is at-most-once: a message published while Redis is down, or while the target
process reconnects, is lost (logged); the request then ends at its own deadline, as without a
relay.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from toolmesh.store.redis_events import SharedEvents
from toolmesh.store.redis_state import RedisState
from toolmesh.store.resp import pack

__all__ = ["RedisSessionRelay"]

log = logging.getLogger("toolmesh.gateway")

#: Offers a relayed message to this process's endpoints: True once one of them took it.
Deliver = Callable[[str, dict[str, Any]], Awaitable[bool]]


class RedisSessionRelay:
    """The gateway's :class:`~toolmesh.servers.relay.SessionRelay`: one per process."""

    def __init__(self, state: RedisState, events: SharedEvents, deliver: Deliver) -> None:
        """Listens on the relay channel through ``events`` (call before ``events.start()``)."""
        self.state = state
        self.channel = f"{state.settings.prefix}:relay"
        self._deliver = deliver
        self._tasks: set[asyncio.Task[None]] = set()
        #: Messages published, and relayed messages delivered here (for tests and metrics).
        self.sent = 0
        self.delivered = 0
        events.listen(self.channel, self._heard)

    def forward(self, session: str, message: dict[str, Any]) -> None:
        sent = self.state.post(pack("PUBLISH", self.channel, orjson.dumps({"s": session, "m": message}))) \
            if session else None
        if sent is None:
            log.warning("a session message for another process was dropped (Redis unavailable)")
            return
        sent.add_done_callback(_seen)
        self.sent += 1

    def _heard(self, data: bytes) -> None:
        try:
            body = orjson.loads(data)
            session, message = body["s"], body["m"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("malformed message on %s ignored", self.channel)
            return
        if type(session) is not str or type(message) is not dict:
            return
        task = asyncio.get_running_loop().create_task(self._hand_over(session, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _hand_over(self, session: str, message: dict[str, Any]) -> None:
        try:
            if await self._deliver(session, message):
                self.delivered += 1
        except Exception:
            log.exception("a relayed session message could not be delivered")


def _seen(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("a session message for another process was not published: %s", fut.exception())
