"""Running an evaluation: every task × model × mode, bounded concurrency, one JSONL line per sample.

Modes: ``single`` is one plain model call per sample (the verification-off baseline);
``reason`` runs the sample through :class:`toolmesh.reasoning.Reasoner`; ``agent`` runs it through
the agent runtime with tools (:mod:`toolmesh.reasoning.eval.agent`; the ``shop`` set needs it). Each finished sample is
appended to ``samples.jsonl`` at once, so a crashed or interrupted run loses nothing and
``resume`` runs only what is missing. A sample that failed (status ``error``) is kept in the log
and counted, and is tried again on resume; the newest line per sample wins.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolmesh.llm.base import ChatModel
from toolmesh.llm.types import ChatRequest, Message, Usage
from toolmesh.reasoning.eval.scorers import Score, score
from toolmesh.reasoning.tasks import TOOL_SCORERS, Task

if TYPE_CHECKING:
    from toolmesh.reasoning.eval.agent import ToolAgent

MODES = ("single", "reason", "agent")

#: Appended to the prompt in ``single`` mode for text-scored tasks, so the answer can be found.
SINGLE_SUFFIX = "\n\nWork it out step by step, then end your reply with one line of the form `ANSWER: <final answer>`."

_OUTPUT_LIMIT = 8000


#: ``(model, usage) -> USD`` or ``None`` when the model has no price.
PriceFn = Callable[[str, Usage], float | None]
#: ``(done, total, record)`` after each sample.
ProgressFn = Callable[[int, int, dict[str, Any]], None]


@dataclass
class EvalConfig:
    """What to run. ``models`` are the names given by the user (deployment or model names)."""

    models: list[str]
    modes: list[str] = field(default_factory=lambda: ["single"])
    concurrency: int = 4
    temperature: float = 0.0
    max_tokens: int = 1024
    #: Seconds per model call in ``single`` mode (None: the deployment's own timeout).
    call_timeout: float | None = None
    test_timeout: float = 10.0
    test_memory_mb: int = 512
    #: ``ReasoningConfig`` fields for ``reason`` mode (``model`` is set per model).
    reasoning: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("no model to evaluate")
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ValueError(f"unknown mode {bad[0] if bad else ''!r} (single, reason or agent)")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")


def sample_key(rec: dict[str, Any]) -> tuple[str, str, str]:
    return (str(rec["model"]), str(rec["mode"]), str(rec["task_id"]))


def read_log(path: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The newest record per (model, mode, task) of a sample log; a torn last line is skipped."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    if not path.exists():
        return out
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash: that sample simply runs again
            if isinstance(rec, dict) and {"model", "mode", "task_id"} <= rec.keys():
                out[sample_key(rec)] = rec
    return out


def finished(rec: dict[str, Any]) -> bool:
    """A sample that needs no new attempt: everything but an error."""
    return rec.get("status") != "error"


class Evaluation:
    """One run over ``tasks``; ``await run()`` returns every sample's record (old and new).

    ``llm`` is a :class:`~toolmesh.llm.base.ChatModel` (the Router, or ``as_chat_model(provider)``);
    ``agent`` serves ``agent`` mode."""

    def __init__(self, llm: ChatModel, tasks: list[Task], config: EvalConfig, *, run_id: str, log_path: Path,
                 price: PriceFn | None = None, progress: ProgressFn | None = None,
                 agent: ToolAgent | None = None) -> None:
        self.llm = llm
        self.agent = agent
        self.tasks = tasks
        self.config = config
        self.run_id = run_id
        self.log_path = log_path
        self.price = price
        self.progress = progress
        self._reasoners: dict[str, Any] = {}

    def plan(self) -> tuple[list[tuple[str, str, Task]], dict[tuple[str, str, str], dict[str, Any]]]:
        """(samples still to run, finished records kept from the log)."""
        old = read_log(self.log_path)
        todo: list[tuple[str, str, Task]] = []
        kept: dict[tuple[str, str, str], dict[str, Any]] = {}
        for model in self.config.models:
            for mode in self.config.modes:
                for task in self.tasks:
                    rec = old.get((model, mode, task.id))
                    if rec is not None and finished(rec):
                        kept[(model, mode, task.id)] = rec
                    else:
                        todo.append((model, mode, task))
        return todo, kept

    async def run(self) -> list[dict[str, Any]]:
        todo, kept = self.plan()
        total = len(todo) + len(kept)
        done = len(kept)
        results: dict[tuple[str, str, str], dict[str, Any]] = dict(kept)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        sem = asyncio.Semaphore(self.config.concurrency)
        with self.log_path.open("a", encoding="utf-8") as log:

            async def one(model: str, mode: str, task: Task) -> None:
                nonlocal done
                async with sem:
                    rec = await self.sample(model, mode, task)
                log.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
                log.flush()  # written as it finishes: a crash loses no finished sample
                results[sample_key(rec)] = rec
                done += 1
                if self.progress is not None:
                    self.progress(done, total, rec)

            if self.progress is not None:
                self.progress(done, total, {})
            await asyncio.gather(*(one(m, mode, t) for m, mode, t in todo))
        order = {(m, mode, t.id): i for i, (m, mode, t) in enumerate(
            (m, mode, t) for m in self.config.models for mode in self.config.modes for t in self.tasks)}
        return sorted(results.values(), key=lambda r: order.get(sample_key(r), len(order)))

    # -- one sample -------------------------------------------------------------------------

    async def sample(self, model: str, mode: str, task: Task) -> dict[str, Any]:
        """Run and score one sample; never raises for the model's or the task's failures."""
        rec: dict[str, Any] = {"run_id": self.run_id, "model": model, "mode": mode, "task_id": task.id,
                               "source": task.source, "scorer": task.scorer, "expected": _clip(task.answer, 300)}
        t0 = time.perf_counter()
        try:
            if task.scorer in TOOL_SCORERS and mode != "agent":
                raise ValueError(f"task {task.id!r} is scored on its tool calls: run it in agent mode")
            if mode == "agent":
                await self._agent_sample(model, task, rec, t0)
            else:
                await self._text_sample(model, mode, task, rec, t0)
        except Exception as exc:  # a failed sample is recorded and counted, never dropped
            rec.update(status="error", correct=False, error=f"{type(exc).__name__}: {exc}"[:1000],
                       latency_ms=round((time.perf_counter() - t0) * 1000.0, 1))
        rec["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        return rec

    async def _text_sample(self, model: str, mode: str, task: Task, rec: dict[str, Any], t0: float) -> None:
        """One ``single`` or ``reason`` sample, scored on its text."""
        if mode == "single":
            output = await self._single(model, task, rec)
        else:
            output = await self._reason(model, task, rec)
        rec["latency_ms"] = round((time.perf_counter() - t0) * 1000.0, 1)
        rec["output"] = _clip(output or "", _OUTPUT_LIMIT)
        if rec["status"] == "ok" or output:
            verdict = await self._score(task, output or "")
            rec["answer"] = _clip(verdict.answer, 2000)
            # partial chains (timeout, budget) are never counted as right
            rec["correct"] = verdict.correct and rec["status"] == "ok"
            if verdict.detail:
                rec["detail"] = verdict.detail
        else:
            rec["correct"] = False

    async def _agent_sample(self, model: str, task: Task, rec: dict[str, Any], t0: float) -> None:
        """One agent run; a ``facts`` task is scored on its tools and facts, any other on its answer."""
        if self.agent is None:
            raise ValueError("agent mode needs a tool agent (Evaluation(..., agent=HubAgent(...)))")
        result = await self.agent.ask(model, task)
        usage = result.usage
        called = [c.name for c in result.tool_calls]
        # max_turns still answers: the demo's agent has one tool turn, then the answer without tools
        ok = result.status in ("completed", "max_turns")
        rec.update(status="ok" if ok else "error", run_status=result.status,
                   resolved_model=(result.models or [model])[-1], input_tokens=usage.get("input_tokens", 0),
                   output_tokens=usage.get("output_tokens", 0), tokens=usage.get("total_tokens", 0),
                   cost_usd=result.cost_usd if result.priced else None,
                   tool_calls=[{"name": c.name, "arguments": c.arguments, "ok": c.ok} for c in result.tool_calls],
                   latency_ms=round((time.perf_counter() - t0) * 1000.0, 1),
                   output=_clip(result.answer, _OUTPUT_LIMIT), answer=_clip(result.answer, 2000))
        if not ok:
            rec["error"] = f"the run ended with status {result.status!r}"
        if task.scorer in TOOL_SCORERS:
            from toolmesh.reasoning.tasks import shop

            facts = await shop.expected_facts(task, self.agent.call)
            verdict = shop.score_answer(task, facts, called, result.answer)
            rec.update(expected=_clip(", ".join(str(f.value) for f in facts), 300), right_tools=verdict.right_tools,
                       exact_tools=verdict.exact_tools, facts_found=list(verdict.found),
                       right_facts=verdict.right_facts, kind=task.meta.get("kind"))
            correct, detail = verdict.correct, verdict.detail(called, facts)
        else:
            text = await self._score(task, result.answer)
            correct, detail = text.correct, text.detail
        rec["correct"] = correct and rec["status"] == "ok"
        if detail:
            rec["detail"] = detail

    async def _score(self, task: Task, output: str) -> Score:
        return await score(task, output, timeout=self.config.test_timeout, memory_mb=self.config.test_memory_mb)

    async def _single(self, model: str, task: Task, rec: dict[str, Any]) -> str:
        prompt = task.prompt if task.scorer == "tests" else task.prompt + SINGLE_SUFFIX
        request = ChatRequest(model=model, messages=[Message("user", prompt)], temperature=self.config.temperature,
                              max_tokens=self.config.max_tokens)
        response = await self.llm.complete(request, timeout=self.config.call_timeout)
        u = response.usage
        rec.update(status="ok", resolved_model=response.model, input_tokens=u.input_tokens,
                   output_tokens=u.output_tokens, tokens=u.total_tokens,
                   cost_usd=self.price(response.model, u) if self.price is not None else None)
        return response.message.content or ""

    async def _reason(self, model: str, task: Task, rec: dict[str, Any]) -> str:
        result: Any = None
        drafts: list[str] = []  # answers written with a step the verifier then sent back
        pending = ""
        async for ev in self._reasoner(model).stream(task.prompt):
            if ev.kind == "step_started":
                pending = ""
            elif ev.kind == "answer_delta":
                pending += ev.text
            elif ev.kind == "step_revised":
                if pending.strip():
                    drafts.append(pending.strip())
                pending = ""
            elif ev.kind == "final":
                result = ev.result
        if result is None:
            raise RuntimeError("the reasoning engine ended without a result")
        usage = dict(result.usage or {})
        rec.update(status=result.status, resolved_model=result.model, input_tokens=usage.get("input_tokens", 0),
                   output_tokens=usage.get("output_tokens", 0),
                   tokens=usage.get("total_tokens", usage.get("input_tokens", 0) + usage.get("output_tokens", 0)),
                   cost_usd=result.cost_usd, steps=len(result.steps),
                   revisions=sum(s.revisions for s in result.steps), forced=sum(1 for s in result.steps if s.forced),
                   engine_ms=round(result.elapsed_ms, 1), revised_answers=len(drafts))
        if result.error:
            rec["error"] = _clip(result.error, 1000)
        output = result.answer or ""
        if task.scorer == "tests" and "def " not in output:
            # the code may sit in the steps when the answer only says "see above"
            output = "\n\n".join([*(s.text for s in result.steps), output])
        rec["right_to_wrong"] = await self._revision_flips(task, drafts, output)
        return output

    async def _revision_flips(self, task: Task, drafts: list[str], final: str) -> int:
        """1 when an answer written before a revision was right and the final answer is wrong."""
        if not drafts or (await self._score(task, final)).correct:
            return 0
        for draft in drafts:
            if (await self._score(task, draft)).correct:
                return 1
        return 0

    def _reasoner(self, model: str) -> Any:
        reasoner = self._reasoners.get(model)
        if reasoner is None:
            from toolmesh.reasoning import Reasoner, ReasoningConfig

            cfg = ReasoningConfig.model_validate({**self.config.reasoning, "model": model})
            reasoner = self._reasoners[model] = Reasoner(self.llm, cfg)
        return reasoner


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
