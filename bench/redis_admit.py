"""Redis's own CPU per admission: what the shared state's one script per request costs inside Redis.

``bench scale`` shows Redis's CPU per tool call and per agent request under load, mixed with
everything else on the machine. This script isolates it: one redis-server (a throwaway one,
``toolmesh.testing.RedisServer``), the admission script the gateway loads
(``toolmesh.store.redis_limits.ADMIT``), and the keys and arguments ``SharedLimiter`` sends for

* ``tool_call``: a tenant and an API key token bucket (what ``/mcp`` and ``/v1`` requests carry);
* ``agent``: the same two buckets, the user's requests-per-minute window and concurrency slots.

Every limit admits (the cost of deciding, not of refusing). Commands are sent pipelined in
batches of 64, as the gateway's pipelined client does under load. For comparison the same
number of arguments through scripts that do nothing, only read ``TIME``, and read and write one
key, and a plain ``GET`` (Redis's per-command floor). Reported per call: Redis's CPU
(``INFO cpu``, user + system, including reading and answering the command) and the script's own
time (``INFO commandstats`` ``usec_per_call``).

    .venv/bin/python bench/redis_admit.py [--calls N] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import redis

from toolmesh.store.redis_limits import ADMIT, SharedLimiter
from toolmesh.store.redis_state import RedisState
from toolmesh.store.shared import Limit, StateSettings
from toolmesh.store.shared_users import user_limits
from toolmesh.testing.services import RedisServer

BATCH = 64
RATE = 1e9 / 60  # the benchmarks' limits: high enough to admit everything
FLOORS = {
    "empty_script": "return {1}",
    "time_only": "local t = redis.call('TIME') return {1}",
    "time_get_set": "local t = redis.call('TIME') local v = redis.call('GET', KEYS[1]) "
                    "redis.call('SET', KEYS[1], 'x', 'PX', 60000) return {1}",
}


def shapes(url: str) -> dict[str, tuple[list[str], list[str]]]:
    """Keys and script arguments of each request shape, built by the limiter the gateway uses."""
    limiter = SharedLimiter(RedisState(StateSettings(url=url)))
    buckets = [Limit.bucket("t", RATE, 1e6, "tenant acme"), Limit.bucket("k:key1", RATE, 1e6, "key key1")]
    out = {}
    for name, limits in (("tool_call", buckets), ("agent", buckets + user_limits("u1", 100_000, 10**9))):
        prepared = limiter._prepared("acme", limits)
        out[name] = (list(prepared.keys), list(prepared.tail))
    return out


def _admitted(reply: Any) -> bool:
    return isinstance(reply, list) and bool(reply) and reply[0] == 1


def _cpu(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def measure(r: redis.Redis, calls: int, send: Any, stat: str, ok: Any) -> dict[str, float]:
    """Redis CPU µs and command µs per call of ``send(pipe, i)``, ``calls`` times; every reply
    must pass ``ok`` (an admission that refused would measure the wrong thing)."""
    r.config_resetstat()
    before = _cpu(r)
    pipe = r.pipeline(transaction=False)
    bad = 0
    for i in range(calls):
        send(pipe, i)
        if len(pipe) >= BATCH:
            bad += sum(not ok(reply) for reply in pipe.execute())
    bad += sum(not ok(reply) for reply in pipe.execute())
    cpu = (_cpu(r) - before) / calls * 1e6
    if bad:
        raise RuntimeError(f"{bad} of {calls} {stat} replies were not the expected answer")
    usec = float(r.info("commandstats")[f"cmdstat_{stat}"]["usec_per_call"])
    return {"redis_cpu_us": round(cpu, 2), "command_us": round(usec, 2)}


def run(calls: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with RedisServer.running() as server:
        r = redis.Redis(port=server.port)
        admit = r.script_load(ADMIT.source)
        for name, (keys, tail) in shapes(server.url).items():
            r.flushall()
            results[name] = measure(r, calls, lambda p, i, k=keys, t=tail: p.evalsha(
                admit, len(k), *k, f"req{i}", *t), "evalsha", _admitted)
            results[name].update(keys=len(keys), args=1 + len(tail))
        keys, tail = shapes(server.url)["tool_call"]
        for name, source in FLOORS.items():
            sha = r.script_load(source)
            r.flushall()
            results[name] = measure(r, calls, lambda p, i, s=sha: p.evalsha(s, len(keys), *keys, "-", *tail),
                                    "evalsha", _admitted)
        r.set("x", "1")
        results["plain_get"] = measure(r, calls, lambda p, i: p.get("x"), "get", lambda v: v == b"1")
    return {"calls": calls, "batch": BATCH, "results": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50_000, help="calls per measurement (default 50,000)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    out = run(args.calls)
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{'shape':<14} {'Redis CPU µs/call':>18} {'command µs':>11}")
    for name, fig in out["results"].items():
        print(f"{name:<14} {fig['redis_cpu_us']:>18} {fig['command_us']:>11}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
