"""``toolmesh eval``: measure models on task sets, with and without the reasoning engine (RSN-3).

A run lives in ``OUT/RUN_ID/``: ``meta.json`` (what was asked), ``samples.jsonl`` (one line per
sample, appended as each finishes), ``summary.json`` and ``report.html`` (written at the end).
"""

from __future__ import annotations

import json
import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from toolmesh.cli.common import EXIT_FAILED, EXIT_OK, emit_json, fail, home, load, run_async
from toolmesh.errors import ConfigError, UnknownModelError
from toolmesh.hub.configfile import ToolmeshConfig

FORMATS = ("table", "json", "md", "html")
MODES = {"single": ["single"], "reason": ["reason"], "both": ["single", "reason"], "agent": ["agent"]}


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def _names(tasks: str) -> list[str]:
    return [n.strip() for n in tasks.split(",") if n.strip()]


def _run_dir(out: Path, resume: str | None) -> Path:
    if resume is None:
        return out / new_run_id()
    direct = Path(resume)
    if (direct / "meta.json").is_file():
        return direct
    if (out / resume / "meta.json").is_file():
        return out / resume
    fail(f"no run {resume!r} under {str(out)!r} (give the run id, or the run's directory)")


def run_eval_command(*, config_path: Path | None, tasks: str | None, models: str | None, mode: str | None,
                     limit: int | None, concurrency: int, seed: int | None, resume: str | None, fmt: str,
                     out: Path | None, fail_under: float | None) -> int:
    """The command's body (options as typed); returns the exit code."""
    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if mode is not None and mode not in MODES:
        fail(f"--mode must be single, reason, both or agent, not {mode!r}")
    if fail_under is not None and not 0 <= fail_under <= 1:
        fail("--fail-under is an accuracy between 0 and 1")
    if concurrency < 1 or (limit is not None and limit < 1):
        fail("--concurrency and --limit must be at least 1")
    out_dir = out or home() / "eval"
    run_dir = _run_dir(out_dir, resume)
    meta: dict[str, Any] = {}
    if resume is not None:
        meta = json.loads((run_dir / "meta.json").read_text(encoding="utf-8"))
    # an option given now wins; on resume the rest comes from the run's meta.json
    tasks = tasks or meta.get("tasks") or "math,code,qa"
    mode = mode or meta.get("mode") or ("agent" if _names(tasks) == ["shop"] else "single")
    seed = seed if seed is not None else int(meta.get("seed", 0))
    limit = limit if limit is not None else meta.get("limit")
    cfg = load(config_path, as_json=fmt == "json")
    from toolmesh.reasoning.tasks import TOOL_SCORERS, TaskSetError, load_tasks

    try:
        task_list = load_tasks(tasks, seed=seed, limit=limit)
    except TaskSetError as exc:
        fail(str(exc), as_json=fmt == "json")
    if mode != "agent" and any(t.scorer in TOOL_SCORERS for t in task_list):
        fail("the shop set is scored on the tools the agent calls: run it with --mode agent",
             as_json=fmt == "json")
    if tasks.endswith(".jsonl"):
        tasks = str(Path(tasks).resolve())  # so that a resume from elsewhere finds the file
    try:
        return run_async(_run(cfg, task_list, run_dir, fmt=fmt, fail_under=fail_under, concurrency=concurrency,
                              meta={"run_id": run_dir.name, "tasks": tasks, "mode": mode, "seed": seed,
                                    "limit": limit, "models": models or meta.get("models")}))
    except (ConfigError, UnknownModelError, ValueError) as exc:
        fail(str(exc), as_json=fmt == "json")


