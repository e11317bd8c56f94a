"""The agent benchmark (``toolmesh bench agent``): toolmesh vs the OpenAI Agents SDK vs PydanticAI.

One run, one process tree: a scripted LLM server (``toolmesh.testing.scripted_llm``, a fixed
50 ms per completion) and one MCP server with three tools of 50 ms each (Streamable HTTP),
both subprocesses; the clients live in this process, one at a time, on one event loop (uvloop
for all alike). One user turn needs all three tools: completion → three tool calls at once →
completion, so the ideal run takes 2 × 50 ms + 50 ms = 150 ms.

Measured per framework: sequential runs after a warm-up (interleaved rounds, shuffled order)
for p50/p99 and ``overhead_p50_ms = p50 − 150``; then ``SESSIONS`` concurrent sessions for a
fixed time, completed runs per second. Every run is checked (three successful tool calls and
the scripted final answer, which names the number of tool results the model was sent); a
failed or wrong run counts as an error, never as a run. A hand-written aiohttp client (the
``floor``, no framework) does the same HTTP exchanges, to show what the servers and the
machine cost.

    .venv/bin/python bench/agent.py [--json] [--quick] [--calls N] [--duration S] [--sessions K]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # siblings, also when loaded by path
import peers
import runner
from agent_servers import frameworks as F
from agent_servers import procs
from agent_servers.floor import FloorAgent

MODEL_MS = 50.0
TOOL_MS = 50.0
IDEAL_MS = 2 * MODEL_MS + TOOL_MS
SESSIONS = 200
TARGET_OVERHEAD_MS = 5.0


def _log(msg: str) -> None:
    print(f"[bench agent] {msg}", file=sys.stderr, flush=True)


class Sample:
    """Latencies (seconds) of the correct runs of one client in one phase, plus CPU accounting."""

    # A plain class, not a dataclass: `toolmesh bench` may load this file by path.
    __slots__ = ("client_cpu", "elapsed", "errors", "first_error", "latencies", "llm_cpu", "machine_cpu",
                 "tool_cpu")

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.elapsed = 0.0
        self.errors = 0
        self.first_error: str | None = None
        self.client_cpu = 0.0
        self.llm_cpu: float | None = 0.0
        self.tool_cpu: float | None = 0.0
        self.machine_cpu: float | None = 0.0

    def fail(self, exc: BaseException | str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"[:300]

    def stats(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        n = len(lat)
        out: dict[str, Any] = {
            "p50_ms": round(_rank(lat, 0.50) * 1000, 2), "p99_ms": round(_rank(lat, 0.99) * 1000, 2),
            "runs": n, "errors": self.errors,
            "client_cpu_ms_per_run": round(self.client_cpu / n * 1000, 2) if n else None,
            "other_processes_cores": self._cores(None),
        }
        if self.first_error:
            out["first_error"] = self.first_error
        return out

    def _cores(self, which: str | None) -> float | None:
        if self.elapsed <= 0:
            return None
        if which is not None:
            v = getattr(self, which)
            return round(v / self.elapsed, 2) if v is not None else None
        if self.machine_cpu is None or self.llm_cpu is None or self.tool_cpu is None:
            return None
        return round(max(0.0, self.machine_cpu - self.client_cpu - self.llm_cpu - self.tool_cpu) / self.elapsed, 2)


def _rank(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


class _Cpu:
    """CPU seconds of this process, the two servers and the whole machine over one measured block."""

    def __init__(self, pids: tuple[int | None, int | None]) -> None:
        self.pids = pids
        self.t0 = time.process_time()
        self.llm0, self.tool0 = peers.cpu_seconds(pids[0]), peers.cpu_seconds(pids[1])
        self.machine0 = peers.machine_busy_seconds()

    def stop(self, s: Sample) -> None:
        s.client_cpu += time.process_time() - self.t0
        s.llm_cpu = _add(s.llm_cpu, self.llm0, peers.cpu_seconds(self.pids[0]))
        s.tool_cpu = _add(s.tool_cpu, self.tool0, peers.cpu_seconds(self.pids[1]))
        s.machine_cpu = _add(s.machine_cpu, self.machine0, peers.machine_busy_seconds())


def _add(total: float | None, before: float | None, after: float | None) -> float | None:
    return None if total is None or before is None or after is None else total + after - before


async def _one(client: Any, sample: Sample) -> None:
    t0 = time.perf_counter()
    try:
        answer, ok = await client.run(F.QUESTION)
    except Exception as exc:
        sample.fail(exc)
        return
    t1 = time.perf_counter()
    if answer == F.EXPECTED_ANSWER and ok == len(F.TOOLS):
        sample.latencies.append(t1 - t0)
    else:
        sample.fail(f"wrong run: {ok} successful tool calls, answer {answer[:120]!r}")


async def _sequential(client: Any, n: int, sample: Sample, pids: tuple[int | None, int | None]) -> None:
    cpu = _Cpu(pids)
    t0 = time.perf_counter()
    for _ in range(n):
        await _one(client, sample)
    sample.elapsed += time.perf_counter() - t0
    cpu.stop(sample)


async def _concurrent(pool: list[Any], runs_each: int, sample: Sample, pids: tuple[int | None, int | None]) -> None:
    """One task per session, each running ``runs_each`` turns back to back (a fixed total: every
    session keeps the client busy until close to the end, and no run is cut off)."""

    async def session(client: Any) -> None:
        for _ in range(runs_each):
            await _one(client, sample)

    cpu = _Cpu(pids)
    t0 = time.perf_counter()
    await asyncio.gather(*(session(c) for c in pool))
    sample.elapsed += time.perf_counter() - t0
    cpu.stop(sample)


def _leaf(seq: Sample, conc: Sample, floor_p50: float | None, sessions: int) -> dict[str, Any]:
    s = seq.stats()
    c = conc.stats()
    throughput = round(len(conc.latencies) / conc.elapsed, 1) if conc.elapsed > 0 else 0.0
    return {
        "p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"],
        "overhead_p50_ms": round(s["p50_ms"] - IDEAL_MS, 2),
        "throughput_rps": throughput,
        "overhead_vs_floor_p50_ms": round(s["p50_ms"] - floor_p50, 2) if floor_p50 is not None else None,
        "sequential": s,
        "concurrent": {"sessions": sessions, **c, "llm_server_cores": conc._cores("llm_cpu"),
                       "tool_server_cores": conc._cores("tool_cpu"), "client_cores": conc._cores("client_cpu")},
        "errors": seq.errors + conc.errors,
    }


async def run(quick: bool = False, *, calls: int | None = None, duration: float | None = None,
              sessions: int = SESSIONS, seed: int | None = None,
              toolmesh_max_concurrency: int | None = None) -> dict[str, Any]:
    """Run the benchmark once and return the result object (see the module docstring).

    ``calls`` sequential runs per client (default 100, quick 20) after a warm-up of 10 (quick 3);
    ``duration``: about this many seconds of ``sessions`` concurrent sessions per client (default
    10): after a warm-up of one run per session, each session runs a fixed number of turns sized
    from the warm-up's rate (quick: one turn per session, no warm-up).
    Servers are stopped before this returns, even on error."""
    n = calls if calls is not None else (10 if quick else 100)
    conc_s = duration if duration is not None else 10.0
    warmup = 3 if quick else 10
    n_rounds = max(1, min(n, 2 if quick else 4))
    rng = random.Random(seed)
    started = time.perf_counter()
    load_before = _loadavg()
    skipped = {fw: why for fw in F.FRAMEWORKS if (why := F.status(fw))}
    names = [fw for fw in F.FRAMEWORKS if fw not in skipped] + ["floor"]
    llm = procs.LLMServer(F.script(), MODEL_MS)
    tools = procs.ToolServer(TOOL_MS)
    clients: dict[str, Any] = {}
    seq = {name: Sample() for name in names}
    conc = {name: Sample() for name in names}
    runs_each: dict[str, int] = {}
    protocols: dict[str, str | None] = {}
    try:
        llm.start()
        tools.start()
        await llm.wait_ready()
        await tools.wait_ready()
        pids = (llm.proc.pid if llm.proc else None, tools.proc.pid if tools.proc else None)
        for name in names:
            _log(f"connecting {name}")
            adapter = FloorAgent if name == "floor" else F.ADAPTERS[name]
            clients[name] = await adapter.open(llm.base_url, tools.url, max_concurrency=toolmesh_max_concurrency)
            protocols[name] = F.PROTOCOL if name == "floor" else clients[name].protocol()
        _log(f"warm-up: {warmup} runs per client")
        for name in names:
            await _sequential(clients[name], warmup, Sample(), pids)
        per_round = [n // n_rounds + (1 if r < n % n_rounds else 0) for r in range(n_rounds)]
        for r, count in enumerate(per_round):
            order = names[:]
            rng.shuffle(order)
            _log(f"sequential round {r + 1}/{n_rounds}: {count} runs per client ({', '.join(order)})")
            for name in order:
                await _sequential(clients[name], count, seq[name], pids)
        _log(f"concurrent: {sessions} sessions, ~{conc_s:g}s per client")
        pools: dict[str, list[Any]] = {}
        for name in names:
            pool = getattr(clients[name], "session_pool", None)
            t_pool = time.perf_counter()
            pools[name] = await pool(sessions) if pool else [clients[name]] * sessions
            if pool:
                _log(f"{name}: {sessions} sessions opened in {time.perf_counter() - t_pool:.1f}s")
            if quick:  # a smoke run: no separate warm-up, one run per session
                runs_each[name] = 1
                continue
            warm = Sample()
            await _concurrent(pools[name], 1, warm, pids)
            rate = len(warm.latencies) / warm.elapsed if warm.elapsed > 0 else 0.0
            runs_each[name] = max(1, round(conc_s * rate / sessions))
            _log(f"{name}: warm-up {rate:.0f} runs/s -> {runs_each[name]} runs per session")
        # Two interleaved rounds (shuffled order) when there is more than one run per session.
        for r in range(2):
            order = names[:]
            rng.shuffle(order)
            for name in order:
                count = runs_each[name] // 2 + (runs_each[name] % 2 if r == 0 else 0)
                if count:
                    await _concurrent(pools[name], count, conc[name], pids)
    finally:
        for name, client in reversed(list(clients.items())):
            try:
                await client.aclose()
            except Exception as exc:  # a failing close must not keep servers alive
                _log(f"closing {name} failed: {exc!r}")
        procs.kill_all()
        llm.cleanup()

    floor = conc["floor"]
    floor_leaf = {**_leaf(seq["floor"], floor, None, sessions)}
    floor_leaf.pop("overhead_vs_floor_p50_ms")
    frameworks: dict[str, Any] = {fw: None for fw in F.FRAMEWORKS}
    for fw in names:
        if fw != "floor":
            frameworks[fw] = _leaf(seq[fw], conc[fw], floor_leaf["p50_ms"], sessions)
    result: dict[str, Any] = {"frameworks": frameworks, "floor": floor_leaf}
    if skipped:
        result["skipped"] = skipped
    result["ratios"] = _ratios(frameworks)
    result["targets"] = _targets(frameworks)
    result["errors"] = sum(s.errors for s in seq.values()) + sum(s.errors for s in conc.values())
    loop = asyncio.get_running_loop()
    result["meta"] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "client_event_loop": "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio",
        "ideal_ms": IDEAL_MS, "model_latency_ms": MODEL_MS, "tool_latency_ms": TOOL_MS,
        "sequential_runs": n, "warmup_runs": warmup, "rounds": n_rounds,
        "sessions": sessions, "concurrent_target_seconds": conc_s, "concurrent_runs_per_session": runs_each,
        "settings": {**F.SETTINGS, "toolmesh_max_concurrency": toolmesh_max_concurrency or "default"},
        "mcp_protocol": protocols,
        "tools_concurrent": {"toolmesh": True, "pydantic_ai": True, "floor": True,
                             "openai_agents": False},
        "loadavg_1m_before_after": [load_before, _loadavg()],
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "versions": F.versions(),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    return result


def _ratios(fw: dict[str, Any]) -> dict[str, float | None]:
    tm = fw.get("toolmesh")
    out: dict[str, float | None] = {}
    for peer in F.FRAMEWORKS[1:]:
        p = fw.get(peer)
        if tm is None or p is None:
            out[f"overhead_{peer}_over_toolmesh"] = out[f"throughput_toolmesh_over_{peer}"] = None
            continue
        out[f"overhead_{peer}_over_toolmesh"] = (
            round(p["overhead_p50_ms"] / tm["overhead_p50_ms"], 2) if tm["overhead_p50_ms"] > 0 else None)
        out[f"throughput_toolmesh_over_{peer}"] = (
            round(tm["throughput_rps"] / p["throughput_rps"], 2) if p["throughput_rps"] > 0 else None)
    return out


def _targets(fw: dict[str, Any]) -> dict[str, Any]:
    tm = fw.get("toolmesh")
    present = [v for v in fw.values() if v is not None]
    overhead = tm["overhead_p50_ms"] if tm else None
    return {
        "overhead_p50_ms": {"target": TARGET_OVERHEAD_MS, "reached": overhead,
                            "met": overhead is not None and overhead <= TARGET_OVERHEAD_MS},
        "lowest_overhead": {"met": tm is not None and all(tm["overhead_p50_ms"] <= v["overhead_p50_ms"]
                                                         for v in present)},
        "highest_throughput": {"met": tm is not None and all(tm["throughput_rps"] >= v["throughput_rps"]
                                                            for v in present)},
    }


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover - not on every platform
        return None


def _render(result: dict[str, Any]) -> None:
    meta = result["meta"]
    print(f"one turn, three 50 ms tools, 50 ms model; ideal {meta['ideal_ms']:g} ms; "
          f"{meta['sessions']} sessions; loop {meta['client_event_loop']}")
    print(f"{'client':<14}{'p50 ms':>9}{'p99 ms':>9}{'overhead':>10}{'vs floor':>10}{'runs/s':>9}"
          f"{'cpu ms/run':>12}{'errors':>8}")
    rows = {**result["frameworks"], "floor": result["floor"]}
    for name, leaf in rows.items():
        if leaf is None:
            print(f"{name:<14}  skipped: {result.get('skipped', {}).get(name, '')}")
            continue
        vs = leaf.get("overhead_vs_floor_p50_ms")
        cpu = leaf["concurrent"]["client_cpu_ms_per_run"]
        print(f"{name:<14}{leaf['p50_ms']:>9.1f}{leaf['p99_ms']:>9.1f}{leaf['overhead_p50_ms']:>10.1f}"
              f"{'' if vs is None else f'{vs:.1f}':>10}{leaf['throughput_rps']:>9.1f}"
              f"{'' if cpu is None else f'{cpu:.2f}':>12}{leaf['errors']:>8}")
    for name, t in result["targets"].items():
        print(f"target {name}: {'met' if t['met'] else 'missed'}" + (f" ({t['reached']} ms)" if "reached" in t else ""))
    print(f"errors: {result['errors']}; wall {meta['wall_s']} s")


def main(argv: list[str] | None = None) -> int:
    """CLI entry: ``--json`` prints one JSON object on stdout (progress goes to stderr)."""
    parser = argparse.ArgumentParser(prog="toolmesh bench agent", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (~30 s)")
    parser.add_argument("--calls", type=int, default=None, help="sequential runs per framework (default 100)")
    parser.add_argument("--duration", type=float, default=None,
                        help="about this many seconds of concurrent load per framework (default 10)")
    parser.add_argument("--sessions", type=int, default=SESSIONS, help="concurrent sessions (default 200)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the interleaving order")
    parser.add_argument("--toolmesh-max-concurrency", type=int, default=None,
                        help="ServerConfig.max_concurrency of toolmesh's MCP server (default: its default)")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop",
                        help="event loop of the client process (uvloop falls back to asyncio if missing)")
    args = parser.parse_args(argv)
    if args.calls is not None and args.calls < 1:
        parser.error("--calls must be >= 1")
    if args.sessions < 1:
        parser.error("--sessions must be >= 1")

    coro = run(args.quick, calls=args.calls, duration=args.duration, sessions=args.sessions, seed=args.seed,
               toolmesh_max_concurrency=args.toolmesh_max_concurrency)
    result = runner.run_guarded(lambda: runner.run_loop(coro, args.loop), procs.kill_all)
    return runner.emit(result, args.json, _render)


if __name__ == "__main__":
    sys.exit(main())
