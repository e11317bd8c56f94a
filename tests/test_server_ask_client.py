"""Server→client requests (sampling, elicitation, roots) from inside a tool, on every frontend
that can carry them, against the conformance fixtures server as a real process."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.shared.exceptions import MCPError
from mcp_types import CreateMessageResult, ElicitResult, TextContent

from conftest import ServerProcess, free_port

FIXTURES = [sys.executable, "-m", "toolmesh.testing.conformance_server"]
INIT = {"protocolVersion": "2025-11-25", "clientInfo": {"name": "t", "version": "1"}}


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    p = free_port()
    proc = ServerProcess([*FIXTURES, "--port", str(p)], p).start()
    yield p
    proc.stop()


def _dump(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()


async def _recv(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), 30)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return dict(orjson.loads(msg.data))


async def _ws_session(s: aiohttp.ClientSession, port: int, caps: dict[str, Any]) -> aiohttp.ClientWebSocketResponse:
    ws = await s.ws_connect(f"ws://127.0.0.1:{port}/ws", protocols=("mcp",))
    await ws.send_str(
        _dump({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {**INIT, "capabilities": caps}})
    )
    assert "result" in await _recv(ws)
    await ws.send_str('{"jsonrpc":"2.0","method":"notifications/initialized"}')
    return ws


async def test_websocket_sampling_roots_and_errors(port: int) -> None:
    async with aiohttp.ClientSession() as s:
        ws = await _ws_session(s, port, {"sampling": {}, "roots": {}})
        call = {"name": "test_sampling", "arguments": {"prompt": "ping?"}}
        await ws.send_str(_dump({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": call}))
        ask = await _recv(ws)
        assert ask["method"] == "sampling/createMessage"
        assert ask["params"]["messages"][0]["content"]["text"] == "ping?" and ask["params"]["maxTokens"] == 100
        answer = {
            "role": "assistant",
            "content": {"type": "text", "text": "pong"},
            "model": "m",
            "stopReason": "endTurn",
        }
        await ws.send_str(_dump({"jsonrpc": "2.0", "id": ask["id"], "result": answer}))
        reply = await _recv(ws)
        assert reply["id"] == 1 and reply["result"]["content"][0]["text"] == "LLM response: pong"

        # The client answers with an error: the tool sees it as MCPError, the caller gets it back.
        await ws.send_str(_dump({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call}))
        ask = await _recv(ws)
        await ws.send_str(_dump({"jsonrpc": "2.0", "id": ask["id"], "error": {"code": -1, "message": "user said no"}}))
        reply = await _recv(ws)
        assert reply["id"] == 2 and reply["error"] == {"code": -1, "message": "user said no"}

        await ws.send_str(
            _dump({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "test_list_roots"}})
        )
        ask = await _recv(ws)
        assert ask["method"] == "roots/list"
        roots = {"roots": [{"uri": "file:///work", "name": "work"}]}
        await ws.send_str(_dump({"jsonrpc": "2.0", "id": ask["id"], "result": roots}))
        assert (await _recv(ws))["result"]["content"][0]["text"] == "Roots: file:///work"

        # Elicitation was not declared: refused without asking.
        call = {"name": "test_elicitation", "arguments": {"message": "who?"}}
        await ws.send_str(_dump({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": call}))
        reply = await _recv(ws)
        assert reply["id"] == 4 and reply["error"]["code"] == -32021
        assert reply["error"]["data"] == {"requiredCapabilities": {"elicitation": {}}}
        await ws.close()


async def test_http_json_only_client_has_no_back_channel(port: int) -> None:
    url = f"http://127.0.0.1:{port}/mcp"
    headers = {"content-type": "application/json", "accept": "application/json"}
    async with aiohttp.ClientSession() as s:
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {**INIT, "capabilities": {"sampling": {}}}}
        async with s.post(url, data=_dump(init), headers=headers) as r:
            sid = r.headers["mcp-session-id"]
        headers["mcp-session-id"] = sid
        call = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "test_sampling", "arguments": {"prompt": "x"}},
        }
        async with s.post(url, data=_dump(call), headers=headers) as r:
            body = await r.json()
        assert body["error"]["code"] == -32600 and "back-channel" in body["error"]["message"]


async def _sampling(context: Any, params: Any) -> CreateMessageResult:
    return CreateMessageResult(role="assistant", content=TextContent(type="text", text="pong"), model="m")


async def test_legacy_sse_sdk_client_answers_sampling(port: int) -> None:
    async with Client(sse_client(f"http://127.0.0.1:{port}/sse"), mode="legacy", sampling_callback=_sampling) as c:
        result = await c.call_tool("test_sampling", {"prompt": "ping?"})
        assert result.content[0].text == "LLM response: pong"  # type: ignore[union-attr]


async def test_streamable_http_sdk_client_answers_sampling(port: int) -> None:
    async with Client(f"http://127.0.0.1:{port}/mcp", mode="legacy", sampling_callback=_sampling) as c:
        result = await c.call_tool("test_sampling", {"prompt": "ping?"})
        assert result.content[0].text == "LLM response: pong"  # type: ignore[union-attr]


async def test_stdio_sdk_client_answers_sampling_and_elicitation() -> None:
    asked: list[str] = []

    async def sampling(context: Any, params: Any) -> CreateMessageResult:
        asked.append("sampling")
        return CreateMessageResult(role="assistant", content=TextContent(type="text", text="pong"), model="m")

    async def elicitation(context: Any, params: Any) -> ElicitResult:
        asked.append("elicitation")
        return ElicitResult(action="accept", content={"username": "ada", "email": "ada@example.com"})

    params = StdioServerParameters(command=FIXTURES[0], args=[*FIXTURES[1:], "--transport", "stdio"])
    async with Client(params, mode="legacy", sampling_callback=sampling, elicitation_callback=elicitation) as client:
        result = await client.call_tool("test_sampling", {"prompt": "ping?"})
        assert result.content[0].text == "LLM response: pong"  # type: ignore[union-attr]
        result = await client.call_tool("test_elicitation", {"message": "who?"})
        assert result.content[0].text.startswith("User response: action=accept")  # type: ignore[union-attr]
        assert '"username": "ada"' in result.content[0].text  # type: ignore[union-attr]
        with pytest.raises(MCPError) as err:  # no roots capability declared
            await client.call_tool("test_list_roots", {})
        assert err.value.code == -32021
    assert asked == ["sampling", "elicitation"]
