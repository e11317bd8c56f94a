"""The scale-out benchmark (``toolmesh bench scale``): what replicas and shared state cost.

1, 2 and 3 ``toolmesh serve`` processes (1 worker each) behind haproxy (round-robin, no
stickiness), with the shared state off (each process alone: in-process limits, a SQLite store)
and on (``state.url``: a redis-server; ``store.url``: a PostgreSQL cluster; both of this run).
The gateway has a tenant and a key rate limit and per-user agent limits (high enough to admit
everything), so with the shared state on every request runs the admission script. Two loads,
each from ``wrk`` through haproxy, every answer checked:

* tool calls: MCP ``tools/call add(19, 23)`` (2026-07-28, stateless) on the gateway's ``/mcp``,
  forwarded to a toolmesh server (``gateway_servers/calls.lua``);
* agent requests: ``/v1/chat/completions`` without ``tools``, so the agent runtime answers, with
  the scripted LLM (``toolmesh.testing.scripted_llm``, a real HTTP process) as the provider: the
  model calls ``add`` once, the tool runs upstream, the model answers (``scale_servers/agent.lua``).

Measured per run and load: requests/s, errors, CPU µs per request of each process kind
(gateway, redis, postgres, haproxy; ``total`` is their sum, the deployment's own cost; the
upstream tool server and the LLM apart) and Redis commands per request (``INFO commandstats``:
those clients sent, and apart from them those the scripts ran inside Redis). The issue's targets
are checked and printed as pass/fail lines.

    .venv/bin/python bench/scale.py [--json] [--quick] [--seconds S] [--replicas 1,2,3]

Needs ``wrk``, ``redis-server``, ``postgresql`` and ``haproxy`` (Debian packages; ``make test``
installs them).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # siblings, also when loaded by path
import runner
from gateway_servers import procs
from gateway_servers.procs import Proc
from scale_servers import measure, services
from scale_servers.services import log

CONNS = 64
#: Pause before each measured load: requests wrk gave up on at the end of the previous load
#: finish server-side (their CPU, their slot releases) outside the measured window.
SETTLE_S = 1.0
#: The issue's targets.
MAX_REDIS_COMMANDS = 2.0
MAX_SHARED_OVERHEAD = 0.10
MAX_REPLICA_SPREAD = 0.10
MAX_GATEWAY_VS_UPSTREAM = 1.0


def _find_tool(port: int, key: str) -> str:
    tools = procs.list_tools(port, "/mcp", key)
    tool = next((t for t in tools if t == "add" or t.endswith("__add")), None)
    if tool is None:
        raise RuntimeError(f"no add tool at the gateway's /mcp (tools: {tools})")
    return tool


class Bench:
    """The processes shared by every run (upstream, Redis, PostgreSQL, the LLM) and the runs."""

    def __init__(self, tmp: Path, seconds: int) -> None:
        self.tmp = tmp
        self.seconds = seconds
        home = tmp / "home"
        home.mkdir()
        self.env = {**procs.CHILD_ENV, "TOOLMESH_HOME": str(home)}
        self.upstream = services.upstream()
        self.redis = services.redis(tmp)
        self.postgres = services.Postgres().start()
        self.upstream.wait_ready()
        self.redis.wait_ready()
        self.llm_port = procs.free_port()
        self.llm: Proc | None = None  # started once the tool's name at the gateway is known

    def config(self, shared: bool) -> tuple[Path, str]:
        redis_url = f"redis://127.0.0.1:{self.redis.port}/0" if shared else None
        store_url = self.postgres.create_database("toolmesh_bench") if shared else None
        config = services.gateway_config(self.tmp, "shared" if shared else "local", self.upstream.port,
                                         self.llm_port, redis_url=redis_url, store_url=store_url)
        return config, procs.create_key(config, self.env, "chat,mcp", timeout=120)

    def run(self, config: Path, key: str, replicas: int, shared: bool) -> dict[str, Any]:
        gateways = [services.gateway(config, self.env) for _ in range(replicas)]
        for g in gateways:
            g.wait_ready()
        proxy = services.haproxy(self.tmp, [g.port for g in gateways])
        proxy.wait_ready()
        if self.llm is None:
            self.llm = services.scripted_llm(self.tmp, self.llm_port, _find_tool(gateways[0].port, key))
            self.llm.wait_ready()
        tool = _find_tool(gateways[0].port, key)
        base = f"http://127.0.0.1:{proxy.port}"
        mcp_env = {"BENCH_KIND": "mcp", "BENCH_ERA": "2026-07-28", "BENCH_TOOL": tool, "BENCH_AUTH": key}
        agent_env = {"BENCH_MODEL": services.MODEL, "BENCH_AUTH": key}
        llm = self.llm
        kinds = {"gateway": lambda: [p for g in gateways for p in g.pids()], "redis": self.redis.pids,
                 "postgres": self.postgres.pids, "haproxy": proxy.pids, "upstream": self.upstream.pids,
                 "llm": llm.pids}
        # Warm-up: connections, caches, the scripts loaded, the store's schema read.
        warm = 1 if self.seconds < 10 else 2
        procs.wrk(f"{base}/mcp", conns=CONNS, seconds=warm, env=mcp_env)
        measure.wrk_agent(f"{base}/v1/chat/completions", conns=CONNS, seconds=warm, env=agent_env)
        log(f"replicas={replicas} shared_state={shared}: {self.seconds}s of tool calls, {self.seconds}s of agent")
        time.sleep(SETTLE_S)
        calls = measure.phase(lambda: procs.wrk(f"{base}/mcp", conns=CONNS, seconds=self.seconds, env=mcp_env),
                              kinds, self.redis.port)
        time.sleep(SETTLE_S)
        agent = measure.phase(lambda: measure.wrk_agent(f"{base}/v1/chat/completions", conns=CONNS,
                                                        seconds=self.seconds, env=agent_env),
                              kinds, self.redis.port)
        proxy.stop()
        for g in gateways:
            g.stop()
        cpu = calls["cpu_us_per_request"]
        run = {"replicas": replicas, "shared_state": shared, "calls_per_s": calls["per_s"],
               "agent_rps": agent["per_s"], "errors": calls["errors"] + agent["errors"],
               # Per forwarded tool call (the MCP load); the agent load's figures under "agent".
               "cpu_us_per_request": cpu,
               "redis_commands_per_request": calls["redis_commands_per_request"],
               "redis_script_ops_per_request": calls["redis_script_ops_per_request"],
               "redis_sent_by_command": calls["redis_sent_by_command"],
               "gateway_cpu_vs_upstream": _ratio(cpu["gateway"], cpu["upstream"]),
               "agent": {"cpu_us_per_request": agent["cpu_us_per_request"],
                         "redis_commands_per_request": agent["redis_commands_per_request"],
                         "redis_script_ops_per_request": agent["redis_script_ops_per_request"],
                         "redis_sent_by_command": agent["redis_sent_by_command"],
                         "errors": agent["errors"]}}
        for name, ph in (("calls", calls), ("agent", agent)):
            if "first_error" in ph:
                run[f"first_error_{name}"] = ph["first_error"]
        return run


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b > 0 else None


def run(seconds: int, replica_counts: list[int]) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="tm-bench-scale-"))
    try:
        bench = Bench(tmp, seconds)
        runs: list[dict[str, Any]] = []
        for shared in (False, True):
            config, key = bench.config(shared)
            for replicas in replica_counts:
                runs.append(bench.run(config, key, replicas, shared))
    finally:
        services.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    # The forwarding cost alone: one replica, nothing shared.
    base = min((r for r in runs if not r["shared_state"]), key=lambda r: r["replicas"])
    result = {"runs": runs, "gateway_cpu_vs_upstream": base["gateway_cpu_vs_upstream"],
              "errors": sum(r["errors"] for r in runs), "connections": CONNS, "seconds": seconds}
    result["targets"] = targets(result)
    return result


def _target(reached: float | None, limit: float, detail: str) -> dict[str, Any]:
    return {"reached": reached, "target": limit, "met": reached is not None and reached <= limit, "detail": detail}


def targets(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The issue's targets on the runs: each ``{reached, target, met, detail}``."""
    runs = result["runs"]
    loads: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"calls": lambda r: r,
                                                                     "agent": lambda r: r["agent"]}
    out: dict[str, dict[str, Any]] = {}
    shared = [r for r in runs if r["shared_state"]]
    if shared:
        worst = max(max(r["redis_commands_per_request"], r["agent"]["redis_commands_per_request"]) for r in shared)
        out["redis_commands_per_request"] = _target(worst, MAX_REDIS_COMMANDS,
                                                    "most Redis commands sent per tool call or agent request")
    total = {(name, r["replicas"], r["shared_state"]): pick(r)["cpu_us_per_request"]["total"]
             for name, pick in loads.items() for r in runs}
    overheads = [total[(name, n, True)] / total[(name, n, False)] - 1 for (name, n, s) in total
                 if s and total.get((name, n, False))]
    if overheads:
        out["shared_state_cpu_overhead"] = _target(round(max(overheads), 3), MAX_SHARED_OVERHEAD,
                                                   "worst extra total CPU per request with the shared state on")
    spreads = []
    for name in loads:
        for s in (False, True):
            series = sorted((n, t) for (k, n, sh), t in total.items() if k == name and sh == s)
            if len(series) >= 2 and series[0][1] > 0:
                spreads += [abs(t / series[0][1] - 1) for _, t in series[1:]]
    if spreads:
        out["cpu_flat_across_replicas"] = _target(round(max(spreads), 3), MAX_REPLICA_SPREAD,
                                                  "worst change of total CPU per request from 1 replica to more")
    out["gateway_cpu_vs_upstream"] = _target(result["gateway_cpu_vs_upstream"], MAX_GATEWAY_VS_UPSTREAM,
                                             "gateway CPU per forwarded tool call / the upstream server's")
    return out


