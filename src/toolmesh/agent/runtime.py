"""The agent loop (AGT-1..AGT-9): model → tool calls → parallel execution → model, until an answer.

    agent = Agent(hub, llm)                      # llm: a Router or any Provider
    result = await agent.run("库存够吗？", user="U123456", conversation="c1")
    async for event in agent.stream("...", user="U123456"):   # typed events
        ...

Tool errors and timeouts go back to the model as tool results; they never end the
run. At a loop limit the model is asked once more with tools disabled, so a run
always ends with an answer (a budget stop is the one exception: it ends with a
clear message and a report).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from toolmesh.agent.budget import Budget, BudgetSet, DailySpend
from toolmesh.agent.config import AgentConfig
from toolmesh.agent.events import (
    AgentEvent,
    Final,
    ReasoningDelta,
    RunResult,
    RunStarted,
    RunStatus,
    TextDelta,
    ToolCallFinished,
    ToolCallRecord,
    ToolCallStarted,
    UsageUpdate,
    Warning,
)
from toolmesh.agent.history import History, MemoryHistory
from toolmesh.agent.toolexec import execute_tool_calls
from toolmesh.errors import BudgetExceededError, LLMError
from toolmesh.hub import Hub
from toolmesh.llm import types as t

log = logging.getLogger("toolmesh.agent")

FINAL_ANSWER_NUDGE = (
    "Answer the user now in plain text using the information above. Do not call any tools."
)
PriceFn = Callable[[str, t.Usage], "float | None"]


class Agent:
    """Runs conversations of any model with the Hub's tools."""

    def __init__(
        self,
        hub: Hub,
        llm: Any,
        config: AgentConfig | None = None,
        *,
        history: History | None = None,
        price: PriceFn | None = None,
        count_tokens: Callable[[str, list[t.Message], list[dict[str, Any]] | None], int] | None = None,
        context_window: Callable[[str], int | None] | None = None,
        guard: Any = None,
        ledger: Any = None,
        user_limits: Any = None,
        spend_seed: Callable[[str, str | None, str], float] | None = None,
    ) -> None:
        self.hub = hub
        self.llm = llm
        self.config = config or AgentConfig()
        self.history = history or MemoryHistory()
        self.price = price
        self.count_tokens = count_tokens or _estimate_tokens
        self.context_window = context_window or (lambda model: None)
        self.guard = guard
        self.ledger = ledger
        self.user_limits = user_limits
        self.spend = DailySpend(self.config.spend.per_user_daily_usd, self.config.spend.per_tenant_daily_usd)
        self._spend_seed = spend_seed
        self._session_budgets: dict[tuple[str, str, str], Budget] = {}
        #: model -> (input-token ratio actual/estimated, largest output seen); learned from usage.
        self._calibration: dict[str, tuple[float, int]] = {}
        self._probe_locks: dict[str, asyncio.Lock] = {}

    def calibration(self, model: str) -> tuple[float, int] | None:
        return self._calibration.get(model)

    def calibrate(self, model: str, estimated_in: int, usage: t.Usage) -> None:
        """Learn how far the local count is from the provider's (conservatively: never shrink fast)."""
        if usage.estimated or estimated_in <= 0:
            return
        ratio = max(usage.input_tokens / estimated_in, 0.1)
        old = self._calibration.get(model)
        if old is None:
            self._calibration[model] = (ratio, usage.output_tokens)
        else:
            self._calibration[model] = (max(ratio, 0.7 * old[0] + 0.3 * ratio), max(old[1], usage.output_tokens))

    def probe_lock(self, model: str) -> asyncio.Lock:
        lock = self._probe_locks.get(model)
        if lock is None:
            lock = self._probe_locks[model] = asyncio.Lock()
        return lock

    # -- public --------------------------------------------------------------------
    async def run(self, question: str, **kw: Any) -> RunResult:
        """Run to completion and return the result (see :meth:`stream` for the arguments)."""
        result: RunResult | None = None
        async for event in self.stream(question, **kw):
            if isinstance(event, Final):
                result = event.result
        assert result is not None
        return result

    async def stream(
        self,
        question: str,
        *,
        tenant: str = "default",
        user: str = "anonymous",
        conversation: str | None = None,
        config: AgentConfig | None = None,
    ) -> AsyncIterator[AgentEvent]:
        """Run one user turn, yielding typed events; the last one is :class:`Final`."""
        cfg = config or self.config
        if not isinstance(question, str) or not question.strip():
            raise ValueError("question must be a non-empty string")
        run = _Run(self, cfg, tenant, user, conversation)
        if self.user_limits is not None:
            async with self.user_limits.run(tenant, user):
                async for ev in run.events(question):
                    yield ev
        else:
            async for ev in run.events(question):
                yield ev

    def session_budget(self, tenant: str, user: str, conversation: str | None, cfg: AgentConfig) -> Budget:
        key = (tenant, user, conversation or "")
        b = self._session_budgets.get(key)
        if b is None:
            sb = cfg.session_budget
            b = self._session_budgets[key] = Budget(
                f"session {conversation}", sb.max_tokens, sb.max_steps, sb.max_cost_usd, sb.warn_at
            )
        return b


