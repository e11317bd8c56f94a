"""The store (STO-1, STO-2): one connection, one writer thread, an async API, on SQLite or PostgreSQL.

``Store(path)`` opens a SQLite file; ``Store("postgresql://user:pass@host/db")`` (or
``sqlite:///path``) picks the engine by URL, behind the same API, so callers never know
which one runs (SQL in the shared subset, see :mod:`toolmesh.store.sql`).

All statements run on a single connection owned by a dedicated thread, so the event
loop never waits on disk or network. SQLite is in WAL mode with ``synchronous=NORMAL``
(durable across process crashes; a power cut may lose the last transactions).

High-volume rows (usage ledger, audit log) go through :meth:`Store.enqueue`: they are
validated at once, acknowledged, and written in batches (every ``batch_rows`` rows or
``batch_interval`` seconds). Every other operation first writes the pending batch, so
reads see everything acknowledged before them; :meth:`flush` and :meth:`aclose`
persist everything. A failing row is logged and skipped, never the batch around it.

When PostgreSQL is unreachable, queued rows wait in memory, at most ``buffer_rows`` of
them (default 100,000), and are written when it answers again (tried every 0.25 s to
5 s); rows queued past the bound are dropped, counted in :attr:`Store.dropped_rows` and
logged. Other operations fail at once with :class:`~toolmesh.errors.StateUnavailableError`
meanwhile, rather than wait.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import queue
import sqlite3
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import orjson

from toolmesh.errors import StateUnavailableError
from toolmesh.store import postgres
from toolmesh.store.batch import Row, write_batch
from toolmesh.store.schema import SCHEMA_VERSION
from toolmesh.store.sql import BUFFER_ROWS, Connection, Engine, SqlValue, check_params, parse_url, transaction
from toolmesh.store.sqlite_conn import open_sqlite, sqlite_insert_id

__all__ = ["SCHEMA_VERSION", "Connection", "Store", "default_path", "transaction"]

log = logging.getLogger("toolmesh.store")
T = TypeVar("T")


AUDIT_SQL = ("INSERT INTO audit (at, tenant, user, server, tool, arguments_hash, status, latency_ms,"
              " request_id, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")

_RETRY_MIN, _RETRY_MAX = 0.25, 5.0
_STR_OR_NONE = (str, type(None))


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



class Store:
    """The store. Use ``async with Store(path_or_url) as store`` or call :meth:`aclose`.

    ``path`` defaults to :func:`default_path` (never the working directory); ``":memory:"``
    gives a private in-memory database (tests); a ``sqlite:///…`` or ``postgresql://…`` URL
    picks the engine. ``buffer_rows`` bounds the queued rows kept while the database is
    unreachable (see the module doc).
    """

    def __init__(self, path: str | Path | None = None, *, batch_rows: int = 512,
                 batch_interval: float = 0.05, buffer_rows: int = BUFFER_ROWS) -> None:
        if path is not None and not isinstance(path, (str, Path)):
            raise TypeError(f"path must be str, Path or None, not {type(path).__name__}")
        if str(path) == "":
            raise ValueError("path must not be empty")
        if not isinstance(batch_rows, int) or batch_rows < 1:
            raise ValueError("batch_rows must be a positive int")
        if not isinstance(batch_interval, (int, float)) or not 0 < batch_interval < 3600:
            raise ValueError("batch_interval must be a positive number of seconds")
        if not isinstance(buffer_rows, int) or isinstance(buffer_rows, bool) or buffer_rows < batch_rows:
            raise ValueError("buffer_rows must be an int >= batch_rows")
        engine: Engine = "sqlite"
        location = ":memory:" if str(path) == ":memory:" else str(path or default_path())
        if isinstance(path, str) and "://" in path:
            engine, location = parse_url(path)
        self.engine: Engine = engine
        #: The SQLite file (or ``:memory:``), or the PostgreSQL URL.
        self.path: str = location
        #: Where the store is, for messages (a PostgreSQL URL without its password).
        self.where = postgres.redact(location) if engine == "postgresql" else location
        #: Distinguishes rows written by this open store from older ones (see UsageLedger).
        self.epoch = f"{os.getpid()}-{time.time_ns()}"
        self._batch_rows = batch_rows
        self._interval = float(batch_interval)
        self._buffer_rows = buffer_rows
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # The hand-off: the event loop appends on the right, the writer pops from the left. Both
        # are atomic deque operations, so queuing a row takes no lock and no thread signal (except
        # the first row of a batch, which arms the writer's timer, and a full batch).
        self._pending: deque[Row] = deque()
        self._pending_since = 0.0
        self._drop_lock = threading.Lock()  # dropped_rows is counted from both threads (off the hot path)
        self._closed = False
        self._conn: Any = None
        self._open_error: BaseException | None = None
        self._errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
        self._retry_at = 0.0
        self._retry_delay = _RETRY_MIN
        #: Rows dropped because the buffer was full while the database was unreachable.
        self.dropped_rows = 0
        #: Times the database was found unreachable.
        self.outages = 0
        self._dropped_logged = 0.0
        self._thread = threading.Thread(target=self._main, name="toolmesh-store", daemon=True)
        self._thread.start()
        _open_stores.add(self)

    async def __aenter__(self) -> Store:
        try:
            await self.run(lambda conn: None)
        except BaseException:
            await self.aclose()  # not entered: nobody else would stop the thread
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def available(self) -> bool:
        """False while the database is unreachable (rows then wait in the buffer)."""
        return self._conn is not None

    @property
    def buffered_rows(self) -> int:
        """Rows acknowledged and not yet written."""
        return len(self._pending)

    # -- the writer thread -----------------------------------------------------------------

    def _open(self) -> Any:
        if self.engine == "postgresql":
            import psycopg

            self._errors = (psycopg.Error,)
            pg = postgres.connect(self.path)
            try:
                postgres.migrate(pg, self.where)
            except BaseException:
                pg.close()
                raise
            return pg
        return open_sqlite(self.path)

    def _connect(self) -> Any:
        """The connection, (re)opening it when due; None while the database is unreachable."""
        if self._conn is not None or self._open_error is not None or time.monotonic() < self._retry_at:
            return self._conn
        try:
            self._conn = self._open()
        except BaseException as e:
            if self.engine != "postgresql" or not postgres.is_disconnect(e):
                self._open_error = e  # a bad path or schema: reported by every call
                return None
            self._down(e)
            return None
        if self._retry_delay > _RETRY_MIN:
            log.warning("store %s reachable again; writing %d buffered rows", self.where, len(self._pending))
        self._retry_delay = _RETRY_MIN
        return self._conn

    def _down(self, exc: BaseException) -> None:
        """The database stopped answering: drop the connection, retry later (backing off)."""
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # already broken
                pass
            self._conn = None
        if self._retry_delay == _RETRY_MIN:
            self.outages += 1
            log.error("store %s unreachable (%s); %d rows buffered, retrying", self.where,
                      str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                      len(self._pending))
        self._retry_at = time.monotonic() + self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, _RETRY_MAX)

    def _main(self) -> None:
        self._connect()
        while True:
            timeout = None
            if self._pending:
                due = self._pending_since + self._interval
                if self._conn is None and self._open_error is None:
                    due = max(due, self._retry_at)
                timeout = max(0.0, due - time.monotonic())
            try:
                job = self._jobs.get(timeout=timeout)
            except queue.Empty:
                self._write_pending()
                continue
            if job is _WAKE:
                if len(self._pending) >= self._batch_rows:
                    self._write_pending()
                continue
            if job is _STOP:
                self._retry_at = 0.0  # one last attempt
                self._write_pending()
                if self._pending:
                    log.error("store %s closed while unreachable: %d buffered rows lost", self.where,
                              len(self._pending))
                    with self._drop_lock:
                        self.dropped_rows += len(self._pending)
                if self._conn is not None:
                    self._conn.close()
                return
            self._write_pending()
            fn, fut = job
            if not fut.set_running_or_notify_cancel():
                continue
            conn = self._connect()
            if conn is None:
                if self._open_error is not None:
                    fut.set_exception(RuntimeError(f"store {self.where} could not be opened: {self._open_error}"))
                else:
                    fut.set_exception(StateUnavailableError(f"store {self.where} is unreachable; retrying"))
                continue
            try:
                fut.set_result(fn(conn))
            except BaseException as e:
                if self.engine == "postgresql" and postgres.is_disconnect(e):
                    self._down(e)
                    err = StateUnavailableError(f"store {self.where} is unreachable: {e}")
                    err.__cause__ = e
                    fut.set_exception(err)
                else:
                    fut.set_exception(e)

    def _write_pending(self) -> None:
        pending = self._pending
        take = pending.popleft
        # The rows queued so far (the loop may append meanwhile: those go in the next batch).
        rows = [take() for _ in range(len(pending))]
        if not rows:
            return
        conn = self._connect()
        if conn is None:
            if self._open_error is not None:
                log.error("store %s unavailable: %d queued rows dropped", self.where, len(rows))
                with self._drop_lock:
                    self.dropped_rows += len(rows)
            else:
                self._requeue(rows)
            return
        try:
            write_batch(conn, rows, self._errors, self._disconnected)
        except self._errors as e:  # only a disconnect gets here
            self._down(e)
            self._requeue(rows)  # written when the database answers again

    def _disconnected(self, exc: BaseException) -> bool:
        return self.engine == "postgresql" and postgres.is_disconnect(exc)

    def _requeue(self, rows: list[Row]) -> None:
        """Put unwritten rows back in front of the queue, within the buffer bound (oldest kept)."""
        pending = self._pending
        pending.extendleft(reversed(rows))
        over = 0
        while len(pending) > self._buffer_rows:  # the oldest are kept
            pending.pop()
            over += 1
        if over:
            with self._drop_lock:
                self.dropped_rows += over
        self._pending_since = time.monotonic()
        if over > 0:
            log.error("store %s unreachable: buffer full (%d rows), %d rows dropped", self.where,
                      self._buffer_rows, over)

    # -- the async API ---------------------------------------------------------------------

    async def run(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(connection)`` on the writer thread (after any pending batch) and return its result.

        The connection is in autocommit mode: ``fn`` manages its own transaction (see
        :func:`transaction`). Never keep the connection beyond the call. Raises
        :class:`~toolmesh.errors.StateUnavailableError` while PostgreSQL is unreachable.
        """
        if self._closed:
            raise RuntimeError("store is closed")
        fut: Future[T] = Future()
        self._jobs.put((fn, fut))
        return await asyncio.wrap_future(fut)

    async def execute(self, sql: str, params: Sequence[SqlValue] = ()) -> int:
        """Run one write statement in its own transaction; returns the number of rows changed."""
        p = check_params(params)
        return await self.run(lambda conn: conn.execute(sql, p).rowcount)

    async def insert(self, sql: str, params: Sequence[SqlValue] = ()) -> int:
        """Run one INSERT in its own transaction; returns the new row's id."""
        p = check_params(params)
        insert = postgres.insert_id if self.engine == "postgresql" else sqlite_insert_id
        return await self.run(lambda conn: insert(conn, sql, p))

    async def fetchall(self, sql: str, params: Sequence[SqlValue] = ()) -> list[tuple[Any, ...]]:
        """Run a query and return all rows."""
        p = check_params(params)
        return await self.run(lambda conn: conn.execute(sql, p).fetchall())

    async def fetchone(self, sql: str, params: Sequence[SqlValue] = ()) -> tuple[Any, ...] | None:
        """Run a query and return its first row, or None."""
        p = check_params(params)
        row: tuple[Any, ...] | None = await self.run(lambda conn: conn.execute(sql, p).fetchone())
        return row

    def enqueue(self, sql: str, params: Sequence[SqlValue]) -> None:
        """Queue a write for the next batch (validated now; persisted by ``flush``/``aclose`` at the latest)."""
        if self._closed:
            raise RuntimeError("store is closed")
        self.enqueue_trusted(sql, check_params(params))

    def enqueue_trusted(self, sql: str, params: tuple[SqlValue, ...]) -> None:
        """:meth:`enqueue` for parameters whose types the caller has already checked."""
        if self._closed:
            raise RuntimeError("store is closed")
        pending = self._pending
        if self._conn is None and len(pending) >= self._buffer_rows:  # bounded while the database is unreachable
            self._drop_one()
            return
        pending.append((sql, params))
        n = len(pending)
        if n == 1:  # the first row of a batch arms the writer's timer
            self._pending_since = time.monotonic()
            self._jobs.put(_WAKE)
        elif n % self._batch_rows == 0:  # a full batch: write it now (one signal per batch, not per row)
            self._jobs.put(_WAKE)

    def _drop_one(self) -> None:
        with self._drop_lock:
            self.dropped_rows += 1
        now = time.monotonic()
        if now - self._dropped_logged >= 10.0:  # one line per 10 s, however many rows
            self._dropped_logged = now
            log.error("store %s unreachable and its buffer full (%d rows): dropping rows (%d so far)",
                      self.where, self._buffer_rows, self.dropped_rows)

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
        if not (isinstance(tenant, str) and isinstance(user, str) and isinstance(server, str)
                and isinstance(tool, str) and isinstance(arguments_hash, str) and isinstance(status, str)):
            for k, v in (("tenant", tenant), ("user", user), ("server", server), ("tool", tool),
                         ("arguments_hash", arguments_hash), ("status", status)):
                _check_str(k, v)  # names the bad field
        row = (time.time() if at is None else at, tenant, user, server, tool, arguments_hash, status,
               float(latency_ms), request_id, error)
        # The common case checked inline (one call per tool call); anything else gets the full check.
        if type(row[0]) is float and type(request_id) in _STR_OR_NONE and type(error) in _STR_OR_NONE:
            self.enqueue_trusted(AUDIT_SQL, row)
        else:
            self.enqueue(AUDIT_SQL, row)

    async def audit_log(self, *, tenant: str | None = None, since: float | None = None,
                        limit: int = 1000) -> list[dict[str, Any]]:
        """Audit rows, newest first, optionally for one tenant and since a time."""
        sql = ("SELECT at, tenant, user, server, tool, arguments_hash, status, latency_ms, request_id, error"
               " FROM audit WHERE (? IS NULL OR tenant = ?) AND (? IS NULL OR at >= ?) ORDER BY id DESC LIMIT ?")
        rows = await self.fetchall(sql, (tenant, tenant, since, since, int(limit)))
        keys = ("at", "tenant", "user", "server", "tool", "arguments_hash", "status", "latency_ms", "request_id",
                "error")
        return [dict(zip(keys, r, strict=True)) for r in rows]


def _check_str(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be str, not {type(value).__name__}")
