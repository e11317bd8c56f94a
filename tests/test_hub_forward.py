"""Hub.forward: raw, faithful requests for the gateway, against real server processes in both eras."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from conftest import SERVERS, ServerProcess, free_port
from toolmesh.errors import CircuitOpenError, ConnectionFailedError, InvalidArgumentsError, McpRemoteError
from toolmesh.hub import Hub, ServerConfig
from toolmesh.hub.transports import http as http_transport
from toolmesh.hub.transports.base import Connection, Pending

SERVER = str(SERVERS / "hub_forward_server.py")
CAPS = {"sampling": {}, "elicitation": {"form": {}}}
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


@pytest.fixture(scope="module")
def sdk_http() -> Iterator[ServerProcess]:
    """The SDK's own Streamable HTTP app (speaks both eras)."""
    port = free_port()
    sp = ServerProcess([sys.executable, SERVER, "http", str(port)], port).start()
    yield sp
    sp.stop()


@pytest.fixture(scope="module")
def tm_http() -> Iterator[ServerProcess]:
    """toolmesh.servers' HTTP frontend on the same MCPServer (speaks both eras)."""
    port = free_port()
    sp = ServerProcess([sys.executable, SERVER, "toolmesh", str(port)], port).start()
    yield sp
    sp.stop()


def http(sp: ServerProcess, protocol: str, name: str = "up", **kw: Any) -> ServerConfig:
    return ServerConfig(name=name, url=f"http://127.0.0.1:{sp.port}/mcp", protocol=protocol, **kw)


def stdio(**kw: Any) -> ServerConfig:
    return ServerConfig(name="up", command=sys.executable, args=[SERVER, "stdio"], protocol="2025-11-25", **kw)


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


async def answer(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """A downstream client's answers, as the gateway would relay them."""
    if method == "sampling/createMessage":
        prompt = params["messages"][0]["content"]["text"]
        return {"role": "assistant", "content": {"type": "text", "text": f"echo {prompt}"}, "model": "m"}
    if method == "elicitation/create":
        return {"action": "accept", "content": {"name": "Ada"}}
    raise McpRemoteError(-32601, f"no {method}")


# -- raw passthrough ----------------------------------------------------------------------


async def test_modern_result_is_exactly_what_the_server_sent(tm_http: ServerProcess) -> None:
    """2026-07-28 is stateless: one raw POST gives the reference result to compare with."""
    url = f"http://127.0.0.1:{tm_http.port}/mcp"
    headers = {"Accept": "application/json, text/event-stream", "Mcp-Protocol-Version": "2026-07-28",
               "Mcp-Method": "tools/call"}
    async with Hub() as hub:
        await hub.register(http(tm_http, "2026-07-28"))
        for name, args in (("point", {"x": 3}), ("fail", {"message": "nope"})):
            raw = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                   "params": {"name": name, "arguments": args, "_meta": ENVELOPE}}
            async with aiohttp.ClientSession() as s, s.post(url, json=raw, headers={**headers, "Mcp-Name": name}) as r:
                expected = (await r.json())["result"]
            got = await hub.forward("up", "tools/call", call(name, **args))
            assert got == expected
        assert got["isError"] is True and got["content"][0]["text"].endswith("nope")


async def test_named_header_blocks_follow_each_call(tm_http: ServerProcess) -> None:
    """The Mcp-Method/Mcp-Name block is built once per (method, name) and reused: each call still
    carries its own name (the server refuses a Mcp-Name that differs from the body's), however
    the calls interleave, and also once the bounded cache has started over."""
    async with Hub() as hub:
        await hub.register(http(tm_http, "2026-07-28"))
        for _ in range(2):
            for name, args in (("point", {"x": 3}), ("fail", {"message": "nope"}), ("point", {"x": 4})):
                got = await hub.forward("up", "tools/call", call(name, **args))
                assert ("structuredContent" in got) == (name == "point"), got
            read = await hub.forward("up", "resources/read", {"uri": "forward://greeting"})
            assert read["contents"][0]["text"] == "hello"
        conn = hub.server("up").conn
        assert isinstance(conn, http_transport.HttpConnection)
        assert set(conn._named_heads) == {("tools/call", "point"), ("tools/call", "fail"),
                                          ("resources/read", "forward://greeting")}
        old = http_transport._NAMED_HEADS_MAX
        http_transport._NAMED_HEADS_MAX = 1
        try:
            prompt = await hub.forward("up", "prompts/get", {"name": "ask", "arguments": {"topic": "owls"}})
            assert "owls" in prompt["messages"][0]["content"]["text"]
            assert list(conn._named_heads) == [("prompts/get", "ask")]  # full: started over
            assert (await hub.forward("up", "tools/call", call("point", x=5)))["structuredContent"]
            assert list(conn._named_heads) == [("tools/call", "point")]
        finally:
            http_transport._NAMED_HEADS_MAX = old


