"""A tenant with no MCP servers gets a working endpoint that says so, and hears when one is added (issue 8)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from gateway_support import Gateway, demo_server

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = Gateway(tmp_path_factory.mktemp("gw"), {"servers": {"catalog": demo_server("catalog")},
                                                     "gateway": {"admin_stdio": True}}).start()
    yield g
    g.stop()


def _client(gw: Gateway, key: str, mode: str) -> Client:
    http = httpx2.AsyncClient(headers={"authorization": f"Bearer {key}"}, timeout=30)
    return Client(streamable_http_client(gw.url + "/mcp", http_client=http), mode=mode)  # type: ignore[arg-type]


@pytest.mark.parametrize(("mode", "era"), [("auto", "2026-07-28"), ("legacy", "2025-11-25")])
async def test_sdk_client_of_an_empty_tenant_is_told_why(gw: Gateway, mode: str, era: str) -> None:
    key = gw.key(f"empty-{mode}", "mcp")
    async with _client(gw, key, mode) as c:  # auto: server/discover; legacy: initialize
        assert c.protocol_version == era
        assert (await c.list_tools()).tools == []
        assert (await c.list_prompts()).prompts == []
        note = c.instructions or ""
        assert f"empty-{mode}" in note and "no MCP servers registered" in note and "/admin/servers" in note


async def test_registering_a_server_fills_the_empty_endpoint(gw: Gateway) -> None:
    key = gw.key("late", "mcp,admin")
    async with _client(gw, key, "2026-07-28") as c:
        assert (await c.list_tools()).tools == []
    entry = {"name": "users", "command": sys.executable, "args": ["-m", "toolmesh.servers.demo", "users"]}
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(gw.url + "/admin/servers", json=entry, headers={"authorization": f"Bearer {key}"})
    assert r.status_code == 201, r.text
    async with _client(gw, key, "auto") as c:
        names = {t.name for t in (await c.list_tools()).tools}
        assert "users__get_profile" in names
        assert not c.instructions  # the note is gone once the tenant has a server


def test_unknown_named_server_lists_what_exists(gw: Gateway) -> None:
    key = gw.key("default", "mcp")
    r = httpx.post(gw.url + "/servers/nope/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                   headers={"authorization": f"Bearer {key}", "accept": "application/json, text/event-stream"})
    assert r.status_code == 404
    message = r.json()["error"]["message"]
    assert "'nope'" in message and "catalog" in message


def test_other_tenants_still_see_only_their_own(gw: Gateway) -> None:
    key = gw.key("default", "mcp")
    headers = {"authorization": f"Bearer {key}", "accept": "application/json, text/event-stream",
               "content-type": "application/json", "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/list"}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}}}
    tools = {t["name"] for t in httpx.post(gw.url + "/mcp", headers=headers, json=body, timeout=30).json()["result"]["tools"]}
    assert tools and all(t.startswith("catalog__") for t in tools)



