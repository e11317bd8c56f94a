"""``toolmesh reason``: verified multi-step reasoning from the command line (one prompt, a resume, or a batch)."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from toolmesh.cli.common import EXIT_FAILED, EXIT_OK, fail, load, run_async
from toolmesh.errors import ConfigError, ToolmeshError
from toolmesh.hub.configfile import ToolmeshConfig

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="toolmesh config (llm, reasoning, store)")]


def reason_command(
    prompt: Annotated[str | None, typer.Argument(help="the problem to reason about")] = None,
    config: ConfigOpt = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="model or deployment name")] = None,
    verifier: Annotated[str | None, typer.Option(
        "--verifier", help="comma-separated: arithmetic, python, judge, tool:NAME, none")] = None,
    threshold: Annotated[float | None, typer.Option("--threshold", help="verdict score below this → revise")] = None,
    max_revisions: Annotated[int | None, typer.Option(
        "--max-revisions", help="rewrites before a forced commit")] = None,
    max_seconds: Annotated[float | None, typer.Option("--max-seconds", help="wall-clock limit of a run")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(
        "--checkpoint-every", help="steps between checkpoints")] = None,
    run_id: Annotated[str | None, typer.Option("--run-id", help="name the run (to --resume it after a crash)")] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="continue the checkpointed run ID")] = None,
    batch: Annotated[Path | None, typer.Option("--batch", help='JSONL file of {"id", "prompt"} lines')] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", help="batch prompts in flight")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object (one line per prompt with --batch)")] = False,
) -> None:
    """Reason step by step with verified steps: live steps with state and latency, or --json."""
    given = sum(x is not None for x in (prompt, resume, batch))
    if given != 1:
        fail("give exactly one of: a PROMPT, --resume ID, --batch FILE", as_json=as_json)
    if prompt is not None and not prompt.strip():
        fail("the prompt is empty", as_json=as_json)
    if concurrency < 1:
        fail("--concurrency must be at least 1", as_json=as_json)
    overrides: dict[str, Any] = {}
    if verifier is not None:
        overrides["verifiers"] = [v.strip() for v in verifier.split(",") if v.strip()]
    for key, value in (("threshold", threshold), ("max_revisions", max_revisions), ("max_seconds", max_seconds),
                       ("checkpoint_every", checkpoint_every)):
        if value is not None:
            overrides[key] = value
    cfg = load(config, as_json=as_json)
    opts = Options(model, overrides, run_id, as_json)
    try:
        if batch is not None:
            code = run_async(_batch(cfg, opts, batch, concurrency))
        else:
            code = run_async(_single(cfg, opts, prompt, resume))
    except (ConfigError, ValueError, LookupError) as exc:
        fail(str(exc), as_json=as_json)
    except ToolmeshError as exc:
        fail(str(exc), code=EXIT_FAILED, as_json=as_json, error_type=type(exc).__name__)
    raise typer.Exit(code)


@dataclass
class Options:
    model: str | None
    overrides: dict[str, Any]
    run_id: str | None
    as_json: bool


@contextlib.asynccontextmanager
async def reasoner_for(config: ToolmeshConfig, model: str | None,
                       overrides: dict[str, Any]) -> AsyncIterator[Any]:
    """A :class:`Reasoner` wired from a config file: router, store (checkpoints), ledger, and a Hub
    when a ``tool:`` verifier is used."""
    from toolmesh.agent.factory import build_llm, store_location
    from toolmesh.hub import Hub
    from toolmesh.llm.models import ModelRegistry
    from toolmesh.reasoning import Reasoner, ReasoningConfig
    from toolmesh.store.ledger import UsageLedger
    from toolmesh.store.sqlite import Store

    section = config.section("reasoning")
    registry = ModelRegistry.load(overrides=config.section("models") or None)
    llm, default_model = build_llm(config.section("llm"), registry, model, source=config.source)
    rcfg = ReasoningConfig.from_section(section, config.source,
                                        **{**overrides, "model": model or section.get("model") or default_model})
    store = Store(store_location(config))
    hub = None
    try:
        if any(v.startswith("tool:") for v in rcfg.verifiers):
            hub = Hub()
            for tenant, servers in config.tenants.items():
                await hub.register_many(servers, tenant=tenant)
        yield Reasoner(llm, rcfg, store=store, ledger=UsageLedger(store, registry.price), hub=hub)
    finally:
        if hub is not None:
            await hub.aclose()
        await llm.aclose()
        await store.aclose()


async def _single(config: ToolmeshConfig, opts: Options, prompt: str | None, resume: str | None) -> int:
    from toolmesh.reasoning import ReasoningResult

    async with reasoner_for(config, opts.model, opts.overrides) as reasoner:
        if opts.as_json:
            if resume is not None:
                result: ReasoningResult = await reasoner.resume(resume)
            else:
                assert prompt is not None
                result = await reasoner.run(prompt, opts.run_id)
            sys.stdout.write(json.dumps(result.to_json(), ensure_ascii=False, indent=2) + "\n")
        else:
            events = reasoner.resume_stream(resume) if resume is not None else reasoner.stream(
                prompt or "", opts.run_id)
            result = await _live(events)
    return EXIT_OK if result.status == "ok" else EXIT_FAILED


async def _live(events: AsyncIterator[Any]) -> Any:
    """Print steps as they stream, with their state and latency; the summary on stderr."""
    from rich.console import Console

    out = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    result = None
    async for ev in events:
        k = ev.kind
        if k == "run_started":
            err.print(f"[dim]run {ev.run_id}[/]")
        elif k == "step_started":
            out.print(f"\n[bold]Step {ev.step}[/] ", end="")
        elif k == "step_delta" or k == "answer_delta":
            out.print(ev.text, end="", markup=False)
        elif k == "step_revised":
            reason = ev.verdict.reason if ev.verdict else ""
            out.print(f"\n  [yellow]↻ revising (attempt {ev.attempt})[/]: {reason}\n  ", end="")
        elif k == "step_committed":
            v = ev.verdict
            score = "" if v is None or v.score is None else f" score {v.score:.2f}"
            state = "[red]forced[/]" if ev.forced else ("[green]verified[/]" if v and v.ok else "[dim]unverified[/]")
            out.print(f"\n  {state}{score} · committed in {ev.latency_ms:.0f} ms")
        elif k == "warning":
            err.print(f"[yellow]warning:[/] {ev.text}")
        elif k == "final":
            result = ev.result
    assert result is not None
    if result.answer is not None:
        out.print(f"\n[bold]Answer:[/] {result.answer}", markup=True)
    cost = "n/a" if result.cost_usd is None else f"${result.cost_usd:.6f}"
    colour = "green" if result.status == "ok" else "red"
    err.print(f"[{colour}]{result.status}[/] · {len(result.steps)} steps · {result.usage['total_tokens']} tokens · "
              f"{cost} · {result.elapsed_ms / 1000:.2f} s · run {result.run_id}"
              + (f"\n{result.error}" if result.error else ""))
    return result


async def _batch(config: ToolmeshConfig, opts: Options, path: Path, concurrency: int) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    items = read_batch(path)
    good = [(i, item) for i, item in enumerate(items) if "error" not in item]
    out: list[dict[str, Any]] = [{"id": it["id"], "status": "error", "answer": None, "error": it["error"]}
                                 if "error" in it else {} for it in items]
    async with reasoner_for(config, opts.model, opts.overrides) as reasoner:
        with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=Console(stderr=True), transient=not sys.stderr.isatty()) as bar:
            task = bar.add_task("reasoning", total=len(good))
            results = await reasoner.batch([it["prompt"] for _, it in good], concurrency=concurrency,
                                           progress=lambda done, total, res: bar.update(task, completed=done))
    for (i, item), res in zip(good, results, strict=True):
        out[i] = {"id": item["id"], **res.to_json()}
    for row in out:
        sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
    if not opts.as_json:
        ok = sum(r.get("status") == "ok" for r in out)
        sys.stderr.write(f"{ok}/{len(out)} ok\n")
    return EXIT_OK if all(r.get("status") == "ok" for r in out) else EXIT_FAILED


def read_batch(path: Path) -> list[dict[str, Any]]:
    """``{"id", "prompt"}`` per line; a bad line becomes ``{"id", "error"}`` (reported, never dropped)."""
    if not path.is_file():
        raise ValueError(f"batch file {str(path)!r} does not exist")
    items: list[dict[str, Any]] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            items.append({"id": f"line{n}", "error": f"line {n}: not JSON ({exc})"})
            continue
        if not isinstance(obj, dict):
            items.append({"id": f"line{n}", "error": f"line {n}: expected an object"})
            continue
        ident = obj.get("id", f"line{n}")
        prompt = obj.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            items.append({"id": ident, "error": f"line {n}: missing or empty \"prompt\""})
            continue
        items.append({"id": ident, "prompt": prompt})
    return items
