"""The embedded store (STO-1): one SQLite file, one writer thread, an async API.

All statements run on a single connection owned by a dedicated thread, so the event
loop never waits on disk and SQLite never sees two writers from this process. The
database is in WAL mode with ``synchronous=NORMAL`` (durable across process crashes;
a power cut may lose the last transactions).

High-volume rows (usage ledger, audit log) go through :meth:`Store.enqueue`: they are
validated at once, acknowledged, and written in batches (every ``batch_rows`` rows or
``batch_interval`` seconds). Every other operation first writes the pending batch, so
reads see everything acknowledged before them; :meth:`flush` and :meth:`aclose`
persist everything. A failing row is logged and skipped, never the batch around it.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import queue
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import orjson

from toolmesh.store.schema import MIGRATIONS, SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "Store", "default_path"]

log = logging.getLogger("toolmesh.store")
T = TypeVar("T")
SqlValue = None | int | float | str | bytes
_SQL_TYPES = (type(None), int, float, str, bytes)


AUDIT_SQL = ("INSERT INTO audit (at, tenant, user, server, tool, arguments_hash, status, latency_ms,"
              " request_id, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def default_path() -> Path:
    """``$TOOLMESH_HOME/toolmesh.db``; ``TOOLMESH_HOME`` defaults to ``~/.toolmesh``."""
    home = os.environ.get("TOOLMESH_HOME") or os.path.join(os.path.expanduser("~"), ".toolmesh")
    return Path(home) / "toolmesh.db"


class _Stop:
    pass


_open_stores: weakref.WeakSet[Store] = weakref.WeakSet()


@atexit.register
def _close_open_stores() -> None:
    # A store left open at interpreter exit still writes what it acknowledged.
    for store in list(_open_stores):
        store.close()


_WAKE = object()
_STOP = _Stop()



def _enable_wal(conn: sqlite3.Connection, wait: float = 10.0) -> None:
    """Switch to WAL, retrying while another process holds the file.

    Switching the journal mode can fail with "database is locked" at once, without the
    busy handler, while another process is switching it or migrating (gateway workers
    opening a new store together)."""
    deadline = time.monotonic() + wait
    delay = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

class Store:
    """The embedded SQLite store. Use ``async with Store(path) as store`` or call :meth:`aclose`.

    ``path`` defaults to :func:`default_path` (never the working directory); ``":memory:"``
    gives a private in-memory database (tests).
    """

    def __init__(self, path: str | Path | None = None, *, batch_rows: int = 512,
                 batch_interval: float = 0.05) -> None:
        if path is not None and not isinstance(path, (str, Path)):
            raise TypeError(f"path must be str, Path or None, not {type(path).__name__}")
        if str(path) == "":
            raise ValueError("path must not be empty")
        if not isinstance(batch_rows, int) or batch_rows < 1:
            raise ValueError("batch_rows must be a positive int")
        if not isinstance(batch_interval, (int, float)) or not 0 < batch_interval < 3600:
            raise ValueError("batch_interval must be a positive number of seconds")
        self.path: str = ":memory:" if str(path) == ":memory:" else str(path or default_path())
        #: Distinguishes rows written by this open store from older ones (see UsageLedger).
        self.epoch = f"{os.getpid()}-{time.time_ns()}"
        self._batch_rows = batch_rows
        self._interval = float(batch_interval)
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pending: list[tuple[str, tuple[SqlValue, ...]]] = []
        self._pending_since = 0.0
        self._lock = threading.Lock()
        self._closed = False
        self._conn: sqlite3.Connection | None = None
        self._open_error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="toolmesh-store", daemon=True)
        self._thread.start()
        _open_stores.add(self)

    async def __aenter__(self) -> Store:
        await self.run(lambda conn: None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the writer thread -----------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        conn.execute("PRAGMA busy_timeout=10000")
        _enable_wal(conn)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        try:
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        # Several processes (gateway workers) may open a fresh file at once: the version is
        # read again under the write lock, so only the first one migrates.
        if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path}: schema version {version} is newer than this toolmesh ({SCHEMA_VERSION})")
            for v in range(version, SCHEMA_VERSION):
                for stmt in MIGRATIONS[v].split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _main(self) -> None:
        try:
            self._conn = self._open()
        except BaseException as e:  # reported by every call
            self._open_error = e
        while True:
            timeout = None
            if self._pending:
                timeout = max(0.0, self._pending_since + self._interval - time.monotonic())
            try:
                job = self._jobs.get(timeout=timeout)
            except queue.Empty:
                self._write_pending()
                continue
            if job is _WAKE:
                if len(self._pending) >= self._batch_rows:
                    self._write_pending()
                continue
            self._write_pending()
            if job is _STOP:
                if self._conn is not None:
                    self._conn.close()
                return
            fn, fut = job
            if not fut.set_running_or_notify_cancel():
                continue
            if self._open_error is not None:
                fut.set_exception(RuntimeError(f"store {self.path} could not be opened: {self._open_error}"))
                continue
            assert self._conn is not None
            try:
                fut.set_result(fn(self._conn))
            except BaseException as e:
                fut.set_exception(e)

    def _write_pending(self) -> None:
        with self._lock:
            rows, self._pending = self._pending, []
        if not rows or self._conn is None:
            if rows:
                log.error("store %s unavailable: %d queued rows dropped", self.path, len(rows))
            return
        conn = self._conn
        try:
            conn.execute("BEGIN")
            # Runs of rows with the same statement go through executemany (one C loop instead of
            # a Python call per row: the audit log writes one row per tool call). A run that fails
            # is replayed row by row inside a savepoint, so only the bad rows are skipped.
            start = 0
            while start < len(rows):
                sql = rows[start][0]
                end = start + 1
                while end < len(rows) and rows[end][0] == sql:
                    end += 1
                self._write_run(conn, sql, [r[1] for r in rows[start:end]])
                start = end
            conn.execute("COMMIT")
        except sqlite3.Error:
            log.exception("store: batch of %d rows failed", len(rows))
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    @staticmethod
    def _write_run(conn: sqlite3.Connection, sql: str, params: list[tuple[SqlValue, ...]]) -> None:
        if len(params) > 1:
            conn.execute("SAVEPOINT run")
            try:
                _insert_many(conn, sql, params)
                conn.execute("RELEASE run")
                return
            except sqlite3.Error:
                conn.execute("ROLLBACK TO run")
                conn.execute("RELEASE run")
        for p in params:
            try:
                conn.execute(sql, p)
            except sqlite3.Error as e:  # skip the bad row, keep the others
                log.error("store: row rejected (%s): %s %r", e, sql.split("(")[0], p)

    # -- the async API ---------------------------------------------------------------------

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the writer thread (after any pending batch) and return its result.

        The connection is in autocommit mode: ``fn`` manages its own transaction (see
        :func:`transaction`). Never keep the connection beyond the call.
        """
        if self._closed:
            raise RuntimeError("store is closed")
        fut: Future[T] = Future()
        self._jobs.put((fn, fut))
        return await asyncio.wrap_future(fut)

    async def execute(self, sql: str, params: Sequence[SqlValue] = ()) -> int:
        """Run one write statement in its own transaction; returns the number of rows changed."""
        p = _check_params(params)
        return await self.run(lambda conn: conn.execute(sql, p).rowcount)

    async def insert(self, sql: str, params: Sequence[SqlValue] = ()) -> int:
        """Run one INSERT in its own transaction; returns the new row's id."""
        p = _check_params(params)
        return await self.run(lambda conn: conn.execute(sql, p).lastrowid or 0)

    async def fetchall(self, sql: str, params: Sequence[SqlValue] = ()) -> list[tuple[Any, ...]]:
        """Run a query and return all rows."""
        p = _check_params(params)
        return await self.run(lambda conn: conn.execute(sql, p).fetchall())

    async def fetchone(self, sql: str, params: Sequence[SqlValue] = ()) -> tuple[Any, ...] | None:
        """Run a query and return its first row, or None."""
        p = _check_params(params)
        row: tuple[Any, ...] | None = await self.run(lambda conn: conn.execute(sql, p).fetchone())
        return row

    def enqueue(self, sql: str, params: Sequence[SqlValue]) -> None:
        """Queue a write for the next batch (validated now; persisted by ``flush``/``aclose`` at the latest)."""
        if self._closed:
            raise RuntimeError("store is closed")
        self.enqueue_trusted(sql, _check_params(params))

    def enqueue_trusted(self, sql: str, params: tuple[SqlValue, ...]) -> None:
        """:meth:`enqueue` for parameters whose types the caller has already checked."""
        if self._closed:
            raise RuntimeError("store is closed")
        with self._lock:
            self._pending.append((sql, params))
            n = len(self._pending)
            if n == 1:
                self._pending_since = time.monotonic()
        if n == 1 or n >= self._batch_rows:
            self._jobs.put(_WAKE)  # arm the batch timer, or flush a full batch now

    async def flush(self) -> None:
        """Persist every queued row."""
        await self.run(lambda conn: None)

    async def aclose(self) -> None:
        """Persist everything queued, then close the connection and stop the thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._jobs.put(_STOP)
        await asyncio.to_thread(self._thread.join)

    def close(self) -> None:
        """Synchronous :meth:`aclose` (for atexit handlers and tests without a loop)."""
        if not self._closed:
            self._closed = True
            self._jobs.put(_STOP)
            self._thread.join()

    # -- checkpoints, API keys, audit ------------------------------------------------------

    async def put_checkpoint(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable value under ``key`` (replacing any previous one)."""
        _check_str("key", key)
        blob = orjson.dumps(value)
        await self.execute("INSERT INTO checkpoints (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT(key)"
                           " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                           (key, blob, time.time()))

    async def get_checkpoint(self, key: str) -> Any | None:
        """The value stored under ``key``, or None."""
        _check_str("key", key)
        row = await self.fetchone("SELECT value FROM checkpoints WHERE key = ?", (key,))
        return None if row is None else orjson.loads(row[0])

    async def delete_checkpoint(self, key: str) -> bool:
        """Delete ``key``; True if it existed."""
        _check_str("key", key)
        return await self.execute("DELETE FROM checkpoints WHERE key = ?", (key,)) > 0

    async def put_api_key(self, key_hash: str, tenant: str, scopes: Sequence[str], name: str | None = None) -> None:
        """Register an API key by its hash (never the key itself)."""
        _check_str("key_hash", key_hash)
        _check_str("tenant", tenant)
        if isinstance(scopes, str) or not all(isinstance(s, str) for s in scopes):
            raise TypeError("scopes must be a sequence of str")
        await self.execute("INSERT INTO api_keys (key_hash, tenant, scopes, name, created_at) VALUES (?, ?, ?, ?, ?)",
                           (key_hash, tenant, orjson.dumps(list(scopes)).decode(), name, time.time()))

    async def get_api_key(self, key_hash: str) -> dict[str, Any] | None:
        """``{key_hash, tenant, scopes, name, created_at}`` of a live key, or None (unknown or revoked)."""
        _check_str("key_hash", key_hash)
        row = await self.fetchone("SELECT key_hash, tenant, scopes, name, created_at FROM api_keys"
                                  " WHERE key_hash = ? AND revoked_at IS NULL", (key_hash,))
        if row is None:
            return None
        return {"key_hash": row[0], "tenant": row[1], "scopes": orjson.loads(row[2]), "name": row[3],
                "created_at": row[4]}

    async def revoke_api_key(self, key_hash: str) -> bool:
        """Revoke a key; True if a live key was revoked."""
        _check_str("key_hash", key_hash)
        n = await self.execute("UPDATE api_keys SET revoked_at = ? WHERE key_hash = ? AND revoked_at IS NULL",
                               (time.time(), key_hash))
        return n > 0

    def audit(self, *, tenant: str, user: str, server: str, tool: str, arguments_hash: str, status: str,
              latency_ms: float, request_id: str | None = None, error: str | None = None,
              at: float | None = None) -> None:
        """Record one tool call in the audit log (batched)."""
        for k, v in (("tenant", tenant), ("user", user), ("server", server), ("tool", tool),
                     ("arguments_hash", arguments_hash), ("status", status)):
            _check_str(k, v)
        self.enqueue(AUDIT_SQL, (time.time() if at is None else at, tenant, user, server, tool, arguments_hash,
                                  status, float(latency_ms), request_id, error))

    async def audit_log(self, *, tenant: str | None = None, since: float | None = None,
                        limit: int = 1000) -> list[dict[str, Any]]:
        """Audit rows, newest first, optionally for one tenant and since a time."""
        sql = ("SELECT at, tenant, user, server, tool, arguments_hash, status, latency_ms, request_id, error"
               " FROM audit WHERE (? IS NULL OR tenant = ?) AND (? IS NULL OR at >= ?) ORDER BY id DESC LIMIT ?")
        rows = await self.fetchall(sql, (tenant, tenant, since, since, int(limit)))
        keys = ("at", "tenant", "user", "server", "tool", "arguments_hash", "status", "latency_ms", "request_id",
                "error")
        return [dict(zip(keys, r, strict=True)) for r in rows]


_VALUES = re.compile(r"^(\s*INSERT\s.*?\bVALUES\s*)(\(\s*\?(?:\s*,\s*\?)*\s*\))\s*$", re.I | re.S)
_MULTI: dict[tuple[str, int], str] = {}


def _insert_many(conn: sqlite3.Connection, sql: str, params: list[tuple[SqlValue, ...]]) -> None:
    """Insert many rows of one ``INSERT ... VALUES (?, ...)`` as multi-row statements.

    One statement per chunk means one ``sqlite3_step`` (one GIL release and re-acquire) per
    chunk instead of per row: with the event loop busy in the main thread, per-row GIL hand-offs
    made the writer thread cost a gateway ~100 µs per audited call. Other statements use
    ``executemany``."""
    m = _VALUES.match(sql)
    if m is None:
        conn.executemany(sql, params)
        return
    width = m.group(2).count("?")
    chunk = 1 << max(0, min(8, (32_000 // max(width, 1)).bit_length() - 1))  # a power of two ≤ 256
    # Chunks of power-of-two sizes: a few prepared statements per INSERT, reused batch after batch.
    start = 0
    while start < len(params):
        size = chunk
        while size > len(params) - start:
            size >>= 1
        part = params[start:start + size]
        start += size
        key = (sql, size)
        stmt = _MULTI.get(key)
        if stmt is None:
            stmt = m.group(1) + ", ".join([m.group(2)] * len(part))
            if len(_MULTI) < 1024:
                _MULTI[key] = stmt
        conn.execute(stmt, [v for row in part for v in row])


def transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn`` inside ``BEGIN IMMEDIATE`` … ``COMMIT`` (rolled back on error)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def _check_params(params: Sequence[SqlValue]) -> tuple[SqlValue, ...]:
    if not isinstance(params, (tuple, list)):
        raise TypeError(f"params must be a tuple or list, not {type(params).__name__}")
    for v in params:
        if not isinstance(v, _SQL_TYPES):
            raise TypeError(f"unsupported SQL parameter type {type(v).__name__}: {v!r:.80}")
    return tuple(params)


def _check_str(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be str, not {type(value).__name__}")
