"""Writing one batch of queued rows (the store's writer thread), on either engine.

Rows come as ``(sql, params)`` in queue order. Rows of the same statement go in bulk (a
multi-row INSERT on SQLite, COPY on PostgreSQL: one call instead of one per row). When
every statement of a batch is a plain ``INSERT INTO t (…) VALUES (?, …)``, each into its own table, rows are grouped by
statement across the whole batch, each group in queue order: an agent request queues a
ledger row, an audit row and a ledger row, and concurrent requests interleave them, so
consecutive runs alone would be one row long (measured: 1.4 savepointed single-row INSERTs
per agent request on PostgreSQL). Inserts into different tables do not depend on each other,
and each table still gets its rows (and ids) in queue order. Any other statement keeps the
batch in strict queue order (runs of consecutive rows).

The whole batch is tried first as one transaction without savepoints (PostgreSQL: one COPY
per statement; a batch of one statement is a lone COPY, atomic by itself, so not even
``BEGIN``/``COMMIT``). If a row is rejected, the batch is rolled back and replayed inside
savepoints, run by run and then row by row, so only the bad rows are skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from toolmesh.store import postgres
from toolmesh.store.sql import SqlValue, insert_table
from toolmesh.store.sqlite_conn import insert_many

__all__ = ["Row", "group_rows", "write_batch"]

log = logging.getLogger("toolmesh.store")

#: One queued row: its statement and parameters.
Row = tuple[str, tuple[SqlValue, ...]]
Run = tuple[str, list[tuple[SqlValue, ...]]]
Errors = tuple[type[BaseException], ...]


def group_rows(rows: list[Row]) -> list[Run]:
    """``rows`` as runs of one statement each: grouped by statement when all are plain INSERTs into
    different tables (each group in queue order, groups in order of first appearance), else
    consecutive runs."""
    statements = dict.fromkeys(sql for sql, _ in rows)  # in order of first appearance
    if len(statements) == 1:  # the usual batch under tool-call load: audit rows only
        return [(rows[0][0], [params for _, params in rows])]
    tables = [insert_table(sql) for sql in statements]
    if None not in tables and len(set(tables)) == len(tables):  # plain INSERTs, one statement per table
        groups: dict[str, list[tuple[SqlValue, ...]]] = {sql: [] for sql in statements}
        for sql, params in rows:
            groups[sql].append(params)
        return list(groups.items())
    runs: list[Run] = []
    for sql, params in rows:
        if runs and runs[-1][0] == sql:
            runs[-1][1].append(params)
        else:
            runs.append((sql, [params]))
    return runs


def write_batch(conn: Any, rows: list[Row], errors: Errors, is_disconnect: Callable[[BaseException], bool]) -> None:
    """Write ``rows`` (see the module doc), skipping rejected rows.

    ``errors`` are the engine's database errors; one for which ``is_disconnect`` is true
    (the server went away) propagates with the transaction abandoned, so the caller can
    keep the rows for later. Any other failure of the batch is logged and rolled back."""
    runs = group_rows(rows)
    try:
        if _write_fast(conn, runs, errors, is_disconnect):
            return
        # A row was rejected: replay in savepoints. Several runs: each in bulk first (the good
        # runs stay one statement); one run: it is the one that failed, row by row at once.
        bulk = len(runs) > 1
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
    if len(params) == 1:
        conn.execute(sql, params[0])  # one row: a plain INSERT is one round trip, COPY two
    elif isinstance(conn, postgres.PgConnection):
        conn.insert_rows(sql, params)
    else:
        insert_many(conn, sql, params)


def _write_fast(conn: Any, runs: list[Run], errors: Errors, is_disconnect: Callable[[BaseException], bool]) -> bool:
    """Every run in bulk, in one transaction without savepoints; False (rolled back) when a row is rejected."""
    # A lone COPY is atomic on its own: no BEGIN/COMMIT (two round trips fewer per batch).
    alone = (len(runs) == 1 and isinstance(conn, postgres.PgConnection)
             and postgres.copies(runs[0][0], len(runs[0][1])))
    if not alone:
        conn.execute("BEGIN")
    try:
        for sql, params in runs:
            _insert_bulk(conn, sql, params)
        if not alone:
            conn.execute("COMMIT")
        return True
    except errors as e:
        if is_disconnect(e):
            raise
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        return False


def _write_run(conn: Any, sql: str, params: list[tuple[SqlValue, ...]], errors: Errors,
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
