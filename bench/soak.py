"""The soak benchmark (``toolmesh bench soak``): a gateway under steady load for minutes, watched.

A real ``toolmesh serve`` process (1 worker by default) in front of a real toolmesh MCP server
(``servers/toolmesh_server.py``, Streamable HTTP 2026-07-28) with the scripted LLM
(``toolmesh.testing.scripted_llm``, its own process) as the LLM provider. The load
(``soak_load.py``, one asyncio process) holds ``--sessions`` MCP sessions open at once, spread
evenly over HTTP and WebSocket in both protocol eras (2025-11-25 with session ids, 2026-07-28
stateless), each calling ``add(a, b)`` again and again (a jittered ``--pause`` between calls),
plus ``--chats`` streaming ``/v1/chat/completions`` loops in agent mode (the gateway's agent
calls the MCP tool, then streams the model's answer). Every answer is checked.

Phases: start-up; a short priming burst (fills the connection pools); the idle *baseline*
(resident memory, open fds, asyncio tasks of the gateway's processes); the load for
``--seconds`` (sampled every ``--sample`` s: calls, errors, p50/p99 per window, RSS, fds,
tasks); every client closes its session; the *after* figures once the gateway is idle again.
The first ``max(10 s, 20 %)`` of the load is warm-up: memory growth is measured from its end.
Asyncio tasks come from the gateway's ``toolmesh_gateway_asyncio_tasks`` gauge (``/metrics``).

    .venv/bin/python bench/soak.py [--json] [--quick] [--seconds S] [--sessions N] [--chats N]
                                   [--sample S] [--pause S] [--chat-pause S] [--workers N] [--write-docs]

Exit status 1 when any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # siblings, also when loaded by path
import runner
import soak_load
from gateway_servers import procs
from gateway_servers.procs import PY, Proc
from gateway_servers.targets import UPSTREAM_SCRIPT

MODEL = "scripted-model"
TOOL = "b__add"
#: The agent's model asks for add(19, 23), then streams an answer quoting the tool's result.
LLM_RULES = {"rules": [
    {"when": {"last_role": "user", "has_tools": True},
     "respond": {"tool_calls": [{"name": TOOL, "arguments": {"a": 19, "b": 23}}], "latency_ms": 20}},
    {"when": {"last_role": "tool"},
     "respond": {"text": "The sum is {{tool_results}}, computed by the MCP tool.", "chunk_chars": 8,
                 "chunk_delay_ms": 5, "latency_ms": 20}},
], "models": [MODEL]}
DOCS = Path(__file__).resolve().parent.parent / "docs" / "reliability.md"
BEGIN, END = "<!-- soak:begin -->", "<!-- soak:end -->"
_TICK = os.sysconf("SC_CLK_TCK")


def _log(msg: str) -> None:
    print(f"[soak] {msg}", file=sys.stderr, flush=True)


# -- the gateway's processes, as the kernel sees them ------------------------------------------------
def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm", "rb") as fh:
                total += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    return total


def fd_count(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
    return total


async def task_count(port: int, key: str) -> int | None:
    """Sum of ``toolmesh_gateway_asyncio_tasks`` over the gateway's workers (``/metrics``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
                     "Connection: close\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    found = [float(line.rsplit(b" ", 1)[1]) for line in raw.splitlines()
             if line.startswith(b"toolmesh_gateway_asyncio_tasks")]
    return int(sum(found)) if found else None


class Gauges:
    """RSS, fds and tasks of the gateway (all its processes), read on demand."""

    def __init__(self, gateway: Proc, key: str) -> None:
        self.gateway = gateway
        self.key = key

    async def read(self) -> dict[str, Any]:
        pids = self.gateway.pids()
        return {"rss_mb": round(rss_bytes(pids) / 2**20, 1), "fds": fd_count(pids),
                "tasks": await task_count(self.gateway.port, self.key)}

    async def steady(self, at_least: float = 6.0, timeout: float = 30.0) -> dict[str, Any]:
        """Idle figures: fds and tasks unchanged over 3 readings 1 s apart, no sooner than ``at_least`` s
        (idle keep-alive connections of the priming burst time out meanwhile: uvicorn's after 5 s)."""
        started = time.monotonic()
        seen: list[tuple[int, int | None]] = []
        while True:
            now = await self.read()
            seen.append((now["fds"], now["tasks"]))
            elapsed = time.monotonic() - started
            if (elapsed >= at_least and len(set(seen[-3:])) == 1 and len(seen) >= 3) or elapsed > timeout:
                return now
            await asyncio.sleep(1.0)

    async def settle(self, base: dict[str, Any], timeout: float) -> dict[str, Any]:
        """The gauges once fds and tasks are back at ``base`` (or after ``timeout`` s: the leak stays visible)."""
        deadline = time.monotonic() + timeout
        while True:
            now = await self.read()
            back = now["fds"] <= base["fds"] and (now["tasks"] or 0) <= (base["tasks"] or 0)
            if back or time.monotonic() > deadline:
                return now
            await asyncio.sleep(0.5)


