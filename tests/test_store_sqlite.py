"""The embedded SQLite store: schema, persistence, batching, concurrency, bad input."""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from toolmesh.store import Store, default_path
from toolmesh.store.sqlite import SCHEMA_VERSION

AUDIT = dict(tenant="t", user="u", server="s", tool="x", arguments_hash="h", status="ok", latency_ms=1.5)


def test_default_path_uses_toolmesh_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TOOLMESH_HOME", str(tmp_path / "home"))
    assert default_path() == tmp_path / "home" / "toolmesh.db"
    monkeypatch.delenv("TOOLMESH_HOME")
    assert default_path() == Path.home() / ".toolmesh" / "toolmesh.db"


async def test_default_store_created_under_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TOOLMESH_HOME", str(tmp_path / "h"))
    monkeypatch.chdir(tmp_path)
    async with Store() as store:
        await store.put_checkpoint("k", 1)
    assert (tmp_path / "h" / "toolmesh.db").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h"]


async def test_schema_wal_and_version(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    async with Store(db) as store:
        mode = await store.fetchone("PRAGMA journal_mode")
        assert mode == ("wal",)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"usage", "sessions", "messages", "session_archive", "checkpoints", "api_keys", "audit"} <= tables
    conn.close()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "n.db"
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    store = Store(db)
    with pytest.raises(RuntimeError, match="newer"):
        await store.fetchone("SELECT 1")
    await store.aclose()


def _open_at_once(db: str, barrier: Any, n: int) -> None:
    async def main() -> None:
        barrier.wait()
        async with Store(db) as store:
            await store.put_checkpoint(f"p/{n}", n)
    asyncio.run(main())


