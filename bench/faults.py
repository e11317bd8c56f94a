"""The fault campaign (``toolmesh bench faults``, issue 11 §1): faults under load, what every caller saw.

Real processes (see fault_servers/rig.py): upstream MCP servers (toolmesh's own and the
official SDK's, Streamable HTTP) behind fault proxies (toolmesh.testing.faultproxy), a stdio
server that crash-loops on demand, the scripted LLM behind a proxy, ``toolmesh serve`` and a
Hub in this process. Per scenario: 64 callers call through the gateway or the Hub; after 1 s
the fault starts, lasts ``--seconds`` (30; quick: 3), ends; the callers go on until a call
succeeds again (at most 20 s) and 1.5 s more. Measured per scenario (fault_servers/callers.py
defines the outcomes):

* hung: calls that took longer than their timeout + 1 s (the criterion: 0);
* unclear: calls that ended with an error that is unclear or of the wrong type (0);
* recovery: from the fault's end (upstream restarted / thawed / proxy clean) to the end of the
  first successful call started after it (< 1 s);
* leaks: open fds, upstream processes and asyncio tasks (Hub only: the gateway is another
  process) after the run minus before it, both taken at rest after a burst of load; memory
  growth (RSS) likewise.

    .venv/bin/python bench/faults.py [--json] [--quick] [--seconds S] [--callers N] [--only a,b]
                                     [--write-docs]

``--write-docs`` puts the table into docs/reliability.md between its markers. Exit status 1 if
any call hung or ended unclear, or a scenario did not recover.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import platform
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # siblings, also when loaded by path
import runner
from fault_servers import rig as R
from fault_servers.callers import ChatTarget, GatewayMcpTarget, HubTarget, Target, timed
from toolmesh.testing.faultproxy import Fault

CALLERS = 64
SECONDS, QUICK_SECONDS = 30.0, 3.0
LOAD_BEFORE = 1.0  # seconds of healthy load before the fault
RECOVERY_CAP = 20.0  # seconds after the fault's end to wait for a success
AFTER = 1.5  # seconds of load after the recovery
SETTLE = 0.7  # seconds at rest before a resource snapshot
SLACK = 1.0  # the criterion: every call ends within its timeout + 1 s
DOCS = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
MARK_START, MARK_END = "<!-- faults-table:start -->", "<!-- faults-table:end -->"


def _log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _http(status: int, reason: str, message: str, retry_after: str | None = None) -> bytes:
    body = (b'{"error":{"message":"%s","type":"scripted_fault","code":"%d"}}' % (message.encode(), status))
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            + (f"Retry-After: {retry_after}\r\n" if retry_after else "") + "Connection: close\r\n\r\n")
    return head.encode() + body


@dataclass(frozen=True)
class Scenario:
    """One fault on one path: ``path`` gateway | hub, ``upstream`` tm | sdk | crash | llm."""

    id: str
    path: str
    upstream: str
    fault: str
    what: str


SCENARIOS = [
    Scenario("gw_kill9", "gateway", "sdk", "kill9", "upstream (official SDK, HTTP) kill -9, restarted at the end"),
    Scenario("gw_sigstop", "gateway", "sdk", "sigstop", "upstream (official SDK) SIGSTOP, SIGCONT at the end"),
    Scenario("gw_slow", "gateway", "tm", "slow", "every chunk held 3 s (1.5x the call timeout)"),
    Scenario("gw_bandwidth", "gateway", "tm", "bandwidth", "2 KB/s each way"),
    Scenario("gw_reset", "gateway", "tm", "reset", "TCP reset after 120 bytes of each response"),
    Scenario("gw_half", "gateway", "tm", "half", "response closed (FIN) after 120 bytes"),
    Scenario("gw_blackhole", "gateway", "tm", "blackhole", "requests swallowed, never answered"),
    Scenario("gw_garbage", "gateway", "tm", "garbage", "512 random bytes for an answer, then close"),
    Scenario("gw_crashloop", "gateway", "crash", "crashloop", "stdio server exits on every call and start"),
    Scenario("hub_kill9", "hub", "tm", "kill9", "upstream (toolmesh, HTTP) kill -9, restarted at the end"),
    Scenario("hub_sigstop", "hub", "tm", "sigstop", "upstream (toolmesh) SIGSTOP, SIGCONT at the end"),
    Scenario("hub_slow", "hub", "sdk", "slow", "every chunk held 3 s (1.5x the call timeout)"),
    Scenario("hub_reset", "hub", "sdk", "reset", "TCP reset after 120 bytes of each response"),
    Scenario("hub_half", "hub", "sdk", "half", "response closed (FIN) after 120 bytes"),
    Scenario("hub_blackhole", "hub", "sdk", "blackhole", "requests swallowed, never answered"),
    Scenario("hub_garbage", "hub", "sdk", "garbage", "512 random bytes for an answer, then close"),
    Scenario("hub_crashloop", "hub", "crash", "crashloop", "stdio server exits on every call and start"),
    Scenario("llm_429", "gateway", "llm", "429", "provider answers 429 (Retry-After: 1)"),
    Scenario("llm_5xx", "gateway", "llm", "503", "provider answers 503"),
    Scenario("llm_timeout", "gateway", "llm", "blackhole", "provider never answers"),
    Scenario("llm_stream_cut", "gateway", "llm", "stream_cut", "streamed answer closed after 700 bytes"),
]
PROXY_FAULTS = {
    "slow": Fault("latency", latency=R.MCP_TIMEOUT * 1.5),
    "bandwidth": Fault("bandwidth", bytes_per_s=2048),
    "reset": Fault("reset", after_bytes=120),
    "half": Fault("half", after_bytes=120),
    "blackhole": Fault("blackhole"),
    "garbage": Fault("garbage"),
    "429": Fault("garbage", payload=_http(429, "Too Many Requests", "Rate limit reached (scripted fault)", "1")),
    "503": Fault("garbage", payload=_http(503, "Service Unavailable", "Overloaded (scripted fault)")),
    "stream_cut": Fault("half", after_bytes=700),
}


async def inject(rig: R.Rig, sc: Scenario) -> None:
    if sc.fault in ("kill9", "sigstop"):
        proc = rig.upstreams[sc.upstream].proc
        assert proc is not None
        os.killpg(proc.pid, signal.SIGKILL if sc.fault == "kill9" else signal.SIGSTOP)
        if sc.fault == "kill9":
            await asyncio.to_thread(proc.wait)
    elif sc.fault == "crashloop":
        rig.crash_flag.touch()
    else:
        rig.proxies[sc.upstream].set(PROXY_FAULTS[sc.fault])


async def clear(rig: R.Rig, sc: Scenario) -> None:
    if sc.fault == "kill9":
        up = rig.upstreams[sc.upstream]
        up.start()
        await asyncio.to_thread(up.wait_ready)  # the fault ends when the port is open again
    elif sc.fault == "sigstop":
        proc = rig.upstreams[sc.upstream].proc
        assert proc is not None
        os.killpg(proc.pid, signal.SIGCONT)
    elif sc.fault == "crashloop":
        rig.crash_flag.unlink(missing_ok=True)
    else:
        rig.proxies[sc.upstream].clear()


@dataclass
class Record:
    """Every call of one scenario: (start, seconds, kind, label), times on the loop's clock."""

    calls: list[tuple[float, float, str, str]] = field(default_factory=list)
    t_clear: float | None = None  # when the fault ended
    recovered: asyncio.Event = field(default_factory=asyncio.Event)  # a call started after it succeeded


