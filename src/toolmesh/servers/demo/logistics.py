"""Demo ``logistics`` server: shipment tracking and order lookup."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from toolmesh.servers.demo.base import READ_ONLY, new_server
from toolmesh.servers.demo.data import get_data


def _clean(text: str) -> str:
    return "".join(ch for ch in text.upper() if ch.isalnum() or ch == "-").strip("-")


def create_server() -> MCPServer[Any]:
    """The ``logistics`` demo server."""
    server = new_server(
        "logistics",
        "MeshMart orders (ORD-100001 ... ORD-100240) and their shipments (SF Express, JD, YTO, EMS).",
    )

    @server.tool(title="Track shipment", annotations=READ_ONLY)
    async def track_shipment(
        tracking_number: Annotated[str, Field(description="Carrier tracking number, e.g. 'SF1234567890'")],
    ) -> dict[str, Any]:
        """Track a parcel: carrier, current status (picked_up, in_transit, delayed, out_for_delivery,
        delivered), origin warehouse, destination city, estimated delivery date, the latest event and the
        full event history (time, location, status, description), oldest first."""
        data = get_data()
        tn = _clean(tracking_number)
        row = data.conn.execute("SELECT * FROM shipments WHERE tracking_number = ?", (tn,)).fetchone()
        if row is None:
            raise ToolError(
                f"Unknown tracking number {tracking_number!r}: no such shipment "
                "(formats: SF + 10 digits, JD/YT + 13 digits, EMS like EA123456789CN)."
            )
        events = [
            dict(e)
            for e in data.conn.execute(
                "SELECT time, location, status, description FROM shipment_events WHERE tracking_number = ? "
                "ORDER BY seq",
                (tn,),
            )
        ]
        wh = data.warehouses[row["origin_warehouse"]]
        dest = data.cities[row["destination_city"]]
        return {
            "tracking_number": tn,
            "carrier": row["carrier"],
            "carrier_zh": row["carrier_zh"],
            "status": row["status"],
            "order_id": row["order_id"],
            "origin": {"warehouse_id": wh["id"], "name": wh["name"], "name_zh": wh["name_zh"]},
            "destination": {"city": dest["name"], "city_zh": dest["name_zh"]},
            "shipped_at": row["shipped_at"],
            "estimated_delivery": row["estimated_delivery"],
            "latest": events[-1] if events else None,
            "events": events,
        }

    @server.tool(title="Get order", annotations=READ_ONLY)
    async def get_order(
        order_id: Annotated[str, Field(description="Order id, e.g. 'ORD-100001' (also accepts '100001')")],
    ) -> dict[str, Any]:
        """Get an order: customer, date, status (pending_payment, paid, shipped, delivered, cancelled,
        refunded), items with unit prices, subtotal, member discount, amount paid and tracking number."""
        data = get_data()
        oid = _clean(order_id)
        if oid.isdigit():
            oid = f"ORD-{oid}"
        row = data.conn.execute("SELECT * FROM orders WHERE order_id = ?", (oid,)).fetchone()
        if row is None:
            raise ToolError(f"Unknown order {order_id!r}: no such order. Order ids run from ORD-100001 to ORD-100240.")
        items = [
            dict(i)
            for i in data.conn.execute(
                "SELECT i.sku, p.name, p.name_zh, i.quantity, i.unit_price FROM order_items i "
                "JOIN products p ON p.sku = i.sku WHERE i.order_id = ? ORDER BY i.line",
                (oid,),
            )
        ]
        out = dict(row)
        city = data.cities[out.pop("city_id")]
        out.update(city=city["name"], city_zh=city["name_zh"], items=items, currency="CNY")
        return out

    return server