def test_processes_opening_a_fresh_file_at_once_all_succeed(tmp_path: Path) -> None:
    # Gateway workers start together on a new store: only one of them may run the migrations.
    db = str(tmp_path / "race.db")
    ctx = multiprocessing.get_context("spawn")
    for round_ in range(3):
        path = f"{db}.{round_}"
        barrier = ctx.Barrier(6)
        procs = [ctx.Process(target=_open_at_once, args=(path, barrier, i)) for i in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * 6
        conn = sqlite3.connect(path)
        assert conn.execute("SELECT count(*) FROM checkpoints WHERE key LIKE 'p/%'").fetchone()[0] == 6
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        conn.close()


async def test_persists_across_reopen(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    async with Store(db) as store:
        await store.put_checkpoint("run/1", {"step": 3, "items": [1, "two", None]})
        await store.put_api_key("hash1", "acme", ["chat", "admin"], name="ci")
        for i in range(5):
            store.audit(**{**AUDIT, "tool": f"tool{i}"})
    async with Store(db) as store:
        assert await store.get_checkpoint("run/1") == {"step": 3, "items": [1, "two", None]}
        assert await store.get_checkpoint("missing") is None
        key = await store.get_api_key("hash1")
        assert key is not None and key["tenant"] == "acme" and key["scopes"] == ["chat", "admin"]
        log = await store.audit_log(tenant="t")
        assert [r["tool"] for r in log] == [f"tool{i}" for i in reversed(range(5))]
        assert await store.revoke_api_key("hash1") is True
        assert await store.get_api_key("hash1") is None
        assert await store.delete_checkpoint("run/1") is True
        assert await store.delete_checkpoint("run/1") is False


async def test_batched_rows_persist_on_clean_close(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    store = Store(db, batch_rows=10_000, batch_interval=3000)  # only flush/close will write
    for i in range(1234):
        store.audit(**{**AUDIT, "request_id": str(i)})
    await store.aclose()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT request_id) FROM audit").fetchone() == (1234, 1234)
    conn.close()


async def test_reads_see_queued_rows(tmp_path: Path) -> None:
    async with Store(tmp_path / "r.db", batch_rows=10_000, batch_interval=3000) as store:
        for _ in range(7):
            store.audit(**AUDIT)
        assert await store.fetchone("SELECT COUNT(*) FROM audit") == (7,)


async def test_timer_flush_writes_without_explicit_flush(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    async with Store(db, batch_interval=0.01) as store:
        store.audit(**AUDIT)
        reader = sqlite3.connect(db)
        for _ in range(500):  # a second connection sees it once the batch timer fired
            if reader.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == 1:
                break
            await asyncio.sleep(0.01)
        assert reader.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == 1
        reader.close()


async def test_a_full_batch_is_written_before_the_timer(tmp_path: Path) -> None:
    db = tmp_path / "full.db"
    async with Store(db, batch_rows=4, batch_interval=3000) as store:
        reader = sqlite3.connect(db)
        for i in range(9):  # two full batches (the writer may take the ninth row with them), no timer
            store.audit(**{**AUDIT, "request_id": str(i)})
        for _ in range(500):
            if reader.execute("SELECT COUNT(*) FROM audit").fetchone()[0] >= 8:
                break
            await asyncio.sleep(0.01)
        assert reader.execute("SELECT COUNT(*) FROM audit").fetchone()[0] >= 8
        assert store.buffered_rows <= 1
        reader.close()
        await store.flush()
        assert store.buffered_rows == 0
        assert await store.fetchone("SELECT COUNT(*) FROM audit") == (9,)


async def test_audit_accepts_what_sql_holds_and_names_bad_fields(tmp_path: Path) -> None:
    async with Store(tmp_path / "a.db") as store:
        store.audit(**{**AUDIT, "request_id": 7, "at": 5})  # an int id and time are SQL values too
        with pytest.raises(TypeError, match="status must be str, not NoneType"):
            store.audit(**{**AUDIT, "status": None})  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="unsupported SQL parameter type list"):
            store.audit(**{**AUDIT, "error": ["x"]})  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            store.audit(**{**AUDIT, "latency_ms": "slow"})  # type: ignore[arg-type]
        assert await store.fetchall("SELECT at, request_id FROM audit") == [(5.0, "7")]


async def test_concurrent_writers_nothing_lost(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    async with Store(db, batch_rows=64) as store:
        async def writer(w: int) -> None:
            for i in range(100):
                if i % 2:
                    store.audit(**{**AUDIT, "user": f"w{w}", "request_id": f"{w}-{i}"})
                else:
                    await store.put_checkpoint(f"{w}-{i}", i)
                if i % 10 == 0:
                    await asyncio.sleep(0)

        await asyncio.gather(*(writer(w) for w in range(50)))
        assert await store.fetchone("SELECT COUNT(*), COUNT(DISTINCT request_id) FROM audit") == (2500, 2500)
        assert await store.fetchone("SELECT COUNT(*) FROM checkpoints") == (2500,)
        per_user = await store.fetchall("SELECT user, COUNT(*) FROM audit GROUP BY user")
        assert sorted(n for _, n in per_user) == [50] * 50
    # A second process-like reader on the same file sees the same.
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == 2500
    conn.close()


async def test_two_stores_on_one_file_wal(tmp_path: Path) -> None:
    db = tmp_path / "two.db"
    async with Store(db) as a, Store(db) as b:
        await asyncio.gather(*(s.put_checkpoint(f"{n}-{i}", i) for i in range(200) for n, s in (("a", a), ("b", b))))
        assert await a.fetchone("SELECT COUNT(*) FROM checkpoints") == (400,)


async def test_bad_input_rejected_without_losing_data(tmp_path: Path) -> None:
    db = tmp_path / "bad.db"
    async with Store(db, batch_rows=10_000, batch_interval=3000) as store:
        store.audit(**AUDIT)
        with pytest.raises(TypeError, match="tenant must be str, not int"):
            store.audit(**{**AUDIT, "tenant": 5})  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="unsupported SQL parameter type object"):
            store.enqueue("INSERT INTO checkpoints VALUES (?, ?, ?)", ("k", object(), 1.0))  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="not JSON serializable: set"):
            await store.put_checkpoint("k", {1, 2})  # not JSON
        with pytest.raises(TypeError, match="key must be str, not int"):
            await store.get_checkpoint(3)  # type: ignore[arg-type]
        with pytest.raises(sqlite3.IntegrityError):
            await store.execute("INSERT INTO checkpoints (key, value, updated_at) VALUES (NULL, 'x', 0)")
        # A row the database rejects is skipped; the others in its batch are kept.
        store.enqueue("INSERT INTO checkpoints (key, value, updated_at) VALUES (?, ?, ?)", (None, b"x", 0.0))
        store.audit(**AUDIT)
        await store.flush()
        assert await store.fetchone("SELECT COUNT(*) FROM audit") == (2,)
        # Same inside a run of one statement (written with executemany): only the bad row goes.
        sql = "INSERT INTO checkpoints (key, value, updated_at) VALUES (?, ?, ?)"
        for key in ("a", None, "b", "c"):
            store.enqueue(sql, (key, b"1", 0.0))
        await store.flush()
        rows = await store.fetchall("SELECT key FROM checkpoints WHERE key IN ('a', 'b', 'c') ORDER BY key")
        assert rows == [("a",), ("b",), ("c",)]
    with pytest.raises(TypeError, match="path must be str, Path or None, not int"):
        Store(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Store("")


async def test_closed_store_refuses_work(tmp_path: Path) -> None:
    store = Store(tmp_path / "x.db")
    await store.aclose()
    await store.aclose()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        await store.flush()
    with pytest.raises(RuntimeError, match="closed"):
        store.audit(**AUDIT)


def test_unclosed_store_flushes_at_interpreter_exit(tmp_path: Path) -> None:
    import subprocess
    import sys

    db = tmp_path / "exit.db"
    code = ("import sys; from toolmesh.store import Store; s = Store(sys.argv[1], batch_interval=3000)\n"
            "for i in range(300): s.audit(tenant='t', user='u', server='s', tool='x', arguments_hash='h',"
            " status='ok', latency_ms=1)\n")
    subprocess.run([sys.executable, "-c", code, str(db)], check=True, timeout=60)
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == 300
    conn.close()
