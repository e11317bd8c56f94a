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


def test_serve_and_keys_without_a_config_use_the_bundled_demo(tmp_path: Path) -> None:
    """Like every other command, `serve` and `keys` fall back to the bundled demo: a key made with
    no config opens the gateway started with no config, which serves the demo's tools."""
    import time
    import urllib.request

    from toolmesh.testing.services import free_port

    made = run(["keys", "create", "--tenant", "default", "--json"], tmp_path)
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)["key"]
    port = free_port()
    env = {**os.environ, "TOOLMESH_HOME": str(tmp_path / "home")}
    env.pop("TOOLMESH_CONFIG", None)
    proc = subprocess.Popen([*TOOLMESH, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}}}}).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                   "Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list",
                   "Authorization": f"Bearer {key}"}
        deadline = time.monotonic() + 90
        tools: list[str] = []
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/mcp", body, headers)
                with urllib.request.urlopen(req, timeout=10) as resp:
                    tools = [t["name"] for t in json.loads(resp.read())["result"]["tools"]]
                if tools:
                    break
            except OSError:
                time.sleep(0.5)
        assert "inventory__check_stock" in tools, (tools, proc.poll())
        unauthorised = urllib.request.Request(f"http://127.0.0.1:{port}/mcp", body,
                                              {**headers, "Authorization": "Bearer tm_wrong"})
        try:
            urllib.request.urlopen(unauthorised, timeout=10)
            raise AssertionError("a wrong key was accepted")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "serving the bundled demo" in err
    assert (tmp_path / "home" / "demo-gateway.yaml").exists()
