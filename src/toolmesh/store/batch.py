"""Writing one batch of queued rows (the store's writer thread), on either engine.

Rows come as ``(sql, params)`` in queue order. Runs of rows with the same statement go in
bulk (a multi-row INSERT on SQLite, COPY on PostgreSQL: one call instead of one per row;
the audit log writes one row per tool call). A run that fails is replayed row by row
inside savepoints, so only the bad rows are skipped, never the batch around them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from toolmesh.store import postgres
from toolmesh.store.sql import SqlValue
from toolmesh.store.sqlite_conn import insert_many

__all__ = ["Row", "write_batch"]

log = logging.getLogger("toolmesh.store")

#: One queued row: its statement and parameters.
Row = tuple[str, tuple[SqlValue, ...]]


def write_batch(conn: Any, rows: list[Row], errors: tuple[type[BaseException], ...],
                is_disconnect: Callable[[BaseException], bool]) -> None:
    """Write ``rows`` in one transaction, skipping rejected rows.

    ``errors`` are the engine's database errors; one for which ``is_disconnect`` is true
    (the server went away) propagates with the transaction abandoned, so the caller can
    keep the rows for later. Any other failure of the batch is logged and rolled back."""
    runs: list[tuple[str, list[tuple[SqlValue, ...]]]] = []
    start = 0
    while start < len(rows):
        sql = rows[start][0]
        end = start + 1
        while end < len(rows) and rows[end][0] == sql:
            end += 1
        runs.append((sql, [r[1] for r in rows[start:end]]))
        start = end
    try:
        bulk = True
        if len(runs) == 1 and len(runs[0][1]) > 1:
            # The usual batch (only audit or only ledger rows): no savepoint around the bulk
            # insert, as nothing else in the transaction needs keeping if it fails (two
            # statements fewer per batch; on PostgreSQL two round trips fewer).
            if _write_alone(conn, *runs[0], errors, is_disconnect):
                return
            bulk = False  # a row was rejected: replay them one by one below
        conn.execute("BEGIN")
        for sql, params in runs:
            _write_run(conn, sql, params, errors, is_disconnect, bulk=bulk)
        conn.execute("COMMIT")
    except errors as e:
        if is_disconnect(e):
            raise
        log.exception("store: batch of %d rows failed", len(rows))
        if conn.in_transaction:
            conn.execute("ROLLBACK")


def _insert_bulk(conn: Any, sql: str, params: list[tuple[SqlValue, ...]]) -> None:
    if isinstance(conn, postgres.PgConnection):
        conn.insert_rows(sql, params)
    else:
        insert_many(conn, sql, params)


def _write_alone(conn: Any, sql: str, params: list[tuple[SqlValue, ...]], errors: tuple[type[BaseException], ...],
                 is_disconnect: Callable[[BaseException], bool]) -> bool:
    """One run as the whole transaction; False (rolled back) when a row in it is rejected."""
    conn.execute("BEGIN")
    try:
        _insert_bulk(conn, sql, params)
        conn.execute("COMMIT")
        return True
    except errors as e:
        if is_disconnect(e):
            raise
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        return False


def _write_run(conn: Any, sql: str, params: list[tuple[SqlValue, ...]], errors: tuple[type[BaseException], ...],
               is_disconnect: Callable[[BaseException], bool], *, bulk: bool) -> None:
    if bulk and len(params) > 1:
        conn.execute("SAVEPOINT run")
        try:
            _insert_bulk(conn, sql, params)
            conn.execute("RELEASE run")
            return
        except errors as e:
            if is_disconnect(e):
                raise
            conn.execute("ROLLBACK TO run")
            conn.execute("RELEASE run")
    for p in params:
        conn.execute("SAVEPOINT one")  # PostgreSQL aborts the whole transaction on an error otherwise
        try:
            conn.execute(sql, p)
            conn.execute("RELEASE one")
        except errors as e:  # skip the bad row, keep the others
            if is_disconnect(e):
                raise
            conn.execute("ROLLBACK TO one")
            conn.execute("RELEASE one")
            log.error("store: row rejected (%s): %s %r", e, sql.split("(")[0], p)
