"""`toolmesh keys` and `toolmesh serve` as subprocesses: the CLI contract (GW-3)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import yaml

TOOLMESH = [sys.executable, "-m", "toolmesh.cli.main"]


def run(args: list[str], tmp: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TOOLMESH_HOME": str(tmp / "home")}
    return subprocess.run([*TOOLMESH, *args], capture_output=True, text=True, env=env, timeout=timeout)


def config(tmp: Path, extra: dict | None = None) -> Path:  # type: ignore[type-arg]
    path = tmp / "gw.yaml"
    path.write_text(yaml.safe_dump({"servers": {}, "store": {"path": str(tmp / "tm.db")}, **(extra or {})}))
    return path


def test_keys_create_prints_once_and_stores_only_a_hash(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    out = run(["keys", "create", "--config", str(cfg), "--tenant", "acme", "--scopes", "mcp,chat", "--json"], tmp_path)
    assert out.returncode == 0, out.stderr
    made = json.loads(out.stdout)
    assert set(made) == {"key", "tenant", "scopes"}
    assert made["tenant"] == "acme" and made["scopes"] == ["chat", "mcp"] and made["key"].startswith("tm_")
    with sqlite3.connect(tmp_path / "tm.db") as db:
        rows = db.execute("SELECT key_hash, tenant, scopes FROM api_keys").fetchall()
    assert len(rows) == 1 and rows[0][1] == "acme"
    assert made["key"] not in rows[0][0] and len(rows[0][0]) == 64  # sha256 hex, not the key
    assert made["key"].encode() not in (tmp_path / "tm.db").read_bytes()
    plain = run(["keys", "create", "--config", str(cfg), "--tenant", "acme"], tmp_path)
    assert plain.returncode == 0 and plain.stdout.strip().startswith("tm_")
    revoked = run(["keys", "revoke", "--config", str(cfg), made["key"]], tmp_path)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    again = run(["keys", "revoke", "--config", str(cfg), made["key"]], tmp_path)
    assert again.returncode == 1


def test_keys_create_rejects_bad_input(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    bad = run(["keys", "create", "--config", str(cfg), "--tenant", "acme", "--scopes", "chat,root"], tmp_path)
    assert bad.returncode == 2 and "root" in bad.stderr
    empty = run(["keys", "create", "--config", str(cfg), "--tenant", " "], tmp_path)
    assert empty.returncode == 2
    missing = run(["keys", "create", "--config", str(tmp_path / "nope.yaml"), "--tenant", "a"], tmp_path)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_serve_refuses_no_auth_off_loopback_and_bad_settings(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    out = run(["serve", "--config", str(cfg), "--host", "0.0.0.0", "--no-auth"], tmp_path)
    assert out.returncode == 2 and "loopback" in out.stderr
    bad = config(tmp_path, {"gateway": {"workers": 0}})
    out = run(["serve", "--config", str(bad)], tmp_path)
    assert out.returncode == 2 and "gateway.workers" in out.stderr
    unknown = config(tmp_path, {"gateway": {"colour": "blue"}})
    out = run(["serve", "--config", str(unknown)], tmp_path)
    assert out.returncode == 2 and "gateway.colour" in out.stderr
