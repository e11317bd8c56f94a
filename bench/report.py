"""Readable output of the Hub benchmark: one rich table per scenario, then the targets."""

from __future__ import annotations

import sys
from typing import Any

LIBS = ("toolmesh", "sdk", "fastmcp", "typescript")


def render(result: dict[str, Any]) -> None:
    """Print ``result`` as readable tables (rich) on stdout."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 110)
    meta = result["meta"]
    titles = {
        "http_seq": "Streamable HTTP, sequential, each client → its own library's server",
        "http_seq_sdk_server": "Streamable HTTP, sequential, every client → the official SDK's server",
        "stdio_seq": "stdio, sequential, each client → its own library's server",
        "http_seq_ts_server": "Streamable HTTP, sequential, toolmesh and TypeScript clients → the TypeScript server",
        "concurrent": f"Streamable HTTP, {meta['concurrency']} concurrent callers, own server",
    }
    for key, title in titles.items():
        section = result[key]
        table = Table(title=title, title_justify="left")
        cols = ("client", "calls/s", "p50 ms", "p99 ms", "calls", "err", "tm ×", "cli µs", "srv µs", "others")
        for col in cols:
            table.add_column(col, justify="left" if col == "client" else "right")
        for lib in LIBS:
            if lib not in section:
                continue
            leaf = section[lib]
            if leaf is None:
                table.add_row(lib, "—", "—", "—", "—", "—", section.get(f"{lib}_skipped", "skipped")[:40], "", "", "")
                continue
            ratio = section.get(f"ratio_vs_{lib}")
            table.add_row(lib, f"{leaf['calls_per_s']:,.0f}", f"{leaf['p50_ms']:.2f}", f"{leaf['p99_ms']:.2f}",
                          str(leaf["calls"]), str(leaf["errors"]), f"{ratio:.2f}×" if ratio else "",
                          _num(leaf["client_cpu_us_per_call"]), _num(leaf["server_cpu_us_per_call"]),
                          _num(leaf["other_processes_cores"]))
        console.print(table)
    console.print("cli/srv µs: CPU time per call of the client / server process; others: cores busy with other "
                  "processes meanwhile (noise).")
    for name, t in result["targets"].items():
        mark = "[green]met[/]" if t["met"] else "[red]missed[/]"
        console.print(f"target {name}: {t['reached']} vs ≥ {t['target']:g}: {mark}")
    console.print(f"errors: {result['errors']}; client loop: {meta['client_event_loop']}; "
                  f"{meta['sequential_calls_per_pair']} calls/pair; wall {meta['wall_s']} s")


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.2f}"
