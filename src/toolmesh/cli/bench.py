"""``toolmesh bench``: runs the benchmark scripts of a source checkout (``bench/``)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

bench_app = typer.Typer(help="Benchmarks against peer libraries (same run, ratios).", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable JSON on stdout")]


def bench_dir() -> Path | None:
    """``$TOOLMESH_BENCH_DIR``, else ``bench/`` beside ``src/`` in a source checkout."""
    env = os.environ.get("TOOLMESH_BENCH_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[3] / "bench")
    return next((c for c in candidates if (c / "hub.py").exists()), None)


def run_bench(name: str, argv: list[str]) -> int:
    where = bench_dir()
    if where is None:
        typer.echo("error: benchmarks ship with the source checkout (bench/); set TOOLMESH_BENCH_DIR", err=True)
        return 2
    path = where / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"toolmesh_bench_{name}", path) if path.exists() else None
    if spec is None or spec.loader is None:
        typer.echo(f"error: no benchmark {name!r} in {where}", err=True)
        return 2
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look the module up by name
    spec.loader.exec_module(module)
    return int(module.main(argv))


def forward(name: str, as_json: bool, quick: bool, **options: int | None) -> NoReturn:
    """Run ``bench/<name>.py`` with the command's options as its argv; exit with its code."""
    argv = (["--json"] if as_json else []) + (["--quick"] if quick else [])
    for option, value in options.items():
        if value is not None:
            argv += [f"--{option}", str(value)]
    raise typer.Exit(run_bench(name, argv))


@bench_app.command("hub")
def bench_hub(
    as_json: JsonOpt = False,
    quick: Annotated[bool, typer.Option("--quick", help="a short smoke run")] = False,
    calls: Annotated[int | None, typer.Option("--calls", help="calls per measurement")] = None,
) -> None:
    """Hub vs the official SDK vs FastMCP: sequential HTTP/stdio and 64 concurrent callers."""
    forward("hub", as_json, quick, calls=calls)


@bench_app.command("agent")
def bench_agent(
    as_json: JsonOpt = False,
    quick: Annotated[bool, typer.Option("--quick", help="a short smoke run")] = False,
    calls: Annotated[int | None, typer.Option("--calls", help="sequential runs per framework")] = None,
) -> None:
    """Agent runtime vs the OpenAI Agents SDK and PydanticAI: latency, overhead, throughput."""
    forward("agent", as_json, quick, calls=calls)


@bench_app.command("gateway")
def bench_gateway(
    as_json: JsonOpt = False,
    quick: Annotated[bool, typer.Option("--quick", help="a short smoke run")] = False,
    seconds: Annotated[int | None, typer.Option("--seconds", help="seconds per wrk run")] = None,
    rounds: Annotated[int | None, typer.Option("--rounds", help="rounds per target")] = None,
) -> None:
    """toolmesh serve vs direct calls, FastMCP's proxy and mcp-proxy (wrk load): latency added, calls/s."""
    forward("gateway", as_json, quick, seconds=seconds, rounds=rounds)


@bench_app.command("cache")
def bench_cache(
    as_json: JsonOpt = False,
    quick: Annotated[bool, typer.Option("--quick", help="a short smoke run")] = False,
    seconds: Annotated[int | None, typer.Option("--seconds", help="seconds per wrk run")] = None,
    rounds: Annotated[int | None, typer.Option("--rounds", help="rounds per mode")] = None,
) -> None:
    """Tool-result sharing through the gateway (Zipf load, 20 ms upstream): off, coalescing, coalescing + cache."""
    forward("cache", as_json, quick, seconds=seconds, rounds=rounds)


@bench_app.command("scale")
def bench_scale(
    as_json: JsonOpt = False,
    quick: Annotated[bool, typer.Option("--quick", help="a short smoke run")] = False,
    seconds: Annotated[int | None, typer.Option("--seconds", help="seconds per wrk run")] = None,
) -> None:
    """1-3 serve processes behind haproxy, shared state (Redis + PostgreSQL) off/on: tool calls/s, agent
    requests/s, CPU per request of each process kind, Redis commands per request."""
    forward("scale", as_json, quick, seconds=seconds)