class _Run:
    """State of one run; a separate object so concurrent runs share nothing mutable but the agent's."""

    def __init__(self, agent: Agent, cfg: AgentConfig, tenant: str, user: str, conversation: str | None) -> None:
        self.agent = agent
        self.cfg = cfg
        self.tenant = tenant
        self.user = user
        self.conversation = conversation
        self.run_id = uuid.uuid4().hex[:16]
        self.start = time.perf_counter()
        self.usage = t.Usage()
        self.cost: float | None = 0.0
        self.priced = True
        self.models: list[str] = []
        self.records: list[ToolCallRecord] = []
        self.warnings: list[str] = []
        self.turns = 0
        self.call_counts: dict[tuple[str, str], int] = {}
        self._pending_warnings: list[Warning] = []
        b = cfg.budget
        self.run_budget = Budget(f"run {self.run_id}", b.max_tokens, b.max_steps, b.max_cost_usd, b.warn_at)
        self.budgets = BudgetSet(
            [self.run_budget, agent.session_budget(tenant, user, conversation, cfg),
             *agent.spend.budgets(tenant, user, agent._spend_seed)]
        )

    # -- the loop ------------------------------------------------------------------
    async def events(self, question: str) -> AsyncIterator[AgentEvent]:
        agent, cfg = self.agent, self.cfg
        yield RunStarted(self.run_id, self.conversation)
        question = await self._guard_input(question)
        for pending in self._drain_warnings():
            yield pending
        past = await agent.history.load(self.tenant, self.user, self.conversation)
        messages: list[t.Message] = []
        if cfg.system_prompt and not any(m.role == "system" for m in past):
            messages.append(t.Message("system", cfg.system_prompt))
        messages.extend(past)
        new_start = len(messages)
        messages.append(t.Message("user", question))
        tools = await agent.hub.to_openai_tools(tenant=self.tenant, user=self.user)
        if cfg.mode == "react":
            from toolmesh.agent.react_loop import react_events

            async for ev in react_events(self, messages, tools):
                yield ev
            return
        status: RunStatus = "completed"
        answer: str | None = None
        try:
            while True:
                if self.turns >= cfg.max_turns:
                    status = "max_turns"
                    break
                async for ev in self._maybe_summarise(messages):
                    yield ev
                response: t.ChatResponse | None = None
                async for item in self._call_model(messages, tools, "auto"):
                    if isinstance(item, t.ChatResponse):
                        response = item
                    else:
                        yield item
                assert response is not None
                self.turns += 1
                msg = response.message
                messages.append(msg)
                if not msg.tool_calls:
                    answer = msg.content or ""
                    break
                stop = self._loop_guard(msg.tool_calls)
                if stop is not None:
                    status = stop
                    # keep the transcript valid: every tool call needs an answer
                    messages.extend(_refusals(msg.tool_calls, "not executed: " + stop.replace("_", " ")))
                    break
                async for ev in self._run_tools(msg.tool_calls, messages):
                    yield ev
            if answer is None or not answer.strip():
                if status != "completed":
                    w = Warning(status, f"stopped tool use ({status.replace('_', ' ')}); asking for a final answer")
                    self.warnings.append(w.message)
                    yield w
                async for out in self._final_answer(messages):
                    if isinstance(out, str):
                        answer = out
                    else:
                        yield out
        except BudgetExceededError as exc:
            status = "budget_exceeded"
            answer = _budget_answer(messages)
            self.warnings.append(str(exc))
            yield Warning("budget_exceeded", str(exc))
            yield Final(self._result(answer, status, exc.report))
            await agent.history.save(self.tenant, self.user, self.conversation, messages[new_start:])
            return
        await agent.history.save(self.tenant, self.user, self.conversation, messages[new_start:])
        yield Final(self._result(answer or "", status, None))

    async def _final_answer(self, messages: list[t.Message]) -> AsyncIterator[AgentEvent | str]:
        """One more model call with tools disabled; never returns an empty answer."""
        nudge = t.Message("user", FINAL_ANSWER_NUDGE)
        response: t.ChatResponse | None = None
        async for ev in self._call_model([*messages, nudge], None, "none"):
            if isinstance(ev, t.ChatResponse):
                response = ev
            else:
                yield ev
        assert response is not None
        text = (response.message.content or "").strip()
        if not text:
            text = _fallback_answer(messages)
        messages.append(t.Message("assistant", text))
        yield text

    def _loop_guard(self, calls: list[t.ToolCall]) -> RunStatus | None:
        cfg = self.cfg
        if len(self.records) + len(calls) > cfg.max_tool_calls:
            return "max_tool_calls"
        for call in calls:
            key = (call.name, orjson.dumps(call.arguments, option=orjson.OPT_SORT_KEYS).decode())
            n = self.call_counts.get(key, 0) + 1
            if n > cfg.max_repeats:
                return "repeated_calls"
        for call in calls:
            key = (call.name, orjson.dumps(call.arguments, option=orjson.OPT_SORT_KEYS).decode())
            self.call_counts[key] = self.call_counts.get(key, 0) + 1
        return None

    async def _run_tools(self, calls: list[t.ToolCall], messages: list[t.Message]) -> AsyncIterator[AgentEvent]:
        for call in calls:
            yield ToolCallStarted(call.id, call.name, call.arguments)
        reservation = self.budgets.reserve(0, 0.0, len(calls))
        outcomes = await execute_tool_calls(self, calls)
        for note in self.budgets.commit(reservation, 0, 0.0, len(calls)):
            self.warnings.append(note)
            yield Warning("budget", note)
        for call, (record, text) in zip(calls, outcomes, strict=True):
            self.records.append(record)
            messages.append(t.Message("tool", text, tool_call_id=call.id, name=call.name))
            yield ToolCallFinished(call.id, call.name, record.ok, record.latency_ms, text, record.error)
        for pending in self._drain_warnings():
            yield pending

    # -- model calls -----------------------------------------------------------------
    async def _call_model(
        self, messages: list[t.Message], tools: list[dict[str, Any]] | None, choice: t.ToolChoice,
        stop: list[str] | None = None,
    ) -> AsyncIterator[AgentEvent | t.ChatResponse]:
        """One model call, charged to every budget. Until the model's token counts are calibrated
        against reported usage, budget-limited calls to it run one at a time, so concurrent runs
        can overshoot a limit by at most one in-flight call."""
        agent, model = self.agent, self.cfg.model
        if self.budgets.budgets and agent.calibration(model) is None:
            async with agent.probe_lock(model):
                if agent.calibration(model) is None:
                    async for item in self._call_model_once(messages, tools, choice, stop):
                        yield item
                    return
        async for item in self._call_model_once(messages, tools, choice, stop):
            yield item

    async def _call_model_once(
        self, messages: list[t.Message], tools: list[dict[str, Any]] | None, choice: t.ToolChoice,
        stop: list[str] | None,
    ) -> AsyncIterator[AgentEvent | t.ChatResponse]:
        agent, cfg = self.agent, self.cfg
        request = t.ChatRequest(
            model=cfg.model, messages=list(messages), tools=tools or None,
            tool_choice=choice if tools else "auto", temperature=cfg.temperature, max_tokens=cfg.max_output_tokens,
            stop=stop,
        )
        est_in = agent.count_tokens(cfg.model, request.messages, request.tools)
        ratio, seen_out = agent.calibration(cfg.model) or (1.0, 0)
        reserve_in = int(est_in * ratio) + 1
        reserve_out = cfg.max_output_tokens or max(seen_out, 1024)
        est_cost = self._price(cfg.model, t.Usage(reserve_in, reserve_out)) or 0.0
        reservation = self.budgets.reserve(reserve_in + reserve_out, est_cost, 1)
        try:
            response = None
            async for ev in _stream_llm(agent.llm, request, self):
                if isinstance(ev, t.TextDelta):
                    yield TextDelta(ev.text)
                elif isinstance(ev, t.ReasoningDelta):
                    yield ReasoningDelta(ev.text)
                elif isinstance(ev, t.StreamDone):
                    response = ev.response
        except BaseException:
            self.budgets.release(reservation)
            raise
        if response is None:
            self.budgets.release(reservation)
            raise LLMError("the model stream ended without a response")
        usage = response.usage
        if usage.total_tokens == 0:
            usage = t.Usage(est_in, agent.count_tokens(response.model, [response.message], None), estimated=True)
        agent.calibrate(cfg.model, est_in, usage)
        cost = self._price(response.model, usage)
        self.usage = self.usage + usage
        if cost is None:
            self.priced = False
        elif self.cost is not None:
            self.cost += cost
        if response.model not in self.models:
            self.models.append(response.model)
        for w in self.budgets.commit(reservation, usage.total_tokens, cost or 0.0, 1):
            self.warnings.append(w)
            yield Warning("budget", w)
        if agent.ledger is not None:
            try:
                pending = agent.ledger.record(tenant=self.tenant, user=self.user, session=self.conversation,
                                              model=response.model, provider=response.provider, usage=usage,
                                              latency_ms=response.latency_ms, request_id=self.run_id)
                if inspect.isawaitable(pending):
                    await pending
            except Exception:
                log.exception("usage ledger write failed")
        yield UsageUpdate(response.model, usage.input_tokens, usage.output_tokens, cost,
                          self.cost if self.priced else None, response.latency_ms)
        yield response

    def _price(self, model: str, usage: t.Usage) -> float | None:
        if self.agent.price is None:
            return None
        try:
            return self.agent.price(model, usage)
        except Exception:
            return None

    # -- guard and memory ------------------------------------------------------------
    async def _guard_input(self, text: str) -> str:
        guard = self.agent.guard
        if guard is None:
            return text
        result = guard.apply_user(text, tenant=self.tenant)  # raises RequestRejectedError on block
        if result.warning:
            self.warnings.append(result.warning)
            self._pending_warnings.append(Warning("prompt_injection", result.warning))
        return str(result.text)

    def _drain_warnings(self) -> list[Warning]:
        pending, self._pending_warnings = self._pending_warnings, []
        return pending

    async def _maybe_summarise(self, messages: list[t.Message]) -> AsyncIterator[AgentEvent]:
        mem = self.cfg.memory
        window = self.agent.context_window(self.cfg.model)
        if not mem.enabled or not window:
            return
        used = self.agent.count_tokens(self.cfg.model, messages, None)
        if used < mem.threshold * window:
            return
        from toolmesh.agent.memory import summarise_older

        note = await summarise_older(self, messages)
        if note:
            self.warnings.append(note)
            yield Warning("memory", note)

    def _result(self, answer: str, status: RunStatus, report: dict[str, Any] | None) -> RunResult:
        return RunResult(
            answer=answer, status=status, run_id=self.run_id, turns=self.turns, tool_calls=list(self.records),
            usage={"input_tokens": self.usage.input_tokens, "output_tokens": self.usage.output_tokens,
                   "total_tokens": self.usage.total_tokens},
            cost_usd=round(self.cost, 8) if self.priced and self.cost is not None else None, priced=self.priced,
            models=self.models, latency_ms=round((time.perf_counter() - self.start) * 1000, 2),
            warnings=list(self.warnings), budget_report=report or self.budgets.report(),
            conversation=self.conversation,
        )


