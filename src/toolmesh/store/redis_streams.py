"""Resumable SSE streams copied to Redis, so that any replica can resume them (SEP-1699).

A handshake-era response stream lives in the memory of the worker serving its request. When its
client leaves mid-stream, that worker copies the stream here from then on (see
:meth:`toolmesh.servers.resume.ReplayBuffer.share`), and a client that comes back through another
worker or replica is served from the copy. One Redis stream per SSE stream:

* key ``<prefix>:sse:<token>-<n>:<session digest>``: the session is part of the key, so another
  session's ``Last-Event-ID`` finds nothing;
* entry ``1-0`` marks the start, event ``seq`` is entry ``<seq + 1>-0`` (field ``d``, the event's
  SSE bytes), the end an entry with an automatic id (field ``e``), so entries stay in order;
* trimmed to the last :data:`~toolmesh.servers.resume.MAX_EVENTS` events (approximately: never
  fewer); expires :data:`~toolmesh.servers.resume.KEEP_IDLE` after its last write while open and
  :data:`~toolmesh.servers.resume.KEEP_DONE` after its end.

The writing process keeps ``<prefix>:sse:alive:<token>`` set (expiring after
:data:`ALIVE_TTL` s, renewed every :data:`HEARTBEAT` s) while it has open copies: a reader can tell
a stream that is still being written from one whose process died (it will never end).

Writes are queued on the process's one pipelined connection without waiting for the reply; while
Redis is down they are skipped (that stream then resumes only where it started).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib

from toolmesh.store.redis_state import RedisState
from toolmesh.store.resp import pack

__all__ = ["ALIVE_TTL", "HEARTBEAT", "MirroredEvents", "RedisStreamMirror"]

#: Events kept per stream (the same as a worker's own buffer).
MAX_EVENTS = 512
#: Seconds an open copy is kept after its last write, and a finished one after its end.
KEEP_IDLE, KEEP_DONE = 3600.0, 60.0
#: Seconds the "still writing" mark of a process outlives its last renewal, and between renewals.
ALIVE_TTL, HEARTBEAT = 6.0, 2.0

#: ``(events, done, alive)``: :class:`toolmesh.servers.resume.MirroredStream`'s fields.
MirroredEvents = tuple[list[tuple[int, bytes]], bool, bool]


class RedisStreamMirror:
    """The copies of this process's resumable streams in Redis, and reads of other processes' copies."""

    def __init__(self, state: RedisState) -> None:
        self.state = state
        self.prefix = f"{state.settings.prefix}:sse:"
        #: Open copies per buffer token (the heartbeat renews the token's mark while any is open).
        self._open: dict[str, int] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        #: Commands skipped because Redis was down (for tests and metrics).
        self.skipped = 0

    def key(self, stream: str, session: str) -> str:
        """The Redis key of ``stream`` of ``session``."""
        digest = hashlib.sha256(session.encode()).hexdigest()[:24]
        return f"{self.prefix}{stream}:{digest}"

    # -- writing (the process whose client left) ------------------------------------------------
    def opened(self, stream: str, session: str) -> None:
        key = self.key(stream, session)
        token = stream.partition("-")[0]
        self._open[token] = self._open.get(token, 0) + 1
        self._post(pack("SET", self._alive_key(token), "1", "PX", int(ALIVE_TTL * 1000)))
        self._post(pack("XADD", key, "MAXLEN", "~", MAX_EVENTS, "1-0", "o", "1"))
        self._post(pack("PEXPIRE", key, int(KEEP_IDLE * 1000)))
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat(), name="toolmesh-sse-heartbeat")

    def append(self, stream: str, session: str, seq: int, data: bytes) -> None:
        key = self.key(stream, session)
        self._post(pack("XADD", key, "MAXLEN", "~", MAX_EVENTS, f"{seq + 1}-0", "d", data))
        self._post(pack("PEXPIRE", key, int(KEEP_IDLE * 1000)))

    def ended(self, stream: str, session: str) -> None:
        key = self.key(stream, session)
        self._post(pack("XADD", key, "MAXLEN", "~", MAX_EVENTS, "*", "e", "1"))
        self._post(pack("PEXPIRE", key, int(KEEP_DONE * 1000)))
        token = stream.partition("-")[0]
        left = self._open.get(token, 0) - 1
        if left > 0:
            self._open[token] = left
        else:
            self._open.pop(token, None)

    def _post(self, packed: bytes) -> None:
        """Queue one command; nobody waits for its reply (a failure only costs a resume elsewhere)."""
        if self.state.post(packed) is None:
            self.skipped += 1

    def _alive_key(self, token: str) -> str:
        return f"{self.prefix}alive:{token}"

    async def _beat(self) -> None:
        while self._open:
            await asyncio.sleep(HEARTBEAT)
            for token in list(self._open):
                self._post(pack("SET", self._alive_key(token), "1", "PX", int(ALIVE_TTL * 1000)))

    async def aclose(self) -> None:
        """Stop renewing the marks (the process is stopping: its open copies will not end)."""
        self._open.clear()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(BaseException):
                await self._heartbeat

    # -- reading (a process the client came back through) ----------------------------------------
    async def read(self, stream: str, session: str, after: int) -> MirroredEvents | None:
        """``(events after after, done, alive)`` of ``stream``; None when there is no copy.
        Raises :class:`~toolmesh.store.shared.StateUnavailableError` while Redis is down."""
        key = self.key(stream, session)
        token = stream.partition("-")[0]
        exists, entries, alive = await asyncio.gather(
            self.state.command("EXISTS", key),
            self.state.command("XRANGE", key, f"({after + 1}-0", "+"),
            self.state.command("EXISTS", self._alive_key(token)),
        )
        if not exists:
            return None
        events: list[tuple[int, bytes]] = []
        done = False
        for entry_id, fields in entries or ():
            name = fields[0] if fields else b""
            if name in (b"d", "d"):
                major = entry_id.split(b"-")[0] if isinstance(entry_id, bytes) else entry_id.split("-")[0]
                data = fields[1]
                events.append((int(major) - 1, data if isinstance(data, bytes) else str(data).encode()))
            elif name in (b"e", "e"):
                done = True
        return events, done, bool(alive)
