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


def customer_prompt(user_id: str, level: str, city: str, province: str, sku: str | None = None,
                    city_en: str | None = None) -> str:
    """The assistant's system prompt for one customer: who they are and what they are looking at.

    Context a shop's app knows (the signed-in user's level and city as the tools spell them, the
    product page) and a map from kinds of request to the demo tools; which tools to call for this
    message is left to the model.
    """
    where = f"{city} ({city_en})" if city_en else city
    viewing = (f" Viewing product {sku} (\"这款手机\", \"this phone\" and \"this product\" mean sku \"{sku}\")."
               if sku else "")
    # Why the map: a 0.5B model shown only the tools stopped at a product lookup for stock-and-price
    # questions, and wrote the schema's default level ("regular") for a gold member
    # (docs/local-model.md). No worked examples with argument values: the model copied them and
    # they made the calls likely with or without the question, which defeats the provider's check
    # that the message asks for each call.
    return (
        "You are the customer-service assistant of MeshMart (网格商城), an electronics shop.\n"
        f"Customer: user {user_id}, {level} member, city {where}, province {province}.{viewing}\n\n"
        "Call every tool the message needs, all in one turn:\n"
        "- details, specs, model -> catalog__get_product_info\n"
        f"- stock, 库存, 有货 -> inventory__check_stock (city \"{city}\" unless the message names another)\n"
        f"- price, discounts, offers, 优惠, 多少钱 -> pricing__calculate_discount (user_level \"{level}\", "
        f"city \"{city}\"; a coupon only if the message names one)\n"
        "- order -> logistics__get_order; parcel, 快递 -> logistics__track_shipment; campaigns -> "
        "pricing__list_promotions; pickup, 自提 -> inventory__store_pickup; points -> users__get_profile\n"
        "- greetings, thanks, small talk: no tool\n\n"
        "Answer briefly in the customer's language with the facts the tools returned: stock as the total "
        "count, price as the final price and the discounts that made it up."
    )


SYSTEM_PROMPT = customer_prompt(USER, "gold", "广州", "广东", SKU, city_en="Guangzhou")

#: The answer step's instruction (after the tool turn). The question is restated next to the results:
#: the 0.5B model, told only "answer now", echoed a tool result or listed list prices; restated, it
#: names the product, the stock count and the final price (docs/local-model.md). No values here.
FINAL_ANSWER_PROMPT = (
    "The customer asked: {question}\nReply in the language of the question, in one to three full sentences "
    "(not a list), using only the tool results above: name the product and give the facts that answer the "
    "question — for stock the total quantity, for a price the final price and the discounts that made it up."
)


def agent_demo_config() -> dict[str, Any]:
    """The full demo configuration: the five servers plus the agent's context. No ``llm`` section:
    the embedded local model answers (add one to use a real provider)."""
    # One tool-choosing turn, then the answer with tools disabled: what a 0.5B model does reliably.
    # With a real provider configured, raise max_turns to let it chain tool calls.
    return {**demo_config(), "agent": {"system_prompt": SYSTEM_PROMPT, "final_answer_prompt": FINAL_ANSWER_PROMPT,
                                       "max_turns": 1, "max_output_tokens": 256, "llm_timeout": 600}}


def config_yaml() -> str:
    """The YAML configuration the demo uses: a starting point to copy and extend."""
    header = (
        "# toolmesh configuration: the bundled demo servers over stdio and the agent's context.\n"
        "# Servers are spawned on first use; add your own under `servers:`\n"
        "# (command/args/env/cwd for stdio, or url/transport/headers/timeout for remote).\n"
        "# With no `llm:` section the embedded local model is used; see docs/agent.md to add providers.\n"
    )
    return header + yaml.safe_dump(agent_demo_config(), allow_unicode=True, sort_keys=False)


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


async def run_agent(as_json: bool = False) -> int:
    """The reference scenario end to end: the local model chooses the tools, the Hub runs them."""
    from toolmesh.agent.factory import build_agent
    from toolmesh.cli.chat import result_json

    console = Console(stderr=as_json)
    cfg = parse_config(agent_demo_config(), "<bundled demo config>")
    console.print(f"[bold]toolmesh demo[/] — customer {USER}: “{QUESTION}”\n")
    t0 = time.perf_counter()
    stack = await build_agent(cfg)
    try:
        tools = await stack.hub.list_tools()
        console.print(f"{len(cfg.servers)} demo MCP servers, {len(tools)} tools "
                      f"({(time.perf_counter() - t0) * 1000:.0f} ms). Model: {stack.agent.config.model} "
                      "(embedded, offline; a demo default, not a production model).")
        from toolmesh.agent.events import Final, ToolCallFinished, ToolCallStarted, UsageUpdate, Warning

        result = None
        model_calls = 0
        async for ev in stack.agent.stream(QUESTION, user=USER):  # a fresh conversation each time
            if isinstance(ev, ToolCallStarted):
                console.print(f"  [cyan]→ {ev.name}[/] {orjson.dumps(ev.arguments).decode()}")
            elif isinstance(ev, ToolCallFinished):
                mark = "[green]✓[/]" if ev.ok else "[red]✗[/]"
                console.print(f"    {mark} {ev.name} {ev.latency_ms:.1f} ms" + (f" — {ev.error}" if ev.error else ""))
            elif isinstance(ev, UsageUpdate):
                model_calls += 1
                console.print(f"  [dim]model call: {ev.input_tokens}+{ev.output_tokens} tokens, "
                              f"{ev.latency_ms:.0f} ms[/]")
            elif isinstance(ev, Warning) and ev.kind != "max_turns":  # the demo allows one tool turn
                console.print(f"  [yellow]! {ev.message}[/]")
            elif isinstance(ev, Final):
                result = ev.result
        assert result is not None
        console.print(f"\n[bold]Answer:[/] {result.answer}\n")
        usage = result.usage
        lines = [f"{model_calls} model calls, {len(result.tool_calls)} tool calls, "
                 f"{usage['total_tokens']} tokens, {result.latency_ms:.0f} ms end to end"]
        registry = stack.registry
        from toolmesh.llm.types import Usage

        u = Usage(usage["input_tokens"], usage["output_tokens"])
        for ref in ("gpt-4.1", "claude-sonnet-4-5", "deepseek-chat"):
            cost = registry.price(ref, u)
            if cost.priced:
                lines.append(f"the same tokens on {ref}: ${cost.usd:.6f}")
        for line in lines:
            console.print(f"  [dim]{line}[/]")
        if as_json:
            body = result_json(result)
            emit_json({"question": QUESTION, "answer": body.pop("answer"), "tool_calls": body.pop("tool_calls"),
                       "usage": body.pop("usage"), "cost_usd": body.pop("cost_usd"),
                       "elapsed_ms": round((time.perf_counter() - t0) * 1000, 1),
                       "model": stack.agent.config.model, **body})
        return EXIT_OK if result.answer.strip() else EXIT_FAILED
    finally:
        await stack.aclose()


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
