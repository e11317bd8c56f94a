"""Shared tool calls through a real ``toolmesh serve`` process: callers with different forwarded
credentials never get each other's answer, identical calls are coalesced and cached, and the
admin API shows the counts and changes a server's ``cache`` at run time."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ServerProcess, free_port
from gateway_support import Gateway

UPSTREAM = str(Path(__file__).parent / "servers" / "hub_cache_server.py")
PV = "2026-07-28"
ENV = {"io.modelcontextprotocol/protocolVersion": PV, "io.modelcontextprotocol/clientCapabilities": {}}


@pytest.fixture(scope="module")
def upstream() -> Iterator[ServerProcess]:
    port = free_port()
    proc = ServerProcess([sys.executable, UPSTREAM, str(port)], port).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: ServerProcess) -> Iterator[Gateway]:
    url = f"http://127.0.0.1:{upstream.port}/mcp"
    config = {"servers": {
        "up": {"transport": "http", "url": url, "forward_headers": ["X-User-Token"], "cache": {"ttl": 3600}},
        "plain": {"transport": "http", "url": url},
    }}
    g = Gateway(tmp_path_factory.mktemp("gwcache"), config).start()
    yield g
    g.stop()


@pytest.fixture(scope="module")
def key(gw: Gateway) -> str:
    return gw.key("default", "mcp,admin")


async def call(client: httpx.AsyncClient, gw: Gateway, key: str, tool: str, args: dict[str, Any],
               token: str | None = None) -> dict[str, Any]:
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json",
               "mcp-protocol-version": PV, "mcp-method": "tools/call", "mcp-name": tool,
               "authorization": f"Bearer {key}"}
    if token is not None:
        headers["x-user-token"] = token
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": tool, "arguments": args, "_meta": ENV}}
    r = await client.post(gw.url + "/mcp", headers=headers, json=body)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()["result"]
    assert not result.get("isError"), result
    return result


async def upstream_counts(client: httpx.AsyncClient, gw: Gateway, key: str) -> dict[str, int]:
    counts: dict[str, int] = (await call(client, gw, key, "plain__counts", {}))["structuredContent"]
    return counts


async def test_forwarded_credentials_never_share_an_answer(gw: Gateway, key: str) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        await call(client, gw, key, "up__lookup", {"sku": "warm-up"}, "warm")
        before = (await upstream_counts(client, gw, key))["lookup"]
        users = ["alice", "bob"] * 16
        results = await asyncio.gather(*(call(client, gw, key, "up__lookup", {"sku": "SKU-1001"}, u) for u in users))
        assert [r["structuredContent"]["token"] for r in results] == users
        again = await call(client, gw, key, "up__lookup", {"sku": "SKU-1001"}, "alice")
        assert again["structuredContent"]["token"] == "alice"
        # At most one upstream call per user (coalesced or cached), never one per caller.
        assert (await upstream_counts(client, gw, key))["lookup"] - before <= 2
        entry = (await client.get(gw.url + "/admin/servers/up", headers={"authorization": f"Bearer {key}"})).json()
        shared = entry["results"]
        assert shared["hits"] + shared["coalesced"] >= len(users) + 1 - 2


async def test_admin_api_changes_the_cache_at_run_time(gw: Gateway, key: str) -> None:
    auth = {"authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(timeout=30) as client:
        first = await call(client, gw, key, "plain__lookup", {"sku": "SKU-2002"})
        second = await call(client, gw, key, "plain__lookup", {"sku": "SKU-2002"})
        assert first["structuredContent"]["n"] != second["structuredContent"]["n"]  # no cache configured

        bad = await client.patch(gw.url + "/admin/servers/plain", headers=auth, json={"url": "http://evil/mcp"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "url"
        bad = await client.patch(gw.url + "/admin/servers/plain", headers=auth, json={"cache": {"ttl": -1}})
        assert bad.status_code == 400 and bad.json()["error"]["param"].startswith("cache")
        r = await client.patch(gw.url + "/admin/servers/plain", headers=auth, json={"cache": {"ttl": 3600}})
        assert r.status_code == 200, r.text
        assert r.json()["config"]["cache"]["ttl"] == 3600

        # The server was re-registered: calls that overlap its new connection's first listen
        # acknowledgement are not stored (a change before it would not be replayed); then it caches.
        answers = [(await call(client, gw, key, "plain__lookup", {"sku": "SKU-2002"}))["structuredContent"]]
        for _ in range(10):
            answers.append((await call(client, gw, key, "plain__lookup", {"sku": "SKU-2002"}))["structuredContent"])
            if answers[-1] == answers[-2]:
                break
        assert answers[-1] == answers[-2], answers
        # reserve is not read-only: still never cached
        a = await call(client, gw, key, "plain__reserve", {"sku": "SKU-2002"})
        b = await call(client, gw, key, "plain__reserve", {"sku": "SKU-2002"})
        assert a["content"] != b["content"]
        metrics = (await client.get(gw.url + "/metrics", headers=auth)).text
        assert "toolmesh_result_cache_hits_total" in metrics and "toolmesh_calls_coalesced_total" in metrics
