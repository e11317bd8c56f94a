"""The agent loop (AGT-1..AGT-9): model → tool calls → parallel execution → model, until an answer.

    agent = Agent(hub, llm)                      # llm: a ChatModel (a Router) or any Provider
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
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from toolmesh.agent.answers import FINAL_ANSWER_NUDGE, budget_answer, fallback_answer, refusals
from toolmesh.agent.budget import Budget, DailySpend, SpendBudgets
from toolmesh.agent.config import AgentConfig
from toolmesh.agent.events import (
    AgentEvent,
    Final,
    RunResult,
    RunStarted,
    RunStatus,
    ToolCallFinished,
    ToolCallStarted,
)
from toolmesh.agent.history import History, MemoryHistory
from toolmesh.agent.memory import summarise
from toolmesh.agent.model_call import call_model
from toolmesh.agent.protocols import InputGuard, UsageRecorder, UserLimiter
from toolmesh.agent.react_loop import react_events
from toolmesh.agent.run_state import PriceFn, RunState, TokenCounter
from toolmesh.agent.toolexec import execute_tool_calls
from toolmesh.errors import BudgetExceededError
from toolmesh.hub import Hub
from toolmesh.llm import types as t
from toolmesh.llm.base import ChatModel, as_chat_model
from toolmesh.llm.provider import Provider

__all__ = ["Agent", "AgentConfig", "RunResult"]

#: Conversations whose session budgets are kept in memory (the oldest idle ones are dropped first).
MAX_SESSION_BUDGETS = 100_000


class Agent:
    """Runs conversations of any model with the Hub's tools.

    ``llm`` is a :class:`~toolmesh.llm.base.ChatModel` (a :class:`~toolmesh.llm.router.Router`)
    or a single :class:`~toolmesh.llm.provider.Provider`. ``guard``, ``ledger`` and
    ``user_limits`` are optional collaborators typed by the Protocols of
    :mod:`toolmesh.agent.protocols`; ``spend`` replaces the in-process daily spend budgets
    (e.g. by ones kept in a shared store)."""

    def __init__(
        self,
        hub: Hub,
        llm: ChatModel | Provider,
        config: AgentConfig | None = None,
        *,
        history: History | None = None,
        price: PriceFn | None = None,
        count_tokens: TokenCounter | None = None,
        context_window: Callable[[str], int | None] | None = None,
        guard: InputGuard | None = None,
        ledger: UsageRecorder | None = None,
        user_limits: UserLimiter | None = None,
        spend_seed: Callable[[str, str | None, str], float] | None = None,
        spend: SpendBudgets | None = None,
    ) -> None:
        self.hub = hub
        self.llm = llm
        self.chat_model: ChatModel = as_chat_model(llm)
        self.config = config or AgentConfig()
        self.history: History = history or MemoryHistory()
        self.price = price
        self.count_tokens: TokenCounter = count_tokens or _estimate_tokens
        self.context_window: Callable[[str], int | None] = context_window or (lambda model: None)
        self.guard = guard
        self.ledger = ledger
        self.user_limits = user_limits
        self.spend: SpendBudgets = spend or DailySpend(self.config.spend.per_user_daily_usd,
                                                       self.config.spend.per_tenant_daily_usd)
        self.spend_seed = spend_seed
        self._session_budgets: dict[tuple[str, str, str], Budget] = {}
        #: model -> (input-token ratio actual/estimated, largest output seen); learned from usage.
        self._calibration: dict[str, tuple[float, int]] = {}
        self._probe_locks: dict[str, asyncio.Lock] = {}

    @property
    def _spend_seed(self) -> Callable[[str, str | None, str], float] | None:
        # the gateway's pass-through reads this older name
        return self.spend_seed

    def calibration(self, model: str) -> tuple[float, int] | None:
        """(input-token ratio actual/estimated, largest output seen) of a model, once learned."""
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
        """Serialises budget-limited calls to a model until it is calibrated."""
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
        run = RunState(self, cfg, tenant, user, conversation)
        slot = self.user_limits.run(tenant, user) if self.user_limits is not None else contextlib.nullcontext()
        async with slot:
            async for ev in _events(run, question):
                yield ev

    def session_budget(self, tenant: str, user: str, conversation: str | None, cfg: AgentConfig) -> Budget:
        """The budget of a conversation, shared by its runs."""
        key = (tenant, user, conversation or "")
        b = self._session_budgets.get(key)
        if b is None:
            sb = cfg.session_budget
            b = Budget(f"session {conversation}", sb.max_tokens, sb.max_steps, sb.max_cost_usd, sb.warn_at)
            if not b.limited:
                return b  # nothing to remember between runs
            if len(self._session_budgets) >= MAX_SESSION_BUDGETS:  # forget the oldest idle sessions
                idle = [k for k, v in self._session_budgets.items() if v.in_flight == 0]
                for k in idle[: max(1, len(idle) // 2)]:
                    del self._session_budgets[k]
            self._session_budgets[key] = b
        return b


# -- the loop ----------------------------------------------------------------------


async def _events(run: RunState, question: str) -> AsyncIterator[AgentEvent]:
    agent, cfg = run.agent, run.cfg
    yield RunStarted(run.run_id, run.conversation)
    question = _guard_input(run, question)
    for pending in run.drain_warnings():
        yield pending
    past = await agent.history.load(run.tenant, run.user, run.conversation)
    messages: list[t.Message] = []
    if cfg.system_prompt and not any(m.role == "system" for m in past):
        messages.append(t.Message("system", cfg.system_prompt))
    messages.extend(past)
    new_start = len(messages)
    messages.append(t.Message("user", question))
    tools = await agent.hub.to_openai_tools(tenant=run.tenant, user=run.user)
    if cfg.mode == "react":
        async for ev in react_events(run, messages, tools):
            yield ev
        return
    status: RunStatus = "completed"
    answer: str | None = None
    try:
        while True:
            if run.turns >= cfg.max_turns:
                status = "max_turns"
                break
            async for ev in _maybe_summarise(run, messages):
                # the fold persisted the whole transcript so far: only later messages are new
                new_start = len(messages)
                yield ev
            response: t.ChatResponse | None = None
            async for item in call_model(run, messages, tools, "auto"):
                if isinstance(item, t.ChatResponse):
                    response = item
                else:
                    yield item
            assert response is not None
            run.turns += 1
            msg = response.message
            messages.append(msg)
            if not msg.tool_calls:
                answer = msg.content or ""
                break
            stop = run.loop_guard(msg.tool_calls)
            if stop is not None:
                status = stop
                # keep the transcript valid: every tool call needs an answer
                messages.extend(refusals(msg.tool_calls, "not executed: " + stop.replace("_", " ")))
                break
            async for ev in _run_tools(run, msg.tool_calls, messages):
                yield ev
        if answer is None or not answer.strip():
            if status != "completed":
                yield run.warn(status, f"stopped tool use ({status.replace('_', ' ')}); asking for a final answer")
            async for out in _final_answer(run, messages):
                if isinstance(out, str):
                    answer = out
                else:
                    yield out
    except BudgetExceededError as exc:
        yield run.warn("budget_exceeded", str(exc))
        yield Final(run.result(budget_answer(messages), "budget_exceeded", exc.report))
        await agent.history.save(run.tenant, run.user, run.conversation, messages[new_start:])
        return
    await agent.history.save(run.tenant, run.user, run.conversation, messages[new_start:])
    yield Final(run.result(answer or "", status, None))


async def _final_answer(run: RunState, messages: list[t.Message]) -> AsyncIterator[AgentEvent | str]:
    """One more model call with tools disabled; never returns an empty answer."""
    template = run.cfg.final_answer_prompt
    question = next((m.content or "" for m in reversed(messages) if m.role == "user"), "")
    # str.replace, not format: a template may hold other braces
    nudge = t.Message("user", template.replace("{question}", question) if template else FINAL_ANSWER_NUDGE)
    response: t.ChatResponse | None = None
    async for ev in call_model(run, [*messages, nudge], None, "none"):
        if isinstance(ev, t.ChatResponse):
            response = ev
        else:
            yield ev
    assert response is not None
    text = (response.message.content or "").strip()
    if not text:
        text = fallback_answer(messages)
    messages.append(t.Message("assistant", text))
    yield text


async def _run_tools(run: RunState, calls: list[t.ToolCall], messages: list[t.Message]) -> AsyncIterator[AgentEvent]:
    for call in calls:
        yield ToolCallStarted(call.id, call.name, call.arguments)
    reservation = run.budgets.reserve(0, 0.0, len(calls))
    outcomes = await execute_tool_calls(run, calls)
    for note in run.budgets.commit(reservation, 0, 0.0, len(calls)):
        yield run.warn("budget", note)
    for call, (record, text) in zip(calls, outcomes, strict=True):
        run.records.append(record)
        messages.append(t.Message("tool", text, tool_call_id=call.id, name=call.name))
        yield ToolCallFinished(call.id, call.name, record.ok, record.latency_ms, text, record.error)
    for pending in run.drain_warnings():
        yield pending


def _guard_input(run: RunState, text: str) -> str:
    guard = run.agent.guard
    if guard is None:
        return text
    result = guard.apply_user(text, tenant=run.tenant)  # raises RequestRejectedError on block
    if result.warning:
        run.defer_warning("prompt_injection", result.warning)
    return str(result.text)


async def _maybe_summarise(run: RunState, messages: list[t.Message]) -> AsyncIterator[AgentEvent]:
    cfg, agent = run.cfg, run.agent
    mem = cfg.memory
    window = agent.context_window(cfg.model)
    if not mem.enabled or not window:
        return
    if agent.count_tokens(cfg.model, messages, None) < mem.threshold * window:
        return
    folded = await summarise(messages, agent.chat_model, mem, model=cfg.model, timeout=cfg.llm_timeout,
                             scenario=cfg.scenario, tenant=run.tenant, user=run.user)
    if folded is None:
        return
    messages[:] = folded.messages
    await agent.history.replace(run.tenant, run.user, run.conversation, messages, summary=folded.transcript)
    yield run.warn("memory", folded.note)


def _estimate_tokens(model: str, messages: list[t.Message], tools: list[dict[str, Any]] | None) -> int:
    chars = sum(len(m.content or "") + sum(len(c.raw_arguments) + len(c.name) for c in m.tool_calls) + 4
                for m in messages)
    if tools:
        chars += len(orjson.dumps(tools))
    return chars // 3 + 1
