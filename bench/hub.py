"""The Hub benchmark (``toolmesh bench hub``): toolmesh vs the official MCP SDK vs FastMCP.

One run, one process tree. Every server is its own subprocess (HTTP on a free loopback port,
or a stdio child of the client); the three clients live in this process on one event loop
(uvloop when installed, for every client alike). Scenarios, all protocol 2026-07-28:

* ``http_seq``: sequential awaited ``call_tool("add")`` over Streamable HTTP, each client
  against its own library's best server;
* ``http_seq_sdk_server``: the same, every client against the official SDK's server;
* ``stdio_seq``: sequential calls over stdio, each client against its own library's server;
* ``concurrent``: 64 tasks sharing one client for a fixed duration, own HTTP server.

The official TypeScript SDK (``typescript``: bench/ts/bench.mjs on Node 22, protocol 2025-11-25,
the newest it speaks) takes part in ``http_seq``, ``stdio_seq`` and ``concurrent`` with its own
client and server; its client's calls run in its own Node process, which reports the same figures.
``http_seq_ts_server`` puts toolmesh's Hub client against the TypeScript server (2025-11-25 too).

Sequential pairs are measured in interleaved rounds (random order each round) after a
warm-up, so drift and noise hit every peer alike. Every answer is checked (the sum must be
right); wrong answers and exceptions are counted as ``errors``, never as calls.

    .venv/bin/python bench/hub.py [--json] [--quick] [--calls N] [--duration S] [--loop uvloop|asyncio]
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # siblings, also when loaded by path
import peers
import runner

LIBS = ("toolmesh", "sdk", "fastmcp")
TS = "typescript"
CONCURRENCY = 64
TARGETS = {"http_seq": 5.0, "stdio_seq": 2.0, "concurrent_calls_per_s": 3000.0,
           "http_seq_ratio_vs_typescript": 2.0, "concurrent_ratio_vs_typescript": 3.0}


def _log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


class Sample:
    """Latencies (seconds) of the successful calls of one (scenario, client) pair."""

    # A plain class, not a dataclass: `toolmesh bench` may load this file without registering
    # it in sys.modules, which @dataclass needs.
    __slots__ = ("client_cpu", "elapsed", "errors", "first_error", "latencies", "machine_cpu", "server_cpu")

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.elapsed = 0.0
        self.errors = 0
        self.first_error: str | None = None
        self.client_cpu = 0.0  # CPU seconds of this (client) process while measuring
        self.server_cpu: float | None = 0.0  # CPU seconds of the server process, None when unknown
        self.machine_cpu: float | None = 0.0  # CPU seconds of every process on the machine

    def leaf(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        n = len(lat)
        server_cpu = self.server_cpu if n and self.server_cpu is not None else None
        return {
            "calls_per_s": round(n / self.elapsed, 1) if self.elapsed > 0 else 0.0,
            "p50_ms": round(_rank(lat, 0.50) * 1000, 3),
            "p99_ms": round(_rank(lat, 0.99) * 1000, 3),
            "calls": n,
            "errors": self.errors,
            "client_cpu_us_per_call": round(self.client_cpu / n * 1e6, 1) if n else None,
            "server_cpu_us_per_call": round(server_cpu / n * 1e6, 1) if server_cpu is not None else None,
            # >0.1 here means other work competed for the cores during this measurement.
            "other_processes_cores": self._others(),
            **({"first_error": self.first_error} if self.first_error else {}),
        }

    def _others(self) -> float | None:
        if self.machine_cpu is None or self.server_cpu is None or self.elapsed <= 0:
            return None
        return round(max(0.0, self.machine_cpu - self.client_cpu - self.server_cpu) / self.elapsed, 2)

    def fail(self, exc: BaseException | str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"[:300]


def _rank(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


class _Cpu:
    """CPU seconds used by this process and a server process over one measured block."""

    def __init__(self, server_pid: int | None) -> None:
        self.pid = server_pid
        self.client0 = time.process_time()
        self.server0 = peers.cpu_seconds(server_pid)
        self.machine0 = peers.machine_busy_seconds()

    def stop(self, sample: Sample, client_cpu: float | None = None) -> None:
        """Add the block's CPU to ``sample``; ``client_cpu``: the client's own (another process's) figure."""
        sample.client_cpu += time.process_time() - self.client0 if client_cpu is None else client_cpu
        server1 = peers.cpu_seconds(self.pid)
        machine1 = peers.machine_busy_seconds()
        if self.machine0 is None or machine1 is None or sample.machine_cpu is None:
            sample.machine_cpu = None
        else:
            sample.machine_cpu += machine1 - self.machine0
        if self.server0 is None or server1 is None or sample.server_cpu is None:
            sample.server_cpu = None
        else:
            sample.server_cpu += server1 - self.server0


def _add_remote(sample: Sample, report: dict[str, Any]) -> None:
    """A block measured in another process (the TypeScript client): its latencies, errors, time."""
    sample.latencies.extend(report["latencies"])
    sample.elapsed += report["elapsed"]
    sample.errors += report["errors"]
    if report.get("first_error") and sample.first_error is None:
        sample.first_error = str(report["first_error"])[:300]


async def _sequential(client: Any, n: int, sample: Sample, start: int, server_pid: int | None = None) -> None:
    if getattr(client, "remote", False):
        cpu = _Cpu(server_pid)
        report = await client.sequential(n, start)
        cpu.stop(sample, report["cpu"])
        _add_remote(sample, report)
        return
    call, clock = client.call, time.perf_counter
    lat = sample.latencies
    cpu = _Cpu(server_pid)
    t_begin = clock()
    for i in range(start, start + n):
        t0 = clock()
        try:
            got = await call(i, 1)
        except Exception as exc:
            sample.fail(exc)
            continue
        t1 = clock()
        if got == i + 1:
            lat.append(t1 - t0)
        else:
            sample.fail(f"wrong sum: add({i}, 1) returned {got!r}")
    sample.elapsed += clock() - t_begin
    cpu.stop(sample)


async def _concurrent(client: Any, duration: float, sample: Sample | None, server_pid: int | None = None) -> None:
    """``CONCURRENCY`` tasks calling until ``duration`` is up; ``sample=None`` is a warm-up."""
    target = sample if sample is not None else Sample()
    if getattr(client, "remote", False):
        cpu = _Cpu(server_pid)
        report = await client.concurrent(duration, CONCURRENCY)
        cpu.stop(target, report["cpu"])
        _add_remote(target, report)
        return
    call, clock = client.call, time.perf_counter
    lat = target.latencies
    deadline = clock() + duration

    async def worker(k: int) -> None:
        i = k * 10_000_000
        while clock() < deadline:
            i += 1
            t0 = clock()
            try:
                got = await call(i, 1)
            except Exception as exc:
                target.fail(exc)
                continue
            t1 = clock()
            if got == i + 1:
                lat.append(t1 - t0)
            else:
                target.fail(f"wrong sum: add({i}, 1) returned {got!r}")

    cpu = _Cpu(server_pid)
    t_begin = clock()
    await asyncio.gather(*(worker(k) for k in range(CONCURRENCY)))
    target.elapsed += clock() - t_begin
    cpu.stop(target)


def _section(samples: dict[str, Sample | None], skipped: dict[str, str], keys: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for lib in keys:
        s = samples.get(lib)
        out[lib] = s.leaf() if s is not None else None
        if lib in skipped and s is None:
            out[f"{lib}_skipped"] = skipped[lib]
    tm = out.get("toolmesh")
    for lib in keys[1:]:
        peer = out.get(lib)
        ok = tm and peer and peer["calls_per_s"] > 0
        out[f"ratio_vs_{lib}"] = round(tm["calls_per_s"] / peer["calls_per_s"], 2) if ok else None  # type: ignore[index]
    return out


async def run(
    quick: bool = False,
    *,
    calls: int | None = None,
    duration: float | None = None,
    rounds: int | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Run every scenario once and return the result object (see the module docstring).

    ``calls`` sequential calls per (scenario, client) pair (default 3000, quick 300), split
    into ``rounds`` interleaved rounds; ``duration`` seconds of 64-way concurrent load per
    client (default 10, quick 2). Servers are stopped before this returns, even on error."""
    n = calls if calls is not None else (300 if quick else 3000)
    conc_s = duration if duration is not None else (2.0 if quick else 10.0)
    n_rounds = max(1, min(n, rounds if rounds is not None else (2 if quick else 5)))
    warmup = min(100, max(10, n // 3)) if quick or calls is not None else 100
    rng = random.Random(seed)
    fm_client_skip, fm_server_skip = peers.fastmcp_status()
    ts_skip = peers.typescript_missing()
    started = time.perf_counter()
    load_before = _loadavg()

    libs_http = [lib for lib in LIBS if not (lib == "fastmcp" and fm_server_skip)]
    servers = {lib: peers.HttpServer(lib) for lib in [*libs_http, *([] if ts_skip else [TS])]}
    opened: list[Any] = []
    try:
        for srv in servers.values():
            srv.start()
        # Stdio children start while the HTTP servers boot.
        pairs: dict[tuple[str, str], Any] = {}  # (scenario, lib) -> client
        skipped: dict[str, dict[str, str]] = {"http_seq": {}, "http_seq_sdk_server": {}, "stdio_seq": {},
                                              "http_seq_ts_server": {}, "concurrent": {}}

        async def open_pair(key: tuple[str, str], factory: Callable[..., Any], **kw: Any) -> None:
            _log(f"connecting {key[1]} client ({key[0]})")
            client = await factory(**kw)
            opened.append(client)
            pairs[key] = client

        for lib in LIBS:
            if lib == "fastmcp" and (fm_client_skip or fm_server_skip):
                skipped["stdio_seq"][lib] = fm_client_skip or fm_server_skip or ""
                continue
            await open_pair(("stdio_seq", lib), peers.CLIENTS[lib].open, stdio_args=peers.server_args(lib, "stdio"))
        if ts_skip is None:
            await open_pair(("stdio_seq", TS), peers.TsClient.open, stdio=True)
        for srv in servers.values():
            await srv.wait_ready()
        for lib in LIBS:
            if lib == "fastmcp" and (fm_client_skip or fm_server_skip):
                skipped["http_seq"][lib] = fm_client_skip or fm_server_skip or ""
            else:
                await open_pair(("http_seq", lib), peers.CLIENTS[lib].open, url=servers[lib].url)
            if lib == "sdk":
                pairs[("http_seq_sdk_server", lib)] = pairs[("http_seq", lib)]  # the same pair
            elif lib == "fastmcp" and fm_client_skip:
                skipped["http_seq_sdk_server"][lib] = fm_client_skip
            else:
                await open_pair(("http_seq_sdk_server", lib), peers.CLIENTS[lib].open, url=servers["sdk"].url)
        if ts_skip is None:
            await open_pair(("http_seq", TS), peers.TsClient.open, url=servers[TS].url)
            pairs[("http_seq_ts_server", TS)] = pairs[("http_seq", TS)]  # the same pair
            await open_pair(("http_seq_ts_server", "toolmesh"), peers.ToolmeshClient.open, url=servers[TS].url,
                            protocol=peers.TS_PROTOCOL)
        else:
            for scenario in ("http_seq", "stdio_seq", "http_seq_ts_server", "concurrent"):
                skipped[scenario][TS] = ts_skip
            skipped["http_seq_ts_server"]["toolmesh"] = ts_skip

        distinct = {id(c): c for c in pairs.values()}  # http_seq/sdk is http_seq_sdk_server/sdk
        by_client = {cid: Sample() for cid in distinct}
        _log(f"warm-up: {warmup} calls per pair ({len(distinct)} pairs)")
        for client in distinct.values():
            await _sequential(client, warmup, Sample(), 0)
        server_pid: dict[int, int | None] = {}
        for (scenario, lib), client in pairs.items():
            if scenario == "stdio_seq":
                server_pid[id(client)] = client.server_pid if lib == TS else peers.stdio_server_pid(lib)
            else:
                owner = {"http_seq_sdk_server": "sdk", "http_seq_ts_server": TS}.get(scenario, lib)
                proc = servers[owner].proc
                server_pid[id(client)] = proc.pid if proc is not None else None
        per_round = [n // n_rounds + (1 if r < n % n_rounds else 0) for r in range(n_rounds)]
        done = warmup
        for r, count in enumerate(per_round):
            order = list(distinct.items())
            rng.shuffle(order)
            _log(f"sequential round {r + 1}/{n_rounds}: {count} calls per pair")
            for cid, client in order:
                await _sequential(client, count, by_client[cid], done, server_pid[cid])
            done += count
        samples = {key: by_client[id(c)] for key, c in pairs.items()}

        conc: dict[str, Sample] = {}
        conc_libs = ["toolmesh", "sdk", *([] if ts_skip else [TS])]
        _log(f"concurrent: {CONCURRENCY} tasks, {conc_s:g}s per client")
        for lib in conc_libs:
            await _concurrent(pairs[("http_seq", lib)], min(1.0, conc_s / 2), None)
            conc[lib] = Sample()
        for _ in range(2):
            rng.shuffle(conc_libs)
            for lib in conc_libs:
                client = pairs[("http_seq", lib)]
                await _concurrent(client, conc_s / 2, conc[lib], server_pid[id(client)])
    finally:
        for client in reversed(opened):
            try:
                await client.aclose()
            except Exception as exc:  # a failing close must not keep servers alive
                _log(f"closing {client.library} client failed: {exc!r}")
        peers.kill_all()

    def section(scenario: str, keys: tuple[str, ...]) -> dict[str, Any]:
        return _section({lib: samples.get((scenario, lib)) for lib in keys}, skipped[scenario], keys)

    conc_keys = ("toolmesh", "sdk", TS)
    result: dict[str, Any] = {
        "http_seq": section("http_seq", (*LIBS, TS)),
        "http_seq_sdk_server": section("http_seq_sdk_server", LIBS),
        "stdio_seq": section("stdio_seq", (*LIBS, TS)),
        "http_seq_ts_server": section("http_seq_ts_server", ("toolmesh", TS)),
        "concurrent": _section({k: conc.get(k) for k in conc_keys}, skipped["concurrent"], conc_keys),
    }
    errors = sum(s.errors for s in by_client.values()) + sum(s.errors for s in conc.values())
    result["errors"] = errors
    result["targets"] = _targets(result)
    loop = asyncio.get_running_loop()
    result["meta"] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "protocol": peers.PROTOCOL,
        "typescript_protocol": peers.TS_PROTOCOL,
        "client_event_loop": "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio",
        "sequential_calls_per_pair": n,
        "warmup_calls": warmup,
        "rounds": n_rounds,
        "concurrency": CONCURRENCY,
        "concurrent_seconds_per_client": conc_s,
        "servers": {
            "toolmesh": "toolmesh.servers.serve (uvicorn+httptools, uvloop); stdio: serve(..., 'stdio')",
            "sdk": "MCPServer.streamable_http_app(stateless_http=True, json_response=True) on uvicorn; "
            "stdio: mcp.run('stdio')",
            "fastmcp": "FastMCP.http_app(stateless_http=True, json_response=True) on uvicorn; "
            "stdio: run('stdio')",
            TS: "bench/ts/bench.mjs: McpServer + StreamableHTTPServerTransport (sessions, enableJsonResponse) on "
            "node:http; stdio: StdioServerTransport; client: Client in its own Node process",
        },
        # Other work on the machine skews absolute figures (ratios much less: pairs are interleaved).
        "loadavg_1m_before_after": [load_before, _loadavg()],
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "versions": peers.versions(),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    return result


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover - not on every platform
        return None


def _targets(result: dict[str, Any]) -> dict[str, Any]:
    http = result["http_seq"]["ratio_vs_sdk"]
    stdio = result["stdio_seq"]["ratio_vs_sdk"]
    tm_conc = result["concurrent"]["toolmesh"]
    conc = tm_conc["calls_per_s"] if tm_conc else None
    return {
        "http_seq_ratio_vs_sdk": {"target": TARGETS["http_seq"], "reached": http,
                                  "met": http is not None and http >= TARGETS["http_seq"]},
        "stdio_seq_ratio_vs_sdk": {"target": TARGETS["stdio_seq"], "reached": stdio,
                                   "met": stdio is not None and stdio >= TARGETS["stdio_seq"]},
        "concurrent_calls_per_s": {"target": TARGETS["concurrent_calls_per_s"], "reached": conc,
                                   "met": conc is not None and conc >= TARGETS["concurrent_calls_per_s"]},
        **{name: {"target": TARGETS[name], "reached": value, "met": value is not None and value >= TARGETS[name]}
           for name, value in (("http_seq_ratio_vs_typescript", result["http_seq"]["ratio_vs_typescript"]),
                               ("concurrent_ratio_vs_typescript", result["concurrent"]["ratio_vs_typescript"]))},
    }


def main(argv: list[str] | None = None) -> int:
    """CLI entry: ``--json`` prints one JSON object on stdout (progress goes to stderr)."""
    parser = argparse.ArgumentParser(prog="toolmesh bench hub", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (~30 s)")
    parser.add_argument("--calls", type=int, default=None, help="sequential calls per client/server pair")
    parser.add_argument("--duration", type=float, default=None, help="seconds of concurrent load per client")
    parser.add_argument("--seed", type=int, default=None, help="seed of the interleaving order")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop",
                        help="event loop of the client process (uvloop falls back to asyncio if missing)")
    args = parser.parse_args(argv)
    if args.calls is not None and args.calls < 1:
        parser.error("--calls must be >= 1")

    def stop() -> None:  # HTTP servers and the clients' stdio children
        peers.kill_all()
        peers.kill_children()

    coro = run(args.quick, calls=args.calls, duration=args.duration, seed=args.seed)
    result = runner.run_guarded(lambda: runner.run_loop(coro, args.loop), stop)
    import report

    return runner.emit(result, args.json, report.render)


if __name__ == "__main__":
    sys.exit(main())
