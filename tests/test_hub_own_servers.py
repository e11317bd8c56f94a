"""The Hub against toolmesh's own server frontends (demo servers) over every network transport."""

from __future__ import annotations

import sys

import pytest

from conftest import ServerProcess, free_port
from toolmesh.hub import Hub, ServerConfig

PATHS = {"http": "http://127.0.0.1:{port}/mcp", "sse": "http://127.0.0.1:{port}/sse",
         "websocket": "ws://127.0.0.1:{port}/ws"}


@pytest.fixture(params=["http", "sse", "websocket"])
def demo_server(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    transport = request.param
    port = free_port()
    sp = ServerProcess([sys.executable, "-m", "toolmesh.servers.demo", "inventory", "--transport", transport,
                        "--port", str(port)], port).start()
    yield transport, PATHS[transport].format(port=port)
    sp.stop()


@pytest.mark.parametrize("protocol", ["auto", "2025-11-25", "2026-07-28"])
async def test_hub_on_toolmesh_server(demo_server: tuple[str, str], protocol: str) -> None:
    transport, url = demo_server
    async with Hub() as hub:
        await hub.register(ServerConfig(name="inv", url=url, protocol=protocol))  # type: ignore[arg-type]
        assert hub.server("inv").config.transport == transport
        r = await hub.call_tool("inv", "check_stock", {"sku": "SKU-1001", "city": "Guangzhou"})
        assert r.ok and r.structured["city_zh"] == "广州"
        same = await hub.call_tool("inv", "check_stock", {"sku": "SKU-1001", "city": "广州"})
        assert same.structured["total_quantity"] == r.structured["total_quantity"]
        bad = await hub.call_tool("inv", "check_stock", {"sku": "SKU-1001", "city": "Atlantis"})
        assert bad.is_error and "Atlantis" in (bad.error or "")
        conn = hub.server("inv").conn
        assert conn is not None
        # toolmesh's server answers server/discover on every transport, SSE included: `auto` takes the newest.
        expected = {"auto": "2026-07-28"}.get(protocol, protocol)
        assert conn.identity.protocol == expected
        batch = await hub.batch_call([{"id": str(i), "name": "inv__check_stock",
                                       "arguments": {"sku": f"SKU-{1001 + i}", "city": "Shanghai"}} for i in range(50)])
        assert list(batch) == [str(i) for i in range(50)] and all(b.ok for b in batch.values())


async def test_toolserver_listing_ttl_is_honoured() -> None:
    """ToolServer advertises ttlMs for tools/list; the Hub's catalogue then serves repeats from cache."""
    port = free_port()
    sp = ServerProcess([sys.executable, "-m", "toolmesh.servers.demo", "users", "--transport", "http",
                        "--port", str(port)], port).start()
    try:
        async with Hub() as hub:
            await hub.register(ServerConfig(name="u", url=f"http://127.0.0.1:{port}/mcp", protocol="2026-07-28"))
            for _ in range(5):
                await hub.list_tools()
            stats = hub.server("u").catalog.stats()
            assert stats["misses"] == 1 and stats["hits"] == 4
    finally:
        sp.stop()
