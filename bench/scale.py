"""The scale-out benchmark (``toolmesh bench scale``), first slice: what shared limits cost.

1 and 2 ``toolmesh serve`` processes (1 worker each) behind haproxy (round-robin, the same path
for every run), with the shared state (``state.url``: a redis-server of this run) off and on.
The gateway has a tenant and a key rate limit (high enough to admit everything), so with the
shared state on every request runs the admission script. The load is ``wrk`` sending MCP
``tools/call add(19, 23)`` (2026-07-28, stateless) through the gateway's ``/mcp`` to a toolmesh
server; every answer is checked (``gateway_servers/calls.lua``). Measured per run: calls/s,
errors, CPU µs per call of each process kind (gateway, upstream, redis, haproxy) and Redis
commands per call (``INFO commandstats``: those clients sent, and separately those the
scripts ran inside Redis; the benchmark's own INFO calls left out).

    .venv/bin/python bench/scale.py [--json] [--quick] [--seconds S]

Needs ``wrk``, ``redis-server`` and ``haproxy`` (Debian packages; ``make test`` installs them).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # siblings, also when loaded by path
import runner
from gateway_servers import procs
from gateway_servers.procs import PY, Proc
from gateway_servers.targets import UPSTREAM_SCRIPT

CONNS = 64
#: Limits that admit everything: the cost of deciding, not of refusing.
RATE_LIMITS = {"tenant": {"requests_per_minute": 1e9, "burst": 1_000_000},
               "key": {"requests_per_minute": 1e9, "burst": 1_000_000}}


def _log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _need(binary: str) -> str:
    found = shutil.which(binary) or (f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None)
    if found is None:
        raise SystemExit(f"{binary} is not installed (Debian package; `make test` installs it)")
    return found


#: Commands only the admission scripts run inside Redis (counted by INFO commandstats too).
IN_SCRIPT = {"time", "hmget", "hset", "pexpire", "zadd", "zremrangebyscore", "zcard", "zrange"}


def _redis_calls(port: int) -> tuple[int, int]:
    """(commands clients sent, commands scripts ran inside Redis) so far; INFO itself left out."""
    out = subprocess.run(["redis-cli", "-p", str(port), "INFO", "commandstats"], capture_output=True, text=True,
                         check=True, timeout=10).stdout
    sent = inside = 0
    for line in out.splitlines():
        if not line.startswith("cmdstat_") or line.startswith("cmdstat_info:"):
            continue
        name = line[len("cmdstat_"):].split(":", 1)[0]
        calls = int(line.split("calls=", 1)[1].split(",", 1)[0])
        if name in IN_SCRIPT:
            inside += calls
        else:
            sent += calls
    return sent, inside


def _haproxy(tmp: Path, backends: list[int]) -> Proc:
    port = procs.free_port()
    servers = "\n".join(f"    server s{i} 127.0.0.1:{p}" for i, p in enumerate(backends))
    cfg = tmp / f"haproxy-{port}.cfg"
    cfg.write_text("global\n    maxconn 4096\n\ndefaults\n    mode http\n    timeout connect 5s\n"
                   "    timeout client 60s\n    timeout server 60s\n\n"
                   f"frontend fe\n    bind 127.0.0.1:{port}\n    default_backend be\n\n"
                   f"backend be\n    balance roundrobin\n{servers}\n")
    return Proc("haproxy", [_need("haproxy"), "-f", str(cfg), "-db"], port=port).start()


def _config(tmp: Path, upstream_port: int, redis_url: str | None) -> Path:
    config: dict[str, Any] = {
        "servers": {"b": {"url": f"http://127.0.0.1:{upstream_port}/mcp", "protocol": "2026-07-28"}},
        "llm": {"deployments": [{"name": "m", "provider": "openai", "model": "m", "api_key": "unused",
                                 "base_url": "http://127.0.0.1:9/v1"}]},
        "store": {"path": str(tmp / "toolmesh.db")},
        "gateway": {"host": "127.0.0.1", "rate_limits": RATE_LIMITS},
    }
    if redis_url:
        config["state"] = {"url": redis_url}
    path = tmp / ("shared.yaml" if redis_url else "local.yaml")
    path.write_text(yaml.safe_dump(config))
    return path


def _key(config: Path, env: dict[str, str]) -> str:
    out = subprocess.run([PY, "-m", "toolmesh.cli.main", "keys", "create", "--config", str(config), "--tenant",
                          "default", "--scopes", "mcp", "--json"], env=env, capture_output=True, check=True,
                         timeout=60)
    return str(orjson.loads(out.stdout)["key"])


def run(seconds: int, replica_counts: list[int]) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="tm-bench-scale-"))
    home = tmp / "home"
    home.mkdir()
    env = {**procs.CHILD_ENV, "TOOLMESH_HOME": str(home)}
    up_port, redis_port = procs.free_port(), procs.free_port()
    upstream = Proc("upstream", [PY, str(UPSTREAM_SCRIPT), "http", str(up_port)], port=up_port).start()
    redis = Proc("redis", [_need("redis-server"), "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                           "--appendonly", "no", "--dir", str(tmp)], port=redis_port).start()
    upstream.wait_ready()
    redis.wait_ready()
    runs: list[dict[str, Any]] = []
    for shared in (False, True):
        config = _config(tmp, up_port, f"redis://127.0.0.1:{redis_port}/0" if shared else None)
        key = _key(config, env)
        for replicas in replica_counts:
            gateways = []
            for _ in range(replicas):
                port = procs.free_port()
                argv = [PY, "-m", "toolmesh.cli.main", "serve", "--config", str(config), "--port", str(port),
                        "--workers", "1"]
                gateways.append(Proc("gateway", argv, port=port, env=env, ready_path="/readyz").start())
            for g in gateways:
                g.wait_ready()
            proxy = _haproxy(tmp, [g.port for g in gateways])
            proxy.wait_ready()
            url = f"http://127.0.0.1:{proxy.port}/mcp"
            tools = procs.list_tools(gateways[0].port, "/mcp", key)
            tool = next((t for t in tools if t == "add" or t.endswith("__add")), None)
            if tool is None:
                raise RuntimeError(f"no add tool at the gateway's /mcp (tools: {tools})")
            wrk_env = {"BENCH_KIND": "mcp", "BENCH_ERA": "2026-07-28", "BENCH_TOOL": tool, "BENCH_AUTH": key}
            procs.wrk(url, conns=CONNS, seconds=1, env=wrk_env)  # warm-up: connections, caches, the script
            kinds = {"gateway": lambda gs=gateways: [p for g in gs for p in g.pids()],
                     "upstream": upstream.pids, "redis": redis.pids, "haproxy": proxy.pids}
            cpu0 = {k: procs.cpu_seconds(f()) for k, f in kinds.items()}
            calls0 = _redis_calls(redis_port)
            _log(f"replicas={replicas} shared_state={shared}: {seconds}s of wrk")
            res = procs.wrk(url, conns=CONNS, seconds=seconds, env=wrk_env)
            calls1 = _redis_calls(redis_port)
            cpu1 = {k: procs.cpu_seconds(f()) for k, f in kinds.items()}
            ok = int(res["ok"])
            sock = res.get("socket_errors", {})
            errors = int(res["bad_status"]) + int(res["rpc_errors"]) + sum(int(v) for v in sock.values())
            per = {k: round((cpu1[k] - cpu0[k]) / max(ok, 1) * 1e6, 1) for k in kinds}
            per["total"] = round(sum(per.values()), 1)
            runs.append({"replicas": replicas, "shared_state": shared,
                         "calls_per_s": round(ok / (res["duration_us"] / 1e6), 1), "errors": errors,
                         "cpu_us_per_request": per,
                         # Round trips' worth: what clients sent (EVALSHA, ZREM, connection set-up).
                         "redis_commands_per_request": round((calls1[0] - calls0[0]) / max(ok, 1), 3),
                         "redis_script_ops_per_request": round((calls1[1] - calls0[1]) / max(ok, 1), 3),
                         **({"first_error": res["first_error"]} if errors and res.get("first_error") else {})})
            proxy.stop()
            for g in gateways:
                g.stop()
    procs.stop_all()
    shutil.rmtree(tmp, ignore_errors=True)
    return {"runs": runs, "errors": sum(r["errors"] for r in runs), "connections": CONNS, "seconds": seconds}


def render(result: dict[str, Any]) -> None:
    print(f"{'replicas':>8} {'shared':>6} {'calls/s':>9} {'errors':>6} {'gw µs':>8} {'redis µs':>9} "
          f"{'haproxy µs':>10} {'redis cmd/req':>13}")
    for r in result["runs"]:
        cpu = r["cpu_us_per_request"]
        print(f"{r['replicas']:>8} {r['shared_state']!s:>6} {r['calls_per_s']:>9} {r['errors']:>6} "
              f"{cpu['gateway']:>8} {cpu['redis']:>9} {cpu['haproxy']:>10} {r['redis_commands_per_request']:>13}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (1 replica, 2 s)")
    parser.add_argument("--seconds", type=int, default=None)
    args = parser.parse_args(argv)
    _need("wrk")
    seconds = args.seconds or (2 if args.quick else 10)
    counts = [1] if args.quick else [1, 2]
    result = runner.run_guarded(lambda: run(seconds, counts), procs.stop_all)
    return runner.emit(result, args.json, render)


if __name__ == "__main__":
    raise SystemExit(main())
