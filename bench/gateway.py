"""The gateway benchmark (``toolmesh bench gateway``): ``toolmesh serve`` vs the upstream and four other proxies.

One run, one machine. Every server is its own process; the load comes from ``wrk`` (C, one
thread) running ``gateway_servers/calls.lua``, which checks every answer and counts every
non-200 reply, JSON-RPC error and ``isError`` result as an error. Measured:

* MCP: ``tools/call add(19, 23)`` (2026-07-28, stateless: ``params._meta`` envelope and the
  ``Mcp-Method`` / ``Mcp-Name`` headers) sent directly to a toolmesh ``ToolServer`` over
  Streamable HTTP (``direct``), and through proxies in front of it: the gateway's ``/mcp``
  (``toolmesh``: API key on, 2 workers, one per core; variants: 1 worker, 1 worker without
  auth), FastMCP 4.x's
  proxy given an already-connected backend client (``fastmcp_proxy``), and ``mcp-proxy``
  (``mcp_proxy``; it speaks only the 2025-11-25 handshake era and fronts stdio servers, so it
  runs the same server script as its stdio child, and wrk shares one session opened first),
  and ContextForge (``contextforge``: IBM's gateway from PyPI, in its own virtualenv, configured
  as ``gateway_servers/contextforge.py`` explains; wrk runs of at least 10 s, its calls are slow).
* OpenAI: ``POST /v1/chat/completions`` carrying ``tools`` (passthrough: the gateway forwards to
  the model and returns its ``tool_calls``) against the scripted LLM server, directly and
  through the gateway.

Each target gets a latency run (1 connection: p50/p99, the "added" figures) and a load run
(64 connections for MCP, 200 for OpenAI: calls/s), in rounds, targets shuffled each round.

    .venv/bin/python bench/gateway.py [--json] [--quick] [--seconds S] [--rounds R] [--seed N]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))  # siblings, also when loaded by path
import runner
from gateway_servers import procs, targets

MCP_CONNS = 64
CHAT_CONNS = 200
LATENCY_CONNS = 1
TARGETS = {"calls_per_s": 3000.0, "added_p50_ms": 1.0, "ratio_vs_fastmcp_proxy": 20.0, "ratio_vs_contextforge": 10.0}


def _log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


class Series:
    """Every wrk run of one (target, mode): counts summed, percentiles weighted by requests."""

    __slots__ = ("cpu", "first_error", "runs", "upstream_cpu", "wrk_cpu")

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []
        self.cpu = 0.0  # CPU seconds of the target's own processes (the proxy, or the server itself)
        self.upstream_cpu = 0.0  # CPU seconds of the upstream behind a proxy
        self.wrk_cpu = 0.0
        self.first_error: str | None = None

    def add(self, run: dict[str, Any], cpu: float, upstream_cpu: float) -> None:
        self.runs.append(run)
        self.cpu += cpu
        self.upstream_cpu += upstream_cpu
        self.wrk_cpu += run["cpu_s"]
        if self.first_error is None and run.get("first_error"):
            self.first_error = str(run["first_error"])

    @property
    def ok(self) -> int:
        return sum(r["ok"] for r in self.runs)

    @property
    def errors(self) -> int:
        return sum(r["requests"] - r["ok"] + sum(r["socket_errors"].values()) for r in self.runs)

    def pct(self, key: str) -> float:
        weight = sum(r["requests"] for r in self.runs)
        if not weight:
            return 0.0
        return round(sum(r["latency_us"][key] * r["requests"] for r in self.runs) / weight / 1000, 3)

    def leaf(self) -> dict[str, Any]:
        seconds = sum(r["duration_us"] for r in self.runs) / 1e6
        ok = self.ok
        out = {
            "calls_per_s": round(ok / seconds, 1) if seconds else 0.0,
            "p50_ms": self.pct("p50"),
            "p90_ms": self.pct("p90"),
            "p99_ms": self.pct("p99"),
            "calls": ok,
            "errors": self.errors,
            "cpu_us_per_call": round(self.cpu / ok * 1e6, 1) if ok else None,
            "upstream_cpu_us_per_call": round(self.upstream_cpu / ok * 1e6, 1) if ok and self.upstream_cpu else None,
            "wrk_cpu_us_per_call": round(self.wrk_cpu / ok * 1e6, 1) if ok else None,
        }
        if self.first_error:
            out["first_error"] = self.first_error[:300]
        return out


def _measure(target: targets.Target, conns: int, seconds: int, series: Series | None) -> None:
    """One wrk run against ``target``; ``series=None`` is a warm-up."""
    own = target.pids()
    up = target.upstream_pids()
    cpu0, up0 = procs.cpu_seconds(own), procs.cpu_seconds(up)
    run = procs.wrk(target.url, conns=conns, seconds=max(seconds, target.min_seconds), env=target.wrk_env)
    if series is not None:
        series.add(run, procs.cpu_seconds(own) - cpu0, procs.cpu_seconds(up) - up0 if up else 0.0)
    elif run["ok"] == 0 and run["requests"] > 0:
        raise RuntimeError(f"{target.name}: no successful call in the warm-up: {run.get('first_error')}\n"
                           f"its log: {target.log_tail()}")


def _leaf(lat: Series, load: Series) -> dict[str, Any]:
    """The result leaf: calls/s from the load run, p50/p99 from the latency run, errors of both."""
    lat_leaf, load_leaf = lat.leaf(), load.leaf()
    return {
        "calls_per_s": load_leaf["calls_per_s"],
        "p50_ms": lat_leaf["p50_ms"],
        "p99_ms": lat_leaf["p99_ms"],
        "errors": lat_leaf["errors"] + load_leaf["errors"],
        "latency_run": lat_leaf,
        "load_run": load_leaf,
    }


def _run_group(group: list[targets.Target], load_conns: int, seconds: int, rounds: int,
               rng: random.Random) -> dict[str, dict[str, Any]]:
    lat = {t.name: Series() for t in group}
    load = {t.name: Series() for t in group}
    for t in group:
        _log(f"warm-up {t.name}")
        _measure(t, LATENCY_CONNS, 1, None)
        _measure(t, load_conns, 1, None)  # min_seconds: a slow peer's calls finish inside the warm-up
    for r in range(rounds):
        order = list(group)
        rng.shuffle(order)
        for t in order:
            _log(f"round {r + 1}/{rounds}: {t.name} latency ({LATENCY_CONNS} conn, {seconds}s)")
            _measure(t, LATENCY_CONNS, seconds, lat[t.name])
        rng.shuffle(order)
        for t in order:
            _log(f"round {r + 1}/{rounds}: {t.name} load ({load_conns} conns, {seconds}s)")
            _measure(t, load_conns, seconds, load[t.name])
    return {t.name: _leaf(lat[t.name], load[t.name]) for t in group}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def _diff(a: float | None, b: float | None) -> float | None:
    return round(a - b, 3) if a is not None and b is not None else None


def run(quick: bool = False, *, seconds: int | None = None, rounds: int | None = None,
        seed: int | None = None) -> dict[str, Any]:
    """Start every server, measure, stop them all (also on error); returns the result object."""
    secs = seconds if seconds is not None else (2 if quick else 5)
    n_rounds = rounds if rounds is not None else (1 if quick else 2)
    rng = random.Random(seed)
    started = time.perf_counter()
    load_before = _loadavg()
    busy0 = procs.machine_busy_seconds()
    with tempfile.TemporaryDirectory(prefix="toolmesh-bench-gw-") as tmp:
        try:
            setup = targets.start_all(Path(tmp), log=_log)
            mcp = _run_group(setup.mcp, MCP_CONNS, secs, n_rounds, rng)
            chat = _run_group(setup.chat, CHAT_CONNS, secs, n_rounds, rng)
            skipped = setup.skipped
            meta_targets = {"mcp": {t.name: t.describe for t in setup.mcp},
                            "openai": {t.name: t.describe for t in setup.chat}}
        finally:
            procs.stop_all()
    busy1 = procs.machine_busy_seconds()
    wall = time.perf_counter() - started

    direct, tm = mcp.get("direct"), mcp.get("toolmesh")
    fm = mcp.get("fastmcp_proxy")
    peers = ("direct", "toolmesh", "fastmcp_proxy", "mcp_proxy", "contextforge")
    mcp_out: dict[str, Any] = {name: mcp.get(name) for name in peers}
    mcp_out["added_p50_ms"] = _diff(tm and tm["p50_ms"], direct and direct["p50_ms"])
    mcp_out["added_p99_ms"] = _diff(tm and tm["p99_ms"], direct and direct["p99_ms"])
    mcp_out["ratio_vs_fastmcp_proxy"] = _ratio(tm and tm["calls_per_s"], fm and fm["calls_per_s"])
    mcp_out["ratio_vs_mcp_proxy"] = _ratio(tm and tm["calls_per_s"], (mcp.get("mcp_proxy") or {}).get("calls_per_s"))
    cf = mcp.get("contextforge")
    mcp_out["ratio_vs_contextforge"] = _ratio(tm and tm["calls_per_s"], cf and cf["calls_per_s"])
    mcp_out["p99_vs_contextforge_ms"] = _diff(tm and tm["p99_ms"], cf and cf["p99_ms"])
    mcp_out["variants"] = {k: v for k, v in mcp.items() if k not in mcp_out}
    for name, reason in skipped.items():
        if not name.startswith("openai_"):
            mcp_out[f"{name}_skipped"] = reason
    c_direct, c_tm = chat.get("direct"), chat.get("toolmesh")
    openai_out = {
        "added_p50_ms": _diff(c_tm and c_tm["p50_ms"], c_direct and c_direct["p50_ms"]),
        "added_p99_ms": _diff(c_tm and c_tm["p99_ms"], c_direct and c_direct["p99_ms"]),
        "rps": c_tm["calls_per_s"] if c_tm else None,
        "errors": c_tm["errors"] if c_tm else None,
        "direct": c_direct,
        "toolmesh": c_tm,
    }
    if "openai_toolmesh" in skipped:
        openai_out["toolmesh_skipped"] = skipped["openai_toolmesh"]
    errors = sum(leaf["errors"] for leaf in [*mcp.values(), *chat.values()])
    result: dict[str, Any] = {"mcp": mcp_out, "openai": openai_out, "errors": errors}
    result["targets"] = _targets(result)
    result["meta"] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seconds_per_run": secs,
        "rounds": n_rounds,
        "latency_connections": LATENCY_CONNS,
        "mcp_load_connections": MCP_CONNS,
        "chat_load_connections": CHAT_CONNS,
        "load_generator": "wrk 1 thread, gateway_servers/calls.lua (every answer checked)",
        "targets": meta_targets,
        "loadavg_1m_before_after": [load_before, _loadavg()],
        # Cores busy on average over the whole run (every process, wrk and servers included).
        "machine_busy_cores": round((busy1 - busy0) / wall, 2) if busy0 is not None and busy1 is not None else None,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "versions": targets.versions(),
        "wall_s": round(wall, 1),
    }
    return result


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover
        return None


def _targets(result: dict[str, Any]) -> dict[str, Any]:
    tm = result["mcp"]["toolmesh"]
    reached = {
        "calls_per_s": tm["calls_per_s"] if tm else None,
        "added_p50_ms": result["mcp"]["added_p50_ms"],
        "ratio_vs_fastmcp_proxy": result["mcp"]["ratio_vs_fastmcp_proxy"],
        "ratio_vs_contextforge": result["mcp"]["ratio_vs_contextforge"],
    }
    out: dict[str, Any] = {}
    for name, goal in TARGETS.items():
        value = reached[name]
        if name == "added_p50_ms":
            met = value is not None and value <= goal
        else:
            met = value is not None and value >= goal and (tm or {}).get("errors") == 0
        if name == "ratio_vs_contextforge":  # the target also asks for a lower p99
            p99 = result["mcp"]["p99_vs_contextforge_ms"]
            met = met and p99 is not None and p99 < 0
        out[name] = {"target": goal, "reached": value, "met": met}
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI entry: ``--json`` prints one JSON object on stdout (progress goes to stderr)."""
    parser = argparse.ArgumentParser(prog="toolmesh bench gateway", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (2 s per measurement)")
    parser.add_argument("--seconds", type=int, default=None, help="seconds per wrk run (default 5, quick 2)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per target (default 2, quick 1)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the target order")
    args = parser.parse_args(argv)
    if args.seconds is not None and args.seconds < 1:
        parser.error("--seconds must be >= 1 (wrk takes whole seconds)")
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if procs.wrk_path() is None:
        print("error: wrk is not installed (Debian package 'wrk'; `make bench` installs it)", file=sys.stderr)
        return 2

    from gateway_servers import report

    result = runner.run_guarded(lambda: run(args.quick, seconds=args.seconds, rounds=args.rounds, seed=args.seed),
                                procs.stop_all)
    return runner.emit(result, args.json, report.render)


if __name__ == "__main__":
    sys.exit(main())
