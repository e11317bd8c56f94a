"""One reasoning run: the step state machine, limits, checkpoints (used by :class:`Reasoner`).

Per step: one model call from the committed chain (THINKING), verification (VERIFIED or
REVISING with the verifier's reason, at most ``max_revisions`` rewrites, then a forced
commit), COMMITTED, checkpoint every N commits. When the answer is out, a coherence check,
and every step of the finished chain becomes TERMINAL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from toolmesh.agent.budget import BudgetScope
from toolmesh.errors import BudgetExceededError, LLMError, ToolmeshError
from toolmesh.llm.types import ChatRequest, Message, ReasoningDelta, TextDelta, Usage
from toolmesh.reasoning import adapter, prompts, verifiers
from toolmesh.reasoning.codec import step_from_dict, step_to_dict, verdict_from_dict, verdict_to_dict
from toolmesh.reasoning.markers import Markers, ResponseParser
from toolmesh.reasoning.types import (
    CoherenceCheck,
    ReasoningConfig,
    ReasoningEvent,
    ReasoningResult,
    Status,
    Step,
    StepState,
    Transition,
    Verdict,
    Verifier,
)
from toolmesh.store.checkpoints import CheckpointRow, Kind, RunCheckpoints

log = logging.getLogger("toolmesh.reasoning")

Emit = Callable[[ReasoningEvent], None]


class RunStopped(Exception):
    """The run cannot go on; ``status`` says how it ends."""

    def __init__(self, status: Status, reason: str) -> None:
        super().__init__(reason)
        self.status: Status = status
        self.reason = reason


@dataclass
class Generation:
    """What one model call produced, split at the markers."""

    pre: str
    step: str
    answer: str | None
    saw_step: bool
    first_token_ms: float | None


@dataclass
class RunParts:
    """The collaborators a run uses (from its :class:`Reasoner`)."""

    llm: adapter.ChatModel
    checkpoints: RunCheckpoints | None
    ledger: adapter.Ledger | None
    hub: verifiers.ToolCaller | None
    price: adapter.PriceFn | None
    extra_verifiers: Sequence[Verifier] = ()
    coherence: CoherenceCheck | None = None
    budgets: list[BudgetScope] = field(default_factory=list)
    context_window: int | None = None


class Run:
    """State of one run; :meth:`execute` drives it to a :class:`ReasoningResult`."""

    def __init__(self, parts: RunParts, cfg: ReasoningConfig, prompt: str, run_id: str) -> None:
        self.parts = parts
        self.cfg = cfg
        self.prompt = prompt
        self.run_id = run_id
        self.markers = Markers(cfg.step_marker, cfg.answer_marker)
        self.system = prompts.system_prompt(self.markers, cfg.system_prompt)
        self.steps: list[Step] = []
        self.answer: str | None = None
        self.summary: str | None = None
        self.summary_upto = 0
        self.seq = 0
        self.saved = 0  # steps already in a checkpoint row
        self.answer_saved = False
        self.resumed = False
        self.base_usage = adapter.usage_dict(Usage())
        self.base_cost: float | None = 0.0
        self.warnings: list[str] = []
        self.meter = adapter.Meter(
            parts.llm, budgets=adapter.run_budgets(cfg.budget, parts.budgets), price=parts.price,
            ledger=parts.ledger, run_id=run_id, tenant=cfg.tenant, user=cfg.user, timeout=cfg.llm_timeout,
            scenario=cfg.scenario, max_output_tokens=cfg.max_output_tokens,
            rate_limit_retries=cfg.rate_limit_retries, budget_wait=cfg.budget_wait)
        ctx = verifiers.VerifyContext(prompt, cfg, self.meter, parts.hub, cfg.model)
        self.verifiers = verifiers.build(ctx, parts.extra_verifiers)
        self.verify_ctx = ctx
        self.emit: Emit = _ignore
        self.t0 = time.perf_counter()

    # -- restoring -------------------------------------------------------------------------------------

    def restore(self, rows: list[CheckpointRow]) -> ReasoningResult | None:
        """Continue from checkpoint rows; returns the stored result if the run already finished ok."""
        self.resumed = True
        for row in rows[1:]:
            d = row.data
            if row.kind == "steps":
                self.steps.extend(step_from_dict(s) for s in d.get("steps", []))
                if d.get("answer") is not None:
                    self.answer = str(d["answer"])
                if d.get("summary") is not None:
                    self.summary, self.summary_upto = str(d["summary"]), int(d.get("summary_upto", 0))
            if "usage" in d:
                self.base_usage = {k: int(v) for k, v in d["usage"].items()}
                self.base_cost = d.get("cost_usd")
            if row.kind == "end" and d.get("status") == "ok":
                self._finish_chain()
                return self._result("ok", None, elapsed=float(d.get("elapsed_ms", 0.0)),
                                    coherence=verdict_from_dict(d.get("coherence")))
        self.seq = rows[-1].seq + 1 if rows else 0
        self.saved = len(self.steps)
        self.answer_saved = self.answer is not None
        return None

    # -- driving ---------------------------------------------------------------------------------------

    async def execute(self, emit: Emit | None = None) -> ReasoningResult:
        self.emit = emit or _ignore
        self.t0 = time.perf_counter()
        self.emit(ReasoningEvent("run_started", self.run_id, text=self.prompt))
        status: Status = "ok"
        error: str | None = None
        coherence: Verdict | None = None
        limit = asyncio.timeout(self.cfg.max_seconds)
        try:
            async with limit:
                if self.parts.checkpoints is not None and not self.resumed:
                    await self._write("start", {"prompt": self.prompt, "model": self.cfg.model,
                                                "config": self.cfg.model_dump(mode="json")})
                await self._loop()
                coherence = await self._coherence()
                if coherence is not None and coherence.ok is False:
                    status, error = "error", f"coherence check failed: {coherence.reason}"
                self._finish_chain()
        except TimeoutError as exc:
            if limit.expired():
                status, error = "timeout", f"the run exceeded its limit of {self.cfg.max_seconds:g}s"
            else:
                status, error = "error", f"timed out: {exc}"
        except RunStopped as exc:
            status, error = exc.status, exc.reason
        except BudgetExceededError as exc:
            status, error = "budget", str(exc)
        except (LLMError, ToolmeshError) as exc:
            status, error = "error", f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # a bug must not lose the committed chain; it is logged in full
            log.exception("reasoning run %s failed", self.run_id)
            status, error = "error", f"internal error: {type(exc).__name__}: {exc}"
        result = self._result(status, error, coherence=coherence)
        await self._save_end(result)
        self.emit(ReasoningEvent("final", self.run_id, result=result))
        return result

    async def _loop(self) -> None:
        while self.answer is None:
            n = len(self.steps) + 1
            if n > self.cfg.max_steps:
                raise RunStopped("error", f"no answer after {self.cfg.max_steps} steps (max_steps)")
            await self._maybe_summarise()
            step_limit = asyncio.timeout(self.cfg.step_seconds)
            try:
                async with step_limit:
                    await self._step(n)
            except TimeoutError:
                if step_limit.expired():
                    raise RunStopped("timeout", f"step {n} exceeded the per-step limit of "
                                                f"{self.cfg.step_seconds:g}s") from None
                raise
            if len(self.steps) - self.saved >= self.cfg.checkpoint_every or (
                    self.answer is not None and not self.answer_saved):
                await self._checkpoint()

    async def _step(self, n: int) -> None:
        step = Step(n, "")
        started = self._now()
        step.transitions.append(Transition(StepState.THINKING, started))
        self.emit(ReasoningEvent("step_started", self.run_id, step=n))
        usage0, cost0 = self.meter.usage, self.meter.cost
        gen = await self._generate(self._request(), n)
        if not gen.saw_step and gen.answer is not None and not gen.pre:
            self.answer = gen.answer  # the chain was complete: the answer alone
            return
        if not gen.saw_step and gen.answer is None and self.steps and not self.steps[-1].marked:
            self.answer = gen.pre  # asked for the answer after an unmarked reply: take it as written
            self._warn("the model wrote no answer marker; its reply was taken as the answer")
            return
        text = gen.step if gen.saw_step else gen.pre
        if not text:
            raise RunStopped("error", f"the model returned nothing for step {n}")
        step.text, step.marked = text, gen.saw_step or gen.answer is not None
        answer = gen.answer
        first = gen.first_token_ms if gen.first_token_ms is not None else started
        verdict = await self._verify(step)
        while verdict.ok is False and step.revisions < self.cfg.max_revisions:
            step.rejected.append(step.text)
            step.revisions += 1
            step.transitions.append(Transition(StepState.REVISING, self._now()))
            self.emit(ReasoningEvent("step_revised", self.run_id, step=n, attempt=step.revisions, verdict=verdict))
            request = prompts.revision_request(self.markers, self.system, self.prompt, self.steps, n, step.text,
                                               verdict.reason or "it did not pass verification",
                                               summary=self.summary, summary_upto=self.summary_upto)
            gen = await self._generate(request, n)
            step.text = (gen.step if gen.saw_step else gen.pre) or step.text
            answer = gen.answer
            verdict = await self._verify(step)
        step.forced = verdict.ok is False
        if not step.forced:
            step.transitions.append(Transition(StepState.VERIFIED, self._now()))
        committed = self._now()
        step.transitions.append(Transition(StepState.COMMITTED, committed))
        step.state = StepState.COMMITTED
        step.latency_ms = committed - first
        step.usage = adapter.usage_dict(self.meter.usage + _neg(usage0))
        step.cost_usd = None if self.meter.cost is None or cost0 is None else self.meter.cost - cost0
        self.steps.append(step)
        self.emit(ReasoningEvent("step_committed", self.run_id, step=n, text=step.text, verdict=step.verdict,
                                 forced=step.forced, latency_ms=step.latency_ms))
        self._emit_usage()
        if answer is not None:
            self.answer = answer

    def _request(self) -> list[Message]:
        return prompts.step_request(self.markers, self.system, self.prompt, self.steps, summary=self.summary,
                                    summary_upto=self.summary_upto)

    async def _generate(self, messages: list[Message], n: int) -> Generation:
        request = ChatRequest(model=self.cfg.model, messages=messages, tool_choice="none",
                              temperature=self.cfg.temperature, max_tokens=self.cfg.max_output_tokens)
        parser = ResponseParser(self.markers)
        first: float | None = None
        async with contextlib.aclosing(self.meter.stream(request)) as events:
            async for ev in events:
                if isinstance(ev, TextDelta):
                    if first is None:
                        first = self._now()
                    self._deltas(parser.feed(ev.text), n)
                    if parser.cut:
                        break
                elif isinstance(ev, ReasoningDelta):
                    self.emit(ReasoningEvent("reasoning_delta", self.run_id, step=n, text=ev.text))
        self._deltas(parser.finish(), n)
        answer = parser.text("answer") if parser.saw_answer else None
        pre = parser.text("pre")
        if pre and not parser.saw_step and answer is None:
            self.emit(ReasoningEvent("step_delta", self.run_id, step=n, text=pre))
        return Generation(pre, parser.text("step"), answer, parser.saw_step, first)

    def _deltas(self, deltas: list[Any], n: int) -> None:
        for d in deltas:
            if d.section == "step":
                self.emit(ReasoningEvent("step_delta", self.run_id, step=n, text=d.text))
            elif d.section == "answer":
                self.emit(ReasoningEvent("answer_delta", self.run_id, text=d.text))

    async def _verify(self, step: Step) -> Verdict:
        verdict = await verifiers.check(self.verifiers, step, self.steps, self.cfg.threshold, self.cfg.combine)
        for w in verdict.warnings:
            self._warn(w)
        step.verdict = verdict
        self.emit(ReasoningEvent("step_verified", self.run_id, step=step.n, verdict=verdict))
        return verdict

    async def _coherence(self) -> Verdict | None:
        answer = self.answer or ""
        if not answer.strip():  # whatever else is configured: an empty answer answers nothing
            return Verdict(0.0, False, "the answer is empty", "coherence")
        if self.parts.coherence is not None:
            try:
                v = await self.parts.coherence(self.prompt, list(self.steps), answer)
            except Exception as exc:
                log.warning("coherence check raised", exc_info=True)
                self._warn(f"the coherence check raised {type(exc).__name__}: {exc}")
                return verifiers.unknown("the coherence check failed", "coherence")
            return v
        mode = self.cfg.coherence
        if mode == "judge" or (mode == "auto" and any(v.split(":")[0] == "judge" for v in self.cfg.verifiers)):
            v = await verifiers.ask_judge(self.verify_ctx, prompts.judge_coherence_request(
                self.prompt, self.steps, answer), "coherence")
            for w in v.warnings:
                self._warn(w)
            return v
        return None

    async def _maybe_summarise(self) -> None:
        window = self.cfg.context_window or self.parts.context_window
        if not adapter.needs_summary(self.cfg.model, self._request(), window, self.cfg.memory):
            return
        pending = [(s.n, f"{self.markers.step(s.n)} {s.text}") for s in self.steps if s.n > self.summary_upto]
        done = await adapter.summarise_steps(self.meter, self.cfg.memory, model=self.cfg.model, system=self.system,
                                             prompt=self.prompt, summary=self.summary, steps=pending)
        if done is not None:
            self.summary, self.summary_upto = done
            self._warn(f"summarised steps 1-{self.summary_upto} to stay within the context window")

    def _finish_chain(self) -> None:
        at = self._now()
        for s in self.steps:
            if s.state is StepState.COMMITTED:
                s.state = StepState.TERMINAL
                s.transitions.append(Transition(StepState.TERMINAL, at))

    # -- checkpoints -----------------------------------------------------------------------------------

    async def _write(self, kind: Kind, data: dict[str, Any]) -> None:
        if self.parts.checkpoints is None:
            return
        await self.parts.checkpoints.append(self.run_id, self.seq, kind, data)
        self.seq += 1

    async def _checkpoint(self) -> None:
        if self.parts.checkpoints is None:
            return
        new = self.steps[self.saved:]
        data: dict[str, Any] = {"steps": [step_to_dict(s) for s in new], "answer": self.answer,
                                "usage": self._usage(), "cost_usd": self._cost()}
        if self.summary is not None:
            data.update(summary=self.summary, summary_upto=self.summary_upto)
        try:
            await self._write("steps", data)
        except Exception as exc:  # the run goes on; only resuming it is lost
            log.exception("checkpoint of run %s failed", self.run_id)
            self._warn(f"checkpoint failed: {exc}")
            return
        self.saved = len(self.steps)
        self.answer_saved = self.answer is not None
        self.emit(ReasoningEvent("checkpointed", self.run_id, step=self.saved))

    async def _save_end(self, result: ReasoningResult) -> None:
        if self.parts.checkpoints is None:
            return
        try:
            if self.saved < len(self.steps) or (self.answer is not None and not self.answer_saved):
                await self._checkpoint()
            await self._write("end", {"status": result.status, "answer": result.answer, "error": result.error,
                                      "coherence": verdict_to_dict(result.coherence), "usage": result.usage,
                                      "cost_usd": result.cost_usd, "elapsed_ms": result.elapsed_ms})
        except Exception as exc:
            log.exception("final checkpoint of run %s failed", self.run_id)
            result.warnings.append(f"final checkpoint failed: {exc}")

    # -- results ---------------------------------------------------------------------------------------

    def _usage(self) -> dict[str, int]:
        now = adapter.usage_dict(self.meter.usage)
        return {k: now[k] + self.base_usage.get(k, 0) for k in now}

    def _cost(self) -> float | None:
        if self.meter.cost is None or self.base_cost is None:
            return None
        return self.meter.cost + self.base_cost

    def _emit_usage(self) -> None:
        self.emit(ReasoningEvent("usage", self.run_id, usage=self._usage(), cost_usd=self._cost()))

    def _result(self, status: Status, error: str | None, *, coherence: Verdict | None = None,
                elapsed: float | None = None) -> ReasoningResult:
        answer = self.answer
        return ReasoningResult(
            run_id=self.run_id, status=status, answer=answer, steps=list(self.steps), usage=self._usage(),
            cost_usd=self._cost(), elapsed_ms=self._now() if elapsed is None else elapsed, error=error,
            model=self.meter.models[-1] if self.meter.models else self.cfg.model, coherence=coherence,
            warnings=[*self.warnings, *self.meter.warnings], resumed=self.resumed)

    def _warn(self, text: str) -> None:
        self.warnings.append(text)
        self.emit(ReasoningEvent("warning", self.run_id, text=text))

    def _now(self) -> float:
        return (time.perf_counter() - self.t0) * 1000.0


def _ignore(event: ReasoningEvent) -> None:
    return None


def _neg(u: Usage) -> Usage:
    return Usage(-u.input_tokens, -u.output_tokens)
