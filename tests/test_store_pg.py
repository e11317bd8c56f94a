"""The store on PostgreSQL (STO-2): same API as SQLite, migrations raced by processes, an outage buffered.

Real PostgreSQL from Debian's packages (tests/services.py), on loopback in a temp dir.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from services import PostgresServer, postgres_server
from toolmesh.errors import StateUnavailableError
from toolmesh.store import SessionStore, Store
from toolmesh.store.checkpoints import RunCheckpoints, RunExistsError
from toolmesh.store.postgres import redact, translate
from toolmesh.store.schema import SCHEMA_VERSION
from toolmesh.store.sql import StoreSettings, parse_url
from toolmesh.store.sqlite import AUDIT_SQL

pytest_plugins = ("store_engines",)
pytestmark = pytest.mark.timeout(180)


def audit(store: Store, i: int, tenant: str = "acme") -> None:
    store.audit(tenant=tenant, user=f"u{i % 3}", server="crm", tool="find", arguments_hash=f"{i:064d}",
                status="ok", latency_ms=float(i), request_id=f"r{i}")


def test_translation_quotes_user_and_keeps_literals() -> None:
    sql = "SELECT s.user, user FROM t WHERE user = ? AND k LIKE 'a%?' AND user_version = ? AND \"user\" = ?"
    assert translate(sql) == ("SELECT s.\"user\", \"user\" FROM t WHERE \"user\" = %s AND k LIKE 'a%%?'"
                              " AND user_version = %s AND \"user\" = %s")
    assert redact("postgresql://me:hunter2@db.example:5433/tm") == "postgresql://me:***@db.example:5433/tm"
    assert parse_url("postgres://h/db") == ("postgresql", "postgresql://h/db")
    assert parse_url("sqlite:////var/tm.db") == ("sqlite", "/var/tm.db")
    assert parse_url("sqlite:///:memory:") == ("sqlite", ":memory:")
    with pytest.raises(ValueError, match="not supported"):
        parse_url("mysql://h/db")
    with pytest.raises(ValueError, match="no scheme"):
        parse_url("tm.db")


def test_store_section_is_validated() -> None:
    assert StoreSettings.from_section({}).location is None
    assert StoreSettings.from_section({"url": "postgresql://h/db", "buffer_rows": 5000}) == StoreSettings(
        "postgresql://h/db", 5000)
    with pytest.raises(ValueError, match="not both"):
        StoreSettings.from_section({"url": "sqlite:///a.db", "path": "b.db"})
    with pytest.raises(ValueError, match="not supported"):
        StoreSettings.from_section({"url": "redis://h"})
    with pytest.raises(ValueError, match="buffer_rows"):
        StoreSettings.from_section({"buffer_rows": 10})
    with pytest.raises(ValueError, match="unknown key"):
        StoreSettings.from_section({"uri": "x"})


async def test_api_keys_audit_checkpoints_and_ids(store_url: str) -> None:
    async with Store(store_url) as store:
        await store.put_api_key("h1", "acme", ["chat"], "ci")
        assert (await store.get_api_key("h1") or {})["scopes"] == ["chat"]
        assert await store.revoke_api_key("h1") and await store.get_api_key("h1") is None
        await store.put_checkpoint("k", {"a": [1, 2]})
        await store.put_checkpoint("k", {"a": 3})
        assert await store.get_checkpoint("k") == {"a": 3}
        for i in range(5):
            audit(store, i)
        audit(store, 5, tenant="other")
        first = await store.insert("INSERT INTO sessions (tenant, user, conversation, created_at, updated_at)"
                                   " VALUES (?, ?, ?, ?, ?)", ("t", "u", "c1", 1.0, 1.0))
        second = await store.insert("INSERT INTO sessions (tenant, user, conversation, created_at, updated_at)"
                                    " VALUES (?, ?, ?, ?, ?)", ("t", "u", "c2", 1.0, 1.0))
        assert second == first + 1
    async with Store(store_url) as store:  # reopened: everything acknowledged is there
        rows = await store.audit_log(tenant="acme")
        assert [r["request_id"] for r in rows] == ["r4", "r3", "r2", "r1", "r0"]
        assert rows[0]["user"] == "u1" and rows[0]["latency_ms"] == 4.0
        assert await store.fetchone("SELECT COUNT(*) FROM audit WHERE user = ?", ("u2",)) == (2,)


async def test_a_bad_row_is_skipped_and_its_batch_kept(pg: PostgresServer) -> None:
    url = pg.create_database()
    async with Store(url, batch_rows=10_000, batch_interval=3000) as store:
        for i in range(3):
            audit(store, i)
        # NOT NULL violated inside the batch (one COPY): PostgreSQL aborts the whole transaction unless
        # the rows are replayed one by one, each isolated.
        store.enqueue(AUDIT_SQL, (1.0, "acme", "u", "s", "t", "h", None, 1.0, None, None))
        store.enqueue("INSERT INTO audit (at, tenant, user, server, tool, arguments_hash, status, latency_ms)"
                      " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (1.0, "acme", "u", "s", "t", "h", None, 1.0))
        for i in range(3, 6):
            audit(store, i)
        await store.flush()
        assert await store.fetchone("SELECT COUNT(*) FROM audit") == (6,)
        assert store.dropped_rows == 0


async def test_a_batch_of_one_statement_skips_only_its_bad_row(store_url: str) -> None:
    # A batch of audit rows only is written without a savepoint around the bulk insert; when a
    # row in it is rejected the transaction is rolled back and the rows replayed one by one.
    async with Store(store_url, batch_rows=10_000, batch_interval=3000) as store:
        await store.flush()
        for i in range(3):
            audit(store, i)
        store.enqueue(AUDIT_SQL, (1.0, "acme", "u", "s", "t", "h", None, 1.0, "bad", None))  # status NOT NULL
        for i in range(3, 6):
            audit(store, i)
        await store.flush()
        rows = await store.fetchall("SELECT request_id FROM audit ORDER BY id")
        assert [r[0] for r in rows] == [f"r{i}" for i in range(6)]
        # The next batch goes in bulk again.
        for i in range(6, 9):
            audit(store, i)
        await store.flush()
        assert await store.fetchone("SELECT COUNT(*) FROM audit") == (9,)


async def test_transactions_and_sessions_across_two_stores(pg: PostgresServer) -> None:
    url = pg.create_database()
    async with Store(url) as a, Store(url) as b:
        one, two = SessionStore(a), SessionStore(b)
        sa = await one.get("t", "ann", "c")
        from toolmesh.llm.types import Message

        await one.append(sa, [Message(role="user", content="hi")])
        sb = await two.get("t", "ann", "c")  # the other store (another process) sees it
        assert [m.content for m in sb.history] == ["hi"]
        await two.replace_history(sb, [Message(role="user", content="summary")], archived_summary="s")
        assert [m.content for m in (await SessionStore(a).get("t", "ann", "c")).history] == ["summary"]
        assert len(await two.archives(sb)) == 1


RACE = """
import asyncio, sys, time
from toolmesh.store import Store
url, start = sys.argv[1], float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
async def main():
    async with Store(url) as s:
        print((await s.fetchone("SELECT COUNT(*) FROM usage"))[0])