async def _run(cfg: ToolmeshConfig, task_list: list[Any], run_dir: Path, *, fmt: str, fail_under: float | None,
               concurrency: int, meta: dict[str, Any]) -> int:
    from rich.console import Console

    from toolmesh.agent.factory import build_llm
    from toolmesh.llm.models import ModelRegistry
    from toolmesh.llm.types import ChatRequest, Message, Usage
    from toolmesh.reasoning.eval import EvalConfig, Evaluation, build_report, report

    stack = None
    if "agent" in MODES[meta["mode"]]:
        stack, agent = await _tool_agent(cfg, task_list, run_dir)
        llm, registry, default_model = stack.llm, stack.registry, stack.agent.config.model
    else:
        registry = ModelRegistry.load(overrides=cfg.section("models") or None)
        llm, default_model = build_llm(cfg.section("llm"), registry, source=cfg.source)
        agent = None
    try:
        names = [m.strip() for m in (meta["models"] or default_model).split(",") if m.strip()]
        for name in names:  # fail now, not once per sample, for a model nothing serves
            llm.candidates(ChatRequest(model=name, messages=[Message("user", "x")]))
        meta["models"] = ",".join(names)

        def price(model: str, usage: Usage) -> float | None:
            cost = registry.price(model, usage)
            return cost.usd if cost.priced else None

        reasoning = dict(cfg.section("reasoning"))
        if not cfg.section("llm"):  # the embedded CPU model: as generous per call as its deployment (factory)
            reasoning.setdefault("llm_timeout", 600.0)
        config = EvalConfig(models=names, modes=MODES[meta["mode"]], concurrency=concurrency, reasoning=reasoning)
        _write(run_dir / "meta.json", json.dumps(meta, indent=2) + "\n")
        console = Console(stderr=True)
        console.print(f"[dim]run {meta['run_id']}: {len(task_list)} tasks × {len(names)} model(s) × "
                      f"{meta['mode']} → {run_dir}[/]")
        records = await _with_progress(console, Evaluation(llm, task_list, config, run_id=meta["run_id"],
                                                           log_path=run_dir / "samples.jsonl", price=price,
                                                           agent=agent))
    finally:
        if stack is not None:
            await stack.aclose()
        else:
            await llm.aclose()
    rep = build_report(meta["run_id"], records, names, config.modes)
    _write(run_dir / "summary.json", json.dumps(rep, indent=2) + "\n")
    page = report.to_html(rep, records)
    _write(run_dir / "report.html", page)
    if fmt == "json":
        emit_json(rep)
    elif fmt == "md":
        sys.stdout.write(report.to_markdown(rep))
    elif fmt == "html":
        sys.stdout.write(page)
    else:
        _print_table(rep)
    console.print(f"[dim]samples: {run_dir / 'samples.jsonl'} (resume with --resume {meta['run_id']})[/]")
    if fail_under is not None:
        low = [f"{m}/{mode} {s['accuracy']}" for m, modes in rep["models"].items() for mode, s in modes.items()
               if s["accuracy"] is None or s["accuracy"] < fail_under]
        if low:
            console.print(f"[red]accuracy below {fail_under}: {', '.join(low)}[/]")
            return EXIT_FAILED
    return EXIT_OK


async def _tool_agent(cfg: ToolmeshConfig, task_list: list[Any], run_dir: Path) -> tuple[Any, Any]:
    """The agent stack and :class:`HubAgent` of ``agent`` mode. The ``shop`` set runs on the demo's
    servers and agent settings (its expected answers come from them) with the config's ``llm`` and
    ``models``, each customer's system prompt built as ``toolmesh demo`` builds it; other tasks run
    on the config's own servers and agent. Runs are recorded in the run directory's own store."""
    from toolmesh.agent.factory import build_agent
    from toolmesh.cli.demo import agent_demo_config, customer_prompt
    from toolmesh.hub.configfile import parse_config
    from toolmesh.reasoning.eval import HubAgent
    from toolmesh.reasoning.tasks import Task

    shop = any(t.source == "shop" for t in task_list)
    if shop:
        raw = {**agent_demo_config(), **{k: cfg.section(k) for k in ("llm", "models") if cfg.section(k)}}
        cfg = parse_config(raw, f"<the demo's servers + {cfg.source or 'defaults'}>")
    run_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before anything runs
    stack = await build_agent(cfg, store_path=str(run_dir / "agent.sqlite3"))
    agent = HubAgent(stack.hub, stack.agent)

    async def system_prompt(task: Task) -> str | None:
        customer = task.meta.get("customer")
        if not shop or not customer:
            return None
        profile = await agent.call("users__get_profile", {"user_id": customer})
        return customer_prompt(customer, profile["level"], profile["city_zh"], profile["province_zh"],
                               task.meta.get("viewing"), city_en=profile["city"])

    agent.system_prompt = system_prompt
    return stack, agent


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


async def _with_progress(console: Any, evaluation: Any) -> list[dict[str, Any]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("eval"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[last]}"),
                  TimeElapsedColumn(), console=console, transient=False) as bar:
        job = bar.add_task("samples", total=None, last="")

        def progress(done: int, total: int, rec: dict[str, Any]) -> None:
            last = ""
            if rec:
                mark = "✓" if rec.get("correct") else ("!" if rec.get("status") == "error" else "✗")
                last = f"{mark} {rec['model']}/{rec['mode']}/{rec['task_id']}"
            bar.update(job, completed=done, total=total, last=last)

        evaluation.progress = progress
        result: list[dict[str, Any]] = await evaluation.run()
        return result


def _print_table(rep: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from toolmesh.reasoning.eval import report

    table = Table(*report.COLUMNS, title=f"toolmesh eval {rep['run_id']}")
    for row in report.rows(rep):
        table.add_row(*row)
    console = Console(width=max(160, Console().width))
    console.print(table)
    for line in report.tool_lines(rep):
        console.print(line)
    console.print(f"[dim]{report.NOTE}[/]")
