"""Conversation sessions (AGT-6), persisted in the embedded store.

A session is keyed by (tenant, user, conversation), the three kept apart everywhere
(in memory as a tuple, on disk as three columns), so no key can reach another
user's history. Writes go to SQLite first and to memory after, so what a caller sees
is what a restart would load. At most ``max_sessions`` live in memory (LRU); an
evicted session reloads from disk on its next ``get``. A session unused (no write)
for ``ttl`` seconds is expired: ``get`` then deletes it and returns a fresh one.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from toolmesh.llm.types import Message, ToolCall
from toolmesh.store.limits import UserLimits
from toolmesh.store.sqlite import Connection, Store, transaction

__all__ = ["Session", "SessionStore", "UserLimits", "message_from_dict", "message_to_dict"]

SessionKey = tuple[str, str, str]
_ROLES = frozenset(("system", "user", "assistant", "tool"))


@dataclass(eq=False)
class Session:
    """One conversation's history. Change it only through :class:`SessionStore`."""

    tenant: str
    user: str
    conversation: str
    history: list[Message] = field(default_factory=list)
    created_at: float = 0.0
    #: Time of the last write (drives the TTL).
    updated_at: float = 0.0
    #: True once deleted or expired; writes then fail.
    closed: bool = False
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    @property
    def key(self) -> SessionKey:
        return (self.tenant, self.user, self.conversation)

    @property
    def messages(self) -> list[Message]:
        """The history (same list as :attr:`history`)."""
        return self.history


def message_to_dict(m: Message) -> dict[str, Any]:
    """A JSON-ready dict of ``m`` holding only what differs from the defaults (exact round trip)."""
    if not isinstance(m, Message):
        raise TypeError(f"expected toolmesh.llm.types.Message, not {type(m).__name__}")
    if m.role not in _ROLES:
        raise ValueError(f"invalid message role {m.role!r}")
    d: dict[str, Any] = {"role": m.role}
    for name in ("content", "tool_call_id", "name", "reasoning"):
        v = getattr(m, name)
        if v is not None:
            if not isinstance(v, str):
                raise TypeError(f"Message.{name} must be str or None, not {type(v).__name__}")
            d[name] = v
    if m.tool_calls:
        calls = []
        for c in m.tool_calls:
            if not isinstance(c, ToolCall):
                raise TypeError(f"Message.tool_calls items must be ToolCall, not {type(c).__name__}")
            cd: dict[str, Any] = {"id": c.id, "name": c.name, "arguments": c.arguments}
            if c.raw_arguments:
                cd["raw_arguments"] = c.raw_arguments
            if c.parse_error is not None:
                cd["parse_error"] = c.parse_error
            if c.recovered:
                cd["recovered"] = True
            calls.append(cd)
        d["tool_calls"] = calls
    return d


def message_from_dict(d: dict[str, Any]) -> Message:
    """The inverse of :func:`message_to_dict`."""
    calls = [ToolCall(c["id"], c["name"], c.get("arguments", {}), c.get("raw_arguments", ""),
                      c.get("parse_error"), c.get("recovered", False)) for c in d.get("tool_calls", ())]
    return Message(d["role"], d.get("content"), calls, d.get("tool_call_id"), d.get("name"), d.get("reasoning"))


def _encode(messages: Sequence[Message]) -> list[bytes]:
    if isinstance(messages, Message) or not isinstance(messages, (list, tuple)):
        raise TypeError("messages must be a list of Message")
    try:
        return [orjson.dumps(message_to_dict(m)) for m in messages]
    except orjson.JSONEncodeError as e:
        raise TypeError(f"message is not JSON-serialisable: {e}") from None


def _check_key(tenant: str, user: str, conversation: str) -> SessionKey:
    for name, v in (("tenant", tenant), ("user", user), ("conversation", conversation)):
        if not isinstance(v, str):
            raise TypeError(f"{name} must be str, not {type(v).__name__}")
    return (tenant, user, conversation)


_UPSERT = ("INSERT INTO sessions (tenant, user, conversation, created_at, updated_at) VALUES (?, ?, ?, ?, ?)"
           " ON CONFLICT (tenant, user, conversation) DO UPDATE SET updated_at = excluded.updated_at RETURNING id")
_BY_KEY = "tenant = ? AND user = ? AND conversation = ?"


def _upsert(conn: Connection, key: SessionKey, created: float, now: float) -> int:
    sid: int = conn.execute(_UPSERT, (*key, created, now)).fetchone()[0]
    return sid


