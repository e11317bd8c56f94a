"""toolmesh.servers Streamable HTTP frontend, against a real server process on a loopback port."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from conftest import SERVERS, ServerProcess, free_port

SERVER = str(SERVERS / "tm_add_server.py")
PV = "2026-07-28"
META = {
    "io.modelcontextprotocol/protocolVersion": PV,
    "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}
ACCEPT = "application/json, text/event-stream"


class Srv:
    def __init__(self, proc: ServerProcess, marker: Path) -> None:
        self.proc = proc
        self.marker = marker
        self.url = f"http://127.0.0.1:{proc.port}/mcp"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Srv]:
    marker = tmp_path_factory.mktemp("http") / "cancelled"
    port = free_port()
    proc = ServerProcess(
        [sys.executable, SERVER, "http", str(port), "--policy"], port, env={"TM_CANCEL_MARKER": str(marker)}
    ).start()
    yield Srv(proc, marker)
    proc.stop()


def modern_body(method: str, params: dict[str, Any] | None = None, rid: int = 1) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": {**(params or {}), "_meta": META}})


def modern_headers(method: str, name: str | None = None) -> dict[str, str]:
    h = {"content-type": "application/json", "accept": ACCEPT, "mcp-protocol-version": PV, "mcp-method": method}
    if name is not None:
        h["mcp-name"] = name
    return h


async def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any, Any]:
    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers) as r:
        raw = await r.read()
        return r.status, (orjson.loads(raw) if raw else None), r.headers


async def legacy_session(url: str) -> str:
    body = orjson.dumps(
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        }
    )
    status, msg, headers = await post(url, body, {"content-type": "application/json", "accept": ACCEPT})
    assert status == 200 and msg["result"]["protocolVersion"] == "2025-11-25"
    return str(headers["mcp-session-id"])


@pytest.mark.parametrize("mode", ["2026-07-28", "legacy", "auto"])
async def test_sdk_client_lists_and_calls(srv: Srv, mode: str) -> None:
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        progress.append((p, total, message))

    async with Client(srv.url, mode=mode) as client:  # type: ignore[arg-type]
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"add", "slow", "boom", "sleepy"} <= names
        result = await client.call_tool("add", {"a": 2, "b": 40})
        assert result.structured_content == {"result": 42} and not result.is_error
        slow = await client.call_tool("slow", {"steps": 3, "delay": 0.01}, progress_callback=on_progress)
        assert slow.content[0].text == "done 3"  # type: ignore[union-attr]
        assert [p[0] for p in progress] == [1, 2, 3] and progress[-1][2] == "step 3"
        boom = await client.call_tool("boom", {})
        assert boom.is_error and "kaboom" in boom.content[0].text  # type: ignore[union-attr]
        res = await client.read_resource("res://items/7")
        assert res.contents[0].text == "item 7"  # type: ignore[union-attr]
        prompt = await client.get_prompt("greet", {"name": "Ann"})
        assert prompt.messages[0].content.text == "Hello Ann"  # type: ignore[union-attr]
        with pytest.raises(MCPError) as err:
            await client.call_tool("no_such_tool", {})
        assert err.value.code == -32602


async def test_discover_and_modern_result_envelope(srv: Srv) -> None:
    status, msg, _ = await post(srv.url, modern_body("server/discover"), modern_headers("server/discover"))
    assert status == 200
    result = msg["result"]
    assert result["supportedVersions"] == [PV] and result["resultType"] == "complete"
    assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "tm-add"
    assert "ttlMs" in result and result["cacheScope"] in ("private", "public")
    status, msg, _ = await post(
        srv.url,
        modern_body("tools/call", {"name": "add", "arguments": {"a": 1, "b": 2}}),
        modern_headers("tools/call", "add"),
    )
    assert msg["result"]["structuredContent"] == {"result": 3} and msg["result"]["resultType"] == "complete"


async def test_error_codes(srv: Srv) -> None:
    url = srv.url
    status, msg, _ = await post(url, b"{not json", modern_headers("tools/list"))
    assert status == 400 and msg["error"]["code"] == -32700 and msg["id"] is None
    # A 2026 request without its _meta envelope: invalid params.
    status, msg, _ = await post(url, b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}', modern_headers("tools/list"))
    assert status == 400 and msg["error"]["code"] == -32602 and msg["id"] == 1
    # An enveloped request that is not JSON-RPC 2.0 (no "jsonrpc"): invalid request.
    not_rpc = orjson.loads(modern_body("tools/list"))
    del not_rpc["jsonrpc"]
    status, msg, _ = await post(url, orjson.dumps(not_rpc), modern_headers("tools/list"))
    assert status == 400 and msg["error"]["code"] == -32600
    status, msg, _ = await post(url, modern_body("no/such"), modern_headers("no/such"))
    assert status == 404 and msg["error"]["code"] == -32601
    status, msg, _ = await post(
        url, modern_body("tools/call", {"name": "ghost", "arguments": {}}), modern_headers("tools/call", "ghost")
    )
    assert status == 400 and msg["error"]["code"] == -32602 and msg["error"]["message"] == "Unknown tool: ghost"
    # One letter off a tool the server has: the error names it.
    status, msg, _ = await post(
        url, modern_body("tools/call", {"name": "ad", "arguments": {}}), modern_headers("tools/call", "ad")
    )
    assert status == 400 and msg["error"]["message"] == "Unknown tool: ad (did you mean 'add'?)"
    # Schema-violating arguments are a tool execution error the model can read (spec 2025-11-25+).
    status, msg, _ = await post(
        url, modern_body("tools/call", {"name": "add", "arguments": {"a": "x"}}), modern_headers("tools/call", "add")
    )
    assert status == 200 and msg["result"]["isError"] is True
    status, msg, _ = await post(
        url, modern_body("tools/call", {"name": "add", "arguments": [1, 2]}), modern_headers("tools/call", "add")
    )
    assert msg["error"]["code"] == -32602
    status, msg, _ = await post(
        url, modern_body("tools/call", {"name": "add", "arguments": {}}), modern_headers("tools/call", "other")
    )
    assert status == 400 and msg["error"]["code"] == -32020
    body = orjson.dumps(
        {"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {"_meta": {**META, META_PV: "2099-01-01"}}}
    )
    status, msg, _ = await post(url, body, {**modern_headers("tools/list"), "mcp-protocol-version": "2099-01-01"})
    assert msg["error"]["code"] == -32022 and PV in msg["error"]["data"]["supported"]


META_PV = "io.modelcontextprotocol/protocolVersion"


async def test_legacy_sessions(srv: Srv) -> None:
    url = srv.url
    sid = await legacy_session(url)
    h = {
        "content-type": "application/json",
        "accept": ACCEPT,
        "mcp-session-id": sid,
        "mcp-protocol-version": "2025-11-25",
    }
    status, _, _ = await post(url, b'{"jsonrpc":"2.0","method":"notifications/initialized"}', h)
    assert status == 202
    status, msg, _ = await post(url, b'{"jsonrpc":"2.0","id":1,"method":"ping"}', h)
    assert status == 200 and msg["result"] == {}
    status, msg, _ = await post(url, b'{"jsonrpc":"2.0","id":2,"method":"tools/list"}', h)
    assert "resultType" not in msg["result"] and msg["result"]["tools"]
    status, msg, _ = await post(url, b'[{"jsonrpc":"2.0","id":3,"method":"ping"}]', h)
    assert msg["error"]["code"] == -32600  # no batches after 2025-03-26
    status, msg, _ = await post(url, b'{"jsonrpc":"2.0","id":4,"method":"tools/list"}', {**h, "mcp-session-id": "nope"})
    assert status == 404
    no_sid = {k: v for k, v in h.items() if k != "mcp-session-id"}
    status, msg, _ = await post(url, b'{"jsonrpc":"2.0","id":5,"method":"tools/list"}', no_sid)
    assert status == 400
    async with aiohttp.ClientSession() as s:
        async with s.get(url, headers=h) as r:
            assert r.status == 405
        async with s.delete(url, headers=h) as r:
            assert r.status == 200
    status, _, _ = await post(url, b'{"jsonrpc":"2.0","id":6,"method":"tools/list"}', h)
    assert status == 404


async def test_limits_and_origin(srv: Srv) -> None:
    big = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"' + b"a" * (5 * 1024 * 1024) + b'"}}'
    status, _, _ = await post(srv.url, big, modern_headers("ping"))
    assert status == 413
    status, _, _ = await post(
        srv.url, modern_body("tools/list"), {**modern_headers("tools/list"), "origin": "http://evil.example"}
    )
    assert status == 403
    status, msg, _ = await post(
        srv.url, modern_body("tools/list"), {**modern_headers("tools/list"), "origin": "http://localhost:5173"}
    )
    assert status == 200 and msg["result"]["tools"]
    # DNS rebinding without an Origin (a same-origin GET/POST from a rebound name): the Host gives it away.
    status, _, _ = await post(
        srv.url, modern_body("tools/list"), {**modern_headers("tools/list"), "host": "evil.example"}
    )
    assert status == 403
    status, _, _ = await post(
        srv.url, modern_body("tools/list"), {**modern_headers("tools/list"), "host": f"localhost:{srv.proc.port}"}
    )
    assert status == 200


async def test_tool_timeout(srv: Srv) -> None:
    _, msg, _ = await post(
        srv.url,
        modern_body("tools/call", {"name": "sleepy", "arguments": {"seconds": 30}}),
        modern_headers("tools/call", "sleepy"),
    )
    assert msg["error"]["code"] == -32001 and msg["error"]["data"]["tool"] == "sleepy"


async def _wait_marker(marker: Path) -> str:
    for _ in range(200):
        if marker.exists():
            return marker.read_text()
        await asyncio.sleep(0.05)
    return ""


async def _first_sse_event(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    async for line in resp.content:
        if line.startswith(b"data: ") and line[6:].strip():  # (the priming event has empty data)
            return dict(orjson.loads(line[6:]))
    raise AssertionError("stream ended without an event")


async def test_cancel_legacy_by_notification(srv: Srv) -> None:
    srv.marker.unlink(missing_ok=True)
    sid = await legacy_session(srv.url)
    h = {
        "content-type": "application/json",
        "accept": ACCEPT,
        "mcp-session-id": sid,
        "mcp-protocol-version": "2025-11-25",
    }
    call = {"name": "slow", "arguments": {"steps": 1000, "delay": 0.05}, "_meta": {"progressToken": "p1"}}
    body = orjson.dumps({"jsonrpc": "2.0", "id": 77, "method": "tools/call", "params": call})
    async with aiohttp.ClientSession() as s, s.post(srv.url, data=body, headers=h) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        first = await _first_sse_event(resp)
        assert first["method"] == "notifications/progress" and first["params"]["progressToken"] == "p1"
        cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 77}}
        async with s.post(srv.url, data=orjson.dumps(cancel), headers=h) as r2:
            assert r2.status == 202
        last = None
        async for line in resp.content:
            if line.startswith(b"data: "):
                last = orjson.loads(line[6:])
        assert last is not None and last.get("id") == 77 and last["error"]["code"] == -32800
    assert await _wait_marker(srv.marker) == "cancelled"


async def test_cancel_modern_by_disconnect(srv: Srv) -> None:
    srv.marker.unlink(missing_ok=True)
    params = {"name": "slow", "arguments": {"steps": 1000, "delay": 0.05}, "_meta": {**META, "progressToken": 9}}
    body = orjson.dumps({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": params})
    async with aiohttp.ClientSession() as s:
        resp = await s.post(srv.url, data=body, headers=modern_headers("tools/call", "slow"))
        first = await _first_sse_event(resp)
        assert first["params"]["progressToken"] == 9
        resp.close()  # the 2026-07-28 way to cancel: drop the response stream
    assert await _wait_marker(srv.marker) == "cancelled"


async def test_rate_limit() -> None:
    port = free_port()
    proc = ServerProcess([sys.executable, SERVER, "http", str(port), "--rate"], port).start()
    try:
        url = f"http://127.0.0.1:{port}/mcp"
        seen: list[tuple[int, Any, Any]] = []
        for _ in range(30):
            seen.append(await post(url, modern_body("tools/list"), modern_headers("tools/list")))
        limited = [r for r in seen if r[0] == 429]
        assert limited, "30 back-to-back requests never hit a 5 req/s limit"
        _, msg, headers = limited[0]
        assert msg["error"]["code"] == -32029 and msg["error"]["data"]["retryAfter"] > 0
        assert int(headers["retry-after"]) >= 1
        assert seen[0][0] == 200
    finally:
        proc.stop()
