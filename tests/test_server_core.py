"""Pure-logic tests of the server core: token buckets, metrics, ToolServer options, JSON-RPC routing.

The dispatcher is exercised in-process here (no transport); frontends are covered by the
process-level tests in test_server_http/stdio/ws_sse.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import aiohttp
import orjson
import pytest
from mcp.server import MCPServer
from mcp.server.mcpserver import Context

from conftest import SERVERS, ServerProcess, free_port
from toolmesh.servers import ToolServer
from toolmesh.servers.dispatch import Dispatcher
from toolmesh.servers.policy import TokenBucket
from toolmesh.servers.state import Conn

META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
}


def make_server() -> ToolServer:
    server = ToolServer("core", max_execution_time=10.0)

    @server.tool()
    async def add(a: int, b: int) -> int:
        return a + b

    @server.tool(timeout=0.05)
    async def stuck() -> str:
        await asyncio.sleep(60)
        return "never"

    @server.tool()
    def fail() -> str:
        raise RuntimeError("internal detail")

    @server.tool()
    async def chatty(ctx: Context) -> str:
        await ctx.debug("fine detail")
        await ctx.warning("careful")
        return "said"

    return server


def call(
    rid: int, name: str, arguments: dict[str, Any] | None = None, meta: dict[str, Any] | None = None
) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, "arguments": arguments or {}}
    if meta is not None:
        params["_meta"] = meta
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params}


def test_token_bucket_burst_then_refuse() -> None:
    bucket = TokenBucket(rate=1.0, burst=3)
    assert [bucket.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = bucket.acquire("a")
    assert 0 < wait <= 1.0
    assert bucket.acquire("b") == 0.0  # keys are independent
    with pytest.raises(ValueError):
        TokenBucket(rate=0)


def test_toolserver_timeouts_and_is_an_mcpserver() -> None:
    server = make_server()
    assert isinstance(server, MCPServer)
    assert server.policy.timeout_for("stuck") == 0.05
    assert server.policy.timeout_for("add") == 10.0


async def test_metrics_count_calls_errors_timeouts() -> None:
    server = make_server()
    d = Dispatcher(server)
    conn = Conn("t")
    for i in range(3):
        reply = await d.handle(call(i, "add", {"a": i, "b": 1}), conn)
        assert reply["result"]["structuredContent"] == {"result": i + 1}
    reply = await d.handle(call(10, "fail"), conn)
    assert reply["result"]["isError"] is True and "internal detail" not in reply["result"]["content"][0]["text"]
    reply = await d.handle(call(11, "stuck"), conn)
    assert reply["error"]["code"] == -32001 and reply["error"]["data"] == {"tool": "stuck", "timeout": 0.05}
    snap = server.metrics()
    assert snap["tools"]["add"]["calls"] == 3 and snap["tools"]["add"]["errors"] == 0
    assert snap["tools"]["fail"]["errors"] == 1
    assert snap["tools"]["stuck"]["timeouts"] == 1
    assert snap["calls"] == 5 and snap["tools"]["add"]["p50_ms"] >= 0


async def test_jsonrpc_shapes() -> None:
    d = Dispatcher(make_server())
    conn = Conn("t")
    assert (await d.handle([], conn))["error"]["code"] == -32600
    assert (await d.handle("x", conn))["error"]["code"] == -32600
    assert (await d.handle({"jsonrpc": "1.0", "id": 1, "method": "ping"}, conn))["error"]["code"] == -32600
    assert (await d.handle({"jsonrpc": "2.0", "id": True, "method": "ping"}, conn))["error"]["code"] == -32600
    assert (await d.handle({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": [1]}, conn))["error"][
        "code"
    ] == -32602
    assert await d.handle({"jsonrpc": "2.0", "id": 1, "result": {}}, conn) is None  # a stray response
    assert await d.handle({"jsonrpc": "2.0", "method": "notifications/initialized"}, conn) is None
    assert conn.initialized
    bad_level = {"jsonrpc": "2.0", "id": 2, "method": "logging/setLevel", "params": {"level": "loud"}}
    assert (await d.handle(bad_level, conn))["error"]["code"] == -32602
    no_caps = call(3, "add", {"a": 1, "b": 1}, {"io.modelcontextprotocol/protocolVersion": "2026-07-28"})
    assert (await d.handle(no_caps, None))["error"]["code"] == -32602


async def test_batches_only_on_2025_03_26() -> None:
    d = Dispatcher(make_server())
    conn = Conn("t")
    init = {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    await d.handle({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init}, conn)
    batch = [{"jsonrpc": "2.0", "id": 1, "method": "ping"}, call(2, "add", {"a": 1, "b": 2})]
    replies = await d.handle(batch, conn)
    assert [r["id"] for r in replies] == [1, 2]


@pytest.mark.filterwarnings("ignore:The logging capability is deprecated")
async def test_log_notifications_follow_each_era() -> None:
    d = Dispatcher(make_server())
    sent: list[dict[str, Any]] = []

    async def notify(msg: dict[str, Any]) -> None:
        sent.append(msg)

    conn = Conn("t")
    await d.handle({"jsonrpc": "2.0", "id": 1, "method": "logging/setLevel", "params": {"level": "warning"}}, conn)
    await d.handle(call(2, "chatty"), conn, notify)
    assert [m["params"]["level"] for m in sent] == ["warning"]
    sent.clear()
    await d.handle(call(3, "chatty", meta=META), None, notify)
    assert sent == []  # 2026-07-28: logs only when the request opts in
    await d.handle(call(4, "chatty", meta={**META, "io.modelcontextprotocol/logLevel": "debug"}), None, notify)
    assert [m["params"]["level"] for m in sent] == ["debug", "warning"]


async def test_max_connections_over_real_sockets() -> None:
    port = free_port()
    proc = ServerProcess(
        [sys.executable, str(SERVERS / "tm_add_server.py"), "websocket", str(port), "--one-conn"], port
    )
    proc.start()
    try:
        async with aiohttp.ClientSession() as s, s.ws_connect(f"ws://127.0.0.1:{port}/ws", protocols=("mcp",)) as ws:
            await ws.send_str('{"jsonrpc":"2.0","id":1,"method":"ping"}')
            assert orjson.loads((await ws.receive()).data)["id"] == 1
            async with s.ws_connect(f"ws://127.0.0.1:{port}/ws", protocols=("mcp",)) as ws2:
                msg = await ws2.receive()
                assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1013
            # The first connection is unaffected.
            await ws.send_str('{"jsonrpc":"2.0","id":2,"method":"ping"}')
            assert orjson.loads((await ws.receive()).data)["id"] == 2
    finally:
        proc.stop()
