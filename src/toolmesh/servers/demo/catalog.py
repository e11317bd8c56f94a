"""Demo ``catalog`` server: product details and product search (plus a resource and a prompt)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from toolmesh.servers.demo.base import READ_ONLY, new_server
from toolmesh.servers.demo.data import get_data

_SUMMARY_COLS = "sku, name, name_zh, brand, category, price, rating, reviews"
_SEARCH_COLS = ("name", "name_zh", "brand", "brand_zh", "model", "description", "description_zh")

SYSTEM_PROMPT = """\
You are MeshMart's (网格商城) customer-service assistant during the year-end sales peak.
Answer in the customer's language (Chinese or English), briefly and accurately.
- Product questions: use catalog.get_product_info / catalog.search_products.
- "Is it in stock?": inventory.check_stock for the customer's city; offer inventory.store_pickup.
- Prices and offers: pricing.calculate_discount with the customer's level, city and coupon;
  pricing.list_promotions lists current campaigns (e.g. the 广东 regional campaign).
- Members: users.get_profile. Deliveries: logistics.track_shipment / logistics.get_order.
Call independent tools in parallel. Never invent stock levels, prices or discounts: quote tool results.
"""


def _product(row: Any) -> dict[str, Any]:
    data = get_data()
    out = dict(row)
    out["specs"] = json.loads(out["specs"])
    out["currency"] = "CNY"
    out["category_zh"] = data.category_by_id[out["category"]]["name_zh"]
    return out


def create_server() -> MCPServer[Any]:
    """The ``catalog`` demo server."""
    server = new_server(
        "catalog",
        "MeshMart product catalogue: 300 products (SKU-1001 ... SKU-1300), prices in CNY.",
    )

    @server.tool(title="Get product details", annotations=READ_ONLY)
    async def get_product_info(
        sku: Annotated[str, Field(description="Product SKU, e.g. 'SKU-1001' (also accepts '1001')")],
    ) -> dict[str, Any]:
        """Get one product's full details: name (English and Chinese), brand, category, list price in CNY,
        specs, rating, number of reviews, launch date and description. Unknown SKU -> error."""
        return _product(get_data().product(sku))

    @server.tool(title="Search products", annotations=READ_ONLY)
    async def search_products(
        query: Annotated[
            str,
            Field(
                description="Words to match in name, brand, model or description "
                "(Chinese or English); empty matches everything"
            ),
        ] = "",
        category: Annotated[
            str | None,
            Field(
                description="Category id or name: phones/手机, laptops/笔记本电脑, "
                "tablets, headphones, wearables, accessories, "
                "smart_home"
            ),
        ] = None,
        max_price: Annotated[float | None, Field(description="Highest list price in CNY", gt=0)] = None,
        limit: Annotated[int, Field(description="Maximum number of results", ge=1, le=50)] = 10,
    ) -> dict[str, Any]:
        """Search the product catalogue. Every word of the query must match (name, brand, model or
        description, case-insensitive); results are sorted by rating, best first. Returns the total
        number of matches and up to `limit` product summaries (sku, names, brand, category, price, rating)."""
        data = get_data()
        where: list[str] = []
        params: list[Any] = []
        cat = data.category(category) if category else None
        for word in query.split():
            if cat is None and (maybe := data.find_category(word)) is not None:
                cat = maybe  # "手机" / "phones" as a word narrows the category
                continue
            where.append("(" + " OR ".join(f"{col} LIKE ?" for col in _SEARCH_COLS) + ")")
            params.extend([f"%{word}%"] * len(_SEARCH_COLS))
        if cat is not None:
            where.append("category = ?")
            params.append(cat)
        if max_price is not None:
            where.append("price <= ?")
            params.append(max_price)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        rows = data.conn.execute(
            f"SELECT {_SUMMARY_COLS}, COUNT(*) OVER () AS total FROM products{clause} "
            "ORDER BY rating DESC, reviews DESC, sku LIMIT ?",
            [*params, limit],
        ).fetchall()
        total = rows[0]["total"] if rows else 0
        results = [{k: r[k] for k in r.keys() if k != "total"} for r in rows]
        return {
            "query": query,
            "category": cat,
            "max_price": max_price,
            "total": total,
            "count": len(results),
            "results": results,
        }

    @server.resource("demo://catalog/categories", mime_type="application/json", title="Product categories")
    async def categories() -> str:
        """Product categories with product counts and price ranges (CNY)."""
        data = get_data()
        stats = {
            r[0]: r[1:]
            for r in data.conn.execute(
                "SELECT category, COUNT(*), MIN(price), MAX(price) FROM products GROUP BY category"
            )
        }
        out = [
            {**c, "products": stats[c["id"]][0], "min_price": stats[c["id"]][1], "max_price": stats[c["id"]][2]}
            for c in data.categories
        ]
        return json.dumps(out, ensure_ascii=False)

    @server.resource("demo://catalog/products/{sku}", mime_type="application/json", title="Product by SKU")
    async def product_resource(sku: str) -> str:
        """One product's details as JSON."""
        try:
            return json.dumps(_product(get_data().product(sku)), ensure_ascii=False)
        except ToolError as exc:
            raise ValueError(str(exc)) from None

    @server.prompt(title="Customer-service assistant")
    async def customer_service(user_id: str | None = None) -> str:
        """System prompt for the MeshMart customer-service assistant (optionally for a known user)."""
        if user_id:
            return SYSTEM_PROMPT + f"\nThe customer is logged in as {user_id}: look up their profile first.\n"
        return SYSTEM_PROMPT

    return server
