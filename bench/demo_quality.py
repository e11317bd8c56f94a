"""How well the embedded local model answers questions of the demo's kind: right tools, right facts.

    python bench/demo_quality.py                          # the default bundled model, all questions
    python bench/demo_quality.py --model qwen2.5-coder-1.5b-instruct --out /tmp/q15.json
    python bench/demo_quality.py --only ref-zh,chat-joke  # a subset, by id

``toolmesh eval --tasks shop`` runs the same questions and scoring (``toolmesh.reasoning.tasks.shop``)
against any configured model; this script adds the embedded model's per-call timings and load.

The questions ship with the package (``toolmesh/servers/demo/questions.jsonl``): the reference
question and its variants (other SKUs, cities, member levels, coupons; Chinese and English), one-,
two- and three-tool questions, and chit-chat that needs no tool. Each names the tool calls it needs
and which fields of their results the answer must state. The expected *values* are not typed in the
file: they are computed here by making those calls on the demo servers, so they follow the data.

Each question runs through the agent exactly as ``toolmesh demo`` does (same agent settings, system
prompt built from the customer's profile, fetched from the ``users`` server), in a fresh
conversation. Scored: right tools (every expected tool called, and none for chit-chat), exact tools
(nothing else called), right facts (every expected value found in the answer), and wall time.
CPU-heavy: run one at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolmesh.agent.config import AgentConfig
from toolmesh.agent.events import Final, RunResult, UsageUpdate
from toolmesh.agent.runtime import Agent
from toolmesh.cli.demo import agent_demo_config, customer_prompt
from toolmesh.hub import Hub
from toolmesh.hub.configfile import parse_config
from toolmesh.llm.local import LocalProvider
from toolmesh.llm.local.provider import MAX_CALLS
from toolmesh.reasoning.tasks import Task, shop
from toolmesh.servers.demo import demo_config


@dataclass
class Question:
    """One line of questions.jsonl, as a task of the ``shop`` set."""

    task: Task

    @property
    def id(self) -> str:
        return self.task.id

    @property
    def kind(self) -> str:
        return str(self.task.meta["kind"])


def load_questions() -> list[Question]:
    """The shipped question set (``toolmesh eval``'s ``shop`` task set)."""
    return [Question(t) for t in shop.generate()]


async def expected_values(hub: Hub, q: Question) -> list[shop.Fact]:
    """The facts the answer must state, from the demo servers."""
    async def call(tool: str, arguments: dict[str, Any]) -> Any:
        r = await hub.call(tool, arguments)
        if not r.ok:
            raise SystemExit(f"{q.id}: expected call {tool}({arguments}) failed: {r.error}")
        return r.structured

    return await shop.expected_facts(q.task, call)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    questions = load_questions()
    if args.only:
        wanted = set(args.only.split(","))
        questions = [q for q in questions if q.id in wanted]
    hub = Hub()
    # a loaded machine can take more than the default 10 s to start five servers
    servers = parse_config(demo_config(), "demo").servers
    await hub.register_many([cfg.model_copy(update={"connect_timeout": 60.0}) for cfg in servers.values()])
    opts: dict[str, Any] = {"n_threads": args.threads, "max_calls": args.max_calls,
                            "tool_threshold": args.tool_threshold, "extra_call_threshold": args.extra_call_threshold}
    provider = (LocalProvider(args.path, **opts) if args.path else LocalProvider(bundled=args.model, **opts))
    base = AgentConfig.model_validate({**agent_demo_config()["agent"], "model": provider.model})
    agent = Agent(hub, provider, base)
    rows: list[dict[str, Any]] = []
    try:
        t0 = time.perf_counter()
        await provider.load()
        load_s = time.perf_counter() - t0
        for q in questions:
            facts = await expected_values(hub, q)
            customer = str(q.task.meta["customer"])
            profile = (await hub.call("users__get_profile", {"user_id": customer})).structured
            prompt = customer_prompt(customer, profile["level"], profile["city_zh"], profile["province_zh"],
                                     q.task.meta.get("viewing"), city_en=profile["city"])
            cfg = base.model_copy(update={"system_prompt": prompt})
            t1 = time.perf_counter()
            result, model_calls = await ask(agent, q, cfg)
            wall = time.perf_counter() - t1
            called = [c.name for c in result.tool_calls]
            verdict = shop.score_answer(q.task, facts, called, result.answer)
            right_tools, found = verdict.right_tools, list(verdict.found)
            row = {"id": q.id, "kind": q.kind, "lang": q.task.meta["lang"], "question": q.task.prompt,
                   "called": called, "arguments": [c.arguments for c in result.tool_calls],
                   "right_tools": right_tools, "exact_tools": verdict.exact_tools,
                   "facts": [f.value for f in facts], "facts_found": found, "right_facts": all(found),
                   "answer": result.answer, "seconds": round(wall, 2), "load_avg": load_average(),
                   "model_calls": model_calls}
            rows.append(row)
            if args.out:  # after every question: a long run stopped early still leaves its figures
                args.out.write_text(json.dumps(summarize(rows, provider.model, load_s), ensure_ascii=False, indent=1))
            mark = "✓" if right_tools and all(found) else "✗"
            steps = "+".join(f"{c['seconds']:.1f}" for c in model_calls)
            print(f"{mark} {q.id:22} {wall:6.1f}s ({steps}; load {row['load_avg']}) tools={called} facts={found}"
                  f" | {result.answer[:100]!r}",
                  file=sys.stderr, flush=True)
    finally:
        await provider.aclose()
        await hub.aclose()
    return summarize(rows, provider.model, load_s)


def load_average() -> float | None:
    """The 1-minute load average now: speed figures mean little without it."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


async def ask(agent: Agent, q: Question, cfg: AgentConfig) -> tuple[RunResult, list[dict[str, Any]]]:
    """Run one question in a fresh conversation; also returns each model call's tokens and seconds."""
    result: RunResult | None = None
    calls: list[dict[str, Any]] = []
    async for ev in agent.stream(q.task.prompt, user=str(q.task.meta["customer"]), config=cfg):
        if isinstance(ev, UsageUpdate):
            calls.append({"input_tokens": ev.input_tokens, "output_tokens": ev.output_tokens,
                          "seconds": round(ev.latency_ms / 1000, 2)})
        elif isinstance(ev, Final):
            result = ev.result
    if result is None:
        raise SystemExit(f"{q.id}: the agent ended without a result")
    return result, calls


def summarize(rows: list[dict[str, Any]], model: str, load_s: float) -> dict[str, Any]:
    """Totals overall and per kind of question."""
    def block(part: list[dict[str, Any]]) -> dict[str, Any]:
        secs = [r["seconds"] for r in part]
        return {"questions": len(part),
                "right_tools": sum(r["right_tools"] for r in part),
                "exact_tools": sum(r["exact_tools"] for r in part),
                "right_facts": sum(r["right_facts"] and r["right_tools"] for r in part),
                "median_s": round(statistics.median(secs), 1) if secs else None,
                "max_s": round(max(secs), 1) if secs else None}

    kinds = shop.KINDS
    return {"model": model, "load_s": round(load_s, 1), "all": block(rows),
            "by_kind": {k: block([r for r in rows if r["kind"] == k]) for k in kinds},
            "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="bundled model name (default: the default one)")
    parser.add_argument("--path", default=None, help="another GGUF file instead of a bundled model")
    parser.add_argument("--only", default=None, help="comma-separated question ids")
    parser.add_argument("--out", type=Path, default=None, help="write the full JSON report here")
    parser.add_argument("--threads", type=int, default=None,
                        help="llama.cpp threads (default: the cores other processes leave free)")
    parser.add_argument("--max-calls", type=int, default=MAX_CALLS,
                        help=f"most tool calls the model may write in one turn (default {MAX_CALLS})")
    parser.add_argument("--tool-threshold", type=float, default=None,
                        help="grounding: nats the message must add to the turn's best call (default: the model's)")
    parser.add_argument("--extra-call-threshold", type=float, default=None,
                        help="grounding: nats it must add to each further call's name (default: the model's)")
    parser.add_argument("--verbose", action="store_true", help="log each call's score (name-PMI) to stderr")
    args = parser.parse_args()
    if args.verbose:
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        logging.getLogger("toolmesh.llm.local.provider").setLevel(logging.DEBUG)
    report = asyncio.run(run(args))
    text = json.dumps(report, ensure_ascii=False, indent=1)
    if args.out:
        args.out.write_text(text)
    summary = {k: v for k, v in report.items() if k != "rows"}
    print(json.dumps(summary, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