def target_lines(result: dict[str, Any]) -> list[str]:
    return [f"{'PASS' if t['met'] else 'FAIL'} {name}: {t['reached']} (target ≤ {t['target']}; {t['detail']})"
            for name, t in result["targets"].items()]


def render(result: dict[str, Any]) -> None:
    head = (f"{'replicas':>8} {'shared':>6} {'load':>5} {'req/s':>8} {'errors':>6} {'gw µs':>7} {'redis µs':>8} "
            f"{'pg µs':>6} {'hap µs':>6} {'total µs':>8} {'upstr µs':>8} {'redis cmd':>9}")
    print(head)
    for r in result["runs"]:
        for load, figures, rate in (("calls", r, r["calls_per_s"]), ("agent", r["agent"], r["agent_rps"])):
            cpu = figures["cpu_us_per_request"]
            errors = r["errors"] - r["agent"]["errors"] if load == "calls" else r["agent"]["errors"]
            print(f"{r['replicas']:>8} {r['shared_state']!s:>6} {load:>5} {rate:>8} {errors:>6} {cpu['gateway']:>7} "
                  f"{cpu['redis']:>8} {cpu['postgres']:>6} {cpu['haproxy']:>6} {cpu['total']:>8} "
                  f"{cpu['upstream']:>8} {figures['redis_commands_per_request']:>9}")
    print(f"gateway CPU / upstream CPU per forwarded tool call: {result['gateway_cpu_vs_upstream']}")
    for line in target_lines(result):
        print(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (1 replica, 2 s per load)")
    parser.add_argument("--seconds", type=int, default=None, help="seconds of each load (default 10; quick 2)")
    parser.add_argument("--replicas", default=None, help="replica counts, comma-separated (default 1,2,3)")
    args = parser.parse_args(argv)
    for binary in ("wrk", "redis-server", "redis-cli", "haproxy", "initdb", "postgres"):
        services.need(binary)
    seconds = args.seconds or (2 if args.quick else 10)
    try:
        counts = [int(n) for n in (args.replicas or ("1" if args.quick else "1,2,3")).split(",")]
    except ValueError:
        parser.error(f"--replicas: comma-separated whole numbers, got {args.replicas!r}")
    if not counts or min(counts) < 1 or seconds < 1:
        parser.error("--replicas and --seconds must be at least 1")
    result = runner.run_guarded(lambda: run(seconds, sorted(set(counts))), services.stop_all)
    if args.json:  # stdout is the one JSON object; the verdicts go to stderr too
        for line in target_lines(result):
            log(line)
    return runner.emit(result, args.json, render)


if __name__ == "__main__":
    raise SystemExit(main())
