"""Agent benchmark: the MCP tool server every framework calls (toolmesh ``ToolServer``).

Three async tools, each sleeping 50 ms (a stand-in for a real lookup) and returning a small
dict: ``inventory(sku)``, ``price(sku)``, ``shipping(sku, city)``. Served over Streamable HTTP
at ``/mcp`` by toolmesh's frontend (uvicorn + httptools + uvloop; both protocol revisions, so
each client negotiates what it speaks).

Usage: ``python shop_server.py PORT [--delay-ms 50]``
"""

from __future__ import annotations

import asyncio
import sys

from toolmesh.servers import ToolServer, serve

DELAY = 0.05
srv = ToolServer("bench-shop")


@srv.tool()
async def inventory(sku: str) -> dict[str, object]:
    """Units in stock for a product SKU."""
    await asyncio.sleep(DELAY)
    return {"sku": sku, "in_stock": 42, "warehouse": "SH-1"}


@srv.tool()
async def price(sku: str) -> dict[str, object]:
    """Current unit price of a product SKU, in CNY."""
    await asyncio.sleep(DELAY)
    return {"sku": sku, "price": 199.0, "currency": "CNY"}


@srv.tool()
async def shipping(sku: str, city: str) -> dict[str, object]:
    """Delivery estimate of a product SKU to a city."""
    await asyncio.sleep(DELAY)
    return {"sku": sku, "city": city, "days": 2}


if __name__ == "__main__":
    port = int(sys.argv[1])
    if "--delay-ms" in sys.argv:
        DELAY = float(sys.argv[sys.argv.index("--delay-ms") + 1]) / 1000
    serve(srv, "http", host="127.0.0.1", port=port)
