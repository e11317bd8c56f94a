"""What one load phase of `bench scale` measures: requests answered right, errors, CPU µs per
request of each process kind (from /proc), and Redis commands per request (``INFO commandstats``).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from gateway_servers import procs

AGENT_LUA = Path(__file__).resolve().parent / "agent.lua"
#: Process kinds whose CPU makes up a request's ``total`` (the deployment's own cost; the
#: upstream tool server and the scripted LLM are reported apart).
DEPLOYMENT = ("gateway", "redis", "postgres", "haproxy")


def script_commands() -> frozenset[str]:
    """Commands toolmesh's Lua scripts run inside Redis (read from the scripts themselves).

    INFO commandstats counts those too; they are no round trips, so they are reported apart."""
    names: set[str] = set()
    for entry in resources.files("toolmesh.store").joinpath("lua").iterdir():
        if entry.name.endswith(".lua"):
            names |= {m.lower() for m in re.findall(r"redis\.p?call\(\s*['\"]([A-Za-z]+)", entry.read_text())}
    return frozenset(names)


IN_SCRIPT = script_commands()


def redis_calls(port: int) -> dict[str, int]:
    """Calls of each command so far (INFO commandstats; INFO itself left out)."""
    out = subprocess.run(["redis-cli", "-p", str(port), "INFO", "commandstats"], capture_output=True, text=True,
                         check=True, timeout=10).stdout
    calls: dict[str, int] = {}
    for line in out.splitlines():
        if not line.startswith("cmdstat_") or line.startswith("cmdstat_info:"):
            continue
        name = line[len("cmdstat_"):].split(":", 1)[0]
        calls[name] = int(line.split("calls=", 1)[1].split(",", 1)[0])
    return calls


def wrk_agent(url: str, *, conns: int, seconds: int, env: dict[str, str]) -> dict[str, Any]:
    """One wrk run (one thread) of ``agent.lua``; the JSON summary it prints."""
    return procs.wrk(url, conns=conns, seconds=seconds, env=env, timeout_s=30, script=AGENT_LUA, grace_s=90)


def phase(load: Callable[[], dict[str, Any]], kinds: dict[str, Callable[[], list[int]]],
          redis_port: int) -> dict[str, Any]:
    """Run ``load`` (a wrk run) and measure it: per-kind CPU and Redis commands per ok request."""
    cpu0 = {k: procs.cpu_seconds(f()) for k, f in kinds.items()}
    calls0 = redis_calls(redis_port)
    res = load()
    calls1 = redis_calls(redis_port)
    cpu1 = {k: procs.cpu_seconds(f()) for k, f in kinds.items()}
    ok = int(res["ok"])
    delta = {name: n - calls0.get(name, 0) for name, n in calls1.items() if n > calls0.get(name, 0)}
    sent = {name: n for name, n in delta.items() if name not in IN_SCRIPT}
    sock = res.get("socket_errors", {})
    errors = int(res["bad_status"]) + int(res["rpc_errors"]) + sum(int(v) for v in sock.values())
    per = {k: round((cpu1[k] - cpu0[k]) / max(ok, 1) * 1e6, 1) for k in kinds}
    per["total"] = round(sum(per[k] for k in DEPLOYMENT if k in per), 1)
    out = {"per_s": round(ok / (res["duration_us"] / 1e6), 1), "ok": ok, "errors": errors,
           "cpu_us_per_request": per,
           # Round trips' worth: what clients sent (EVALSHA, ZREM, connection set-up).
           "redis_commands_per_request": round(sum(sent.values()) / max(ok, 1), 3),
           "redis_script_ops_per_request": round((sum(delta.values()) - sum(sent.values())) / max(ok, 1), 3),
           # Which commands, per request: where a figure above 1 comes from.
           "redis_sent_by_command": {name: round(n / max(ok, 1), 3) for name, n in sorted(sent.items())}}
    if errors and res.get("first_error"):
        out["first_error"] = res["first_error"]
    return out
