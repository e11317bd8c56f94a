"""The five demo servers as real subprocesses, driven by the official SDK client over stdio and HTTP."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters

from conftest import ServerProcess, free_port
from toolmesh.servers.demo import NAMES

EXPECTED_TOOLS = {
    "catalog": {"get_product_info", "search_products"},
    "inventory": {"check_stock", "store_pickup"},
    "pricing": {"calculate_discount", "list_promotions"},
    "users": {"get_profile"},
    "logistics": {"track_shipment", "get_order"},
}
# One call per server and a fact of the data set the answer must show.
CALLS: dict[str, tuple[str, dict[str, Any], str, Any]] = {
    "catalog": ("get_product_info", {"sku": "SKU-1001"}, "price", 5999.0),
    "inventory": ("check_stock", {"sku": "SKU-1001", "city": "广州"}, "total_quantity", 243),
    "pricing": (
        "calculate_discount",
        {"sku": "SKU-1001", "user_level": "gold", "coupon": "SAVE20", "city": "广州"},
        "final_price",
        5294.1,
    ),
    "users": ("get_profile", {"user_id": "U123456"}, "level", "gold"),
    "logistics": ("track_shipment", {"tracking_number": "SF1234567890"}, "status", "delayed"),
}


def consecutive_free_ports(n: int) -> int:
    """The first of ``n`` consecutive loopback ports that are free right now."""
    for _ in range(100):
        first = free_port()
        if first + n > 65536:
            continue
        socks = []
        try:
            for p in range(first, first + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return first
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("toolmesh-home")


def stdio(name: str, home: Path) -> Client:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "toolmesh.servers.demo", name], env={"TOOLMESH_HOME": str(home)}
    )
    return Client(params, mode="auto")


@pytest.mark.parametrize("name", NAMES)
async def test_stdio_server_lists_and_calls_tools(name: str, home: Path) -> None:
    async with stdio(name, home) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == EXPECTED_TOOLS[name]
        for tool in tools.values():
            assert tool.description and tool.input_schema["type"] == "object"
            # lookups in a read-only data set: the Hub may coalesce and retry them
            assert tool.annotations is not None and tool.annotations.read_only_hint is True
            assert tool.annotations.idempotent_hint is True
        tool, args, key, expected = CALLS[name]
        result = await client.call_tool(tool, args)
        assert not result.is_error
        assert result.structured_content is not None and result.structured_content[key] == expected


async def test_stdio_errors_are_clear_tool_errors(home: Path) -> None:
    async with stdio("inventory", home) as client:
        r = await client.call_tool("check_stock", {"sku": "SKU-9999", "city": "广州"})
        assert r.is_error and "Unknown SKU 'SKU-9999'" in r.content[0].text  # type: ignore[union-attr]
        r = await client.call_tool("check_stock", {"sku": "SKU-1001", "city": "Atlantis"})
        assert r.is_error and "Unknown city 'Atlantis'" in r.content[0].text  # type: ignore[union-attr]
        zh = await client.call_tool("check_stock", {"sku": "SKU-1001", "city": "广州"})
        en = await client.call_tool("check_stock", {"sku": "SKU-1001", "city": "guangzhou"})
        assert zh.structured_content is not None and en.structured_content is not None
        assert zh.structured_content["warehouses"] == en.structured_content["warehouses"]
        assert [w["quantity"] for w in zh.structured_content["warehouses"]] == [236, 7, 0]
    async with stdio("pricing", home) as client:
        r = await client.call_tool("calculate_discount", {"sku": "SKU-1001", "coupon": "NOPE"})
        assert r.is_error and "Invalid coupon 'NOPE'" in r.content[0].text  # type: ignore[union-attr]


async def test_catalog_resources_and_prompt(home: Path) -> None:
    async with stdio("catalog", home) as client:
        uris = [str(r.uri) for r in (await client.list_resources()).resources]
        assert "demo://catalog/categories" in uris
        text = (await client.read_resource("demo://catalog/categories")).contents[0].text  # type: ignore[union-attr]
        assert '"phones"' in text and "手机" in text
        product = (await client.read_resource("demo://catalog/products/SKU-1001")).contents[0]
        assert "Lumina X9 Pro" in product.text  # type: ignore[union-attr]
        prompt = await client.get_prompt("customer_service", {"user_id": "U123456"})
        assert "U123456" in prompt.messages[0].content.text  # type: ignore[union-attr]


async def test_http_server(home: Path) -> None:
    port = free_port()
    sp = ServerProcess(
        [sys.executable, "-m", "toolmesh.servers.demo", "pricing", "--transport", "http", "--port", str(port)],
        port,
        env={"TOOLMESH_HOME": str(home)},
    ).start()
    try:
        async with Client(f"http://127.0.0.1:{port}/mcp", mode="auto") as client:
            assert {t.name for t in (await client.list_tools()).tools} == EXPECTED_TOOLS["pricing"]
            r = await client.call_tool("calculate_discount", CALLS["pricing"][1])
            assert r.structured_content is not None and r.structured_content["final_price"] == 5294.1
            promos = await client.call_tool("list_promotions", {"city": "Shenzhen"})
            assert promos.structured_content is not None
            assert "GD-REGIONAL" in [c["id"] for c in promos.structured_content["campaigns"]]
    finally:
        sp.stop()


async def test_all_servers_on_consecutive_ports(home: Path) -> None:
    port = consecutive_free_ports(len(NAMES))
    sp = ServerProcess(
        [sys.executable, "-m", "toolmesh.servers.demo", "all", "--transport", "http", "--port", str(port)],
        port + 4,
        env={"TOOLMESH_HOME": str(home)},
    ).start()
    try:
        for i, name in enumerate(NAMES):
            # the handshake era here; the other tests negotiate 2026-07-28
            async with Client(f"http://127.0.0.1:{port + i}/mcp", mode="legacy") as client:
                tool, args, key, expected = CALLS[name]
                r = await client.call_tool(tool, args)
                assert r.structured_content is not None and r.structured_content[key] == expected
    finally:
        sp.stop()


async def test_search_pickup_and_orders(home: Path) -> None:
    async with stdio("catalog", home) as client:
        r = await client.call_tool("search_products", {"query": "Lumina 手机", "max_price": 4000, "limit": 3})
        found = r.structured_content
        assert found is not None and found["category"] == "phones" and 3 == found["count"] <= found["total"]
        assert all(p["brand"] == "Lumina" and p["price"] <= 4000 for p in found["results"])
        ratings = [p["rating"] for p in found["results"]]
        assert ratings == sorted(ratings, reverse=True)
        r = await client.call_tool("search_products", {"query": "", "category": "tablet"})
        assert r.structured_content is not None and r.structured_content["total"] == 30
        r = await client.call_tool("search_products", {"category": "spaceships"})
        assert r.is_error and "Unknown category" in r.content[0].text  # type: ignore[union-attr]
    async with stdio("inventory", home) as client:
        r = await client.call_tool("store_pickup", {"sku": "SKU-1001", "city": "Guangzhou"})
        pickup = r.structured_content
        assert pickup is not None and pickup["available_stores"] == 2
        assert [s["pickup_available"] for s in pickup["stores"]] == [True, True, False]
        r = await client.call_tool("check_stock", {"sku": "SKU-1001", "city": "广州", "warehouse": "广州番禺仓"})
        one = r.structured_content
        assert one is not None and one["total_quantity"] == 0 and one["status"] == "out_of_stock"
        assert one["warehouses"][0]["restock_date"] == "2026-11-23"
    async with stdio("logistics", home) as client:
        r = await client.call_tool("get_order", {"order_id": "ORD-100001"})
        order = r.structured_content
        assert order is not None and order["user_id"] == "U123456" and order["tracking_number"] == "SF1234567890"
        assert order["items"] and order["paid"] == round(order["subtotal"] - order["discount"], 2)
        r = await client.call_tool("track_shipment", {"tracking_number": "XX000"})
        assert r.is_error and "Unknown tracking number" in r.content[0].text  # type: ignore[union-attr]
