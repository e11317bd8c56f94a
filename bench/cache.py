"""The result-cache benchmark (``toolmesh bench cache``): caching off, coalescing only, coalescing + a 5 s cache.

One run, one machine, through the gateway. One upstream (``cache_servers/upstream.py``, a toolmesh
``ToolServer`` whose read-only ``get_stock(sku)`` takes 20 ms) is registered three times in one
``toolmesh serve`` process (API key on, 2 workers, one per core), once per mode:

* ``off`` — ``coalesce: false``, no cache: every call goes upstream;
* ``coalesce`` — the default: identical calls in flight share one upstream call;
* ``coalesce_cache`` — the default plus ``cache: {ttl: 5}``.

The load comes from ``wrk`` (one thread, 64 connections) running ``cache_servers/zipf_calls.lua``:
each request asks for one of the 300 demo SKUs drawn from a Zipf distribution (s = 1.1), and every
answer is checked (HTTP 200, a result, no error, no ``isError``); an answer whose ``computed_at``
is older than the TTL (+ wrk's 1 s clock resolution) counts as stale. Upstream calls are read from
the upstream's own counter before and after each run. The modes run one after the other, in
rounds, order shuffled each round.

    .venv/bin/python bench/cache.py [--json] [--quick] [--seconds S] [--rounds R] [--seed N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # siblings, also when loaded by path
import runner
from gateway_servers import procs
from gateway_servers.procs import PY, Proc

HERE = Path(__file__).resolve().parent
UPSTREAM = HERE / "cache_servers" / "upstream.py"
LUA = HERE / "cache_servers" / "zipf_calls.lua"
CONNS = 64
TTL = 5
UPSTREAM_MS = 20
ZIPF_S = 1.1
#: mode -> the server's config entry beyond its url.
MODES: dict[str, dict[str, Any]] = {
    "off": {"coalesce": False},
    "coalesce": {},
    "coalesce_cache": {"cache": {"ttl": TTL}},
}
TARGETS = {"upstream_calls_reduction": 10.0, "throughput_ratio": 3.0}


def _log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _config(tmp: Path, upstream_port: int) -> Path:
    url = f"http://127.0.0.1:{upstream_port}/mcp"
    config = {
        "servers": {mode: {"url": url, "protocol": "2026-07-28", **extra} for mode, extra in MODES.items()},
        "store": {"path": str(tmp / "toolmesh.db")},
        "gateway": {"host": "127.0.0.1"},
    }
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path



def _upstream_calls(port: int) -> int:
    """``get_stock`` calls so far, asked of the upstream directly (not through the gateway)."""
    headers = {"Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "counts"}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "counts", "arguments": {}, "_meta": procs.MODERN_META}}
    status, _, raw = procs.post(port, "/mcp", body, headers)
    if status != 200:
        raise RuntimeError(f"counts at the upstream answered {status}: {raw[:300]!r}")
    text = raw.decode()
    if not text.lstrip().startswith("{"):  # an SSE reply: the last data line is the response
        text = [ln[5:] for ln in text.splitlines() if ln.startswith("data:")][-1]
    result = orjson.loads(text).get("result") or {}
    counts = result.get("structuredContent") or orjson.loads(result["content"][0]["text"])
    return int(counts["get_stock"])


def _wrk(url: str, tool: str, token: str, seconds: int, seed: int) -> dict[str, Any]:
    env = {"BENCH_TOOL": tool, "BENCH_AUTH": token, "BENCH_ZIPF_S": str(ZIPF_S),
           "BENCH_MAX_AGE": str(TTL + 1.25), "BENCH_SEED": str(seed)}
    return procs.wrk(url, conns=CONNS, seconds=seconds, env=env, timeout_s=10, script=LUA)


class Series:
    """Every wrk run of one mode: counts summed, percentiles weighted by requests."""

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []
        self.upstream_calls = 0
        self.gateway_cpu = 0.0

    def add(self, run: dict[str, Any], upstream_calls: int, gateway_cpu: float) -> None:
        self.runs.append(run)
        self.upstream_calls += upstream_calls
        self.gateway_cpu += gateway_cpu

    def leaf(self) -> dict[str, Any]:
        seconds = sum(r["duration_us"] for r in self.runs) / 1e6
        ok = sum(r["ok"] for r in self.runs)
        weight = sum(r["requests"] for r in self.runs) or 1

        def pct(key: str) -> float:
            return round(sum(r["latency_us"][key] * r["requests"] for r in self.runs) / weight / 1000, 3)

        errors = sum(r["requests"] - r["ok"] + sum(r["socket_errors"].values()) for r in self.runs)
        firsts = [r["first_error"] for r in self.runs if r.get("first_error")]
        out = {
            "gateway_calls_per_s": round(ok / seconds, 1) if seconds else 0.0,
            "upstream_calls_per_s": round(self.upstream_calls / seconds, 1) if seconds else 0.0,
            "upstream_calls_per_1000": round(self.upstream_calls / ok * 1000, 1) if ok else None,
            "p50_ms": pct("p50"),
            "p90_ms": pct("p90"),
            "p99_ms": pct("p99"),
            "calls": ok,
            "upstream_calls": self.upstream_calls,
            "errors": errors,
            "stale": sum(r["stale"] for r in self.runs),
            "gateway_cpu_us_per_call": round(self.gateway_cpu / ok * 1e6, 1) if ok else None,
        }
        if firsts:
            out["first_error"] = str(firsts[0])[:300]
        return out


def run(quick: bool = False, *, seconds: int | None = None, rounds: int | None = None,
        seed: int | None = None) -> dict[str, Any]:
    """Start the upstream and the gateway, measure every mode, stop them (also on error)."""
    secs = seconds if seconds is not None else (3 if quick else 10)
    n_rounds = rounds if rounds is not None else 1
    rng = random.Random(seed)
    started = time.perf_counter()
    busy0 = procs.machine_busy_seconds()
    series = {mode: Series() for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="toolmesh-bench-cache-") as tmp_name:
        tmp = Path(tmp_name)
        home = tmp / "home"
        home.mkdir()
        env = {**procs.CHILD_ENV, "TOOLMESH_HOME": str(home)}
        try:
            up_port, gw_port = procs.free_port(), procs.free_port()
            upstream = Proc("upstream", [PY, str(UPSTREAM), str(up_port), str(UPSTREAM_MS)], port=up_port,
                            env=env).start()
            config = _config(tmp, up_port)
            _log("creating an API key with `toolmesh keys create`")
            key = procs.create_key(config, env, "mcp")
            gateway = Proc("toolmesh", [PY, "-m", "toolmesh.cli.main", "serve", "--config", str(config),
                                        "--port", str(gw_port), "--workers", "2"],
                           port=gw_port, env=env, ready_path="/readyz")
            upstream.wait_ready()
            gateway.start().wait_ready()
            tools = procs.list_tools(gw_port, "/mcp", key)
            url = f"http://127.0.0.1:{gw_port}/mcp"
            for mode in MODES:
                if f"{mode}__get_stock" not in tools:
                    raise RuntimeError(f"the gateway has no {mode}__get_stock (tools: {tools})")
                _log(f"warm-up {mode}")
                _wrk(url, f"{mode}__get_stock", key, 1, rng.randrange(1 << 30))
            time.sleep(TTL + 0.5)  # the cached mode starts cold
            for r in range(n_rounds):
                order = list(MODES)
                rng.shuffle(order)
                for mode in order:
                    _log(f"round {r + 1}/{n_rounds}: {mode} ({CONNS} conns, {secs}s)")
                    calls0, cpu0 = _upstream_calls(up_port), procs.cpu_seconds(gateway.pids())
                    result = _wrk(url, f"{mode}__get_stock", key, secs, rng.randrange(1 << 30))
                    series[mode].add(result, _upstream_calls(up_port) - calls0,
                                     procs.cpu_seconds(gateway.pids()) - cpu0)
        finally:
            procs.stop_all()
    wall = time.perf_counter() - started
    busy1 = procs.machine_busy_seconds()
    modes = {mode: s.leaf() for mode, s in series.items()}
    off, cached = modes["off"], modes["coalesce_cache"]
    reduction = (off["upstream_calls_per_1000"] / cached["upstream_calls_per_1000"]
                 if off["upstream_calls_per_1000"] and cached["upstream_calls_per_1000"] else None)
    throughput = (cached["gateway_calls_per_s"] / off["gateway_calls_per_s"]) if off["gateway_calls_per_s"] else None
    reached = {"upstream_calls_reduction": round(reduction, 2) if reduction else None,
               "throughput_ratio": round(throughput, 2) if throughput else None}
    clean = all(m["errors"] == 0 and m["stale"] == 0 for m in modes.values())
    result: dict[str, Any] = {
        "modes": modes,
        "targets": {name: {"target": goal, "reached": reached[name],
                           "met": reached[name] is not None and reached[name] >= goal and clean}
                    for name, goal in TARGETS.items()},
        "errors": sum(m["errors"] for m in modes.values()),
        "stale": sum(m["stale"] for m in modes.values()),
        "meta": {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "seconds_per_run": secs,
            "rounds": n_rounds,
            "connections": CONNS,
            "upstream_ms": UPSTREAM_MS,
            "zipf_s": ZIPF_S,
            "skus": 300,
            "ttl_s": TTL,
            "gateway": "toolmesh serve, API key on, 2 workers (each worker has its own Hub: coalescing and "
                       "cache are per worker)",
            "load_generator": "wrk 1 thread, cache_servers/zipf_calls.lua (every answer checked)",
            "upstream_calls_reduction": "upstream calls per 1000 gateway calls, off / coalesce_cache",
            "machine_busy_cores": round((busy1 - busy0) / wall, 2) if busy0 is not None and busy1 is not None
            else None,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "wall_s": round(wall, 1),
        },
    }
    return result


def render(result: dict[str, Any]) -> None:
    """Print ``result`` as a readable table (rich) on stdout."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 110)
    meta = result["meta"]
    table = Table(title=f"Through the gateway, {meta['connections']} connections, Zipf(s={meta['zipf_s']}) over "
                        f"{meta['skus']} SKUs, upstream {meta['upstream_ms']} ms", title_justify="left")
    for col in ("mode", "gateway calls/s", "upstream calls/s", "upstream /1000", "p50 ms", "p99 ms", "errors",
                "stale", "gw µs/call"):
        table.add_column(col, justify="left" if col == "mode" else "right")
    for mode, leaf in result["modes"].items():
        table.add_row(mode, f"{leaf['gateway_calls_per_s']:,.0f}", f"{leaf['upstream_calls_per_s']:,.0f}",
                      str(leaf["upstream_calls_per_1000"]), f"{leaf['p50_ms']:.2f}", f"{leaf['p99_ms']:.2f}",
                      str(leaf["errors"]), str(leaf["stale"]), str(leaf["gateway_cpu_us_per_call"]))
    console.print(table)
    for name, t in result["targets"].items():
        mark = "[green]met[/]" if t["met"] else "[red]missed[/]"
        console.print(f"target {name}: {t['reached']} vs ≥ {t['target']:g}: {mark}")
    console.print(f"errors: {result['errors']}; stale: {result['stale']}; wall {meta['wall_s']} s; "
                  f"machine busy {meta['machine_busy_cores']} cores")


def main(argv: list[str] | None = None) -> int:
    """CLI entry: ``--json`` prints one JSON object on stdout (progress goes to stderr)."""
    parser = argparse.ArgumentParser(prog="toolmesh bench cache", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (3 s per mode)")
    parser.add_argument("--seconds", type=int, default=None, help="seconds per wrk run (default 10, quick 3)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per mode (default 1)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the mode order and of the SKU draws")
    args = parser.parse_args(argv)
    if args.seconds is not None and args.seconds < 1:
        parser.error("--seconds must be >= 1 (wrk takes whole seconds)")
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if procs.wrk_path() is None:
        print("error: wrk is not installed (Debian package 'wrk'; `make bench` installs it)", file=sys.stderr)
        return 2
    result = runner.run_guarded(lambda: run(args.quick, seconds=args.seconds, rounds=args.rounds, seed=args.seed),
                                procs.stop_all)
    code = runner.emit(result, args.json, render)
    return code or (1 if result["stale"] else 0)


if __name__ == "__main__":
    sys.exit(main())