@pytest.mark.parametrize("protocol", ["2025-11-25", "2026-07-28"])
async def test_structured_content_and_is_error_pass_through(sdk_http: ServerProcess, protocol: str) -> None:
    async with Hub() as hub:
        await hub.register(http(sdk_http, protocol))
        ok = await hub.forward("up", "tools/call", call("point", x=2))
        assert ok["structuredContent"] == {"x": 2, "y": 4} and ok["isError"] is False
        bad = await hub.forward("up", "tools/call", call("fail", message="broken"))
        assert bad["isError"] is True and "broken" in bad["content"][0]["text"]
        # Not validated here: the upstream's own answer to bad arguments comes back.
        wrong = await hub.forward("up", "tools/call", call("point", x="not a number"))
        assert wrong["isError"] is True
        m = hub.metrics()["servers"]["up"]["tools"]
        assert m["point"]["calls"] == 2 and m["point"]["successes"] == 1
        assert m["fail"]["failures"] == 1


@pytest.mark.parametrize("protocol", ["2025-11-25", "2026-07-28"])
async def test_other_methods(tm_http: ServerProcess, protocol: str) -> None:
    async with Hub() as hub:
        await hub.register(http(tm_http, protocol))
        read = await hub.forward("up", "resources/read", {"uri": "forward://greeting"})
        assert read["contents"][0]["text"] == "hello"
        prompt = await hub.forward("up", "prompts/get", {"name": "ask", "arguments": {"topic": "owls"}})
        assert "owls" in prompt["messages"][0]["content"]["text"]
        listed = await hub.forward("up", "tools/list")
        assert {"point", "confirm"} <= {t["name"] for t in listed["tools"]}


@pytest.mark.parametrize("protocol", ["2025-11-25", "2026-07-28"])
async def test_json_rpc_errors_keep_code_message_and_data(tm_http: ServerProcess, protocol: str) -> None:
    async with Hub() as hub:
        await hub.register(http(tm_http, protocol))
        with pytest.raises(McpRemoteError) as info:
            await hub.forward("up", "resources/read", {"uri": "forward://missing"})
        assert info.value.code == -32602 and info.value.data == {"uri": "forward://missing"}
        assert "forward://missing" in info.value.message
        with pytest.raises(McpRemoteError) as info:
            await hub.forward("up", "tools/call", call("no_such_tool"))
        assert info.value.code == -32602 and info.value.data == {"tool": "no_such_tool"}
        with pytest.raises(InvalidArgumentsError):
            await hub.forward("up", "tools/call", {"arguments": {}})


async def test_input_required_round_trip_passes_through(tm_http: ServerProcess) -> None:
    async with Hub() as hub:
        await hub.register(http(tm_http, "2026-07-28"))
        first = await hub.forward("up", "tools/call", call("confirm"))
        assert first["resultType"] == "input_required" and first["requestState"] == "round-1"
        assert first["inputRequests"]["sure"]["method"] == "elicitation/create"
        final = await hub.forward("up", "tools/call", {
            **call("confirm"), "inputResponses": {"sure": {"action": "accept", "content": {"ok": True}}},
            "requestState": first["requestState"]})
        assert final["content"][0]["text"] == "state=round-1 answers=['sure']"