async def _caller(target: Target, rec: Record, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        start = loop.time()
        took, (kind, label) = await timed(target)
        rec.calls.append((start, took, kind, label))
        if kind == "ok" and rec.t_clear is not None and start >= rec.t_clear:
            rec.recovered.set()
        if kind != "ok":
            await asyncio.sleep(0.05)  # a client's pause after an error; fast failures would spin


async def _load(target: Target, callers: int, seconds: float) -> Record:
    rec, stop = Record(), asyncio.Event()
    tasks = [asyncio.create_task(_caller(target, rec, stop)) for _ in range(callers)]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)
    return rec


class Side:
    """How one scenario reaches its path: the target and the resource snapshot at rest."""

    def __init__(self, rig: R.Rig, sc: Scenario) -> None:
        self.rig, self.sc = rig, sc
        self.session: Any = None

    def target(self) -> Target:
        rig, sc = self.rig, self.sc
        if sc.path == "hub":
            assert rig.hub is not None
            return HubTarget(rig.hub, sc.upstream, R.MCP_TIMEOUT)
        import aiohttp

        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        if sc.upstream == "llm":
            return ChatTarget(self.session, rig.gateway_url, rig.key, R.MODEL, R.LLM_TIMEOUT,
                              stream=sc.fault == "stream_cut")
        return GatewayMcpTarget(self.session, rig.gateway_url, rig.key, sc.upstream, R.MCP_TIMEOUT)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()  # no client connection stays open across a snapshot
            self.session = None

    async def snapshot(self) -> dict[str, Any]:
        await asyncio.sleep(SETTLE)
        if self.sc.path == "gateway":
            assert self.rig.gateway is not None and self.rig.gateway.proc is not None
            return R.snapshot(self.rig.gateway.proc.pid, await R.gateway_tasks(self.rig), workers=True)
        # This process also runs the proxies: 3 tasks and 2 sockets per proxied connection.
        proxied = sum(p.stats.active for p in self.rig.proxies.values())
        snap = R.snapshot(os.getpid(), len(asyncio.all_tasks()) - 3 * proxied, workers=False)
        snap["fds"] = int(snap["fds"] or 0) - 2 * proxied
        return snap


