"""toolmesh.servers WebSocket and legacy HTTP+SSE frontends (same process serves both)."""

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
from mcp.client.sse import sse_client

from conftest import SERVERS, ServerProcess, free_port

SERVER = str(SERVERS / "tm_add_server.py")
META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    marker = tmp_path_factory.mktemp("ws") / "cancelled"
    port = free_port()
    # One listener serves /mcp, /sse + /messages/ and /ws whatever transport name is given.
    proc = ServerProcess(
        [sys.executable, SERVER, "websocket", str(port)], port, env={"TM_CANCEL_MARKER": str(marker)}
    ).start()
    yield port, marker
    proc.stop()


async def _recv(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), 30)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return dict(orjson.loads(msg.data))


async def test_websocket_both_eras(server: tuple[int, Path]) -> None:
    port, _ = server
    async with aiohttp.ClientSession() as s, s.ws_connect(f"ws://127.0.0.1:{port}/ws", protocols=("mcp",)) as ws:
        assert ws.protocol == "mcp"
        init = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
        await ws.send_str(orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init}).decode())
        assert (await _recv(ws))["result"]["serverInfo"]["name"] == "tm-add"
        await ws.send_str('{"jsonrpc":"2.0","method":"notifications/initialized"}')
        await ws.send_str('{"jsonrpc":"2.0","id":2,"method":"tools/list"}')
        assert {t["name"] for t in (await _recv(ws))["result"]["tools"]} >= {"add", "slow"}
        call = {"name": "add", "arguments": {"a": 1, "b": 2}}
        await ws.send_str(orjson.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": call}).decode())
        reply = await _recv(ws)
        assert reply["id"] == 3 and reply["result"]["structuredContent"] == {"result": 3}
        modern = {**call, "_meta": META}
        await ws.send_str(orjson.dumps({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": modern}).decode())
        reply = await _recv(ws)
        assert reply["result"]["resultType"] == "complete" and "_meta" in reply["result"]
        await ws.send_str("{broken")
        assert (await _recv(ws))["error"]["code"] == -32700
        await ws.send_str('{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"ghost"}}')
        assert (await _recv(ws))["error"]["code"] == -32602


async def test_websocket_progress_and_cancel(server: tuple[int, Path]) -> None:
    port, marker = server
    marker.unlink(missing_ok=True)
    async with aiohttp.ClientSession() as s, s.ws_connect(f"ws://127.0.0.1:{port}/ws", protocols=("mcp",)) as ws:
        call = {"name": "slow", "arguments": {"steps": 1000, "delay": 0.05}, "_meta": {"progressToken": 1}}
        await ws.send_str(orjson.dumps({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": call}).decode())
        first = await _recv(ws)
        assert first["method"] == "notifications/progress" and first["params"]["progressToken"] == 1
        await ws.send_str('{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":9}}')
        for _ in range(200):
            if marker.exists():
                break
            await asyncio.sleep(0.05)
        assert marker.read_text() == "cancelled"


async def test_sse_with_sdk_client(server: tuple[int, Path]) -> None:
    port, _ = server
    seen: list[float] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        seen.append(p)

    async with Client(sse_client(f"http://127.0.0.1:{port}/sse"), mode="legacy") as client:
        assert "add" in {t.name for t in (await client.list_tools()).tools}
        assert (await client.call_tool("add", {"a": 5, "b": 6})).structured_content == {"result": 11}
        await client.call_tool("slow", {"steps": 2, "delay": 0.01}, progress_callback=on_progress)
        assert seen == [1, 2]


async def test_sse_unknown_session_and_parse_error(server: tuple[int, Path]) -> None:
    port, _ = server
    async with aiohttp.ClientSession() as s:
        async with s.post(f"http://127.0.0.1:{port}/messages/?session_id=nope", data=b"{}") as r:
            assert r.status == 404
        async with s.get(f"http://127.0.0.1:{port}/sse") as stream:
            endpoint = ""
            async for line in stream.content:
                if line.startswith(b"data: "):
                    endpoint = line[6:].strip().decode()
                    break
            assert endpoint.startswith("/messages/?session_id=")
            async with s.post(f"http://127.0.0.1:{port}{endpoint}", data=b"{nope") as r:
                assert r.status == 400
            async with s.post(
                f"http://127.0.0.1:{port}{endpoint}", data=b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
            ) as r:
                assert r.status == 202
            reply = None
            async for line in stream.content:
                if line.startswith(b"data: "):
                    reply = orjson.loads(line[6:])
                    break
            # a stream that ends without the reply fails here rather than passing silently
            assert reply == {"jsonrpc": "2.0", "id": 1, "result": {}}
