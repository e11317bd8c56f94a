"""The Hub against real servers over every transport and both protocol eras."""

from __future__ import annotations

import shutil
import sys

import pytest

from conftest import NPM_BIN, ServerProcess, fixture_stdio_args
from toolmesh.errors import InvalidArgumentsError, ToolNotFoundError
from toolmesh.hub import Hub, ServerConfig

PROTOCOLS = ["auto", "2025-11-25", "2026-07-28"]
EXPECTED = {"auto": "2026-07-28", "2025-11-25": "2025-11-25", "2026-07-28": "2026-07-28"}


async def exercise(hub: Hub, name: str) -> None:
    tools = {t["_tool"] for t in await hub.list_tools(server=name)}
    assert {"add", "echo", "fail", "sleep", "progress"} <= tools
    r = await hub.call_tool(name, "add", {"a": 2, "b": 40})
    assert r.ok and r.structured == {"result": 42} and r.text == "42"
    r = await hub.call_tool(name, "echo", {"text": "库存够吗？ ✓"})
    assert r.text == "库存够吗？ ✓"
    r = await hub.call_tool(name, "fail", {"message": "no stock data"})
    assert not r.ok and r.is_error and "no stock data" in (r.error or "")
    with pytest.raises(ToolNotFoundError):
        await hub.call_tool(name, "nope", {})
    with pytest.raises(InvalidArgumentsError, match="integer"):
        await hub.call_tool(name, "add", {"a": "two", "b": 1})
    big = await hub.call_tool(name, "big", {"kb": 512})
    assert len(big.text) == 512 * 1024


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_stdio(protocol: str) -> None:
    cmd, args = fixture_stdio_args()
    async with Hub() as hub:
        await hub.register(ServerConfig(name="fx", command=cmd, args=args, protocol=protocol))  # type: ignore[arg-type]
        await exercise(hub, "fx")
        assert hub.server("fx").conn is not None
        assert hub.server("fx").conn.identity.protocol == EXPECTED[protocol]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_streamable_http(fixture_http: ServerProcess, protocol: str) -> None:
    url = f"http://127.0.0.1:{fixture_http.port}/mcp"
    async with Hub() as hub:
        await hub.register(ServerConfig(name="fx", url=url, protocol=protocol))  # type: ignore[arg-type]
        await exercise(hub, "fx")
        assert hub.server("fx").conn.identity.protocol == EXPECTED[protocol]  # type: ignore[union-attr]


async def test_legacy_sse(fixture_sse: ServerProcess) -> None:
    async with Hub() as hub:
        await hub.register(ServerConfig(name="fx", url=f"http://127.0.0.1:{fixture_sse.port}/sse", protocol="2025-11-25"))
        assert hub.server("fx").config.transport == "sse"
        await exercise(hub, "fx")


async def test_inprocess() -> None:
    sys.path.insert(0, str(__import__("conftest").SERVERS))
    try:
        from hub_fixture_server import mcp
    finally:
        sys.path.pop(0)
    async with Hub() as hub:
        await hub.register(ServerConfig(name="fx", server=mcp))
        r = await hub.call_tool("fx", "add", {"a": 1, "b": 2})
        assert r.structured == {"result": 3}
        assert not (await hub.call_tool("fx", "fail", {})).ok


async def test_resources_and_prompts(fixture_http: ServerProcess) -> None:
    async with Hub() as hub:
        await hub.register(ServerConfig(name="fx", url=f"http://127.0.0.1:{fixture_http.port}/mcp"))
        resources = await hub.list_catalog("resources")
        assert [r["uri"] for r in resources["fx"]] == ["fixture://greeting"]
        read = await hub.read_resource("fx", "fixture://greeting")
        assert read["contents"][0]["text"] == "hello"
        prompts = await hub.list_catalog("prompts")
        assert prompts["fx"][0]["name"] == "ask"
        got = await hub.get_prompt("fx", "ask", {"topic": "phones"})
        assert "phones" in got["messages"][0]["content"]["text"]


async def test_reference_server_time_from_pypi() -> None:
    """mcp-server-time (PyPI reference server, official SDK 1.x style) over stdio."""
    async with Hub() as hub:
        await hub.register(ServerConfig(name="time", command=sys.executable, args=["-m", "mcp_server_time"],
                                        connect_timeout=60))  # imports the SDK: slow on a loaded box
        names = {t["_tool"] for t in await hub.list_tools()}
        assert {"get_current_time", "convert_time"} <= names
        r = await hub.call_tool("time", "get_current_time", {"timezone": "Asia/Shanghai"})
        assert r.ok and "Asia/Shanghai" in r.text


@pytest.mark.skipif(not (NPM_BIN / "mcp-server-everything").exists() or not shutil.which("node"),
                    reason="npm reference server not installed (make test installs it)")
async def test_reference_server_everything_from_npm() -> None:
    """@modelcontextprotocol/server-everything (TypeScript SDK) over stdio."""
    async with Hub() as hub:
        await hub.register(ServerConfig(name="ev", command=str(NPM_BIN / "mcp-server-everything"), args=["stdio"]))
        names = {t["_tool"] for t in await hub.list_tools()}
        assert "echo" in names
        r = await hub.call_tool("ev", "echo", {"message": "hi there"})
        assert r.ok and "hi there" in r.text
        bad = await hub.batch_call([{"id": "1", "name": "ev__echo", "arguments": {"message": 5}}])
        assert not bad["1"].ok and bad["1"].error_type == "InvalidArgumentsError"