async def until_ok(target: Target, attempts: int = 80) -> None:
    for _ in range(attempts):
        _, (kind, label) = await timed(target)
        if kind == "ok":
            return
        await asyncio.sleep(0.25)
    raise RuntimeError(f"{target.name}: no successful call before the fault (last: {label})")


async def run_scenario(rig: R.Rig, sc: Scenario, seconds: float, callers: int) -> dict[str, Any]:
    side = Side(rig, sc)
    target = side.target()
    await until_ok(target)
    await _load(target, callers, 1.0)  # pools at their working size before the first snapshot
    await side.close()
    before = await side.snapshot()
    target = side.target()
    loop = asyncio.get_running_loop()
    rec, stop = Record(), asyncio.Event()
    tasks = [asyncio.create_task(_caller(target, rec, stop)) for _ in range(callers)]
    await asyncio.sleep(LOAD_BEFORE)
    t_fault = loop.time()
    await inject(rig, sc)
    await asyncio.sleep(seconds)
    await clear(rig, sc)
    t_clear = rec.t_clear = loop.time()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(rec.recovered.wait(), RECOVERY_CAP)
    await asyncio.sleep(AFTER)
    stop.set()
    await asyncio.gather(*tasks)
    await side.close()
    after = await side.snapshot()
    return summarize(sc, rec, target.timeout, t_fault, t_clear, before, after)


def summarize(sc: Scenario, rec: Record, timeout: float, t_fault: float, t_clear: float,
              before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    calls = rec.calls
    firsts = [s + took for s, took, k, _ in calls if k == "ok" and s >= t_clear]
    recovery = round(min(firsts) - t_clear, 3) if firsts else None
    hung = sum(1 for _, took, _, _ in calls if took > timeout + SLACK)
    clear_labels = Counter(label for _, _, k, label in calls if k == "clear")
    unclear = Counter(label for _, _, k, label in calls if k == "unclear")
    during = [c for c in calls if t_fault <= c[0] < t_clear]

    def delta(key: str) -> int | None:
        a, b = before.get(key), after.get(key)
        return None if a is None or b is None else int(b) - int(a)

    return {
        "path": sc.path, "upstream": sc.upstream, "fault": sc.fault, "what": sc.what,
        "timeout_s": timeout, "calls": len(calls), "ok": sum(1 for c in calls if c[2] == "ok"),
        "ok_during_fault": sum(1 for c in during if c[2] == "ok"), "calls_during_fault": len(during),
        "clear_errors": sum(clear_labels.values()), "clear_kinds": dict(clear_labels.most_common(4)),
        "unclear": sum(unclear.values()), "unclear_kinds": dict(unclear.most_common(4)),
        "hung": hung, "longest_s": round(max((took for _, took, _, _ in calls), default=0.0), 3),
        "recovery_s": recovery, "leaked_fds": delta("fds"), "leaked_procs": delta("upstream_procs"),
        "leaked_tasks": delta("tasks"),
        "mem_growth_mb": round(float(after["rss_mb"]) - float(before["rss_mb"]), 1),
        "before": before, "after": after,
    }


def _load_avg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


async def run(quick: bool = False, *, seconds: float | None = None, callers: int = CALLERS,
              only: list[str] | None = None) -> dict[str, Any]:
    """The campaign; returns the JSON result."""
    chosen = [s for s in SCENARIOS if not only or s.id in only]
    unknown = set(only or ()) - {s.id for s in SCENARIOS}
    if unknown:
        raise ValueError(f"unknown scenario(s) {sorted(unknown)}; known: {', '.join(s.id for s in SCENARIOS)}")
    secs = seconds if seconds is not None else (QUICK_SECONDS if quick else SECONDS)
    load_start = _load_avg()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="toolmesh-faults-") as tmp:
        rig = await R.start(Path(tmp), _log)
        try:
            for sc in chosen:
                _log(f"{sc.id}: {sc.what} ({secs:g} s, {callers} callers)")
                results[sc.id] = await run_scenario(rig, sc, secs, callers)
                r = results[sc.id]
                _log(f"  calls {r['calls']} hung {r['hung']} unclear {r['unclear']} {r['unclear_kinds']} "
                     f"recovery {r['recovery_s']} s, leaks fds {r['leaked_fds']} procs {r['leaked_procs']} "
                     f"tasks {r['leaked_tasks']}")
        finally:
            await R.stop(rig)
    failures = sum(r["hung"] + r["unclear"] + (r["recovery_s"] is None) for r in results.values())
    return {
        "scenarios": results, "errors": failures,
        "meta": {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "seconds_per_fault": secs,
                 "callers": callers, "quick": quick, "mcp_timeout_s": R.MCP_TIMEOUT, "llm_timeout_s": R.LLM_TIMEOUT,
                 "load_avg_start": load_start, "load_avg_end": _load_avg(), "cpus": os.cpu_count(),
                 "python": platform.python_version()},
    }


