"""``toolmesh demo``: the reference scenario on the bundled demo servers, through the Hub.

A customer asks "我想买这款手机，库存够吗？广东用户有什么优惠？" (I want this phone: is there
stock? What discounts for Guangdong users?). The assistant needs product detail, stock in
the customer's city and the price for a gold member with a coupon: three tools on three
servers, called concurrently. (The LLM that chooses these calls arrives with the agent
runtime; here the calls are fixed so the Hub's part can be seen on its own.)
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import yaml
from rich.console import Console
from rich.table import Table

from toolmesh.cli.common import EXIT_FAILED, EXIT_OK, emit_json
from toolmesh.hub import Hub
from toolmesh.hub.configfile import parse_config
from toolmesh.servers.demo import demo_config

QUESTION = "我想买这款手机，库存够吗？广东用户有什么优惠？"
USER = "U123456"
SKU = "SKU-1001"
CITY = "广州"

SCENARIO_CALLS: list[dict[str, Any]] = [
    {"id": "product", "name": "catalog__get_product_info", "arguments": {"sku": SKU}},
    {"id": "stock", "name": "inventory__check_stock", "arguments": {"sku": SKU, "city": CITY}},
    {"id": "price", "name": "pricing__calculate_discount",
     "arguments": {"sku": SKU, "user_level": "gold", "coupon": "SAVE20", "city": CITY}},
]


def config_yaml() -> str:
    """The YAML configuration the demo uses: a starting point to copy and extend."""
    header = (
        "# toolmesh configuration: the bundled demo servers over stdio.\n"
        "# Each server is spawned on first use; add your own under `servers:`\n"
        "# (command/args/env/cwd for stdio, or url/transport/headers/timeout for remote).\n"
    )
    return header + yaml.safe_dump(demo_config(), allow_unicode=True, sort_keys=False)


def _summary(call_id: str, data: Any) -> str:
    if not isinstance(data, dict):
        return str(data)[:120]
    if call_id == "product":
        return f"{data.get('name_zh')} / {data.get('name')} — ¥{data.get('price')}, rating {data.get('rating')}"
    if call_id == "stock":
        wh = ", ".join(f"{w.get('name_zh')}: {w.get('quantity')}" for w in data.get("warehouses", []))
        return f"{data.get('city_zh')} total {data.get('total_quantity')} ({data.get('status')}) — {wh}"
    if call_id == "price":
        parts = ", ".join(f"{d.get('type')} -¥{d.get('amount')}" for d in data.get("discounts", []))
        return f"list ¥{data.get('list_price')} → final ¥{data.get('final_price')} ({parts})"
    return orjson.dumps(data).decode()[:120]


async def run(as_json: bool = False) -> int:
    console = Console(stderr=as_json)
    cfg = parse_config(demo_config(), "<bundled demo config>")
    async with Hub() as hub:
        await hub.register_many(cfg.servers)
        console.print(f"[bold]toolmesh demo[/] — customer {USER}: “{QUESTION}”\n")
        t0 = time.perf_counter()
        tools = await hub.list_tools()
        console.print(f"Started {len(cfg.servers)} demo MCP servers (stdio) and listed {len(tools)} tools "
                      f"in {(time.perf_counter() - t0) * 1000:.0f} ms:")
        for t in tools:
            console.print(f"  • [cyan]{t['name']}[/] — {(t.get('description') or '').splitlines()[0]}")
        rounds: list[dict[str, Any]] = []
        for label in ("first call", "warm"):
            t1 = time.perf_counter()
            results = await hub.batch_call(SCENARIO_CALLS)
            wall = (time.perf_counter() - t1) * 1000
            rounds.append({"round": label, "wall_ms": round(wall, 2),
                           "calls": [r.to_dict() | {"arguments": r.arguments} for r in results.values()]})
            table = Table(title=f"3 tools in parallel ({label}): {wall:.1f} ms wall, "
                                f"{sum(r.latency_ms for r in results.values()):.1f} ms if sequential")
            table.add_column("call")
            table.add_column("tool")
            table.add_column("ms", justify="right")
            table.add_column("result")
            for call_id, r in results.items():
                text = _summary(call_id, r.structured) if r.ok else f"[red]{r.error}[/]"
                table.add_row(call_id, f"{r.server}/{r.tool}", f"{r.latency_ms:.1f}", text)
            console.print()
            console.print(table)
        ok = all(c["ok"] for rnd in rounds for c in rnd["calls"])
        if as_json:
            emit_json({"question": QUESTION, "tools": [t["name"] for t in tools], "rounds": rounds, "ok": ok})
        console.print("\nNext: [bold]toolmesh demo --print-config > toolmesh.yaml[/], add your servers, then "
                      "[bold]toolmesh tools list -c toolmesh.yaml[/] and [bold]toolmesh call -c toolmesh.yaml …[/]")
    return EXIT_OK if ok else EXIT_FAILED
