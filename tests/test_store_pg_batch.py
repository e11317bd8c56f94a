"""Batched rows of several tables (an agent request queues ledger, audit, ledger rows; concurrent
requests interleave them): grouped per table into one bulk insert each, in queue order per table,
written exactly once, a bad row skipped alone, and kept through a PostgreSQL restart within the
buffer bound. Real PostgreSQL (tests/services.py) and SQLite.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import pytest

from services import PostgresServer, postgres_server
from toolmesh.llm.types import Usage
from toolmesh.store import Store
from toolmesh.store import postgres as pg_engine
from toolmesh.store.batch import Row, group_rows, write_batch
from toolmesh.store.ledger import UsageLedger
from toolmesh.store.sql import insert_table
from toolmesh.store.sqlite import AUDIT_SQL

pytest_plugins = ("store_engines",)
pytestmark = pytest.mark.timeout(180)


@dataclass(frozen=True)
class Cost:
    usd: float | None
    priced: bool


def price(model: str, usage: Usage) -> Cost:
    return Cost(0.001 * usage.input_tokens, True)


def audit(store: Store, i: int) -> None:
    store.audit(tenant="acme", user="u", server="calc", tool="add", arguments_hash=f"{i:064d}", status="ok",
                latency_ms=1.0, request_id=f"r{i}")


def agent_request(store: Store, ledger: UsageLedger, i: int) -> None:
    """What one agent request queues: a ledger row, an audit row, a ledger row."""
    for step in ("a", "b"):
        ledger.record(tenant="acme", user="u", session=None, model="m", provider="p", usage=Usage(10, 5),
                      latency_ms=1.0, request_id=f"r{i}{step}")
        if step == "a":
            audit(store, i)


def test_interleaved_inserts_are_grouped_per_table_in_queue_order() -> None:
    usage_sql = "INSERT INTO usage (at, tenant) VALUES (?, ?)"
    rows: list[Row] = [(usage_sql, (1,)), (AUDIT_SQL, (2,)), (usage_sql, (3,)), (AUDIT_SQL, (4,)), (usage_sql, (5,))]
    assert group_rows(rows) == [(usage_sql, [(1,), (3,), (5,)]), (AUDIT_SQL, [(2,), (4,)])]
    assert insert_table(usage_sql) == "usage" and insert_table("UPDATE usage SET at = ?") is None
    # Any other statement keeps strict queue order (consecutive runs only).
    update = "UPDATE usage SET at = ? WHERE id = ?"
    mixed: list[Row] = [(usage_sql, (1,)), (usage_sql, (2,)), (update, (3, 1)), (usage_sql, (4,))]
    assert group_rows(mixed) == [(usage_sql, [(1,), (2,)]), (update, [(3, 1)]), (usage_sql, [(4,)])]
    # Two statements into one table: their rows keep queue order between them too.
    other = "INSERT INTO usage (at) VALUES (?)"
    same_table: list[Row] = [(usage_sql, (1,)), (other, (2,)), (usage_sql, (3,))]
    assert group_rows(same_table) == [(usage_sql, [(1,)]), (other, [(2,)]), (usage_sql, [(3,)])]


class Recording(pg_engine.PgConnection):
    """A real PostgreSQL connection that records what the batch writer sends."""

    def __init__(self, conn: pg_engine.PgConnection) -> None:
        super().__init__(conn.raw)
        self.sent: list[str] = []

    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        self.sent.append(sql.split(" (")[0])
        return super().execute(sql, parameters)

    def insert_rows(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self.sent.append(f"COPY {insert_table(sql)} x{len(rows)}")
        super().insert_rows(sql, rows)


def test_an_interleaved_batch_is_one_copy_per_table(pg: PostgresServer) -> None:
    import psycopg

    url = pg.create_database()
    conn = pg_engine.connect(url)
    try:
        pg_engine.migrate(conn, url)
        usage_sql = ("INSERT INTO usage (at, day, tenant, user, model, provider, input_tokens, output_tokens,"
                     " cached_input_tokens, reasoning_tokens, estimated, priced, latency_ms, request_id, epoch)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
        rows: list[Row] = []
        for i in range(6):
            rows.append((usage_sql, (1.0, "d", "acme", "u", "m", "p", 1, 1, 0, 0, 0, 0, 1.0, f"r{i}", "e")))
            rows.append((AUDIT_SQL, (1.0, "acme", "u", "s", "t", "h", "ok", 1.0, f"r{i}", None)))
        rec = Recording(conn)
        write_batch(rec, rows, (psycopg.Error,), pg_engine.is_disconnect)
        assert rec.sent == ["BEGIN", "COPY usage x6", "COPY audit x6", "COMMIT"]
        # One table only: a lone COPY, no transaction around it.
        rec.sent.clear()
        write_batch(rec, [r for r in rows if r[0] is AUDIT_SQL], (psycopg.Error,), pg_engine.is_disconnect)
        assert rec.sent == ["COPY audit x6"]
        for table in ("usage", "audit"):
            got = conn.execute(f"SELECT request_id FROM {table} ORDER BY id").fetchall()
            want = [f"r{i}" for i in range(6)] * (2 if table == "audit" else 1)
            assert [r[0] for r in got] == want
    finally:
        conn.close()


async def test_agent_requests_rows_are_written_once_in_order_and_a_bad_row_alone_is_skipped(
        store_url: str) -> None:
    async with Store(store_url, batch_rows=10_000, batch_interval=3000) as store:
        ledger = UsageLedger(store, price)
        for i in range(5):
            agent_request(store, ledger, i)
        store.enqueue(AUDIT_SQL, (1.0, "acme", "u", "s", "t", "h", None, 1.0, "bad", None))  # status NOT NULL
        for i in range(5, 10):
            agent_request(store, ledger, i)
        await store.flush()
        usage = await store.fetchall("SELECT request_id FROM usage ORDER BY id")
        assert [r[0] for r in usage] == [f"r{i}{s}" for i in range(10) for s in "ab"]
        audits = await store.fetchall("SELECT request_id FROM audit ORDER BY id")
        assert [r[0] for r in audits] == [f"r{i}" for i in range(10)]
        assert await ledger.spend("acme") == pytest.approx(20 * 0.01)
        assert store.dropped_rows == 0


async def wait_for(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def test_a_postgres_restart_keeps_interleaved_rows_within_the_bound_once_each_in_order() -> None:
    with postgres_server() as server:
        url = server.create_database()
        db = url.rsplit("/", 1)[1]
        async with Store(url, batch_rows=512, buffer_rows=1024, batch_interval=0.01) as store:
            ledger = UsageLedger(store, price)
            for i in range(4):
                agent_request(store, ledger, i)  # 12 rows written before the outage
            await store.flush()
            server.stop()
            # 400 agent requests while PostgreSQL is down: 1,200 rows, the oldest 1,024 kept.
            for i in range(4, 404):
                agent_request(store, ledger, i)
            await wait_for(lambda: not store.available)
            assert store.buffered_rows == 1024 and store.dropped_rows == 176
            server.start()
            await wait_for(lambda: store.available and store.buffered_rows == 0)
            await store.flush()
            assert store.dropped_rows == 176
        # Kept: the first 1,036 rows queued (12 + 1,024), each once, each table in queue order.
        queued = [(t, f"r{i}{s}") for i in range(404) for t, s in (("usage", "a"), ("audit", ""), ("usage", "b"))]
        kept = queued[:1036]
        for table in ("usage", "audit"):
            got = [r[0] for r in server.query(f"SELECT request_id FROM {table} ORDER BY id", db)]
            assert got == [rid for t, rid in kept if t == table]
