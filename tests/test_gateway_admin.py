"""The admin API (GW-4) of a real ``toolmesh serve`` process, against real upstream MCP servers.

Usage, sessions and audit rows are written into the gateway's SQLite file from this test
process with toolmesh's own writers (UsageLedger, SessionStore, Store.audit), the way a
second worker would write them.
"""

from __future__ import annotations

import asyncio
import calendar
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ServerProcess, free_port
from gateway_support import Gateway, demo_server
from toolmesh.llm.models import ModelRegistry
from toolmesh.llm.types import Message, Usage
from toolmesh.store.ledger import UsageLedger
from toolmesh.store.sessions import SessionStore
from toolmesh.store.sqlite import Store

ADD = str(Path(__file__).parent / "servers" / "tm_add_server.py")
DEAD_LLM = "http://127.0.0.1:9/v1"  # never called by these tests


def llm_section() -> dict[str, Any]:
    return {"strategy": "balanced", "deployments": [
        {"name": "small", "provider": "openai", "base_url": DEAD_LLM, "api_key": "x", "model": "gpt-4o-mini"},
        {"name": "big", "provider": "openai", "base_url": DEAD_LLM, "api_key": "x", "model": "gpt-4o"},
    ]}


@pytest.fixture(scope="module")
def upstream() -> Iterator[ServerProcess]:
    port = free_port()
    proc = ServerProcess([sys.executable, ADD, "http", str(port)], port).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: ServerProcess) -> Iterator[Gateway]:
    config = {
        "servers": {"add": {"transport": "http", "url": f"http://127.0.0.1:{upstream.port}/mcp"},
                    "catalog": demo_server("catalog")},
        "tenants": {"acme": {"servers": {"pricing": demo_server("pricing")}}},
        "llm": llm_section(),
    }
    g = Gateway(tmp_path_factory.mktemp("admin"), config).start()
    yield g
    g.stop()


