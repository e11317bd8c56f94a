"""The gateway's MCP endpoints against real upstream processes, with real clients (GW-2, GW-3)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CreateMessageResult, ElicitResult, TextContent

from conftest import ServerProcess, free_port
from gateway_support import Gateway, demo_server
from toolmesh.gateway.mcp import SealedSessions
from toolmesh.hub import Hub
from toolmesh.hub.config import ServerConfig

pytestmark = pytest.mark.anyio
FWD = str(Path(__file__).parent / "servers" / "hub_forward_server.py")
PV = "2026-07-28"
ENV = {"io.modelcontextprotocol/protocolVersion": PV, "io.modelcontextprotocol/clientCapabilities": {}}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def upstream() -> Iterator[ServerProcess]:
    port = free_port()
    proc = ServerProcess([sys.executable, FWD, "toolmesh", str(port)], port).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: ServerProcess) -> Iterator[Gateway]:
    config = {
        "servers": {
            "catalog": demo_server("catalog"),
            "fwd": {"transport": "http", "url": f"http://127.0.0.1:{upstream.port}/mcp"},
            "twin": {"transport": "http", "url": f"http://127.0.0.1:{upstream.port}/mcp"},
            "new": {"transport": "http", "url": f"http://127.0.0.1:{upstream.port}/mcp", "protocol": "2026-07-28"},
            "passes": {"transport": "http", "url": f"http://127.0.0.1:{upstream.port}/mcp",
                       "forward_headers": ["X-User-Token"]},
        },
        "tenants": {"acme": {"servers": {"pricing": demo_server("pricing")}}},
        "gateway": {
            "virtual_servers": {
                "shop": {"servers": ["catalog", "fwd"], "exclude": ["fwd__fail"]},
                "merged": {"servers": ["fwd", "twin"], "prefix": False, "include": ["point", "*__point", "sleep"]},
            }
        },
    }
    g = Gateway(tmp_path_factory.mktemp("gw"), config).start()
    yield g
    g.stop()


@pytest.fixture(scope="module")
def key(gw: Gateway) -> str:
    return gw.key("default", "mcp,admin")


def client(gw: Gateway, key: str, path: str = "/mcp", **kw: Any) -> Client:
    http = httpx2.AsyncClient(headers={"authorization": f"Bearer {key}"}, timeout=30)
    return Client(streamable_http_client(gw.url + path, http_client=http), **kw)


def modern(gw: Gateway, key: str | None, path: str, method: str, params: dict[str, Any],
           name: str | None = None) -> httpx.Response:
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json",
               "mcp-protocol-version": PV, "mcp-method": method}
    if key:
        headers["authorization"] = f"Bearer {key}"
    if name:
        headers["mcp-name"] = name
    body = {"jsonrpc": "2.0", "id": 7, "method": method, "params": {**params, "_meta": ENV}}
    return httpx.post(gw.url + path, headers=headers, json=body, timeout=30)


@pytest.mark.parametrize("mode", [PV, "legacy"])
async def test_sdk_client_through_all_servers_view(gw: Gateway, key: str, mode: str) -> None:
    async with client(gw, key, mode=mode) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        assert {"catalog__search_products", "fwd__point", "twin__point"} <= names
        found = await c.call_tool("catalog__get_product_info", {"sku": "SKU-1001"})
        assert not found.is_error and "Lumina" in found.content[0].text  # type: ignore[union-attr]
        point = await c.call_tool("fwd__point", {"x": 4})
        assert point.structured_content == {"x": 4, "y": 8}
        failed = await c.call_tool("fwd__fail", {"message": "nope"})
        assert failed.is_error and "nope" in failed.content[0].text  # type: ignore[union-attr]
        with pytest.raises(MCPError) as err:
            await c.call_tool("catalog__no_such_tool", {})
        assert err.value.code == -32602 and "did you mean" not in err.value.error.message
        # A near miss (one underscore, as models often write it) names the tool it was meant to be.
        with pytest.raises(MCPError) as err:
            await c.call_tool("catalog_get_product_info", {"sku": "SKU-1001"})
        assert err.value.code == -32602
        assert err.value.error.message == ("Unknown tool: catalog_get_product_info "
                                           "(did you mean 'catalog__get_product_info'?)")
        prompts = {p.name for p in (await c.list_prompts()).prompts}
        assert "fwd__ask" in prompts
        got = await c.get_prompt("fwd__ask", {"topic": "tea"})
        assert "tea" in got.messages[0].content.text  # type: ignore[union-attr]
        # The same URI from two upstreams: each is served under its server's prefix.
        uris = {str(r.uri) for r in (await c.list_resources()).resources}
        assert {"fwd+forward://greeting", "twin+forward://greeting"} <= uris
        res = await c.read_resource("twin+forward://greeting")
        assert res.contents[0].text == "hello"  # type: ignore[union-attr]


async def test_single_upstream_view_is_unprefixed(gw: Gateway, key: str) -> None:
    async with client(gw, key, "/servers/fwd/mcp", mode=PV) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        assert {"point", "fail", "sleep", "progress"} <= names and not any("__" in n for n in names)
        progress: list[float] = []

        async def on_progress(p: float, total: float | None, message: str | None) -> None:
            progress.append(p)

        done = await c.call_tool("progress", {"steps": 3}, progress_callback=on_progress)
        assert done.content[0].text == "done 3"  # type: ignore[union-attr]
        assert progress == [1, 2, 3]
        res = await c.read_resource("forward://greeting")
        assert res.contents[0].text == "hello"  # type: ignore[union-attr]


async def test_virtual_servers_filters_and_collisions(gw: Gateway, key: str) -> None:
    async with client(gw, key, "/servers/shop/mcp", mode=PV) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        assert "catalog__search_products" in names and "fwd__point" in names
        assert "fwd__fail" not in names  # excluded
        with pytest.raises(MCPError):
            await c.call_tool("fwd__fail", {})  # excluded names cannot be called either
    async with client(gw, key, "/servers/merged/mcp", mode=PV) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        # prefix: false keeps names, except those both upstreams have: those get the prefix.
        # (both upstreams have every tool, so "sleep" became fwd__sleep/twin__sleep and the include drops it)
        assert names == {"fwd__point", "twin__point"}
        r = await c.call_tool("twin__point", {"x": 1})
        assert r.structured_content == {"x": 1, "y": 2}


async def test_handshake_era_forwards_sampling_and_elicitation(gw: Gateway, key: str) -> None:
    asked: list[str] = []

    async def sampling(context: Any, params: Any) -> CreateMessageResult:
        asked.append(params.messages[0].content.text)
        return CreateMessageResult(role="assistant", content=TextContent(type="text", text="forty-two"), model="m")

    async def elicitation(context: Any, params: Any) -> ElicitResult:
        return ElicitResult(action="accept", content={"name": "Ada"})

    # "fwd" is protocol auto (2026-07-28 upstream): handshake-era clients get a second,
    # handshake-era upstream connection, so its mid-call requests still reach them.
    async with client(gw, key, "/servers/fwd/mcp", mode="legacy", sampling_callback=sampling,
                      elicitation_callback=elicitation) as c:
        said = await c.call_tool("ask_llm", {"prompt": "meaning of life?"})
        assert said.content[0].text == "model said: forty-two"  # type: ignore[union-attr]
        assert asked == ["meaning of life?"]
        hello = await c.call_tool("ask_user", {})
        assert hello.content[0].text == "hello Ada"  # type: ignore[union-attr]
    # A 2026-07-28 upstream asking for input (input_required): the gateway asks this
    # handshake-era client itself and retries upstream with the answer.
    async with client(gw, key, "/servers/new/mcp", mode="legacy", elicitation_callback=elicitation) as c:
        confirmed = await c.call_tool("confirm", {})
        assert confirmed.content[0].text == "state=round-1 answers=['sure']"  # type: ignore[union-attr]


def test_modern_input_required_passes_through(gw: Gateway, key: str) -> None:
    first = modern(gw, key, "/servers/fwd/mcp", "tools/call", {"name": "confirm", "arguments": {}}, "confirm").json()
    result = first["result"]
    assert result["resultType"] == "input_required" and "sure" in result["inputRequests"]
    retry = {"name": "confirm", "arguments": {}, "requestState": result["requestState"],
             "inputResponses": {"sure": {"action": "accept", "content": {"ok": True}}}}
    second = modern(gw, key, "/servers/fwd/mcp", "tools/call", retry, "confirm").json()
    assert second["result"]["content"][0]["text"] == "state=round-1 answers=['sure']"


def test_auth_scopes_and_tenants(gw: Gateway, key: str) -> None:
    r = modern(gw, None, "/mcp", "tools/list", {})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert modern(gw, "tm_not-a-real-key", "/mcp", "tools/list", {}).status_code == 401
    chat_only = gw.key("default", "chat")
    assert modern(gw, chat_only, "/mcp", "tools/list", {}).status_code == 403
    acme = gw.key("acme", "mcp")
    tools = {t["name"] for t in modern(gw, acme, "/mcp", "tools/list", {}).json()["result"]["tools"]}
    assert tools and all(t.startswith("pricing__") for t in tools)  # acme sees only its own servers
    assert modern(gw, acme, "/servers/catalog/mcp", "tools/list", {}).status_code == 404
    # A browser page from elsewhere cannot drive the gateway (DNS rebinding / CSRF).
    bad = httpx.post(gw.url + "/mcp", headers={"origin": "http://evil.example", "authorization": f"Bearer {key}"},
                     json={})
    assert bad.status_code == 403
    assert httpx.get(gw.url + "/healthz").status_code == 200  # health needs no key


def test_bad_input_gets_json_rpc_errors(gw: Gateway, key: str) -> None:
    h = {"authorization": f"Bearer {key}", "content-type": "application/json",
         "accept": "application/json, text/event-stream", "mcp-protocol-version": PV, "mcp-method": "tools/list"}
    r = httpx.post(gw.url + "/mcp", headers=h, content=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["code"] == -32700
    r = httpx.post(gw.url + "/mcp", headers=h, content=b"[1, 2]")
    assert r.status_code == 400 and r.json()["error"]["code"] == -32600
    # The body's tool name must match the Mcp-Name header (here absent): the header-mismatch error.
    r = modern(gw, key, "/mcp", "tools/call", {"name": 5}, None)
    assert r.status_code == 400 and r.json()["error"]["code"] == -32020
    # Name and header agree but the arguments are no object: invalid params.
    r = modern(gw, key, "/mcp", "tools/call", {"name": "fwd__point", "arguments": "x"}, "fwd__point")
    assert r.status_code == 400 and r.json()["error"]["code"] == -32602
    big = b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"pad":"' + b"x" * (5 * 1024 * 1024) + b'"}}'
    assert httpx.post(gw.url + "/mcp", headers=h, content=big).status_code == 413
    # Still serving after all that.
    assert modern(gw, key, "/mcp", "tools/list", {}).status_code == 200


def test_mirrored_param_headers_must_match_the_body(gw: Gateway, key: str) -> None:
    """SEP-2243 at the gateway: a tool's mirrored argument must come with a matching Mcp-Param-*
    header; a missing or contradicting one is refused (-32020), a matching one is served."""
    params = {"name": "new__regional", "arguments": {"region": "eu"}}
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {**params, "_meta": ENV}}

    def post(region: str | None) -> dict[str, Any]:
        headers = {"accept": "application/json, text/event-stream", "content-type": "application/json",
                   "mcp-protocol-version": PV, "mcp-method": "tools/call", "mcp-name": "new__regional",
                   "authorization": f"Bearer {key}"}
        if region is not None:
            headers["mcp-param-region"] = region
        reply: dict[str, Any] = httpx.post(gw.url + "/mcp", headers=headers, json=body, timeout=30).json()
        return reply

    for _ in range(2):  # the tool's "mirrors headers" verdict is cached after the first call
        assert post("eu")["result"]["content"][0]["text"] == "served from eu"
        for region in ("us", None):
            refused = post(region)
            assert refused["error"]["code"] == -32020 and "Mcp-Param-Region" in refused["error"]["message"]
        point = modern(gw, key, "/mcp", "tools/call", {"name": "new__point", "arguments": {"x": 1}},
                       name="new__point")
        assert point.json()["result"]["structuredContent"] == {"x": 1, "y": 2}  # no mirrored arguments


def test_legacy_session_survives_another_worker() -> None:
    # Two workers share the secret through the store; here two codecs stand in for them.
    a = SealedSessions(b"s" * 32, "default", max_age=60)
    b = SealedSessions(b"s" * 32, "default", max_age=60)
    msg = {"params": {"protocolVersion": "2025-06-18", "capabilities": {"sampling": {}, "x": 1}}}
    sid = a.seal(msg, {})
    conn = b.verify(sid)
    assert conn is not None and conn.version == "2025-06-18" and conn.client_caps == {"sampling": {}}
    assert SealedSessions(b"s" * 32, "acme", 60).verify(sid) is None  # another tenant
    assert SealedSessions(b"t" * 32, "default", 60).verify(sid) is None  # another secret
    tampered = sid[:-1] + ("A" if sid[-1] != "A" else "B")  # always differs (a MAC may end in any pair)
    assert b.verify(tampered) is None  # tampered
    assert SealedSessions(b"s" * 32, "default", max_age=-1).verify(sid) is None  # expired


def test_legacy_sessions_across_real_workers(tmp_path: Path, upstream: ServerProcess) -> None:
    config = {"servers": {"fwd": {"transport": "http", "url": f"http://127.0.0.1:{upstream.port}/mcp"}}}
    g = Gateway(tmp_path, config, workers=2).start()
    try:
        k = g.key("default", "mcp")
        h = {"authorization": f"Bearer {k}", "content-type": "application/json",
             "accept": "application/json, text/event-stream"}
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
        r = httpx.post(g.url + "/mcp", headers=h, json=init)
        sid = r.headers["mcp-session-id"]
        h["mcp-session-id"] = sid
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "fwd__point", "arguments": {"x": 2}}}
        # Fresh connections land on either worker; every one must know the session. /healthz names the
        # worker (its pid) that holds the connection, so the session is shown to work on both of them.
        workers: set[int] = set()
        for _ in range(60):
            with httpx.Client() as fresh:
                worker = fresh.get(g.url + "/healthz").json()["worker"]
                out = fresh.post(g.url + "/mcp", headers=h, json=call)
            assert out.status_code == 200, (worker, out.text)
            assert out.json()["result"]["structuredContent"] == {"x": 2, "y": 4}
            workers.add(worker)
            if len(workers) == 2:
                break
        assert len(workers) == 2, f"60 fresh connections all landed on worker {workers}"
        forged = sid[:-3] + ("AAA" if not sid.endswith("AAA") else "BBB")
        assert httpx.post(g.url + "/mcp", headers={**h, "mcp-session-id": forged}, json=call).status_code == 404
        # Ended on one worker: the others learn it from the store (eventually, ~0.2 s).
        assert httpx.delete(g.url + "/mcp", headers=h).status_code == 200
        deadline = time.monotonic() + 20
        statuses: list[int] = []
        while time.monotonic() < deadline:
            with httpx.Client() as fresh:
                statuses.append(fresh.post(g.url + "/mcp", headers=h, json=call).status_code)
            if statuses[-6:] == [404] * 6:
                break
            time.sleep(0.1)
        assert statuses[-6:] == [404] * 6, statuses
    finally:
        g.stop()


@pytest.mark.parametrize("transport", ["sse", "websocket", "http"])
async def test_toolmesh_hub_as_client_on_every_transport(gw: Gateway, key: str, transport: str) -> None:
    base = gw.url.replace("http://", "ws://") if transport == "websocket" else gw.url
    path = {"sse": "/servers/fwd/sse", "websocket": "/servers/fwd/ws", "http": "/servers/fwd/mcp"}[transport]
    cfg = ServerConfig(name="gw", transport=transport, url=base + path,  # type: ignore[arg-type]
                       headers={"Authorization": f"Bearer {key}"})
    async with Hub() as hub:
        await hub.register(cfg)
        result = await hub.call_tool("gw", "point", {"x": 5})
        assert result.structured == {"x": 5, "y": 10}


@pytest.mark.parametrize("path", ["/servers/fwd/mcp", "/servers/passes/mcp"])
def test_caller_credentials_reach_upstream_only_when_configured(gw: Gateway, key: str, path: str) -> None:
    headers = {"authorization": f"Bearer {key}", "x-user-token": "user-secret", "cookie": "sid=1",
               "accept": "application/json, text/event-stream", "content-type": "application/json",
               "mcp-protocol-version": PV, "mcp-method": "tools/call", "mcp-name": "headers_seen"}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "headers_seen", "arguments": {}, "_meta": ENV}}
    seen = httpx.post(gw.url + path, headers=headers, json=body, timeout=30).json()["result"]["structuredContent"]
    assert seen["authorization"] is None and seen["cookie"] is None  # the gateway key never leaves
    expected = "user-secret" if path == "/servers/passes/mcp" else None
    assert seen["x-user-token"] == expected


def test_tool_calls_are_audited(gw: Gateway, key: str) -> None:
    import hashlib

    import orjson

    args = {"x": 11}
    r = modern(gw, key, "/servers/fwd/mcp", "tools/call", {"name": "point", "arguments": args}, "point")
    assert r.json()["result"]["structuredContent"] == {"x": 11, "y": 22}
    modern(gw, key, "/servers/fwd/mcp", "tools/call", {"name": "fail", "arguments": {"message": "x"}}, "fail")
    digest = hashlib.sha256(orjson.dumps(args, option=orjson.OPT_SORT_KEYS)).hexdigest()
    deadline = time.monotonic() + 20
    while True:  # rows are written in batches: poll until they land
        entries = httpx.get(gw.url + "/admin/audit", headers={"authorization": f"Bearer {key}"},
                            params={"limit": 200}).json()["entries"]
        point = [e for e in entries if e["tool"] == "point" and e["arguments_hash"] == digest]
        failed = [e for e in entries if e["tool"] == "fail"]
        if (point and failed) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert point and point[0]["server"] == "fwd" and point[0]["status"] == "ok" and point[0]["tenant"] == "default"
    assert point[0]["latency_ms"] > 0 and point[0]["user"]
    assert failed and failed[0]["status"] == "tool_error"


async def test_cancellation_reaches_through_the_gateway(gw: Gateway, key: str) -> None:
    import anyio

    async with client(gw, key, "/servers/fwd/mcp", mode="legacy") as c:
        # The SDK client sends notifications/cancelled when the caller gives up; the gateway
        # cancels its upstream call and the session stays usable.
        with anyio.move_on_after(0.5) as scope:
            await c.call_tool("sleep", {"seconds": 30})
        assert scope.cancelled_caught
        again = await c.call_tool("point", {"x": 3})
        assert again.structured_content == {"x": 3, "y": 6}
    deadline = time.monotonic() + 20
    rows: list[dict[str, Any]] = []
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {key}"}) as http:
        while time.monotonic() < deadline:
            entries = (await http.get(gw.url + "/admin/audit", params={"limit": 200})).json()["entries"]
            rows = [e for e in entries if e["tool"] == "sleep"]
            if rows:
                break
            await anyio.sleep(0.1)
    # The upstream call ended long before the tool's 30 s: it was cancelled, not awaited.
    assert rows and rows[0]["status"] == "cancelled" and rows[0]["latency_ms"] < 29_000
