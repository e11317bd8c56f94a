"""Gateways on PostgreSQL (STO-2): ``store: {url: postgresql://…}`` serving /v1 and admin, two gateway
processes sharing one database, and PostgreSQL stopped and restarted under traffic.

Real processes on loopback: PostgreSQL from Debian's packages, two ``toolmesh serve``, the scripted LLM
server, a stdio demo MCP server behind each gateway.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import services
from conftest import free_port, wait_port
from gateway_support import Gateway, demo_server, running
from services import PostgresServer

pytestmark = pytest.mark.timeout(240)

MODEL = "deepseek-chat"
RULES: dict[str, Any] = {
    "rules": [
        {"when": {"last_role": "user", "has_tools": True, "user_regex": r"product (?P<sku>SKU-\d+)"},
         "respond": {"tool_calls": [{"name": "catalog__get_product_info", "arguments": {"sku": "{{sku}}"}}],
                     "usage": {"input_tokens": 800, "output_tokens": 40}}},
        {"when": {"last_role": "tool"},
         "respond": {"text": "Answer from tools: {{tool_results}}", "usage": {"input_tokens": 2000,
                                                                             "output_tokens": 90}}},
    ],
    "default": {"text": "plain reply to <{{user_text}}> n={{n_user}}"},
}


@dataclass
class Setup:
    pg: PostgresServer
    db: str
    one: Gateway
    two: Gateway
    key: str


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("pg-gw")
    rules = tmp / "rules.json"
    rules.write_text(json.dumps(RULES))
    port = free_port()
    llm = subprocess.Popen([sys.executable, "-m", "toolmesh.testing.scripted_llm", "--port", str(port),
                            "--rules", str(rules)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        with services.postgres_server() as pg:
            url = pg.create_database("toolmesh")
            cfg = {
                "store": {"url": url},
                "servers": {"catalog": demo_server("catalog")},
                "llm": {"deployments": [{"name": "scripted", "provider": "openai",
                                         "base_url": f"http://127.0.0.1:{port}/v1", "api_key": "x", "model": MODEL}]},
                "agent": {"user_limits": {"requests_per_minute": 100_000, "max_concurrent_runs": 8}},
                "gateway": {"metrics_public": True, "key_cache_ttl": 3600},
            }
            one, two = Gateway(tmp / "one", cfg), Gateway(tmp / "two", cfg)
            with running(one, two, together=False):
                yield Setup(pg, "toolmesh", one, two, one.key("default", "chat,mcp,admin"))
    finally:
        llm.kill()
        llm.wait(10)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat(gw: Gateway, key: str, text: str, user: str, **headers: str) -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", headers={**auth(key), **headers}, timeout=30.0,
                      json={"model": MODEL, "user": user, "messages": [{"role": "user", "content": text}]})


def eventually(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def count(s: Setup, sql: str) -> int:
    return int(s.pg.query(sql, s.db)[0][0])  # type: ignore[call-overload]


def test_v1_and_admin_with_keys_sessions_and_ledger_in_postgresql(setup: Setup) -> None:
    one, key = setup.one, setup.key
    r = chat(one, key, "Tell me about product SKU-1001", "alice")
    assert r.status_code == 200, r.text
    assert "Lumina X9 Pro" in r.json()["choices"][0]["message"]["content"]
    for i in range(2):
        r = chat(one, key, f"turn {i}", "bob", **{"X-Toolmesh-Session": "s-1"})
        assert r.json()["choices"][0]["message"]["content"] == f"plain reply to <turn {i}> n={i + 1}"
    # The records are in PostgreSQL (the key was made by the CLI from the same config).
    assert count(setup, "SELECT COUNT(*) FROM api_keys") >= 1
    assert count(setup, "SELECT COUNT(*) FROM sessions WHERE \"user\" = 'bob'") == 1
    assert count(setup, "SELECT COUNT(*) FROM messages") == 4
    assert eventually(lambda: count(setup, "SELECT COUNT(*) FROM usage WHERE \"user\" = 'alice'") == 2)
    assert eventually(lambda: count(setup, "SELECT COUNT(*) FROM audit WHERE \"user\" = 'alice'") == 1)
    # ...and the admin API reads them back.
    sessions = httpx.get(one.url + "/admin/sessions", headers=auth(key)).json()
    assert [(s["user"], s["conversation"]) for s in sessions["sessions"]] == [("bob", "s-1")]
    audit = httpx.get(one.url + "/admin/audit?user=alice", headers=auth(key)).json()["entries"]
    assert [(e["server"], e["tool"], e["status"]) for e in audit] == [("catalog", "get_product_info", "ok")]
    usage = httpx.get(one.url + "/admin/usage?group_by=user", headers=auth(key)).json()
    by_user = {row["user"]: row for row in usage["rows"]}
    assert by_user["alice"]["requests"] == 2 and by_user["alice"]["input_tokens"] == 2800
    # The dashboard's data endpoints run their SQL on PostgreSQL too.
    limits = httpx.get(one.url + "/admin/limits", headers=auth(key))
    assert limits.status_code == 200, limits.text
    assert {u["user"] for u in limits.json()["users"]} >= {"alice", "bob"}
    for path in ("/admin/overview", "/admin/costs"):
        assert httpx.get(one.url + path, headers=auth(key)).status_code == 200, path


def test_a_key_created_through_one_gateway_works_on_the_other(setup: Setup) -> None:
    r = httpx.post(setup.one.url + "/admin/keys", headers=auth(setup.key), json={"scopes": ["chat"]})
    assert r.status_code in (200, 201), r.text
    fresh = r.json()["key"]
    assert httpx.get(setup.two.url + "/v1/models", headers=auth(fresh)).status_code == 200
    r = chat(setup.two, fresh, "hello", "carol", **{"X-Toolmesh-Session": "c-1"})
    assert r.status_code == 200
    # A session written through two continues through one: one database.
    r = chat(setup.one, fresh, "again", "carol", **{"X-Toolmesh-Session": "c-1"})
    assert r.json()["choices"][0]["message"]["content"] == "plain reply to <again> n=2"


def test_postgresql_stopped_and_restarted_under_traffic(setup: Setup) -> None:
    one, two, key = setup.one, setup.two, setup.key
    ok: list[str] = []
    failed: list[str] = []
    stop = threading.Event()

    def traffic(gw: Gateway, name: str) -> None:
        n = 0
        with httpx.Client(timeout=30.0) as client:
            while not stop.is_set():
                n += 1
                r = client.post(gw.url + "/v1/chat/completions", headers=auth(key), json={
                    "model": MODEL, "user": "outage", "messages": [{"role": "user",
                                                                    "content": "about product SKU-1001"}]})
                (ok if r.status_code == 200 else failed).append(f"{name}{n}:{r.status_code}")

    for gw in (one, two):  # the key is looked up once per gateway, then cached
        assert chat(gw, key, "warm up", "outage-warm").status_code == 200
    unseen = httpx.post(one.url + "/admin/keys", headers=auth(key), json={"scopes": ["chat"]}).json()["key"]
    threads = [threading.Thread(target=traffic, args=(gw, name)) for gw, name in ((one, "a"), (two, "b"))]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        setup.pg.stop()
        before = len(ok)
        time.sleep(3.0)  # serving goes on; rows wait in each gateway's buffer
        during = len(ok) - before
        for gw in (one, two):
            assert httpx.get(gw.url + "/readyz").status_code == 200
        metrics = httpx.get(one.url + "/metrics").text
        assert "toolmesh_store_up 0.0" in metrics
        # What needs the database now says so, and when to come back: a key two never saw, an admin read.
        r = httpx.get(two.url + "/v1/models", headers=auth(unseen))
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        r = httpx.get(one.url + "/admin/sessions", headers=auth(key))
        assert r.status_code == 503 and "unreachable" in r.json()["error"]["message"]
        setup.pg.start()
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not failed, failed[:5]
    assert during > 0
    served = len(ok)
    # Every acknowledged request's rows arrive: two model calls and one tool call each.
    assert eventually(lambda: count(setup, "SELECT COUNT(*) FROM usage WHERE \"user\" = 'outage'") == 2 * served,
                      timeout=60), (served, count(setup, "SELECT COUNT(*) FROM usage WHERE \"user\" = 'outage'"))
    assert eventually(lambda: count(setup, "SELECT COUNT(*) FROM audit WHERE \"user\" = 'outage'") == served)
    metrics = httpx.get(one.url + "/metrics").text
    assert "toolmesh_store_up 1.0" in metrics and "toolmesh_store_dropped_rows_total 0.0" in metrics


def test_config_names_the_store_in_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("store: {url: 'mysql://h/db'}\n")
    out = subprocess.run([sys.executable, "-m", "toolmesh.cli.main", "keys", "create", "--config", str(cfg),
                          "--tenant", "t", "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "store.url" in out.stderr + out.stdout