@pytest.fixture(scope="module")
def admin(gw: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {gw.key('default', 'admin')}"},
                      timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def acme(gw: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {gw.key('acme', 'admin')}"},
                      timeout=30) as c:
        yield c


def upstream_entry(upstream: ServerProcess) -> dict[str, Any]:
    return {"transport": "http", "url": f"http://127.0.0.1:{upstream.port}/mcp"}


# -- scope and shape ---------------------------------------------------------------------------
def test_needs_admin_scope(gw: Gateway) -> None:
    chat = gw.key("default", "chat,mcp")
    r = httpx.get(gw.url + "/admin/servers", headers={"Authorization": f"Bearer {chat}"})
    assert r.status_code == 403
    assert httpx.get(gw.url + "/admin/servers").status_code == 401


def test_unknown_route_and_wrong_method(admin: httpx.Client) -> None:
    r = admin.get("/admin/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    assert admin.get("/admin/servers/add/frobnicate").status_code == 404
    r = admin.patch("/admin/servers")
    assert r.status_code == 405 and "GET" in r.headers["allow"] and "POST" in r.headers["allow"]
    assert admin.get("/admin/servers/add/test").status_code == 405


# -- servers -----------------------------------------------------------------------------------
def test_list_servers_is_per_tenant(admin: httpx.Client, acme: httpx.Client) -> None:
    mine = {s["name"]: s for s in admin.get("/admin/servers").json()["servers"]}
    assert set(mine) >= {"add", "catalog"} and "pricing" not in mine
    add = mine["add"]
    assert add["source"] == "config" and add["transport"] == "http"
    assert add["circuit"]["state"] == "closed" and add["health"]["status"] in ("active", "unknown")
    assert add["startup_check"]["ok"] is True and add["startup_check"]["tools"] >= 4
    theirs = {s["name"] for s in acme.get("/admin/servers").json()["servers"]}
    assert theirs == {"pricing"}
    assert acme.get("/admin/servers/add").status_code == 404  # another tenant's server is invisible


def test_test_connection(admin: httpx.Client) -> None:
    report = admin.post("/admin/servers/add/test").json()
    assert report["ok"] is True and report["tool_count"] >= 4 and report["error"] is None
    assert admin.post("/admin/servers/ghost/test").status_code == 404


def test_register_validate_and_unregister(admin: httpx.Client, acme: httpx.Client, upstream: ServerProcess) -> None:
    # Bad input names the field.
    r = admin.post("/admin/servers", json={"name": "x", "url": "ftp://nowhere"})
    assert r.status_code == 400
    r = admin.post("/admin/servers", json={"name": "x", "url": "http://127.0.0.1:1/mcp", "timeout": -1})
    assert r.status_code == 400 and r.json()["error"]["param"] == "timeout"
    r = admin.post("/admin/servers", json={"name": "has space", "url": "http://127.0.0.1:1/mcp"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "name"
    r = admin.post("/admin/servers", json={"name": "x", "url": "http://127.0.0.1:1/mcp", "colour": "red"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "colour"
    assert admin.post("/admin/servers", content=b"{not json").status_code == 400
    assert admin.post("/admin/servers", json=[1, 2]).status_code == 400
    # stdio runs commands on the gateway host: refused unless gateway.admin_stdio is on.
    r = admin.post("/admin/servers", json={"name": "sh", "command": "/bin/sh", "args": ["-c", "true"]})
    assert r.status_code == 403 and r.json()["error"]["param"] == "command"
    # Conflicts with a configured server.
    assert admin.post("/admin/servers", json={"name": "add", **upstream_entry(upstream)}).status_code == 409

    r = admin.post("/admin/servers", json={"name": "extra", **upstream_entry(upstream),
                                           "headers": {"Authorization": "Bearer upstream-secret"}})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == "extra" and body["source"] == "admin"
    assert body["config"]["headers"]["Authorization"] == "***"  # secrets never echoed
    assert admin.post("/admin/servers", json={"name": "extra", **upstream_entry(upstream)}).status_code == 409
    assert admin.post("/admin/servers/extra/test").json()["ok"] is True
    assert "extra" in {s["name"] for s in admin.get("/admin/servers").json()["servers"]}
    assert acme.get("/admin/servers/extra").status_code == 404
    # Another tenant may use the same name for its own server.
    assert acme.post("/admin/servers", json={"name": "extra", **upstream_entry(upstream)}).status_code == 201

    assert admin.delete("/admin/servers/extra").json() == {"deleted": "extra", "tenant": "default"}
    assert admin.get("/admin/servers/extra").status_code == 404
    assert admin.delete("/admin/servers/extra").status_code == 404
    assert acme.get("/admin/servers/extra").status_code == 200
    assert acme.delete("/admin/servers/extra").status_code == 200


def test_unregister_configured_server_and_register_again(admin: httpx.Client, upstream: ServerProcess) -> None:
    assert admin.delete("/admin/servers/catalog").status_code == 200
    assert admin.get("/admin/servers/catalog").status_code == 404
    r = admin.post("/admin/servers", json={"name": "catalog", **upstream_entry(upstream)})
    assert r.status_code == 201 and r.json()["source"] == "admin" and r.json()["transport"] == "http"
    assert admin.delete("/admin/servers/catalog").status_code == 200


# -- routing -----------------------------------------------------------------------------------
def test_routing_rules_switch_at_run_time(admin: httpx.Client) -> None:
    snap = admin.get("/admin/routing").json()
    assert snap["strategy"] == "balanced" and set(snap["deployments"]) == {"small", "big"}
    r = admin.put("/admin/routing/rules/peak", json={"strategy": "latency"})
    assert r.status_code == 200 and r.json()["rules"]["peak"] == {"strategy": "latency", "models": []}
    r = admin.post("/admin/routing", json={"scenario": "default", "strategy": "cost", "models": ["gpt-4o-mini"]})
    assert r.status_code == 200 and r.json()["rules"]["default"]["strategy"] == "cost"
    assert admin.get("/admin/routing/rules/peak").json()["strategy"] == "latency"
    # Invalid rules change nothing.
    r = admin.put("/admin/routing/rules/peak", json={"strategy": "fastest"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "strategy"
    r = admin.put("/admin/routing/rules/peak", json={"models": ["no-such-model"]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "models"
    assert admin.put("/admin/routing/rules/peak", json={}).status_code == 400
    assert admin.post("/admin/routing", json={"strategy": "cost"}).status_code == 400
    assert admin.get("/admin/routing").json()["rules"]["peak"]["strategy"] == "latency"
    assert admin.delete("/admin/routing/rules/peak").status_code == 200
    assert admin.get("/admin/routing/rules/peak").status_code == 404
    assert "peak" not in admin.get("/admin/routing").json()["rules"]


# -- data written by the runtime -----------------------------------------------------------------
def _write_rows(db: str) -> None:
    async def go() -> None:
        async with Store(db) as store:
            ledger = UsageLedger(store, ModelRegistry.load().price)
            day1 = calendar.timegm((2026, 3, 1, 12, 0, 0, 0, 0, 0))
            for tenant, user, model, n_in, n_out, at in (
                ("default", "alice", "gpt-4o-mini", 1000, 200, day1),
                ("default", "alice", "gpt-4o", 500, 100, day1 + 86400),
                ("default", "bob", "gpt-4o-mini", 300, 30, day1 + 86400),
                ("acme", "carol", "gpt-4o", 9999, 9999, day1),
            ):
                ledger.record(tenant=tenant, user=user, session=None, model=model, provider="openai",
                              usage=Usage(n_in, n_out), latency_ms=12.0, at=at)
            sessions = SessionStore(store)
            s = await sessions.get("default", "alice", "conv-1")
            await sessions.append(s, [Message("user", "hello"), Message("assistant", "hi there")])
            t = await sessions.get("acme", "carol", "conv-9")
            await sessions.append(t, [Message("user", "secret of acme")])
            store.audit(tenant="default", user="alice", server="add", tool="add", arguments_hash="ab" * 32,
                        status="ok", latency_ms=3.5)
            store.audit(tenant="acme", user="carol", server="pricing", tool="quote", arguments_hash="cd" * 32,
                        status="error", latency_ms=9.0, error="boom")
    asyncio.run(go())


@pytest.fixture(scope="module")
def rows(gw: Gateway) -> None:
    _write_rows(str(gw.tmp / "toolmesh.db"))


def test_usage_report(admin: httpx.Client, rows: None) -> None:
    r = admin.get("/admin/usage", params={"group_by": "model"}).json()
    by_model = {row["model"]: row for row in r["rows"]}
    assert by_model["gpt-4o-mini"]["requests"] == 2 and by_model["gpt-4o-mini"]["input_tokens"] == 1300
    assert by_model["gpt-4o"]["input_tokens"] == 500  # acme's 9999 are not ours
    assert r["totals"]["requests"] == 3 and r["totals"]["input_tokens"] == 1800
    assert r["totals"]["output_tokens"] == 330 and r["totals"]["total_tokens"] == 2130
    assert r["totals"]["cost_usd"] > 0
    days = admin.get("/admin/usage", params={"group_by": "day"}).json()["rows"]
    assert [d["day"] for d in days] == ["2026-03-01", "2026-03-02"]
    users = admin.get("/admin/usage", params={"group_by": "user,model"}).json()["rows"]
    assert {(u["user"], u["model"]) for u in users} == {("alice", "gpt-4o-mini"), ("alice", "gpt-4o"),
                                                         ("bob", "gpt-4o-mini")}
    tenant = admin.get("/admin/usage", params={"group_by": "tenant"}).json()["rows"]
    assert [t["tenant"] for t in tenant] == ["default"]
    since = admin.get("/admin/usage", params={"group_by": "model", "since": "2026-03-02"}).json()
    assert since["totals"]["requests"] == 2
    until = admin.get("/admin/usage", params={"group_by": "model", "until": "2026-03-02T00:00:00Z"}).json()
    assert until["totals"]["requests"] == 1
    r2 = admin.get("/admin/usage", params={"group_by": "colour"})
    assert r2.status_code == 400 and r2.json()["error"]["param"] == "group_by"
    r3 = admin.get("/admin/usage", params={"since": "yesterday"})
    assert r3.status_code == 400 and r3.json()["error"]["param"] == "since"


def test_sessions(admin: httpx.Client, acme: httpx.Client, rows: None) -> None:
    listed = admin.get("/admin/sessions").json()["sessions"]
    assert [(s["user"], s["conversation"], s["messages"]) for s in listed] == [("alice", "conv-1", 2)]
    sid = listed[0]["id"]
    one = admin.get(f"/admin/sessions/{sid}").json()
    assert [m["content"] for m in one["history"]] == ["hello", "hi there"]
    assert acme.get(f"/admin/sessions/{sid}").status_code == 404  # not acme's
    assert acme.delete(f"/admin/sessions/{sid}").status_code == 404
    assert admin.get("/admin/sessions/nope").status_code == 404
    assert admin.get("/admin/sessions", params={"limit": 0}).status_code == 400
    assert admin.delete(f"/admin/sessions/{sid}").json()["conversation"] == "conv-1"
    assert admin.get(f"/admin/sessions/{sid}").status_code == 404
    assert admin.get("/admin/sessions").json()["sessions"] == []
    assert len(acme.get("/admin/sessions").json()["sessions"]) == 1


def test_audit_log(admin: httpx.Client, acme: httpx.Client, rows: None) -> None:
    mine = admin.get("/admin/audit").json()["entries"]
    assert [(e["user"], e["server"], e["tool"], e["status"]) for e in mine] == [("alice", "add", "add", "ok")]
    assert mine[0]["arguments_hash"] == "ab" * 32 and mine[0]["latency_ms"] == 3.5
    theirs = acme.get("/admin/audit", params={"limit": 5}).json()["entries"]
    assert [(e["tool"], e["status"], e["error"]) for e in theirs] == [("quote", "error", "boom")]
    assert admin.get("/admin/audit", params={"since": time.time() + 3600}).json()["entries"] == []
    assert admin.get("/admin/audit", params={"limit": "many"}).status_code == 400


# -- API keys ----------------------------------------------------------------------------------
def test_keys_create_use_revoke(gw: Gateway, acme: httpx.Client) -> None:
    r = acme.post("/admin/keys", json={"scopes": ["admin"], "name": "ci"})
    assert r.status_code == 201
    made = r.json()
    assert made["tenant"] == "acme" and made["scopes"] == ["admin"] and made["key"].startswith("tm_")
    h = {"Authorization": f"Bearer {made['key']}"}
    assert {s["name"] for s in httpx.get(gw.url + "/admin/servers", headers=h).json()["servers"]} == {"pricing"}
    listed = {k["key_id"]: k for k in acme.get("/admin/keys").json()["keys"]}
    assert listed[made["key_id"]]["name"] == "ci" and "key" not in listed[made["key_id"]]
    assert acme.post("/admin/keys", json={"scopes": ["root"]}).status_code == 400
    assert acme.post("/admin/keys", json={"tenant": "default"}).json()["error"]["param"] == "tenant"
    assert acme.delete("/admin/keys/zz").status_code == 404
    assert acme.delete(f"/admin/keys/{made['key_id']}").json() == {"revoked": made["key_id"]}
    assert httpx.get(gw.url + "/admin/servers", headers=h).status_code == 401  # this worker forgot it at once
    assert acme.delete(f"/admin/keys/{made['key_id']}").status_code == 404


def test_cannot_revoke_other_tenants_key(gw: Gateway, admin: httpx.Client, acme: httpx.Client) -> None:
    made = acme.post("/admin/keys", json={"scopes": "chat"}).json()
    assert admin.delete(f"/admin/keys/{made['key_id']}").status_code == 404
    assert admin.delete(f"/admin/keys/{made['key']}").status_code == 404
    assert acme.delete(f"/admin/keys/{made['key']}").status_code == 200


# -- several workers, restarts -------------------------------------------------------------------
def test_registrations_reach_every_worker_and_survive_restart(tmp_path: Path, upstream: ServerProcess) -> None:
    config = {"servers": {"add": upstream_entry(upstream)}, "llm": llm_section()}
    g = Gateway(tmp_path, config, workers=2).start()
    try:
        key = g.key("default", "admin")
        h = {"Authorization": f"Bearer {key}"}
        workers: set[int] = set()
        deadline = time.monotonic() + 30
        while len(workers) < 2 and time.monotonic() < deadline:  # fresh connections spread over workers
            workers.add(httpx.get(g.url + "/healthz").json()["worker"])
        assert len(workers) == 2
        r = httpx.post(g.url + "/admin/servers", headers=h, json={"name": "late", **upstream_entry(upstream)})
        assert r.status_code == 201
        assert httpx.put(g.url + "/admin/routing/rules/peak", headers=h,
                         json={"strategy": "latency"}).status_code == 200
        # Every worker answers with the new server and rule, whichever gets the connection.
        for _ in range(12):
            names = {s["name"] for s in httpx.get(g.url + "/admin/servers", headers=h).json()["servers"]}
            assert names == {"add", "late"}
            assert httpx.get(g.url + "/admin/routing", headers=h).json()["rules"]["peak"]["strategy"] == "latency"
        # The background check reaches workers that serve no admin request: /metrics lists it.
        deadline = time.monotonic() + 30
        seen = 0
        while seen < 8 and time.monotonic() < deadline:
            text = httpx.get(g.url + "/metrics", headers=h).text
            seen = seen + 1 if 'server="late"' in text else 0
            time.sleep(0.1)
        assert seen == 8
        assert httpx.delete(g.url + "/admin/servers/add", headers=h).status_code == 200
    finally:
        g.stop()
    g2 = Gateway(tmp_path, config).start()
    try:
        h = {"Authorization": f"Bearer {g2.key('default', 'admin')}"}
        names = {s["name"] for s in httpx.get(g2.url + "/admin/servers", headers=h).json()["servers"]}
        assert names == {"late"}
        assert httpx.get(g2.url + "/admin/routing", headers=h).json()["rules"]["peak"]["strategy"] == "latency"
    finally:
        g2.stop()
