"""Demo ``users`` server: customer profiles (member level, home city, points, recent orders)."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from toolmesh.servers.demo.base import READ_ONLY, new_server
from toolmesh.servers.demo.data import get_data


def normalize_user_id(user_id: str) -> str:
    """'u123456', ' U123456 ', '123456' -> 'U123456'."""
    s = user_id.strip().upper()
    return f"U{s}" if s.isdigit() else s


def create_server() -> MCPServer[Any]:
    """The ``users`` demo server."""
    server = new_server("users", "MeshMart customer profiles: users U123456 ... U123755.")

    @server.tool(title="Get customer profile", annotations=READ_ONLY)
    async def get_profile(
        user_id: Annotated[str, Field(description="Customer id, e.g. 'U123456'")],
    ) -> dict[str, Any]:
        """Get a customer's profile: name, member level (regular/silver/gold/vip) and its benefits
        (discount percent, points multiplier, free shipping), home city and province, points balance,
        member-since date, masked contact details, and their three most recent orders."""
        data = get_data()
        uid = normalize_user_id(user_id)
        row = data.conn.execute("SELECT * FROM users WHERE user_id = ?", (uid,)).fetchone()
        if row is None:
            raise ToolError(f"Unknown user {user_id!r}: no such customer. User ids run from U123456 to U123755.")
        lv = data.levels[row["level"]]
        city = data.cities[row["city_id"]]
        orders = data.conn.execute(
            "SELECT order_id, created_at, status, paid, tracking_number, COUNT(*) OVER () AS n FROM orders "
            "WHERE user_id = ? ORDER BY created_at DESC LIMIT 3",
            (uid,),
        ).fetchall()
        return {
            "user_id": uid,
            "name": row["name"],
            "level": row["level"],
            "level_zh": lv["name_zh"],
            "level_discount_percent": lv["discount_percent"],
            "points_multiplier": lv["points_multiplier"],
            "free_shipping": bool(lv["free_shipping"]),
            "points": row["points"],
            "city": city["name"],
            "city_zh": city["name_zh"],
            "province": city["province"],
            "province_zh": city["province_zh"],
            "member_since": row["member_since"],
            "phone": row["phone"],
            "email": row["email"],
            "order_count": orders[0]["n"] if orders else 0,
            "recent_orders": [{k: o[k] for k in o.keys() if k != "n"} for o in orders],
        }

    return server