def _own_cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


# -- set-up ----------------------------------------------------------------------------------------
def _config(tmp: Path, up_port: int, llm_port: int) -> Path:
    config = {
        "servers": {"b": {"url": f"http://127.0.0.1:{up_port}/mcp", "protocol": "2026-07-28"}},
        "llm": {"deployments": [{"name": "scripted", "provider": "openai", "model": MODEL, "api_key": "unused",
                                 "base_url": f"http://127.0.0.1:{llm_port}/v1"}]},
        # Many users chat at once from one key: per-user run limits are not what is soaked here.
        "agent": {"user_limits": {"max_concurrent_runs": 100_000, "requests_per_minute": 1_000_000_000}},
        "store": {"path": str(tmp / "toolmesh.db")},
        "gateway": {"host": "127.0.0.1"},
    }
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path



def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft ``RLIMIT_NOFILE`` towards ``wanted`` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, wanted), hard) if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


# -- the run ---------------------------------------------------------------------------------------
async def _drive(gateway: Proc, key: str, opts: argparse.Namespace) -> dict[str, Any]:
    gauges = Gauges(gateway, key)
    base = f"http://127.0.0.1:{gateway.port}"
    # Priming: every kind of client once at full speed, so pools and caches exist before the baseline.
    prime = soak_load.Load(base, key, TOOL, pause=0.0, chat_pause=0.0, model=MODEL, seed=opts.seed + 1)
    await prime.start(min(opts.sessions, 64), min(opts.chats, 8), ramp_s=0.0)
    await asyncio.sleep(3.0)
    await prime.stop()
    if sum(prime.stats.errors.values()):
        raise RuntimeError(f"priming failed: {prime.stats.first_errors}")
    baseline = await gauges.steady()
    _log(f"baseline {baseline}; opening {opts.sessions} sessions and {opts.chats} chats")

    load = soak_load.Load(base, key, TOOL, pause=opts.pause, chat_pause=opts.chat_pause, model=MODEL,
                          seed=opts.seed, session_calls=opts.session_calls)
    started = time.monotonic()
    ramp = min(10.0, opts.seconds / 6)
    opening = asyncio.create_task(load.start(opts.sessions, opts.chats, ramp_s=ramp))  # sampled meanwhile
    warmup = max(10.0, opts.seconds * 0.2)
    samples: list[dict[str, Any]] = []
    last = time.monotonic()
    cpu_last = (procs.cpu_seconds(gateway.pids()), _own_cpu())
    while (elapsed := time.monotonic() - started) < opts.seconds:
        await asyncio.sleep(min(opts.sample, opts.seconds - elapsed))
        g = await gauges.read()
        now = time.monotonic()
        slowest = load.stats.slowest
        window = load.stats.take_window()
        span = max(now - last, 1e-6)
        last = now
        cpu = (procs.cpu_seconds(gateway.pids()), _own_cpu())
        gw_cpu, own_cpu = ((b - a) / span * 100 for a, b in zip(cpu_last, cpu, strict=True))
        cpu_last = cpu
        sample = {"t_s": round(now - started, 1), "warmup": now - started <= warmup, **g,
                  "sessions_open": load.open_sessions, "sessions_opened": load.sessions_opened,
                  "errors": sum(load.stats.errors.values()),
                  "mcp_calls_per_s": round(len(window["mcp"]) / span, 1),
                  "mcp_p50_ms": _pct(window["mcp"], 0.5), "mcp_p99_ms": _pct(window["mcp"], 0.99),
                  "chats_per_s": round(len(window["chat"]) / span, 1),
                  "chat_p50_ms": _pct(window["chat"], 0.5), "chat_p99_ms": _pct(window["chat"], 0.99),
                  "gateway_cpu_pct": round(gw_cpu), "load_cpu_pct": round(own_cpu),
                  # Which kind of session waited longest: a spike in one kind points at its code path.
                  "slowest": {w: [round(sec * 1000, 1), kind] for w, (sec, kind) in slowest.items()}}
        samples.append(sample)
        _log(" ".join(f"{k}={v}" for k, v in sample.items() if k != "warmup"))
    await opening
    peak_sessions = max((s["sessions_open"] for s in samples), default=0)
    await load.stop()
    after = await gauges.settle(baseline, timeout=30.0)
    result = _summary(opts, baseline, after, samples, load.stats, peak_sessions)
    result["sessions_opened"] = load.sessions_opened
    return result


