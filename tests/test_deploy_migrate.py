"""``toolmesh migrate`` (the Helm hook Job and the compose ``migrate`` service), as real processes
on a real SQLite file and a real PostgreSQL (tests/services.py)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from services import PostgresServer
from toolmesh.store.schema import SCHEMA_VERSION


def _migrate(config: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "TOOLMESH_HOME": str(config.parent / "home")}
    return subprocess.Popen([sys.executable, "-m", "toolmesh.cli.main", "migrate", "--config", str(config), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _done(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def test_migrate_creates_the_sqlite_schema_and_is_idempotent(tmp_path: Path) -> None:
    db = tmp_path / "data" / "toolmesh.db"
    config = tmp_path / "toolmesh.yaml"
    config.write_text(yaml.safe_dump({"store": {"path": str(db)}}))
    for _ in range(2):  # the second run finds the schema current
        code, out, err = _done(_migrate(config, "--json"))
        assert code == 0, err
        assert json.loads(out) == {"ok": True, "engine": "sqlite", "store": str(db), "schema_version": SCHEMA_VERSION}
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"usage", "audit", "sessions"} <= tables


def test_migrate_refuses_a_bad_store_url(tmp_path: Path) -> None:
    config = tmp_path / "toolmesh.yaml"
    config.write_text(yaml.safe_dump({"store": {"url": ""}}))
    code, _, err = _done(_migrate(config))
    assert code == 2 and "store.url" in err
    config.write_text(yaml.safe_dump({"store": {"url": "mysql://db/x"}}))
    code, _, err = _done(_migrate(config))
    assert code == 2 and "store.url" in err and "mysql" in err


def test_migrate_waits_for_postgres_then_races_safely() -> None:
    with tempfile.TemporaryDirectory(prefix="tm-migrate-") as tmp:
        server = PostgresServer(Path(tmp))
        server.init()
        config = Path(tmp) / "cfg" / "toolmesh.yaml"
        config.parent.mkdir()
        config.write_text(yaml.safe_dump({"store": {"url": server.url("postgres")}}))
        # Started before the database (a fresh compose project or cluster): it waits for it.
        first = _migrate(config, "--json", "--wait", "90")
        try:
            server.start()
            code, out, err = _done(first)
            assert code == 0, err
            assert json.loads(out)["engine"] == "postgresql"
            assert "secret" not in out + err  # the password never printed
            # Several at once (a hook retried while another runs): every one succeeds, one schema.
            procs = [_migrate(config) for _ in range(3)]
            results = [_done(p) for p in procs]
            assert [r[0] for r in results] == [0, 0, 0], [r[2] for r in results]
            tables = {r[0] for r in server.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
            assert {"usage", "audit", "sessions"} <= tables
        finally:
            if first.poll() is None:
                first.kill()
                first.communicate()
            server.stop()


def test_migrate_gives_up_on_an_unreachable_database(tmp_path: Path) -> None:
    from services import free_port

    config = tmp_path / "toolmesh.yaml"
    config.write_text(yaml.safe_dump({"store": {"url": f"postgresql://u:pw@127.0.0.1:{free_port()}/db"}}))
    code, out, err = _done(_migrate(config, "--wait", "1", "--json"))
    assert code == 1
    assert json.loads(out)["error_type"] == "StateUnavailableError"
    assert "pw@" not in out + err