def table(result: dict[str, Any]) -> str:
    """The markdown table of a result (also what --write-docs puts into docs/reliability.md)."""
    m = result["meta"]
    lines = [f"Measured {m['date']}: {m['callers']} concurrent callers, {m['seconds_per_fault']:g} s per fault, "
             f"call timeout {m['mcp_timeout_s']:g} s (model {m['llm_timeout_s']:g} s), {m['cpus']} CPUs, load "
             f"average {m['load_avg_start']} at the start and {m['load_avg_end']} at the end.", "",
             "| Scenario | Fault | Calls (ok during fault) | Hung | Unclear | Clear errors | Longest s | "
             "Recovery s | Leaked fds / procs / tasks | Mem MB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for sid, r in result["scenarios"].items():
        kinds = ", ".join(f"{k} {v}" for k, v in r["clear_kinds"].items()) or "-"
        unclear = str(r["unclear"]) + (" (" + ", ".join(f"{k}: {v}" for k, v in r["unclear_kinds"].items()) + ")"
                                       if r["unclear"] else "")
        tasks = "-" if r["leaked_tasks"] is None else str(r["leaked_tasks"])
        rec = "never" if r["recovery_s"] is None else f"{r['recovery_s']:.2f}"
        lines.append(f"| `{sid}` ({r['path']} → {r['upstream']}) | {r['what']} | {r['calls']} ({r['ok_during_fault']}) "
                     f"| {r['hung']} | {unclear} | {kinds} | {r['longest_s']:.2f} | {rec} | "
                     f"{r['leaked_fds']} / {r['leaked_procs']} / {tasks} | {r['mem_growth_mb']:+.1f} |")
    return "\n".join(lines) + "\n"


def write_docs(result: dict[str, Any], path: Path = DOCS) -> None:
    text = path.read_text()
    if MARK_START not in text or MARK_END not in text:
        raise RuntimeError(f"{path} has no {MARK_START} ... {MARK_END} markers")
    head, rest = text.split(MARK_START, 1)
    _, tail = rest.split(MARK_END, 1)
    path.write_text(f"{head}{MARK_START}\n{table(result)}{MARK_END}{tail}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/faults.py", description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_SECONDS:g} s per fault")
    ap.add_argument("--seconds", type=float, help=f"seconds per fault (default {SECONDS:g})")
    ap.add_argument("--callers", type=int, default=CALLERS, help=f"concurrent callers (default {CALLERS})")
    ap.add_argument("--only", help="comma-separated scenario ids: " + ", ".join(s.id for s in SCENARIOS))
    ap.add_argument("--write-docs", action="store_true", help=f"put the table into {DOCS.name}")
    args = ap.parse_args(argv)
    if args.callers < 1 or (args.seconds is not None and args.seconds <= 0):
        ap.error("--callers and --seconds must be positive")
    only = [s for s in (args.only or "").split(",") if s] or None
    started = time.monotonic()
    result = runner.run_guarded(
        lambda: runner.run_loop(run(args.quick, seconds=args.seconds, callers=args.callers, only=only), "uvloop"),
        R.procs.stop_all)
    result["meta"]["wall_s"] = round(time.monotonic() - started, 1)
    if args.write_docs:
        write_docs(result)
        _log(f"table written to {DOCS}")
    return runner.emit(result, args.json, lambda r: sys.stdout.write(table(r)))


if __name__ == "__main__":
    sys.exit(main())