async def test_call_tool_completes_input_required_with_on_request(tm_http: ServerProcess) -> None:
    async with Hub() as hub:
        await hub.register(http(tm_http, "2026-07-28"))
        plain = await hub.call_tool("up", "confirm", {})
        assert not plain.ok and plain.error_type == "InputRequired" and "elicitation/create" in plain.text
        asked: list[str] = []

        async def on_request(method: str, params: dict[str, Any]) -> dict[str, Any]:
            asked.append(params["message"])
            return {"action": "accept", "content": {"ok": True}}

        done = await hub.call_tool("up", "confirm", {}, on_request=on_request)
        assert done.ok and done.text == "state=round-1 answers=['sure']" and asked == ["Sure?"]


async def test_call_tool_on_request_in_the_handshake_era(sdk_http: ServerProcess) -> None:
    async with Hub(client_capabilities=CAPS) as hub:
        await hub.register(http(sdk_http, "2025-11-25"))
        r = await hub.call_tool("up", "ask_user", {}, on_request=answer)
        assert r.ok and r.text == "hello Ada"


# -- progress and logs --------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["2025-11-25", "2026-07-28"])
async def test_progress_and_logs_reach_the_callbacks(tm_http: ServerProcess, protocol: str) -> None:
    async with Hub() as hub:
        await hub.register(http(tm_http, protocol))
        steps: list[tuple[float, float | None, str | None]] = []
        r = await hub.forward("up", "tools/call", call("progress", steps=3),
                              on_progress=lambda done, total, msg: steps.append((done, total, msg)))
        assert r["content"][0]["text"] == "done 3"
        assert steps == [(1, 3, "step 1"), (2, 3, "step 2"), (3, 3, "step 3")]
        logs: list[dict[str, Any]] = []
        # The caller's _meta (2026-07-28 log level) rides along, merged with the connection's envelope.
        params = {**call("chatty"), "_meta": {"io.modelcontextprotocol/logLevel": "info"}}
        r = await hub.forward("up", "tools/call", params, on_log=logs.append)
        assert r["content"][0]["text"] == "talked"
        assert [(m["level"], m["data"]) for m in logs] == [("info", "first"), ("warning", "second")]


# -- server -> client requests (handshake era) --------------------------------------------


@pytest.mark.parametrize("transport", ["http", "stdio", "sse"])
async def test_sampling_and_elicitation_go_to_on_request(sdk_http: ServerProcess, transport: str) -> None:
    sse = None
    if transport == "http":
        cfg = http(sdk_http, "2025-11-25")
    elif transport == "stdio":
        cfg = stdio()
    else:
        port = free_port()
        sse = ServerProcess([sys.executable, SERVER, "sse", str(port)], port).start()
        cfg = ServerConfig(name="up", url=f"http://127.0.0.1:{port}/sse", protocol="2025-11-25")
    try:
        await _sample_and_elicit(cfg)
    finally:
        if sse is not None:
            sse.stop()


async def _sample_and_elicit(cfg: ServerConfig) -> None:
    async with Hub(client_capabilities=CAPS) as hub:
        await hub.register(cfg)
        asked: list[str] = []

        async def on_request(method: str, params: dict[str, Any]) -> dict[str, Any]:
            asked.append(method)
            return await answer(method, params)

        r = await hub.forward("up", "tools/call", call("ask_llm", prompt="hi"), on_request=on_request)
        assert r["content"][0]["text"] == "model said: echo hi"
        r = await hub.forward("up", "tools/call", call("ask_user"), on_request=on_request)
        assert r["content"][0]["text"] == "hello Ada"
        assert asked == ["sampling/createMessage", "elicitation/create"]


async def test_concurrent_requests_each_get_their_own_server_requests(sdk_http: ServerProcess) -> None:
    async with Hub(client_capabilities=CAPS) as hub:
        await hub.register(http(sdk_http, "2025-11-25"))

        def handler(tag: str) -> Any:
            async def on_request(method: str, params: dict[str, Any]) -> dict[str, Any]:
                await asyncio.sleep(0.01)
                return {"role": "assistant", "content": {"type": "text", "text": tag}, "model": "m"}
            return on_request

        results = await asyncio.gather(*(
            hub.forward("up", "tools/call", call("ask_llm", prompt="?"), on_request=handler(f"t{i}"))
            for i in range(8)))
        assert [r["content"][0]["text"] for r in results] == [f"model said: t{i}" for i in range(8)]