asyncio.run(main())
"""


def test_migrations_raced_by_four_processes(pg: PostgresServer) -> None:
    url = pg.create_database()
    start = time.time() + 1.5  # all four import first, then open together
    procs = [subprocess.Popen([sys.executable, "-c", RACE, url, str(start)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in range(4)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [o[1].decode()[-1500:] for o in outs]
    assert [o[0].strip() for o in outs] == [b"0"] * 4
    db = url.rsplit("/", 1)[1]
    assert pg.query("SELECT version FROM toolmesh_schema", db) == [(SCHEMA_VERSION,)]
    tables = {r[0] for r in pg.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'", db)}
    assert {"usage", "audit", "sessions", "messages", "api_keys", "checkpoints", "run_checkpoints"} <= tables


async def test_newer_schema_is_refused(pg: PostgresServer) -> None:
    url = pg.create_database()
    async with Store(url):
        pass
    db = url.rsplit("/", 1)[1]
    pg.query("UPDATE toolmesh_schema SET version = 99 RETURNING version", db)
    store = Store(url)
    with pytest.raises(RuntimeError, match="schema version 99 is newer"):
        await store.run(lambda conn: None)
    await store.aclose()


async def wait_for(check: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def test_outage_buffers_rows_then_writes_them_and_bounds_the_buffer() -> None:
    with postgres_server() as pg:
        url = pg.create_database()
        db = url.rsplit("/", 1)[1]
        async with Store(url, batch_rows=512, buffer_rows=1024, batch_interval=0.01) as store:
            for i in range(10):
                audit(store, i)
            await store.flush()
            pg.stop()
            # Acknowledged while PostgreSQL is down: 1,500 rows, 1,024 fit in the buffer.
            for i in range(10, 1510):
                audit(store, i)
            await wait_for(lambda: not store.available)
            with pytest.raises(StateUnavailableError, match="unreachable"):
                await store.fetchone("SELECT 1")
            assert store.buffered_rows == 1024 and store.dropped_rows == 476 and store.outages == 1
            pg.start()
            await wait_for(lambda: store.available and store.buffered_rows == 0)
            await store.flush()
            assert store.dropped_rows == 476
        # The oldest rows kept, none written twice.
        assert pg.query("SELECT COUNT(*), COUNT(DISTINCT request_id) FROM audit", db) == [(1034, 1034)]
        kept = {r[0] for r in pg.query("SELECT request_id FROM audit", db)}
        assert {f"r{i}" for i in range(1034)} == kept


async def test_reasoning_checkpoints_on_both_engines(store_url: str) -> None:
    async with Store(store_url) as store:
        runs = RunCheckpoints(store)
        await runs.start("run-1", {"prompt": "2+2"})
        await runs.append("run-1", 1, "steps", {"steps": ["4"]})
        with pytest.raises(RunExistsError, match="already exists"):
            await runs.start("run-1", {})
        await runs.append("run-1", 2, "end", {"answer": "4"})
        assert [(r.seq, r.kind, r.data) for r in await runs.load("run-1")] == [
            (0, "start", {"prompt": "2+2"}), (1, "steps", {"steps": ["4"]}), (2, "end", {"answer": "4"})]
        assert [(r["run_id"], r["rows"], r["finished"]) for r in await runs.runs()] == [("run-1", 3, True)]
        assert await runs.prune(1.0, now=10**10) == 3 and await runs.load("run-1") == []


async def test_metrics_usage_totals_wait_for_rows_committed_out_of_id_order(pg: PostgresServer) -> None:
    import psycopg

    from toolmesh.gateway.ops.metrics import UsageTotals

    url = pg.create_database()
    row = ("INSERT INTO usage (at, day, tenant, \"user\", model, provider, input_tokens, output_tokens,"
           " cached_input_tokens, reasoning_tokens, estimated, priced, latency_ms, epoch)"
           " VALUES (1, 'd', 'acme', 'u', %s, 'p', %s, 0, 0, 0, 0, 0, 1, 'e')")
    now = [0.0]
    totals = UsageTotals(gap_wait=30.0, clock=lambda: now[0])
    async with Store(url) as store:
        with psycopg.connect(url, autocommit=True) as slow, psycopg.connect(url, autocommit=True) as fast:
            fast.execute(row, ("m", 1))  # id 1
            slow.execute("BEGIN")
            slow.execute(row, ("m", 10))  # id 2, not committed yet
            fast.execute(row, ("m", 100))  # id 3, committed before id 2
            rolled = fast.cursor()
            await totals.refresh(store)
            assert totals.totals[("acme", "m")][1] == 1 and totals.cursor == 1  # stops before id 2
            slow.execute("COMMIT")
            await totals.refresh(store)
            assert totals.totals[("acme", "m")][1] == 111 and totals.cursor == 3  # nothing missed
            rolled.execute("BEGIN")
            rolled.execute(row, ("m", 1000))  # id 4: rolled back, never appears
            rolled.execute("ROLLBACK")
            fast.execute(row, ("m", 10_000))  # id 5
            await totals.refresh(store)
            assert totals.cursor == 3
            now[0] = 31.0  # missing for longer than gap_wait: taken as rolled back
            await totals.refresh(store)
            assert totals.totals[("acme", "m")][1] == 10_111 and totals.cursor == 5
