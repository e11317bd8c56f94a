"""Upstream of ``toolmesh bench cache``: a toolmesh ``ToolServer`` whose read-only tool takes 20 ms.

    python upstream.py PORT [DELAY_MS]

``get_stock(sku)`` (annotated ``readOnlyHint: true``) sleeps DELAY_MS (default 20), then answers
with the demo catalogue's row for the SKU and ``computed_at`` (this process's wall clock, so the
load generator can tell a stale answer). ``counts()`` says how many times ``get_stock`` ran.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from mcp_types import ToolAnnotations

from toolmesh.servers import ToolServer, serve
from toolmesh.servers.demo.data import get_data

DELAY = (int(sys.argv[2]) if len(sys.argv) > 2 else 20) / 1000.0
srv = ToolServer("bench-cache-upstream")
CALLS = [0]


@srv.tool(annotations=ToolAnnotations(readOnlyHint=True))
async def get_stock(sku: str) -> dict[str, Any]:
    """The product's catalogue row (a read-only lookup that takes 20 ms)."""
    CALLS[0] += 1
    await asyncio.sleep(DELAY)
    row = get_data().product(sku)
    return {"sku": row["sku"], "name": row["name"], "price": row["price"], "computed_at": time.time()}


@srv.tool()
def counts() -> dict[str, int]:
    """How many times get_stock ran."""
    return {"get_stock": CALLS[0]}


if __name__ == "__main__":
    serve(srv, "http", host="127.0.0.1", port=int(sys.argv[1]))