async def test_handler_errors_and_missing_handler(sdk_http: ServerProcess) -> None:
    async with Hub(client_capabilities=CAPS) as hub:
        await hub.register(http(sdk_http, "2025-11-25"))

        async def refuse(method: str, params: dict[str, Any]) -> dict[str, Any]:
            raise McpRemoteError(-1, "User rejected sampling request")

        # The SDK server lets the client's error escape the tool: it comes back as the call's error.
        with pytest.raises(McpRemoteError) as info:
            await hub.forward("up", "tools/call", call("ask_llm", prompt="x"), on_request=refuse)
        assert (info.value.code, info.value.message) == (-1, "User rejected sampling request")
        # No handler: today's behaviour, the Hub says it does not support the method.
        with pytest.raises(McpRemoteError) as info:
            await hub.forward("up", "tools/call", call("ask_llm", prompt="x"))
        assert info.value.code == -32601 and "does not support sampling/createMessage" in info.value.message


@pytest.mark.parametrize("protocol", ["2025-11-25", "2026-07-28"])
async def test_client_capabilities_are_configurable(tm_http: ServerProcess, protocol: str) -> None:
    async with Hub() as hub:
        await hub.register(http(tm_http, protocol))
        default = (await hub.forward("up", "tools/call", call("caps")))["structuredContent"]
        assert "sampling" not in default and "elicitation" not in default and "roots" in default
    async with Hub(client_capabilities=CAPS) as hub:
        await hub.register(http(tm_http, protocol))
        await hub.register(http(tm_http, protocol, name="own", client_capabilities={"elicitation": {}}))
        declared = (await hub.forward("up", "tools/call", call("caps")))["structuredContent"]
        assert "sampling" in declared and "elicitation" in declared
        own = (await hub.forward("own", "tools/call", call("caps")))["structuredContent"]
        assert "elicitation" in own and "sampling" not in own


# -- resilience: the same as call_tool ----------------------------------------------------


async def test_circuit_opens_and_fallback_answers_raw() -> None:
    async with Hub() as hub:
        await hub.register(ServerConfig(name="down", url=f"http://127.0.0.1:{free_port()}/mcp", retries=0,
                                        circuit={"failure_threshold": 2, "reset_timeout": 60}))
        for _ in range(2):
            with pytest.raises(ConnectionFailedError):
                await hub.forward("down", "tools/call", call("t"))
        with pytest.raises(CircuitOpenError):
            await hub.forward("down", "tools/call", call("t"))
        await hub.register(ServerConfig(name="down2", url=f"http://127.0.0.1:{free_port()}/mcp", retries=0,
                                        circuit={"failure_threshold": 1, "reset_timeout": 60,
                                                 "fallback": "service is down"}))
        with pytest.raises(ConnectionFailedError):
            await hub.forward("down2", "tools/call", call("t"))
        r = await hub.forward("down2", "tools/call", call("t"))
        assert r == {"content": [{"type": "text", "text": "service is down"}], "isError": True}
        # Health and metrics saw the two infrastructure failures, not the fast-failed third call.
        assert hub.server("down").health.snapshot()["errors"] == 2
        assert hub.metrics()["servers"]["down"]["tools"]["t"]["failures"] == 2


async def test_server_and_tenant_limits_apply(tm_http: ServerProcess) -> None:
    async with Hub(tenant_concurrency=2) as hub:
        await hub.register(http(tm_http, "2026-07-28", max_concurrency=1), tenant="t")
        handle = hub.server("up", tenant="t")
        peak_server = peak_waiting = peak_tenant = 0

        async def watch() -> None:
            nonlocal peak_server, peak_waiting, peak_tenant
            while True:
                peak_server = max(peak_server, handle.limiter.in_flight)
                peak_waiting = max(peak_waiting, handle.limiter.waiting)
                peak_tenant = max(peak_tenant, hub._tenant_limit("t").in_flight)
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        await asyncio.gather(
            *(hub.forward("up", "tools/call", call("sleep", seconds=0.1), tenant="t") for _ in range(3)),
            hub.forward("up", "prompts/get", {"name": "ask", "arguments": {"topic": "x"}}, tenant="t"),
        )
        watcher.cancel()
        assert peak_server == 1 and peak_waiting >= 1 and peak_tenant == 2