async def _stream_llm(llm: Any, request: t.ChatRequest, run: _Run) -> AsyncIterator[t.StreamEvent]:
    """Stream from a Router (scenario/tenant/user aware) or a bare Provider."""
    kw: dict[str, Any] = {"timeout": run.cfg.llm_timeout}
    if hasattr(llm, "set_rules"):
        kw.update(scenario=run.cfg.scenario, tenant=run.tenant, user=run.user)
    async for ev in llm.stream(request, **kw):
        yield ev


def _estimate_tokens(model: str, messages: list[t.Message], tools: list[dict[str, Any]] | None) -> int:
    chars = sum(len(m.content or "") + sum(len(c.raw_arguments) + len(c.name) for c in m.tool_calls) + 4
                for m in messages)
    if tools:
        chars += len(orjson.dumps(tools))
    return chars // 3 + 1


def _refusals(calls: list[t.ToolCall], why: str) -> list[t.Message]:
    return [t.Message("tool", f"[{why}]", tool_call_id=c.id, name=c.name) for c in calls]


def _fallback_answer(messages: list[t.Message]) -> str:
    """When the model still says nothing, answer from the tool results rather than with silence."""
    facts = [m.content for m in messages if m.role == "tool" and m.content and not m.content.startswith("[")]
    if facts:
        return "Here is what I found:\n" + "\n".join(f"- {f[:500]}" for f in facts[-5:])
    return "Sorry, I could not produce an answer to that. Please rephrase or try again."


def _budget_answer(messages: list[t.Message]) -> str:
    last = next((m.content for m in reversed(messages) if m.role == "assistant" and m.content), None)
    note = "I had to stop here because the usage budget for this request or conversation is used up."
    return f"{last}\n\n({note})" if last else note


__all__ = ["Agent", "AgentConfig", "RunResult"]
