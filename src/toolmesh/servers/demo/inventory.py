"""Demo ``inventory`` server: stock per city and warehouse, and in-store pickup."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from toolmesh.servers.demo.base import READ_ONLY, new_server
from toolmesh.servers.demo.data import get_data, norm

#: Quantities below this (but above zero) are reported as ``low_stock``.
LOW_STOCK = 10

_SKU = Annotated[str, Field(description="Product SKU, e.g. 'SKU-1001'")]
_CITY = Annotated[str, Field(description="City in Chinese or English, e.g. '广州' or 'Guangzhou' (case-insensitive)")]


def _status(qty: int) -> str:
    return "out_of_stock" if qty <= 0 else "low_stock" if qty < LOW_STOCK else "in_stock"


def create_server() -> MCPServer[Any]:
    """The ``inventory`` demo server."""
    server = new_server(
        "inventory",
        "MeshMart stock levels per city and warehouse (11 cities, 2-3 warehouses each) and store pickup.",
    )

    @server.tool(title="Check stock", annotations=READ_ONLY)
    async def check_stock(
        sku: _SKU,
        city: _CITY,
        warehouse: Annotated[
            str | None, Field(description="Optional warehouse id or name in that city, e.g. 'WH-GZ-01' or '广州白云仓'")
        ] = None,
    ) -> dict[str, Any]:
        """Check how many units of a product are in stock in a city, per warehouse. Each warehouse
        reports quantity and status (in_stock, low_stock under 10 units, out_of_stock with the expected
        restock date); the totals cover the whole city, or only the chosen warehouse."""
        data = get_data()
        product = data.product(sku)
        c = data.city(city)
        rows = data.conn.execute(
            "SELECT w.id, w.name, w.name_zh, s.quantity, s.restock_date FROM warehouses w "
            "JOIN stock s ON s.sku = ? AND s.warehouse_id = w.id WHERE w.city_id = ? ORDER BY w.id",
            (product["sku"], c["id"]),
        ).fetchall()
        if warehouse is not None:
            key = norm(warehouse)
            rows = [r for r in rows if key in (norm(r["id"]), norm(r["name"]), norm(r["name_zh"]))]
            if not rows:
                known = ", ".join(
                    f"{w['id']} ({w['name_zh']})" for w in data.warehouses.values() if w["city_id"] == c["id"]
                )
                raise ToolError(
                    f"No warehouse {warehouse!r} in {c['name_zh']} ({c['name']}). Warehouses there: {known}"
                )
        warehouses = [
            {
                "warehouse_id": r["id"],
                "name": r["name"],
                "name_zh": r["name_zh"],
                "quantity": r["quantity"],
                "status": _status(r["quantity"]),
                "restock_date": r["restock_date"],
            }
            for r in rows
        ]
        total = sum(w["quantity"] for w in warehouses)
        return {
            "sku": product["sku"],
            "product": product["name"],
            "product_zh": product["name_zh"],
            "city": c["name"],
            "city_zh": c["name_zh"],
            "province_zh": c["province_zh"],
            "total_quantity": total,
            "status": _status(total),
            "warehouses": warehouses,
            "low_stock_threshold": LOW_STOCK,
            "as_of": data.demo_now,
        }

    @server.tool(title="Store pickup", annotations=READ_ONLY)
    async def store_pickup(sku: _SKU, city: _CITY) -> dict[str, Any]:
        """List MeshMart stores in a city and whether the product can be picked up there today
        (the store offers pickup and its supplying warehouse has stock; ready within 2 hours)."""
        data = get_data()
        product = data.product(sku)
        c = data.city(city)
        rows = data.conn.execute(
            "SELECT st.id, st.name, st.name_zh, st.address, st.hours, st.pickup, st.warehouse_id, s.quantity, "
            "s.restock_date FROM stores st JOIN stock s ON s.sku = ? AND s.warehouse_id = st.warehouse_id "
            "WHERE st.city_id = ? ORDER BY st.id",
            (product["sku"], c["id"]),
        ).fetchall()
        stores = []
        for r in rows:
            available = bool(r["pickup"]) and r["quantity"] > 0
            if available:
                note = "Ready for pickup within 2 hours"
            elif not r["pickup"]:
                note = "This store does not offer pickup"
            else:
                note = f"Out of stock for pickup; restock expected {r['restock_date']}"
            stores.append(
                {
                    "store_id": r["id"],
                    "name": r["name"],
                    "name_zh": r["name_zh"],
                    "address": r["address"],
                    "hours": r["hours"],
                    "pickup_available": available,
                    "quantity": r["quantity"],
                    "note": note,
                }
            )
        return {
            "sku": product["sku"],
            "product": product["name"],
            "product_zh": product["name_zh"],
            "city": c["name"],
            "city_zh": c["name_zh"],
            "available_stores": sum(1 for s in stores if s["pickup_available"]),
            "stores": stores,
        }

    return server