# -- routing rules (pure logic: a loopback Connection, no transport) ----------------------


class _Loopback(Connection):
    """Records what the client sends; the test plays the server by calling ``_dispatch``."""

    def __init__(self) -> None:
        super().__init__(ServerConfig(name="loop", url="http://127.0.0.1:9/mcp"))
        self.identity.protocol = "2025-11-25"
        self.sent: list[dict[str, Any]] = []

    async def _open(self) -> None:
        return None

    async def _send_request(self, msg: dict[str, Any], pending: Pending) -> dict[str, Any]:
        self.sent.append(msg)
        return await pending.future

    async def _send_notification(self, msg: dict[str, Any]) -> None:
        self.sent.append(msg)

    async def _close(self) -> None:
        return None


async def test_server_requests_route_by_related_request_id_else_only_handler() -> None:
    conn = _Loopback()
    seen: list[tuple[str, str]] = []
    logs: list[tuple[str, Any]] = []
    gate = asyncio.Event()

    def hooks(tag: str) -> dict[str, Any]:
        async def on_request(method: str, params: dict[str, Any]) -> dict[str, Any]:
            seen.append((tag, method))
            if params.get("wait"):
                await gate.wait()
            return {"tag": tag}
        return {"on_request": on_request, "on_log": lambda p: logs.append((tag, p["data"]))}

    first = asyncio.create_task(conn.request("tools/call", {"name": "a"}, **hooks("a")))
    second = asyncio.create_task(conn.request("tools/call", {"name": "b"}, **hooks("b")))
    await asyncio.sleep(0)
    rid_a, rid_b = (m["id"] for m in conn.sent)

    def related(rid: int) -> dict[str, Any]:
        return {"_meta": {"io.modelcontextprotocol/related-request-id": rid}}

    await conn._dispatch({"jsonrpc": "2.0", "id": "s1", "method": "sampling/createMessage", "params": related(rid_b)})
    await conn._dispatch({"jsonrpc": "2.0", "method": "notifications/message",
                          "params": {"level": "info", "data": "to a", **related(rid_a)}})
    # Two requests with handlers and nothing named: ambiguous, so the default answer.
    await conn._dispatch({"jsonrpc": "2.0", "id": "s2", "method": "elicitation/create", "params": {}})
    await asyncio.sleep(0.01)
    replies = {m["id"]: m for m in conn.sent if "method" not in m}
    assert replies["s1"]["result"] == {"tag": "b"} and seen == [("b", "sampling/createMessage")]
    assert replies["s2"]["error"]["code"] == -32601
    assert logs == [("a", "to a")]

    # The server may cancel a request it sent; the handler is stopped and nothing is answered.
    await conn._dispatch({"jsonrpc": "2.0", "id": "s3", "method": "elicitation/create",
                          "params": {"wait": True, **related(rid_a)}})
    await asyncio.sleep(0.01)
    await conn._dispatch({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "s3"}})
    await asyncio.sleep(0.01)
    assert not conn._serving and all(m.get("id") != "s3" for m in conn.sent)

    await conn._dispatch({"jsonrpc": "2.0", "id": rid_a, "result": {"content": []}})
    await conn._dispatch({"jsonrpc": "2.0", "id": rid_b, "result": {"content": []}})
    assert await first == {"content": []} and await second == {"content": []}
    # Only one request with a handler left in flight: an unnamed server request goes to it.
    third = asyncio.create_task(conn.request("tools/call", {"name": "c"}, **hooks("c")))
    await asyncio.sleep(0)
    await conn._dispatch({"jsonrpc": "2.0", "id": "s4", "method": "roots/list", "params": {}})
    await asyncio.sleep(0.01)
    assert {m["id"]: m for m in conn.sent if "method" not in m}["s4"]["result"] == {"tag": "c"}
    await conn._dispatch({"jsonrpc": "2.0", "id": conn.sent[-2]["id"], "result": {}})
    assert await third == {}
    await conn.close()
