"""Readable output of the gateway benchmark: MCP and OpenAI tables, ratios, targets."""

from __future__ import annotations

import sys
from typing import Any

MCP_ROWS = ("direct", "toolmesh", "fastmcp_proxy", "mcp_proxy", "contextforge")


def render(result: dict[str, Any]) -> None:
    """Print ``result`` as readable tables (rich) on stdout."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 120)
    meta = result["meta"]
    mcp = result["mcp"]
    table = Table(title=f"MCP tools/call: p50/p99 at {meta['latency_connections']} connection, calls/s at "
                        f"{meta['mcp_load_connections']} connections", title_justify="left")
    for col in ("target", "calls/s", "p50 ms", "p99 ms", "load p50", "load p99", "err", "tm ×", "cpu µs",
                "upstream µs"):
        table.add_column(col, justify="left" if col == "target" else "right")
    rows = [(name, mcp.get(name)) for name in MCP_ROWS] + list(mcp.get("variants", {}).items())
    tm = mcp.get("toolmesh")
    for name, leaf in rows:
        if leaf is None:
            table.add_row(name, "—", "—", "—", "—", "—", "—", str(mcp.get(f"{name}_skipped", "skipped"))[:40], "", "")
            continue
        ratio = tm["calls_per_s"] / leaf["calls_per_s"] if tm and leaf["calls_per_s"] else None
        load = leaf["load_run"]
        table.add_row(name, f"{leaf['calls_per_s']:,.0f}", f"{leaf['p50_ms']:.3f}", f"{leaf['p99_ms']:.3f}",
                      f"{load['p50_ms']:.2f}", f"{load['p99_ms']:.2f}", str(leaf["errors"]),
                      f"{ratio:.2f}×" if ratio and name != "toolmesh" else "", _num(load["cpu_us_per_call"]),
                      _num(load["upstream_cpu_us_per_call"]))
    console.print(table)
    console.print(f"added by the gateway: p50 {mcp['added_p50_ms']} ms, p99 {mcp['added_p99_ms']} ms; "
                  f"toolmesh / FastMCP proxy = {mcp['ratio_vs_fastmcp_proxy']}×, "
                  f"toolmesh / mcp-proxy = {mcp['ratio_vs_mcp_proxy']}×, "
                  f"toolmesh / ContextForge = {mcp['ratio_vs_contextforge']}×")

    chat = result["openai"]
    table = Table(title=f"OpenAI /v1/chat/completions with tools (passthrough): p50/p99 at "
                        f"{meta['latency_connections']} connection, req/s at {meta['chat_load_connections']}",
                  title_justify="left")
    for col in ("target", "req/s", "p50 ms", "p99 ms", "load p50", "load p99", "err", "cpu µs"):
        table.add_column(col, justify="left" if col == "target" else "right")
    for name in ("direct", "toolmesh"):
        leaf = chat.get(name)
        if leaf is None:
            table.add_row(name, "—", "—", "—", "—", "—", "—", "")
            continue
        load = leaf["load_run"]
        table.add_row(name, f"{leaf['calls_per_s']:,.0f}", f"{leaf['p50_ms']:.3f}", f"{leaf['p99_ms']:.3f}",
                      f"{load['p50_ms']:.2f}", f"{load['p99_ms']:.2f}", str(leaf["errors"]),
                      _num(load["cpu_us_per_call"]))
    console.print(table)
    console.print(f"added by the gateway: p50 {chat['added_p50_ms']} ms, p99 {chat['added_p99_ms']} ms; "
                  f"{chat['rps']} req/s, {chat['errors']} errors")
    console.print("cpu µs: CPU time per call of the target's processes during the load run (the proxy, or the "
                  "server when called directly); upstream µs: of the server behind the proxy.")
    for name, t in result["targets"].items():
        mark = "[green]met[/]" if t["met"] else "[red]missed[/]"
        bound = "≤" if name == "added_p50_ms" else "≥"
        console.print(f"target {name}: {t['reached']} vs {bound} {t['target']:g}: {mark}")
    console.print(f"errors: {result['errors']}; {meta['rounds']} round(s) × {meta['seconds_per_run']} s per run; "
                  f"machine busy {meta['machine_busy_cores']} cores on average; wall {meta['wall_s']} s")


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.2f}"