def _summary(opts: argparse.Namespace, baseline: dict[str, Any], after: dict[str, Any], samples: list[dict[str, Any]],
             stats: soak_load.Stats, peak_sessions: int) -> dict[str, Any]:
    steady = [s for s in samples if not s["warmup"]] or samples[-1:]
    head, tail = steady[: max(1, len(steady) // 4)], steady[-max(1, len(steady) // 4):]
    rss_start = statistics.median(s["rss_mb"] for s in head)
    rss_end = statistics.median(s["rss_mb"] for s in tail)

    def stable(key: str) -> dict[str, Any]:
        values = [s[key] for s in steady if s[key] is not None]
        if not values:
            return {"median": None, "max": None, "first_quarter": None, "last_quarter": None}
        quarter = max(1, len(values) // 4)
        return {"median": round(statistics.median(values), 2), "max": max(values),
                "first_quarter": round(statistics.median(values[:quarter]), 2),
                "last_quarter": round(statistics.median(values[-quarter:]), 2)}

    return {
        "settings": {"seconds": opts.seconds, "sessions": opts.sessions, "chats": opts.chats, "workers": opts.workers,
                     "pause_s": opts.pause, "chat_pause_s": opts.chat_pause,
                     "session_calls": opts.session_calls, "sample_s": opts.sample,
                     "warmup_s": round(max(10.0, opts.seconds * 0.2), 1), "session_kinds": list(soak_load.KINDS)},
        "machine": {"cpus": os.cpu_count(), "load_before": opts.load_before, "load_after": list(os.getloadavg())},
        "errors": sum(stats.errors.values()), "errors_by_kind": dict(stats.errors), "first_errors": stats.first_errors,
        "calls": dict(stats.done), "peak_sessions_open": peak_sessions,
        "baseline": baseline, "after": after,
        "peak": {"fds": max(s["fds"] for s in samples), "tasks": max((s["tasks"] or 0) for s in samples),
                 "rss_mb": max(s["rss_mb"] for s in samples)},
        "rss_after_warmup_mb": rss_start, "rss_end_mb": rss_end,
        "rss_growth_pct": round((rss_end - rss_start) / rss_start * 100, 2) if rss_start else None,
        "mcp_p50_ms": stable("mcp_p50_ms"), "mcp_p99_ms": stable("mcp_p99_ms"),
        "chat_p50_ms": stable("chat_p50_ms"), "chat_p99_ms": stable("chat_p99_ms"),
        "mcp_calls_per_s": stable("mcp_calls_per_s"), "chats_per_s": stable("chats_per_s"),
        "samples": samples,
    }


def run(opts: argparse.Namespace) -> dict[str, Any]:
    raise_fd_limit(4 * (opts.sessions + opts.chats) + 1024)
    tmp = Path(tempfile.mkdtemp(prefix="tm-bench-soak-"))
    home = tmp / "home"
    home.mkdir()
    env = {**procs.CHILD_ENV, "TOOLMESH_HOME": str(home)}
    try:
        up_port, llm_port, gw_port = procs.free_port(), procs.free_port(), procs.free_port()
        rules = tmp / "llm_rules.json"
        rules.write_bytes(orjson.dumps(LLM_RULES))
        upstream = Proc("upstream", [PY, str(UPSTREAM_SCRIPT), "http", str(up_port)], port=up_port).start()
        llm = Proc("scripted_llm", [PY, "-m", "toolmesh.testing.scripted_llm", "--port", str(llm_port), "--rules",
                                    str(rules), "--no-log"], port=llm_port).start()
        config = _config(tmp, up_port, llm_port)
        key = procs.create_key(config, env, "chat,mcp,admin")
        upstream.wait_ready()
        llm.wait_ready()
        gateway = Proc("gateway", [PY, "-m", "toolmesh.cli.main", "serve", "--config", str(config), "--port",
                                   str(gw_port), "--workers", str(opts.workers)],
                       port=gw_port, env=env, ready_path="/readyz").start()
        gateway.wait_ready()
        try:
            tools = procs.list_tools(gw_port, "/mcp", key)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; gateway log: {gateway.tail()}") from exc
        if TOOL not in tools:
            raise RuntimeError(f"no {TOOL} tool at the gateway's /mcp (tools: {tools})")
        opts.load_before = list(os.getloadavg())
        result = runner.run_loop(_drive(gateway, key, opts), "uvloop")
        if gateway.proc is None or gateway.proc.poll() is not None:
            raise RuntimeError(f"the gateway exited during the soak: {gateway.tail()}")
        return result
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


# -- output ----------------------------------------------------------------------------------------
def table(result: dict[str, Any]) -> str:
    """The Markdown table of the per-window samples plus the summary lines."""
    rows = ["| t (s) | sessions | MCP calls/s | MCP p50 / p99 ms | chats/s | chat p50 / p99 ms | RSS MB | fds | tasks "
            "| gateway CPU % | errors |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in result["samples"]:
        mark = " (warm-up)" if s["warmup"] else ""
        rows.append(f"| {s['t_s']}{mark} | {s['sessions_open']} | {s['mcp_calls_per_s']} | {s['mcp_p50_ms']} / "
                    f"{s['mcp_p99_ms']} | {s['chats_per_s']} | {s['chat_p50_ms']} / {s['chat_p99_ms']} | "
                    f"{s['rss_mb']} | {s['fds']} | {s['tasks']} | {s['gateway_cpu_pct']} | {s['errors']} |")
    b, a, p = result["baseline"], result["after"], result["peak"]
    rows += ["", f"- errors: **{result['errors']}** ({result['calls']['mcp']} MCP calls, {result['calls']['chat']} "
             f"chats checked; {result['sessions_opened']} MCP sessions opened and closed)",
             f"- resident memory: {result['rss_after_warmup_mb']} MB after warm-up → {result['rss_end_mb']} MB at "
             f"the end (**{result['rss_growth_pct']} %**); idle {b['rss_mb']} MB before, {a['rss_mb']} MB after",
             f"- open fds: {b['fds']} idle before, {p['fds']} peak, **{a['fds']}** idle after",
             f"- asyncio tasks: {b['tasks']} idle before, {p['tasks']} peak, **{a['tasks']}** idle after",
             f"- MCP p99 per window: median {result['mcp_p99_ms']['median']} ms, first quarter "
             f"{result['mcp_p99_ms']['first_quarter']}, last quarter {result['mcp_p99_ms']['last_quarter']}, "
             f"max {result['mcp_p99_ms']['max']}",
             f"- chat p99 per window: median {result['chat_p99_ms']['median']} ms, first quarter "
             f"{result['chat_p99_ms']['first_quarter']}, last quarter {result['chat_p99_ms']['last_quarter']}, "
             f"max {result['chat_p99_ms']['max']}"]
    if result["first_errors"]:
        rows.append(f"- first errors: {result['first_errors']}")
    return "\n".join(rows)


def render(result: dict[str, Any]) -> None:
    print(table(result))


def write_docs(result: dict[str, Any], path: Path = DOCS) -> None:
    """Replace the text between the soak markers of docs/reliability.md with this run's figures."""
    s, m = result["settings"], result["machine"]
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path} has no {BEGIN} … {END} markers")
    load = ", ".join(f"{x:.2f}" for x in m["load_before"])
    body = (f"{BEGIN}\nMeasured by `toolmesh bench soak --write-docs` ({time.strftime('%Y-%m-%d', time.gmtime())}): "
            f"{s['sessions']} MCP sessions + {s['chats']} streaming chats for {s['seconds']} s, {s['workers']} "
            f"gateway worker(s), pause {s['pause_s']} s (MCP) / {s['chat_pause_s']} s (chats) between requests, "
            f"{m['cpus']} CPUs, load average before the run {load}.\n\n{table(result)}\n{END}")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    path.write_text(text[:start] + body + text[end:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (20 s, 100 sessions, 20 chats)")
    parser.add_argument("--seconds", type=int, default=None, help="seconds of load (default 600)")
    parser.add_argument("--sessions", type=int, default=None, help="concurrent MCP sessions (default 1000)")
    parser.add_argument("--chats", type=int, default=None, help="concurrent streaming chats (default 200)")
    parser.add_argument("--sample", type=float, default=None, help="seconds per sample window (default 10)")
    parser.add_argument("--pause", type=float, default=5.0, help="mean pause between a session's calls, s")
    parser.add_argument("--chat-pause", type=float, default=5.0, help="mean pause between a chat loop's chats, s")
    parser.add_argument("--session-calls", type=int, default=20,
                        help="calls per MCP session before its client ends it and opens another (0: never)")
    parser.add_argument("--workers", type=int, default=1, help="gateway worker processes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--write-docs", action="store_true", help="record the figures in docs/reliability.md")
    opts = parser.parse_args(argv)
    opts.seconds = opts.seconds or (20 if opts.quick else 600)
    opts.sessions = opts.sessions if opts.sessions is not None else (100 if opts.quick else 1000)
    opts.chats = opts.chats if opts.chats is not None else (20 if opts.quick else 200)
    opts.sample = opts.sample or (5.0 if opts.quick or opts.seconds < 120 else 10.0)
    if opts.seconds < 1 or opts.sample <= 0 or opts.workers < 1 or min(opts.sessions, opts.chats,
                                                                       opts.session_calls) < 0:
        parser.error("--seconds, --sample and --workers must be positive; --sessions, --chats and "
                     "--session-calls not negative")
    result = runner.run_guarded(lambda: run(opts), procs.stop_all)
    if opts.write_docs:
        write_docs(result)
    return runner.emit(result, opts.json, render)


if __name__ == "__main__":
    raise SystemExit(main())