@bench_app.command("reason")
def bench_reason(
    as_json: JsonOpt = False,
    quick: Annotated[bool, typer.Option("--quick", help="a short smoke run")] = False,
    runs: Annotated[int | None, typer.Option("--runs", help="sequential runs per engine")] = None,
    batch: Annotated[int | None, typer.Option("--batch", help="prompts in the batch measurement")] = None,
) -> None:
    """Reasoning engine: overhead per step, checkpoint writes, batch throughput, vs LangGraph's loop."""
    forward("reason", as_json, quick, runs=runs, batch=batch)


@bench_app.command("soak")
def bench_soak(
    as_json: JsonOpt = False,
    quick: Annotated[bool, typer.Option("--quick", help="a short smoke run")] = False,
    seconds: Annotated[int | None, typer.Option("--seconds", help="seconds of load (default 600)")] = None,
    sessions: Annotated[int | None, typer.Option("--sessions", help="concurrent MCP sessions (default 1000)")] = None,
    chats: Annotated[int | None, typer.Option("--chats", help="concurrent streaming chats (default 200)")] = None,
    write_docs: Annotated[bool, typer.Option("--write-docs", help="record the figures in docs/reliability.md")] = False,
) -> None:
    """A gateway under 1,000 MCP sessions + 200 streaming chats: errors, memory, fds, tasks, p99 over time."""
    where = ["--write-docs"] if write_docs else []
    argv = (["--json"] if as_json else []) + (["--quick"] if quick else []) + where
    for option, value in (("seconds", seconds), ("sessions", sessions), ("chats", chats)):
        if value is not None:
            argv += [f"--{option}", str(value)]
    raise typer.Exit(run_bench("soak", argv))


@bench_app.command("faults")
def bench_faults(
    as_json: JsonOpt = False,
    quick: Annotated[bool, typer.Option("--quick", help="a short smoke run (3 s per fault)")] = False,
    seconds: Annotated[float | None, typer.Option("--seconds", help="seconds per fault (default 30)")] = None,
    callers: Annotated[int | None, typer.Option("--callers", help="concurrent callers (default 64)")] = None,
    only: Annotated[str | None, typer.Option("--only", help="comma-separated scenario ids")] = None,
    write_docs: Annotated[bool, typer.Option("--write-docs", help="put the table into docs/reliability.md")] = False,
) -> None:
    """Faults under load (issue 11): upstream kill -9, SIGSTOP, slow, resets, garbage, stdio crash loop,
    LLM 429/5xx/timeouts/stream cuts, through the gateway and the Hub: hung calls, unclear errors, recovery, leaks."""
    argv = (["--json"] if as_json else []) + (["--quick"] if quick else []) + (["--write-docs"] if write_docs else [])
    if seconds is not None:
        argv += ["--seconds", str(seconds)]
    if callers is not None:
        argv += ["--callers", str(callers)]
    if only:
        argv += ["--only", only]
    raise typer.Exit(run_bench("faults", argv))


@bench_app.command("fuzz")
def bench_fuzz(
    as_json: JsonOpt = False,
    quick: Annotated[bool, typer.Option("--quick", help="a short run (200 messages per surface)")] = False,
    messages: Annotated[int | None, typer.Option("--messages", help="messages per surface (default 10,000)")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="seed of the generators (default 0)")] = None,
) -> None:
    """Fuzz every HTTP surface of a real gateway (/mcp both eras, /servers/*/mcp, /ws, SSE, /v1, /admin via
    schemathesis): 0 crashes, 0 unexplained 5xx, stored records intact."""
    forward("fuzz", as_json, quick, messages=messages, seed=seed)
