"""SQLite's side of the store: opening a file (WAL, pragmas, migrations) and multi-row batch inserts."""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

from toolmesh.store.schema import MIGRATIONS, SCHEMA_VERSION
from toolmesh.store.sql import Connection, SqlValue

__all__ = ["insert_many", "open_sqlite", "sqlite_insert_id"]


def open_sqlite(path: str) -> sqlite3.Connection:
    """An autocommit connection to ``path`` (or ``:memory:``) in WAL mode, migrated to the current schema."""
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    conn.execute("PRAGMA busy_timeout=10000")
    _enable_wal(conn)
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    try:
        _migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


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


def _migrate(conn: sqlite3.Connection, where: str) -> None:
    # Several processes (gateway workers) may open a fresh file at once: the version is
    # read again under the write lock, so only the first one migrates.
    if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{where}: schema version {version} is newer than this toolmesh ({SCHEMA_VERSION})")
        for v in range(version, SCHEMA_VERSION):
            for stmt in MIGRATIONS[v].split(";"):
                if stmt.strip():
                    conn.execute(stmt)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


_VALUES = re.compile(r"^(\s*INSERT\s.*?\bVALUES\s*)(\(\s*\?(?:\s*,\s*\?)*\s*\))\s*$", re.I | re.S)
_MULTI: dict[tuple[str, int], str] = {}


def insert_many(conn: Connection, sql: str, params: list[tuple[SqlValue, ...]]) -> None:
    """Insert many rows of one ``INSERT ... VALUES (?, ...)`` as multi-row statements (both engines).

    One statement per chunk means one ``sqlite3_step`` (one GIL release and re-acquire) per
    chunk instead of per row: with the event loop busy in the main thread, per-row GIL hand-offs
    made the writer thread cost a gateway ~100 µs per audited call. On PostgreSQL one statement per
    chunk is one round trip and one parse for up to 256 rows. Other statements use ``executemany``."""
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




def sqlite_insert_id(conn: Connection, sql: str, params: tuple[SqlValue, ...]) -> int:
    """Run an INSERT and return the new row's id."""
    if not isinstance(conn, sqlite3.Connection):
        raise TypeError("not a SQLite connection")
    return int(conn.execute(sql, params).lastrowid or 0)