class SessionStore:
    """Sessions in memory (LRU, TTL) backed by the store's ``sessions``/``messages`` tables."""

    def __init__(self, store: Store, *, ttl: float = 3600, max_sessions: int = 10000,
                 clock: Callable[[], float] = time.time) -> None:
        if not isinstance(store, Store):
            raise TypeError("store must be a toolmesh.store.Store")
        if not ttl > 0 or not isinstance(max_sessions, int) or max_sessions < 1:
            raise ValueError("ttl and max_sessions must be positive")
        self._store = store
        self.ttl = float(ttl)
        self.max_sessions = max_sessions
        self._clock = clock
        self._cache: OrderedDict[SessionKey, Session] = OrderedDict()
        # Evicted sessions still referenced by a caller: reuse them so one key has one object.
        self._alive: weakref.WeakValueDictionary[SessionKey, Session] = weakref.WeakValueDictionary()
        self._loading: dict[SessionKey, asyncio.Future[Session]] = {}

    def __len__(self) -> int:
        """Sessions held in memory."""
        return len(self._cache)

    def _expired(self, s: Session, now: float) -> bool:
        return now - s.updated_at > self.ttl

    def _remember(self, s: Session) -> None:
        self._cache[s.key] = s
        self._cache.move_to_end(s.key)
        self._alive[s.key] = s
        while len(self._cache) > self.max_sessions:
            self._cache.popitem(last=False)  # already on disk: it reloads on the next get

    async def get(self, tenant: str, user: str, conversation: str) -> Session:
        """The session of (tenant, user, conversation): cached, loaded from disk, or new if none or expired."""
        key = _check_key(tenant, user, conversation)
        s = self._cache.get(key)
        if s is not None and not self._expired(s, self._clock()):
            self._cache.move_to_end(key)
            return s
        s = s or self._alive.get(key)
        if s is not None:
            if not self._expired(s, self._clock()):
                self._remember(s)
                return s
            await self._drop(s)
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[Session] = asyncio.get_running_loop().create_future()
        self._loading[key] = fut
        try:
            s = await self._load(key)
            self._remember(s)
            fut.set_result(s)
            return s
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # mark retrieved: no "never retrieved" warning when nobody else waits
            raise
        finally:
            del self._loading[key]

    async def _load(self, key: SessionKey) -> Session:
        def job(conn: Connection) -> tuple[float, float, list[bytes]] | None:
            row = conn.execute(f"SELECT id, created_at, updated_at FROM sessions WHERE {_BY_KEY}", key).fetchone()
            if row is None:
                return None
            rows = conn.execute("SELECT data FROM messages WHERE session_id = ? ORDER BY id", (row[0],)).fetchall()
            return row[1], row[2], [r[0] for r in rows]

        found = await self._store.run(job)
        now = self._clock()
        if found is not None:
            created, updated, blobs = found
            if now - updated <= self.ttl:
                return Session(*key, [message_from_dict(orjson.loads(b)) for b in blobs], created, updated)
            await self._store.execute(f"DELETE FROM sessions WHERE {_BY_KEY}", key)
        return Session(*key, [], now, now)

    async def append(self, session: Session, messages: Sequence[Message]) -> None:
        """Add ``messages`` to the history (on disk first, then in memory)."""
        blobs = _encode(messages)
        msgs = list(messages)
        async with session._lock:
            if session.closed:
                raise RuntimeError("session was deleted or expired; get it again")
            now = self._clock()
            key, created = session.key, session.created_at

            def job(conn: Connection) -> None:
                def tx(c: Connection) -> None:
                    sid = _upsert(c, key, created, now)
                    c.executemany("INSERT INTO messages (session_id, data) VALUES (?, ?)", [(sid, b) for b in blobs])
                transaction(conn, tx, lock=False)  # the upsert locks this session's row first

            await self._store.run(job)
            session.history.extend(msgs)
            session.updated_at = now

    async def replace_history(self, session: Session, messages: Sequence[Message],
                              archived_summary: str | None = None) -> None:
        """Replace the history (memory summarisation); the previous history is kept in the archive."""
        blobs = _encode(messages)
        if archived_summary is not None and not isinstance(archived_summary, str):
            raise TypeError("archived_summary must be str or None")
        msgs = list(messages)
        async with session._lock:
            if session.closed:
                raise RuntimeError("session was deleted or expired; get it again")
            now = self._clock()
            key, created = session.key, session.created_at

            def job(conn: Connection) -> None:
                def tx(c: Connection) -> None:
                    sid = _upsert(c, key, created, now)
                    old = [r[0] for r in c.execute("SELECT data FROM messages WHERE session_id = ? ORDER BY id",
                                                   (sid,))]
                    c.execute("INSERT INTO session_archive (session_id, archived_at, summary, messages)"
                              " VALUES (?, ?, ?, ?)", (sid, now, archived_summary, b"[" + b",".join(old) + b"]"))
                    c.execute("DELETE FROM messages WHERE session_id = ?", (sid,))
                    c.executemany("INSERT INTO messages (session_id, data) VALUES (?, ?)", [(sid, b) for b in blobs])
                transaction(conn, tx, lock=False)  # the upsert locks this session's row first

            await self._store.run(job)
            session.history[:] = msgs
            session.updated_at = now

    async def archives(self, session: Session) -> list[tuple[float, str | None, list[Message]]]:
        """Archived histories of a session, oldest first: ``(archived_at, summary, messages)``."""
        rows = await self._store.fetchall(
            "SELECT a.archived_at, a.summary, a.messages FROM session_archive a JOIN sessions s"
            f" ON s.id = a.session_id WHERE s.{_BY_KEY.replace(' AND ', ' AND s.')} ORDER BY a.id", session.key)
        return [(at, summary, [message_from_dict(d) for d in orjson.loads(blob)]) for at, summary, blob in rows]

    async def delete(self, tenant: str, user: str, conversation: str) -> bool:
        """Delete a session (memory, disk, archive); True if it existed on disk."""
        key = _check_key(tenant, user, conversation)
        s = self._cache.pop(key, None) or self._alive.get(key)
        if s is not None:
            s.closed = True
        self._alive.pop(key, None)
        return await self._store.execute(f"DELETE FROM sessions WHERE {_BY_KEY}", key) > 0

    async def _drop(self, s: Session) -> None:
        s.closed = True
        self._cache.pop(s.key, None)
        self._alive.pop(s.key, None)
        await self._store.execute(f"DELETE FROM sessions WHERE {_BY_KEY}", s.key)

    async def purge_expired(self) -> int:
        """Delete every expired session from memory and disk; returns how many were deleted on disk."""
        now = self._clock()
        for s in [s for s in self._cache.values() if self._expired(s, now)]:
            s.closed = True
            self._cache.pop(s.key, None)
            self._alive.pop(s.key, None)
        return await self._store.execute("DELETE FROM sessions WHERE updated_at < ?", (now - self.ttl,))
