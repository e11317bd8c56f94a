"""Capacity plan for the reference scenario's peak (docs/scale.md § Planning for 15,000 requests/s).

Reads the JSON the benchmarks print and turns their measured CPU per request into what a peak
needs: cores at a target utilisation for each process kind, gateway processes (one uvicorn
process per container, so pods), Redis commands/s, PostgreSQL rows and transactions/s, and the
shared component that saturates first (the gateways scale out; Redis, haproxy and the PostgreSQL
primary are one each).

    .venv/bin/toolmesh bench scale --json > scale.json
    .venv/bin/toolmesh bench agent --json > agent.json      # optional: the /v1 agent scenario
    .venv/bin/toolmesh bench gateway --json > gateway.json  # optional: the /v1 edge cost
    .venv/bin/python bench/scale_plan.py --scale scale.json --agent agent.json --gateway gateway.json
    ... [--rps 15000] [--utilisation 0.6] [--json | --markdown (the table alone)]

Two scenarios, the same peak:

* ``mcp``: the requests are MCP ``tools/call`` through the gateway's ``/mcp`` (``bench scale``
  measures exactly this path: haproxy → gateway → upstream, with the shared limits on).
* ``agent``: the requests are ``/v1/chat/completions`` agent runs of the reference turn (model →
  three tools at once → model: ``bench agent``'s scenario). Gateway CPU per run = the agent
  runtime's CPU per run (``bench agent``, toolmesh, concurrent phase) + the edge cost of one HTTP
  request (``bench gateway``'s ``/v1`` passthrough, which also forwards one model call: an upper
  estimate; without it, ``bench scale``'s gateway CPU per MCP call stands in).

What is not measured is a named assumption with a flag (printed with the plan): tool and model
calls per run, Redis commands per agent run, ledger and audit rows per request.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
from pathlib import Path
from typing import Any

#: The reference scenario's peak (shared/ANCHORS.md: 15,000 requests/s against 200 on a normal day).
PEAK_RPS = 15_000.0
UTILISATION = 0.6
#: The reference turn (SPEC: product, inventory and discount tools in parallel): model → 3 tools → model.
TOOL_CALLS_PER_RUN = 3
MODEL_CALLS_PER_RUN = 2
#: docs/scale.md § How a request is admitted: one EVALSHA, plus one ZREM when the run ends
#: (used when the scale run has no agent load: ``bench scale`` measures it per agent request).
REDIS_COMMANDS_PER_RUN = 2.0
#: Shared components that run as one instance, and the cores one instance can use.
REDIS_CORES = 1.0  # Redis executes commands on one thread
HAPROXY_THREADS = 4.0
POSTGRES_CORES = 8.0


class PlanError(ValueError):
    """A benchmark file that cannot be planned from (missing runs or fields)."""


def store_batching() -> tuple[int, float]:
    """The store's batch size and interval (the defaults of ``Store``: one source of truth)."""
    try:
        from toolmesh.store.sqlite import Store
    except ImportError:  # the plan is also readable without toolmesh installed
        return 512, 0.05
    params = inspect.signature(Store.__init__).parameters
    return int(params["batch_rows"].default), float(params["batch_interval"].default)


def _num(obj: dict[str, Any], key: str, where: str) -> float:
    value = obj.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise PlanError(f"{where}: {key!r} must be a non-negative number, got {value!r}")
    return float(value)


def pick_run(scale: dict[str, Any]) -> dict[str, Any]:
    """The deployment's shape: the shared-state run with the most replicas."""
    runs = scale.get("runs")
    if not isinstance(runs, list) or not runs:
        raise PlanError("scale JSON: no 'runs' (is it the output of `toolmesh bench scale --json`?)")
    shared = [r for r in runs if isinstance(r, dict) and r.get("shared_state") is True]
    if not shared:
        raise PlanError("scale JSON: no run with shared_state true (the plan is for replicas sharing Redis)")
    run = max(shared, key=lambda r: (r.get("replicas", 0), r.get("calls_per_s", 0)))
    cpu = run.get("cpu_us_per_request")
    if not isinstance(cpu, dict):
        raise PlanError("scale JSON: run without 'cpu_us_per_request'")
    for kind in ("gateway", "redis", "haproxy"):
        _num(cpu, kind, f"scale run replicas={run.get('replicas')}")
    _num(run, "redis_commands_per_request", f"scale run replicas={run.get('replicas')}")
    return run


