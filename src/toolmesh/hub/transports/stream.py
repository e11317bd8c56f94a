"""Connections over a bidirectional message stream (stdio, WebSocket, legacy SSE).

One reader task owns the inbound side for the whole life of the connection;
callers only wait on futures, so closing never crosses task boundaries.
"""

from __future__ import annotations

import asyncio
import logging
from abc import abstractmethod
from typing import Any

import orjson

from toolmesh.errors import ConnectionFailedError
from toolmesh.hub.transports.base import Connection, Pending
from toolmesh.hub.transports.listen import LISTEN_ACK, ListenLoop, check_final, listen_message

log = logging.getLogger("toolmesh.hub")


class StreamConnection(Connection):
    """Base for transports where responses arrive on a shared inbound stream."""

    _reader: asyncio.Task[None] | None = None
    _broken: BaseException | None = None

    @abstractmethod
    async def _write(self, data: bytes) -> None:
        """Write one serialised JSON-RPC message."""

    @abstractmethod
    async def _read_loop(self) -> None:
        """Read messages until the stream ends, calling ``self._feed(raw)`` for each."""

    @property
    def alive(self) -> bool:
        return not self.closed and self._broken is None

    def _start_reader(self) -> None:
        self._reader = asyncio.get_running_loop().create_task(self._run_reader(), name=f"mcp-reader:{self.config.name}")

    async def _run_reader(self) -> None:
        try:
            await self._read_loop()
            exc: BaseException = ConnectionFailedError(self._gone_message())
        except asyncio.CancelledError:
            exc = ConnectionFailedError(f"server {self.config.name!r}: connection closed")
        except Exception as e:
            exc = ConnectionFailedError(f"server {self.config.name!r}: connection broke: {e}")
        self._broken = exc
        self._fail_all(exc)
        if not self.closed:
            log.info("%s", exc)

    def _gone_message(self) -> str:
        return f"server {self.config.name!r}: connection closed by the server"

    async def _feed(self, raw: bytes | str) -> None:
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            log.warning("server %s sent invalid JSON: %.200r", self.config.name, raw)
            return
        await self._dispatch(msg)

    async def _send_request(self, msg: dict[str, Any], pending: Pending) -> dict[str, Any]:
        if self._broken is not None:
            raise self._broken
        await self._write(orjson.dumps(msg))
        return await pending.future

    async def _send_notification(self, msg: dict[str, Any]) -> None:
        if self._broken is not None:
            raise self._broken
        await self._write(orjson.dumps(msg))

    async def _negotiate(self) -> None:
        await super()._negotiate()
        self.listen_loop = ListenLoop.start_for(self, self._listen_modern)

    async def _listen_modern(self, notifications: dict[str, Any], loop: ListenLoop) -> None:
        """One 2026-07-28 ``subscriptions/listen`` request: its id stays pending while the server
        streams its notifications on the shared channel; its response ends the stream.

        No waiting task: the deadline sweep leaves it alone (it is not a call)."""
        rid = next(self._ids)
        pending = Pending(asyncio.get_running_loop().create_future())
        self._pending[rid] = pending
        try:
            response = await self._send_request(listen_message(rid, notifications, self._meta), pending)
        finally:
            self._pending.pop(rid, None)
        check_final(response, self.config.name)

    async def _handle_notification(self, method: str, params: dict[str, Any]) -> None:
        if method == LISTEN_ACK and self.listen_loop is not None:
            self.listen_loop.acknowledged()
        await super()._handle_notification(method, params)

    async def _stop_reader(self) -> None:
        if self.listen_loop is not None:
            await self.listen_loop.stop()
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):
                pass
