"""Upstream catalogue changes reach the gateway's MCP clients (GW-2): list_changed and
resources/updated, on the GET stream, WebSocket, legacy SSE and 2026-07-28 subscriptions/listen."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import websockets
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import ResourceUpdatedNotification, ToolListChangedNotification

from conftest import ServerProcess, free_port
from gateway_support import Gateway

pytestmark = pytest.mark.anyio
CHG = str(Path(__file__).parent / "servers" / "hub_changes_server.py")
PV = "2026-07-28"
OLD = "2025-11-25"
ENV = {"io.modelcontextprotocol/protocolVersion": PV, "io.modelcontextprotocol/clientCapabilities": {}}
WAIT = 20.0


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def upstreams() -> Iterator[list[ServerProcess]]:
    procs = []
    for _ in range(2):
        port = free_port()
        procs.append(ServerProcess([sys.executable, CHG, "toolmesh", str(port)], port).start())
    yield procs
    for proc in procs:
        proc.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstreams: list[ServerProcess]) -> Iterator[Gateway]:
    config = {
        "servers": {
            "chg": {"transport": "http", "url": f"http://127.0.0.1:{upstreams[0].port}/mcp"},
            "other": {"transport": "http", "url": f"http://127.0.0.1:{upstreams[1].port}/mcp"},
        },
        "gateway": {"virtual_servers": {"only_other": {"servers": ["other"]}}},
    }
    g = Gateway(tmp_path_factory.mktemp("gw"), config).start()
    yield g
    g.stop()


@pytest.fixture(scope="module")
def key(gw: Gateway) -> str:
    return gw.key("default", "mcp")


def fresh() -> str:
    return "t" + uuid.uuid4().hex[:8]


def _headers(key: str, **extra: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}", "content-type": "application/json",
            "accept": "application/json, text/event-stream", **extra}


async def _session(c: httpx.AsyncClient, key: str) -> str:
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": OLD, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    r = await c.post("/mcp", json=init, headers=_headers(key))
    assert r.status_code == 200
    caps = r.json()["result"]["capabilities"]
    assert caps["tools"]["listChanged"] is True and caps["resources"]["subscribe"] is True
    sid = r.headers["mcp-session-id"]
    r = await c.post("/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                     headers=_headers(key, **{"mcp-session-id": sid, "mcp-protocol-version": OLD}))
    assert r.status_code == 202
    return sid


async def _rpc(c: httpx.AsyncClient, key: str, sid: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
    body = {"jsonrpc": "2.0", "id": uuid.uuid4().hex, "method": method, "params": params}
    r = await c.post("/mcp", json=body, headers=_headers(key, **{"mcp-session-id": sid, "mcp-protocol-version": OLD}))
    assert r.status_code == 200, r.text
    if r.headers["content-type"].startswith("text/event-stream"):
        return [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")][-1]  # type: ignore[no-any-return]
    return r.json()  # type: ignore[no-any-return]


async def _events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    async for line in lines:
        if line.startswith("data: ") and line[6:].strip():  # (a priming event has empty data)
            yield json.loads(line[6:])


async def _next(events: AsyncIterator[dict[str, Any]], method: str) -> dict[str, Any]:
    async def find() -> dict[str, Any]:
        async for ev in events:
            if ev.get("method") == method:
                return ev
        raise AssertionError(f"stream ended before {method}")
    return await asyncio.wait_for(find(), WAIT)


async def test_get_stream_carries_list_changed_and_resource_updates(gw: Gateway, key: str) -> None:
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as c:
        sid = await _session(c, key)
        get_headers = {"authorization": f"Bearer {key}", "accept": "text/event-stream", "mcp-session-id": sid}
        async with c.stream("GET", "/mcp", headers=get_headers) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            # One GET stream per session.
            second = await c.get("/mcp", headers=get_headers)
            assert second.status_code == 409
            events = _events(stream.aiter_lines())
            name = fresh()
            called = await _rpc(c, key, sid, "tools/call", {"name": "chg__add_tool", "arguments": {"name": name}})
            assert called["result"]["isError"] is False
            await _next(events, "notifications/tools/list_changed")
            listed = await _rpc(c, key, sid, "tools/list", {})
            assert f"chg__{name}" in {t["name"] for t in listed["result"]["tools"]}

            # resources/subscribe is forwarded; the upstream's update arrives under the served URI.
            listed = await _rpc(c, key, sid, "resources/list", {})
            uris = {r["uri"] for r in listed["result"]["resources"]}
            assert "chg+changes://doc" in uris  # both upstreams serve it: prefixed
            assert "error" not in await _rpc(c, key, sid, "resources/subscribe", {"uri": "chg+changes://doc"})
            await _rpc(c, key, sid, "tools/call", {"name": "chg__touch", "arguments": {"uri": "changes://doc"}})
            updated = await _next(events, "notifications/resources/updated")
            assert updated["params"]["uri"] == "chg+changes://doc"


async def test_get_stream_needs_a_session_and_sse(gw: Gateway, key: str) -> None:
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as c:
        auth = {"authorization": f"Bearer {key}"}
        assert (await c.get("/mcp", headers={**auth, "accept": "text/event-stream"})).status_code == 400
        r = await c.get("/mcp", headers={**auth, "accept": "text/event-stream", "mcp-session-id": "forged.x"})
        assert r.status_code == 404
        sid = await _session(c, key)
        r = await c.get("/mcp", headers={**auth, "accept": "application/json", "mcp-session-id": sid})
        assert r.status_code == 406
        # Without a key there is no stream at all.
        r = await c.get("/mcp", headers={"accept": "text/event-stream", "mcp-session-id": sid})
        assert r.status_code == 401
        # DELETE ends the session and its GET stream.
        get_headers = {**auth, "accept": "text/event-stream", "mcp-session-id": sid}
        async with c.stream("GET", "/mcp", headers=get_headers) as stream:
            assert stream.status_code == 200
            assert (await c.delete("/mcp", headers={**auth, "mcp-session-id": sid})).status_code == 200

            async def drain() -> None:
                async for _ in stream.aiter_lines():
                    pass
            await asyncio.wait_for(drain(), WAIT)


async def test_sdk_client_listen_through_the_gateway(gw: Gateway, key: str) -> None:
    http = httpx2.AsyncClient(headers={"authorization": f"Bearer {key}"}, timeout=30)
    async with Client(streamable_http_client(gw.url + "/mcp", http_client=http), mode=PV) as c:
        before = {t.name for t in (await c.list_tools()).tools}
        wanted = ["chg+changes://doc", "changes://doc"]  # served prefixed (both upstreams have it): the 2nd is unknown
        async with c.listen(tools_list_changed=True, resource_subscriptions=wanted) as sub:
            assert sub.honored.tools_list_changed is True
            assert sub.honored.resource_subscriptions == ["chg+changes://doc"]
            events = sub.__aiter__()
            name = fresh()
            await c.call_tool("chg__add_tool", {"name": name})
            event = await asyncio.wait_for(events.__anext__(), WAIT)
            assert type(event).__name__ == "ToolsListChanged"
            after = {t.name for t in (await c.list_tools()).tools}
            assert after - before == {f"chg__{name}"}
            # The upstream's update of the watched resource arrives under the served URI.
            await c.call_tool("chg__touch", {"uri": "changes://doc"})
            event = await asyncio.wait_for(events.__anext__(), WAIT)
            assert type(event).__name__ == "ResourceUpdated" and event.uri == "chg+changes://doc"  # type: ignore[attr-defined]


async def test_sdk_handshake_client_gets_list_changed(gw: Gateway, key: str) -> None:
    seen: asyncio.Queue[Any] = asyncio.Queue()

    async def handler(message: Any) -> None:
        if isinstance(message, ToolListChangedNotification | ResourceUpdatedNotification):
            await seen.put(message)

    http = httpx2.AsyncClient(headers={"authorization": f"Bearer {key}"}, timeout=30)
    async with Client(streamable_http_client(gw.url + "/mcp", http_client=http), mode="legacy",
                      message_handler=handler) as c:
        await c.list_tools()
        # The SDK opens its GET stream in the background after initialize: a change made before
        # it is open has nowhere to go, so change again until one is heard (each change adds a tool).
        got = None
        for _ in range(5):
            name = fresh()
            await c.call_tool("chg__add_tool", {"name": name})
            with contextlib.suppress(TimeoutError):
                got = await asyncio.wait_for(seen.get(), WAIT / 4)
                break
        assert isinstance(got, ToolListChangedNotification)
        assert f"chg__{name}" in {t.name for t in (await c.list_tools()).tools}


async def test_raw_listen_stream_wire_format(gw: Gateway, key: str) -> None:
    body = {"jsonrpc": "2.0", "id": "sub-1", "method": "subscriptions/listen",
            "params": {"_meta": ENV, "notifications": {"toolsListChanged": True, "promptsListChanged": False}}}
    headers = _headers(key, **{"mcp-protocol-version": PV, "mcp-method": "subscriptions/listen"})
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as c:
        async with c.stream("POST", "/mcp", json=body, headers=headers) as stream:
            assert stream.status_code == 200
            events = _events(stream.aiter_lines())
            ack = await _next(events, "notifications/subscriptions/acknowledged")
            assert ack["params"] == {"notifications": {"toolsListChanged": True},
                                     "_meta": {"io.modelcontextprotocol/subscriptionId": "sub-1"}}
            call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                    "params": {"_meta": ENV, "name": "chg__add_tool", "arguments": {"name": fresh()}}}
            r = await c.post("/mcp", json=call, headers=_headers(key, **{
                "mcp-protocol-version": PV, "mcp-method": "tools/call", "mcp-name": "chg__add_tool"}))
            assert r.status_code == 200 and r.json()["result"]["isError"] is False
            changed = await _next(events, "notifications/tools/list_changed")
            assert changed["params"]["_meta"] == {"io.modelcontextprotocol/subscriptionId": "sub-1"}
        # Bad filters and JSON-only clients are refused with JSON-RPC errors.
        bad = {**body, "params": {"_meta": ENV, "notifications": "all"}}
        r = await c.post("/mcp", json=bad, headers=headers)
        assert r.json()["error"]["code"] == -32602
        r = await c.post("/mcp", json=body, headers={**headers, "accept": "application/json"})
        assert r.json()["error"]["code"] == -32600


async def test_websocket_client_gets_list_changed_only_for_its_view(gw: Gateway, key: str) -> None:
    ws_url = gw.url.replace("http://", "ws://")
    extra = {"Authorization": f"Bearer {key}"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": OLD, "capabilities": {}, "clientInfo": {"name": "ws", "version": "1"}}}
    async with websockets.connect(ws_url + "/ws", subprotocols=["mcp"], additional_headers=extra) as all_ws, \
            websockets.connect(ws_url + "/servers/only_other/ws", subprotocols=["mcp"],
                               additional_headers=extra) as other_ws:
        for ws in (all_ws, other_ws):
            await ws.send(json.dumps(init))
            assert json.loads(await ws.recv())["id"] == 1
            await ws.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        # A change on "chg" reaches /mcp (which shows chg) but not the view of "other" alone.
        await all_ws.send(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                      "params": {"name": "chg__add_tool", "arguments": {"name": fresh()}}}))
        got: list[str] = []
        while "notifications/tools/list_changed" not in got:
            msg = json.loads(await asyncio.wait_for(all_ws.recv(), WAIT))
            got.append(msg.get("method", "response"))
        await other_ws.send(json.dumps({"jsonrpc": "2.0", "id": 3, "method": "ping"}))
        assert json.loads(await asyncio.wait_for(other_ws.recv(), WAIT)) == {"jsonrpc": "2.0", "id": 3, "result": {}}


async def test_servers_registered_at_run_time_are_announced(gw: Gateway, key: str,
                                                            upstreams: list[ServerProcess]) -> None:
    admin = {"authorization": f"Bearer {gw.key('default', 'admin')}"}
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as c:
        sid = await _session(c, key)
        get_headers = {"authorization": f"Bearer {key}", "accept": "text/event-stream", "mcp-session-id": sid}
        async with c.stream("GET", "/mcp", headers=get_headers) as stream:
            assert stream.status_code == 200
            r = await c.post("/admin/servers", headers=admin,
                             json={"name": "late", "url": f"http://127.0.0.1:{upstreams[1].port}/mcp"})
            assert r.status_code == 201, r.text  # created
            try:
                methods: list[str] = []

                async def collect() -> None:
                    async for ev in _events(stream.aiter_lines()):
                        methods.append(ev["method"])
                # Every list may have changed; then the stream ends so the client reconnects to the new view.
                await asyncio.wait_for(collect(), WAIT)
                assert sorted(methods) == sorted(["notifications/tools/list_changed",
                                                  "notifications/prompts/list_changed",
                                                  "notifications/resources/list_changed"])
                listed = await _rpc(c, key, sid, "tools/list", {})
                assert "late__add_tool" in {t["name"] for t in listed["result"]["tools"]}
            finally:
                assert (await c.delete("/admin/servers/late", headers=admin)).status_code == 200


async def test_shutdown_ends_listen_and_get_streams_gracefully(tmp_path: Path, upstreams: list[ServerProcess]) -> None:
    config = {"servers": {"chg": {"transport": "http", "url": f"http://127.0.0.1:{upstreams[0].port}/mcp"}},
              "gateway": {"drain_timeout": 120}}
    g = Gateway(tmp_path, config).start()
    stopping = None
    try:
        key = g.key("default", "mcp")
        body = {"jsonrpc": "2.0", "id": 9, "method": "subscriptions/listen",
                "params": {"_meta": ENV, "notifications": {"toolsListChanged": True}}}
        headers = _headers(key, **{"mcp-protocol-version": PV, "mcp-method": "subscriptions/listen"})
        async with httpx.AsyncClient(base_url=g.url, timeout=60) as c:
            sid = await _session(c, key)
            get_headers = {"authorization": f"Bearer {key}", "accept": "text/event-stream", "mcp-session-id": sid}
            async with c.stream("POST", "/mcp", json=body, headers=headers) as listen, \
                    c.stream("GET", "/mcp", headers=get_headers) as get:
                events = _events(listen.aiter_lines())
                await _next(events, "notifications/subscriptions/acknowledged")
                stopping = asyncio.get_running_loop().run_in_executor(None, g.stop)

                async def rest() -> list[dict[str, Any]]:
                    return [ev async for ev in events]
                # The stream closes with its result (graceful closure), not by being cut off...
                tail = await asyncio.wait_for(rest(), 60)
                assert tail[-1]["id"] == 9
                assert tail[-1]["result"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == 9

                async def drain() -> None:
                    async for _ in get.aiter_lines():
                        pass
                await asyncio.wait_for(drain(), 60)
                # ...and the gateway exits on SIGTERM without waiting out its 120 s drain timeout
                # (stop() escalates to SIGKILL after 30 s; uvicorn re-raises SIGTERM once shut down).
                assert await stopping in (0, -signal.SIGTERM)
    finally:
        if stopping is None:
            g.stop()