def checks(scale: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets on the scale runs: shared state's CPU overhead, flatness across replicas."""
    runs = [r for r in scale["runs"] if isinstance(r, dict) and isinstance(r.get("cpu_us_per_request"), dict)]
    total = {(r.get("replicas"), r.get("shared_state")): float(r["cpu_us_per_request"].get("total", 0.0))
             for r in runs}
    out: dict[str, Any] = {}
    overheads = [total[(n, True)] / total[(n, False)] - 1 for (n, s) in total if s and total.get((n, False))]
    if overheads:
        worst = max(overheads)
        out["shared_state_cpu_overhead"] = {"reached": round(worst, 3), "target": 0.10, "met": worst <= 0.10}
    on = sorted((n, t) for (n, s), t in total.items() if s and n)
    if len(on) >= 2 and on[0][1] > 0:
        spread = max(abs(t / on[0][1] - 1) for _, t in on)
        out["cpu_flat_across_replicas"] = {"reached": round(spread, 3), "target": 0.10, "met": spread <= 0.10,
                                           "replicas": [n for n, _ in on]}
    cmds = max(float(r.get("redis_commands_per_request", 0.0)) for r in runs if r.get("shared_state"))
    out["redis_commands_per_request"] = {"reached": cmds, "target": 2.0, "met": cmds <= 2.0}
    return out


def _agent_cpu_us(agent: dict[str, Any]) -> float:
    tm = (agent.get("frameworks") or {}).get("toolmesh")
    if not isinstance(tm, dict):
        raise PlanError("agent JSON: no frameworks.toolmesh result (is it `toolmesh bench agent --json`?)")
    conc = tm.get("concurrent")
    if not isinstance(conc, dict) or conc.get("client_cpu_ms_per_run") is None:
        raise PlanError("agent JSON: frameworks.toolmesh.concurrent.client_cpu_ms_per_run missing")
    return _num(conc, "client_cpu_ms_per_run", "agent JSON") * 1000.0


def _edge_cpu_us(gateway: dict[str, Any] | None, run: dict[str, Any]) -> tuple[float, str]:
    leaf = ((gateway or {}).get("openai") or {}).get("toolmesh")
    if isinstance(leaf, dict) and isinstance(leaf.get("load_run"), dict):
        value = leaf["load_run"].get("cpu_us_per_call")
        if isinstance(value, (int, float)) and value >= 0:
            return float(value), "bench gateway: /v1 passthrough, gateway CPU per request"
    return float(run["cpu_us_per_request"]["gateway"]), "bench scale: gateway CPU per /mcp call (stand-in)"


def _cores(rps: float, us: float | None, utilisation: float) -> float | None:
    return None if us is None else rps * us / 1e6 / utilisation


def postgres_writes(rows_per_s: float, processes: int, batch_rows: int, interval: float) -> dict[str, float]:
    """Rows and write transactions per second: each process writes a batch every ``batch_rows``
    rows or ``interval`` seconds after the first pending row, whichever comes first."""
    per_process = rows_per_s / max(processes, 1)
    if per_process <= 0:
        flushes = 0.0
    elif per_process * interval >= batch_rows:
        flushes = per_process / batch_rows
    else:
        flushes = min(per_process, 1.0 / interval)  # at most one batch per interval (an upper bound)
    return {"rows_per_s": round(rows_per_s, 1), "transactions_per_s": round(flushes * processes, 1),
            "rows_per_transaction": round(per_process / flushes, 1) if flushes else 0.0}


def plan(scale: dict[str, Any], agent: dict[str, Any] | None = None, gateway: dict[str, Any] | None = None, *,
         rps: float = PEAK_RPS, utilisation: float = UTILISATION, tool_calls: int = TOOL_CALLS_PER_RUN,
         model_calls: int = MODEL_CALLS_PER_RUN, redis_commands_per_run: float | None = None,
         audit: bool = True, redis_cores: float = REDIS_CORES, haproxy_threads: float = HAPROXY_THREADS,
         postgres_cores: float = POSTGRES_CORES) -> dict[str, Any]:
    """The capacity plan as one JSON-ready object (see the module doc)."""
    if not 0 < utilisation <= 1:
        raise PlanError(f"utilisation must be in (0, 1], got {utilisation}")
    if rps <= 0:
        raise PlanError(f"rps must be positive, got {rps}")
    run = pick_run(scale)
    cpu = run["cpu_us_per_request"]
    if redis_commands_per_run is None:  # measured by the scale run's agent load, else the design's figure
        measured = (run.get("agent") or {}).get("redis_commands_per_request")
        redis_commands_per_run = float(measured) if isinstance(measured, (int, float)) and measured > 0 \
            else REDIS_COMMANDS_PER_RUN
    batch_rows, interval = store_batching()
    redis_per_cmd = cpu["redis"] / run["redis_commands_per_request"] if run["redis_commands_per_request"] else 0.0
    pg_us = cpu.get("postgres")  # measured only by scale runs that put PostgreSQL in the path
    audit_rows = tool_calls if audit else 0
    scenarios: dict[str, Any] = {}

    # MCP tools/call through /mcp: every figure measured by the scale run itself.
    mcp_us = {"gateway": cpu["gateway"], "redis": cpu["redis"], "haproxy": cpu["haproxy"], "postgres": pg_us,
              "tool_servers": cpu.get("upstream")}
    scenarios["mcp"] = _scenario(rps, mcp_us, utilisation, redis_commands=run["redis_commands_per_request"],
                                 rows_per_request=1 if audit else 0, batch=(batch_rows, interval),
                                 tool_calls=1, model_calls=0,
                                 sources={"gateway": "bench scale", "redis": "bench scale",
                                          "haproxy": "bench scale", "tool_servers": "bench scale (upstream)"})
    if agent is not None:
        runtime_us = _agent_cpu_us(agent)
        edge_us, edge_source = _edge_cpu_us(gateway, run)
        pg_rows = model_calls + audit_rows
        agent_us = {"gateway": runtime_us + edge_us, "redis": redis_per_cmd * redis_commands_per_run,
                    "haproxy": cpu["haproxy"], "postgres": pg_us * pg_rows if pg_us is not None else None,
                    "tool_servers": cpu["upstream"] * tool_calls if cpu.get("upstream") is not None else None}
        scenarios["agent"] = _scenario(
            rps, agent_us, utilisation, redis_commands=redis_commands_per_run,
            rows_per_request=model_calls + audit_rows, batch=(batch_rows, interval), tool_calls=tool_calls,
            model_calls=model_calls,
            sources={"gateway": f"bench agent: runtime {runtime_us:.0f} µs/run + {edge_source} {edge_us:.0f} µs",
                     "redis": f"bench scale: {redis_per_cmd:.1f} µs per command × {redis_commands_per_run:g}",
                     "haproxy": "bench scale", "tool_servers": f"bench scale (upstream) × {tool_calls}"})
    limits = {"redis": redis_cores, "haproxy": haproxy_threads, "postgres": postgres_cores}
    for sc in scenarios.values():
        sc["next_bottleneck"] = _bottleneck(sc, limits, utilisation)
    return {
        "peak_rps": rps, "utilisation": utilisation,
        "scale_run": {"replicas": run.get("replicas"), "calls_per_s": run.get("calls_per_s"),
                      "cpu_us_per_request": cpu, "redis_commands_per_request": run["redis_commands_per_request"]},
        "assumptions": {"tool_calls_per_run": tool_calls, "model_calls_per_run": model_calls,
                        "redis_commands_per_agent_run": redis_commands_per_run,
                        "ledger_rows_per_run": model_calls, "audit_rows_per_tool_call": 1 if audit else 0,
                        "store_batch_rows": batch_rows, "store_batch_interval_s": interval,
                        "single_instance_cores": limits},
        "scenarios": scenarios,
        "checks": checks(scale),
    }


def _scenario(rps: float, us: dict[str, float | None], utilisation: float, *, redis_commands: float,
              rows_per_request: float, batch: tuple[int, float], tool_calls: int, model_calls: int,
              sources: dict[str, str]) -> dict[str, Any]:
    cores = {kind: _cores(rps, v, utilisation) for kind, v in us.items()}
    known = [c for c in cores.values() if c is not None]
    gateway_processes = math.ceil(cores["gateway"] or 0.0)
    return {
        "rps": rps,
        "cpu_us_per_request": {k: (None if v is None else round(v, 1)) for k, v in us.items()},
        "cores_at_utilisation": {**{k: (None if v is None else round(v, 2)) for k, v in cores.items()},
                                 "total": round(sum(known), 2)},
        # One uvicorn process per container: a process uses at most one core.
        "gateway_processes": gateway_processes,
        "redis_commands_per_s": round(rps * redis_commands, 1),
        "postgres": postgres_writes(rps * rows_per_request, gateway_processes, *batch),
        "tool_calls_per_s": rps * tool_calls,
        "model_calls_per_s": rps * model_calls,
        "sources": sources,
    }


def _bottleneck(sc: dict[str, Any], limits: dict[str, float], utilisation: float) -> dict[str, Any]:
    """The one-instance component busiest at the peak, and the request rate at which it reaches
    ``utilisation`` (the gateways scale out, so they are never it)."""
    load = {}
    for kind, cap in limits.items():
        us = sc["cpu_us_per_request"].get(kind)
        if us is not None and cap > 0:
            load[kind] = sc["rps"] * us / 1e6 / cap  # busy fraction of that one instance at the peak
    if not load:
        return {"component": None}
    kind = max(load, key=lambda k: load[k])
    return {"component": kind, "busy_fraction_at_peak": round(load[kind], 3), "instance_cores": limits[kind],
            "max_rps_at_utilisation": round(sc["rps"] * utilisation / load[kind]) if load[kind] else None}


def markdown(result: dict[str, Any]) -> str:
    """The plan as the Markdown table of docs/scale.md."""
    lines = [f"Peak: {result['peak_rps']:,.0f} requests/s; cores at {result['utilisation']:.0%} utilisation.", "",
             "| | " + " | ".join(result["scenarios"]) + " |", "|---|" + "---:|" * len(result["scenarios"])]

    def row(label: str, fn: Any) -> None:
        lines.append(f"| {label} | " + " | ".join(fn(sc) for sc in result["scenarios"].values()) + " |")

    def num(v: float | None, fmt: str = ",.0f") -> str:
        return "n/a" if v is None else format(v, fmt)

    for kind in ("gateway", "redis", "haproxy", "postgres", "tool_servers"):
        row(f"CPU µs per request: {kind}", lambda sc, k=kind: num(sc["cpu_us_per_request"].get(k), ",.1f"))
    for kind in ("gateway", "redis", "haproxy", "postgres", "tool_servers", "total"):
        row(f"cores: {kind}", lambda sc, k=kind: num(sc["cores_at_utilisation"].get(k), ",.2f"))
    row("gateway processes (pods)", lambda sc: num(sc["gateway_processes"]))
    row("Redis commands/s", lambda sc: num(sc["redis_commands_per_s"]))
    row("PostgreSQL rows/s", lambda sc: num(sc["postgres"]["rows_per_s"]))
    row("PostgreSQL write transactions/s", lambda sc: num(sc["postgres"]["transactions_per_s"]))
    row("model calls/s", lambda sc: num(sc["model_calls_per_s"]))
    row("next bottleneck", lambda sc: _bottleneck_text(sc["next_bottleneck"]))
    return "\n".join(lines) + "\n"


def _bottleneck_text(b: dict[str, Any]) -> str:
    if not b.get("component"):
        return "n/a"
    return (f"{b['component']} ({b['busy_fraction_at_peak']:.0%} busy, one {b['instance_cores']:g}-core instance; "
            f"{b['max_rps_at_utilisation']:,} req/s at the target)")


def _load(path: str | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PlanError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise PlanError(f"{path}: not a JSON object")
    return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", required=True, help="`toolmesh bench scale --json` output")
    ap.add_argument("--agent", help="`toolmesh bench agent --json` output (the /v1 agent scenario)")
    ap.add_argument("--gateway", help="`toolmesh bench gateway --json` output (the /v1 edge cost)")
    ap.add_argument("--rps", type=float, default=PEAK_RPS)
    ap.add_argument("--utilisation", type=float, default=UTILISATION)
    ap.add_argument("--tool-calls", type=int, default=TOOL_CALLS_PER_RUN, help="tool calls per agent run")
    ap.add_argument("--model-calls", type=int, default=MODEL_CALLS_PER_RUN, help="model calls per agent run")
    ap.add_argument("--redis-commands-per-run", type=float, default=None,
                    help=f"default: measured by bench scale's agent load, else {REDIS_COMMANDS_PER_RUN:g}")
    ap.add_argument("--no-audit", action="store_true", help="gateway.audit: false (no audit rows)")
    ap.add_argument("--redis-cores", type=float, default=REDIS_CORES)
    ap.add_argument("--haproxy-threads", type=float, default=HAPROXY_THREADS)
    ap.add_argument("--postgres-cores", type=float, default=POSTGRES_CORES)
    out = ap.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true")
    out.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    try:
        scale = _load(args.scale)
        assert scale is not None
        result = plan(scale, _load(args.agent), _load(args.gateway), rps=args.rps, utilisation=args.utilisation,
                      tool_calls=args.tool_calls, model_calls=args.model_calls,
                      redis_commands_per_run=args.redis_commands_per_run, audit=not args.no_audit,
                      redis_cores=args.redis_cores, haproxy_threads=args.haproxy_threads,
                      postgres_cores=args.postgres_cores)
    except PlanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    elif args.markdown:  # the table alone, for docs/scale.md
        sys.stdout.write(markdown(result))
    else:
        sys.stdout.write(markdown(result))
        for name, sc in result["scenarios"].items():
            for kind, source in sc["sources"].items():
                print(f"- {name} {kind}: {source}")
        for name, c in result["checks"].items():
            print(f"- check {name}: {c['reached']} (target {c['target']}): {'met' if c['met'] else 'missed'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
