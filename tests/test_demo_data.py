"""The bundled demo data set: reproducible, and the answers the docs promise (pure logic, no server)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from mcp.server.mcpserver.exceptions import ToolError

from toolmesh.hub.config import ServerConfig
from toolmesh.servers.demo import NAMES, demo_config
from toolmesh.servers.demo.data import SQL_PATH, DemoData, _connect, get_data, normalize_sku
from toolmesh.servers.demo.generate import generate_sql
from toolmesh.servers.demo.pricing import promotions, quote


@pytest.fixture(scope="module")
def data() -> DemoData:
    return get_data()


def test_generator_reproduces_demo_sql_byte_for_byte() -> None:
    assert generate_sql().encode("utf-8") == SQL_PATH.read_bytes()
    assert SQL_PATH.stat().st_size < 1_000_000


def test_table_sizes_and_names(data: DemoData) -> None:
    count = {
        t: data.conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
        for t in ("products", "users", "warehouses", "stock", "stores", "orders", "shipments")
    }
    assert count["products"] == 300 and count["users"] == 300
    assert count["stock"] == 300 * count["warehouses"]
    assert data.conn.execute("SELECT MIN(sku), MAX(sku) FROM products").fetchone()[:] == ("SKU-1001", "SKU-1300")
    assert data.conn.execute("SELECT MIN(user_id), MAX(user_id) FROM users").fetchone()[:] == ("U123456", "U123755")
    per_city = data.conn.execute("SELECT city_id, COUNT(*) FROM warehouses GROUP BY city_id").fetchall()
    assert len(per_city) == 11 and all(2 <= n <= 3 for _, n in per_city)
    levels = {r[0] for r in data.conn.execute("SELECT DISTINCT level FROM users")}
    assert levels == {"regular", "silver", "gold", "vip"}
    stock = [r[0] for r in data.conn.execute("SELECT quantity FROM stock")]
    assert 0 in stock and any(0 < q < 10 for q in stock)


def test_flagship_product(data: DemoData) -> None:
    p = data.product("sku-1001")
    assert p["name"] == "Lumina X9 Pro 5G (12GB+256GB, Obsidian Black)"
    assert p["name_zh"] == "流明 X9 Pro 5G 12GB+256GB 曜石黑"
    assert (p["brand"], p["category"], p["price"], p["rating"]) == ("Lumina", "phones", 5999.0, 4.8)
    assert normalize_sku(" 1001 ") == normalize_sku("sku1001") == "SKU-1001"
    with pytest.raises(ToolError, match="Unknown SKU 'SKU-9999'"):
        data.product("SKU-9999")


def test_city_names_in_chinese_or_english(data: DemoData) -> None:
    for name in ("广州", "广州市", "Guangzhou", "GUANGZHOU", "guangzhou", "GZ"):
        assert data.city(name)["id"] == "guangzhou"
    for name in ("西安", "Xi'an", "xian", "XI'AN"):
        assert data.city(name)["province_zh"] == "陕西"
    assert data.city("深圳")["province_zh"] == "广东"
    with pytest.raises(ToolError, match="is a province"):
        data.city("广东")
    with pytest.raises(ToolError, match="Unknown city 'Atlantis'"):
        data.city("Atlantis")
    assert data.region("Guangdong")[1] == data.region("佛山")[1] == "广东"


def test_documented_price_gold_save20_guangzhou(data: DemoData) -> None:
    q = quote(data, "SKU-1001", "gold", "SAVE20", "广州", 1)
    assert [(d["id"], d["amount"]) for d in q["discounts"]] == [
        ("gold", 299.95),
        ("PEAK-PHONES", 284.95),
        ("GD-REGIONAL", 100.0),
        ("SAVE20", 20.0),
    ]
    assert (q["list_price"], q["final_price"], q["total_discount"]) == (5999.0, 5294.1, 704.9)
    assert "Final price ¥5,294.10" in q["explanation"]
    assert quote(data, "SKU-1001", "gold", "save20", "Guangzhou", 1)["final_price"] == 5294.1
    assert q["points_earned"] == 7941
    assert quote(data, "SKU-1001", "gold", "SAVE20", "北京", 1)["final_price"] == 5394.1


def test_regional_campaign_needs_a_guangdong_city(data: DemoData) -> None:
    beijing = quote(data, "SKU-1001", "regular", None, "北京", 1)
    assert [d["id"] for d in beijing["discounts"]] == ["PEAK-PHONES"] and beijing["final_price"] == 5699.05
    nocity = quote(data, "SKU-1001", "regular", None, None, 1)
    assert nocity["final_price"] == 5699.05
    assert [s["id"] for s in nocity["not_applied"]] == ["GD-REGIONAL"]
    province = quote(data, "SKU-1001", "regular", None, "广东", 1)
    assert province["final_price"] == 5599.05 and province["city"] is None


def test_coupon_rules(data: DemoData) -> None:
    with pytest.raises(ToolError, match="Invalid coupon 'BOGUS'"):
        quote(data, "SKU-1001", "gold", "BOGUS", None, 1)
    with pytest.raises(ToolError, match="expired on 2026-08-31"):
        quote(data, "SKU-1001", "gold", "SUMMER15", None, 1)
    with pytest.raises(ToolError, match="only for gold/vip members"):
        quote(data, "SKU-1001", "silver", "GOLD50", None, 1)
    welcome = quote(data, "SKU-1001", "regular", "WELCOME10", None, 1)
    assert welcome["discounts"][-1]["amount"] == 100.0  # 10 % capped at 100 CNY
    cheap = data.conn.execute("SELECT sku, price FROM products WHERE price < 100 ORDER BY sku LIMIT 1").fetchone()
    q = quote(data, cheap["sku"], "regular", "SAVE20", None, 1)
    assert q["final_price"] == cheap["price"] and q["not_applied"][0]["id"] == "SAVE20"
    assert quote(data, cheap["sku"], "regular", "SAVE20", None, 5)["final_price"] == round(cheap["price"] * 5 - 20, 2)


def test_promotions_filter_by_region(data: DemoData) -> None:
    gd = promotions(data, "深圳", None)
    assert "GD-REGIONAL" in [c["id"] for c in gd["campaigns"]]
    bj = promotions(data, "Beijing", "phones")
    assert [c["id"] for c in bj["campaigns"]] == ["PEAK-PHONES"]
    assert "SUMMER15" not in [c["code"] for c in bj["coupons"]]
    assert [c["id"] for c in promotions(data, "成都", None)["upcoming_campaigns"]] == ["SC-WEARABLES"]


def test_cache_falls_back_to_memory_when_home_is_unwritable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("TOOLMESH_HOME", str(blocker))
    mem = DemoData(_connect(SQL_PATH.read_bytes()))
    assert mem.product("SKU-1001")["price"] == 5999.0
    monkeypatch.setenv("TOOLMESH_HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "demo").mkdir(parents=True)
    (tmp_path / "home" / "demo" / "demo-0000000000000000.db").write_bytes(b"stale")
    cached = DemoData(_connect(SQL_PATH.read_bytes()))
    files = list((tmp_path / "home" / "demo").iterdir())
    assert len(files) == 1 and files[0].suffix == ".db"
    assert cached.product("SKU-1001")["price"] == 5999.0
    with pytest.raises(sqlite3.OperationalError):  # opened read-only
        cached.conn.execute("DELETE FROM products")


def test_demo_config_validates_as_server_configs() -> None:
    for transport, kind in (("stdio", "stdio"), ("http", "http"), ("sse", "sse"), ("websocket", "websocket")):
        servers = demo_config(transport)["servers"]
        assert list(servers) == list(NAMES)
        configs = [ServerConfig(name=n, **entry) for n, entry in servers.items()]
        assert {c.transport for c in configs} == {kind}
    assert demo_config("stdio")["servers"]["catalog"]["args"] == ["-m", "toolmesh.servers.demo", "catalog"]
    assert demo_config("http", port=9000)["servers"]["logistics"]["url"] == "http://127.0.0.1:9004/mcp"
    with pytest.raises(ValueError):
        demo_config("carrier-pigeon")
