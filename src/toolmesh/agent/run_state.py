"""The state of one agent run, and what a run needs from its agent (:class:`AgentParts`).

A run is a separate object so concurrent runs share nothing mutable but the agent's
(budgets of the session and the day, calibration). The loop steps — model calls
(:mod:`toolmesh.agent.model_call`), tool execution (:mod:`toolmesh.agent.toolexec`),
the ReAct loop (:mod:`toolmesh.agent.react_loop`) — take a :class:`RunState`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from toolmesh.agent.budget import Budget, BudgetSet, SpendBudgets
from toolmesh.agent.config import AgentConfig
from toolmesh.agent.events import RunResult, RunStatus, ToolCallRecord, Warning
from toolmesh.agent.history import History
from toolmesh.agent.protocols import InputGuard, UsageRecorder
from toolmesh.hub import Hub
from toolmesh.llm import types as t
from toolmesh.llm.base import ChatModel

__all__ = ["AgentParts", "PriceFn", "RunState", "TokenCounter"]

#: (model, usage) -> USD, or None when the model is unpriced.
PriceFn = Callable[[str, t.Usage], "float | None"]
#: (model, messages, tools) -> input tokens.
TokenCounter = Callable[[str, list[t.Message], list[dict[str, Any]] | None], int]


class AgentParts(Protocol):
    """What a run uses from its :class:`~toolmesh.agent.runtime.Agent`."""

    @property
    def hub(self) -> Hub: ...

    @property
    def chat_model(self) -> ChatModel: ...

    @property
    def history(self) -> History: ...

    @property
    def guard(self) -> InputGuard | None: ...

    @property
    def ledger(self) -> UsageRecorder | None: ...

    @property
    def spend(self) -> SpendBudgets: ...

    @property
    def spend_seed(self) -> Callable[[str, str | None, str], float] | None: ...

    @property
    def count_tokens(self) -> TokenCounter: ...

    @property
    def context_window(self) -> Callable[[str], int | None]: ...

    @property
    def price(self) -> PriceFn | None: ...

    def session_budget(self, tenant: str, user: str, conversation: str | None, cfg: AgentConfig) -> Budget:
        """The budget of a conversation (shared by its runs)."""
        ...

    def calibration(self, model: str) -> tuple[float, int] | None:
        """(input-token ratio actual/estimated, largest output seen) of a model, once learned."""
        ...

    def calibrate(self, model: str, estimated_in: int, usage: t.Usage) -> None:
        """Learn from one call's reported usage."""
        ...

    def probe_lock(self, model: str) -> asyncio.Lock:
        """Serialises budget-limited calls to a model until it is calibrated."""
        ...


class RunState:
    """One run: its settings, identity, usage, tool records, warnings and budgets."""

    def __init__(self, agent: AgentParts, cfg: AgentConfig, tenant: str, user: str,
                 conversation: str | None) -> None:
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
        self.pending_warnings: list[Warning] = []
        b = cfg.budget
        self.run_budget = Budget(f"run {self.run_id}", b.max_tokens, b.max_steps, b.max_cost_usd, b.warn_at)
        self.budgets = BudgetSet(
            [self.run_budget, agent.session_budget(tenant, user, conversation, cfg),
             *agent.spend.budgets(tenant, user, agent.spend_seed)]
        )

    def warn(self, kind: str, message: str) -> Warning:
        """Record a warning for the result and return its event."""
        self.warnings.append(message)
        return Warning(kind, message)

    def defer_warning(self, kind: str, message: str) -> None:
        """Record a warning whose event is yielded at the next :meth:`drain_warnings`."""
        self.pending_warnings.append(self.warn(kind, message))

    def drain_warnings(self) -> list[Warning]:
        """The deferred warning events, once."""
        pending, self.pending_warnings = self.pending_warnings, []
        return pending

    def loop_guard(self, calls: list[t.ToolCall]) -> RunStatus | None:
        """Why these calls must not run (AGT-3), or None after counting them."""
        cfg = self.cfg
        if len(self.records) + len(calls) > cfg.max_tool_calls:
            return "max_tool_calls"
        keys = [(c.name, orjson.dumps(c.arguments, option=orjson.OPT_SORT_KEYS).decode()) for c in calls]
        if any(self.call_counts.get(k, 0) + 1 > cfg.max_repeats for k in keys):
            return "repeated_calls"
        for k in keys:
            self.call_counts[k] = self.call_counts.get(k, 0) + 1
        return None

    def price(self, model: str, usage: t.Usage) -> float | None:
        """Cost of ``usage`` on ``model``; None when unpriced (or the price function fails)."""
        fn = self.agent.price
        if fn is None:
            return None
        try:
            return fn(model, usage)
        except Exception:
            return None

    def result(self, answer: str, status: RunStatus, report: dict[str, Any] | None) -> RunResult:
        """The run's :class:`RunResult` now."""
        return RunResult(
            answer=answer, status=status, run_id=self.run_id, turns=self.turns, tool_calls=list(self.records),
            usage={"input_tokens": self.usage.input_tokens, "output_tokens": self.usage.output_tokens,
                   "total_tokens": self.usage.total_tokens},
            cost_usd=round(self.cost, 8) if self.priced and self.cost is not None else None, priced=self.priced,
            models=self.models, latency_ms=round((time.perf_counter() - self.start) * 1000, 2),
            warnings=list(self.warnings), budget_report=report or self.budgets.report(),
            conversation=self.conversation,
        )
