"""The agent runtime: any model with the Hub's tools, in a bounded loop (SPEC §4).

    from toolmesh.agent import build_agent
    from toolmesh.hub import load_config

    stack = await build_agent(load_config("toolmesh.yaml"))
    result = await stack.agent.run("库存够吗？", user="U123456", conversation="c-42")

Names are imported on first use (the Hub and the providers are not loaded by ``import toolmesh.agent``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toolmesh.agent.budget import (
        Budget,
        BudgetScope,
        BudgetSet,
        CallAsk,
        DailySpend,
        Headroom,
        Reservation,
        SpendBudgets,
    )
    from toolmesh.agent.config import AgentConfig, BudgetConfig, MemoryConfig, SpendLimits, UserLimitsConfig
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
        event_to_dict,
    )
    from toolmesh.agent.factory import AgentStack, build_agent, build_llm, make_provider, store_location
    from toolmesh.agent.guard import Guard, GuardPolicy, GuardResult, PolicySet, apply, scan, scan_tool_output
    from toolmesh.agent.history import History, MemoryHistory, StoreHistory
    from toolmesh.agent.memory import Summarised, summarise
    from toolmesh.agent.protocols import InputGuard, UsageRecorder, UserLimiter
    from toolmesh.agent.run_state import RunState
    from toolmesh.agent.runtime import Agent

#: public name -> the module that defines it (imported on first use: see ``__getattr__``)
_EXPORTS: dict[str, str] = {
    "Budget": "toolmesh.agent.budget",
    "BudgetScope": "toolmesh.agent.budget",
    "BudgetSet": "toolmesh.agent.budget",
    "CallAsk": "toolmesh.agent.budget",
    "DailySpend": "toolmesh.agent.budget",
    "Headroom": "toolmesh.agent.budget",
    "Reservation": "toolmesh.agent.budget",
    "SpendBudgets": "toolmesh.agent.budget",
    "AgentConfig": "toolmesh.agent.config",
    "BudgetConfig": "toolmesh.agent.config",
    "MemoryConfig": "toolmesh.agent.config",
    "SpendLimits": "toolmesh.agent.config",
    "UserLimitsConfig": "toolmesh.agent.config",
    "AgentEvent": "toolmesh.agent.events",
    "Final": "toolmesh.agent.events",
    "ReasoningDelta": "toolmesh.agent.events",
    "RunResult": "toolmesh.agent.events",
    "RunStarted": "toolmesh.agent.events",
    "RunStatus": "toolmesh.agent.events",
    "TextDelta": "toolmesh.agent.events",
    "ToolCallFinished": "toolmesh.agent.events",
    "ToolCallRecord": "toolmesh.agent.events",
    "ToolCallStarted": "toolmesh.agent.events",
    "UsageUpdate": "toolmesh.agent.events",
    "Warning": "toolmesh.agent.events",
    "event_to_dict": "toolmesh.agent.events",
    "PolicySet": "toolmesh.agent.guard",
    "apply": "toolmesh.agent.guard",
    "scan": "toolmesh.agent.guard",
    "scan_tool_output": "toolmesh.agent.guard",
    "AgentStack": "toolmesh.agent.factory",
    "build_agent": "toolmesh.agent.factory",
    "build_llm": "toolmesh.agent.factory",
    "make_provider": "toolmesh.agent.factory",
    "store_location": "toolmesh.agent.factory",
    "Guard": "toolmesh.agent.guard",
    "GuardPolicy": "toolmesh.agent.guard",
    "GuardResult": "toolmesh.agent.guard",
    "History": "toolmesh.agent.history",
    "MemoryHistory": "toolmesh.agent.history",
    "StoreHistory": "toolmesh.agent.history",
    "Summarised": "toolmesh.agent.memory",
    "summarise": "toolmesh.agent.memory",
    "InputGuard": "toolmesh.agent.protocols",
    "UsageRecorder": "toolmesh.agent.protocols",
    "UserLimiter": "toolmesh.agent.protocols",
    "RunState": "toolmesh.agent.run_state",
    "Agent": "toolmesh.agent.runtime",
}

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentEvent",
    "AgentStack",
    "Budget",
    "BudgetConfig",
    "BudgetScope",
    "BudgetSet",
    "CallAsk",
    "DailySpend",
    "Final",
    "Guard",
    "GuardPolicy",
    "GuardResult",
    "Headroom",
    "History",
    "InputGuard",
    "MemoryConfig",
    "MemoryHistory",
    "PolicySet",
    "ReasoningDelta",
    "Reservation",
    "RunResult",
    "RunStarted",
    "RunState",
    "RunStatus",
    "SpendBudgets",
    "SpendLimits",
    "StoreHistory",
    "Summarised",
    "TextDelta",
    "ToolCallFinished",
    "ToolCallRecord",
    "ToolCallStarted",
    "UsageRecorder",
    "UsageUpdate",
    "UserLimiter",
    "UserLimitsConfig",
    "Warning",
    "apply",
    "build_agent",
    "build_llm",
    "event_to_dict",
    "make_provider",
    "scan",
    "scan_tool_output",
    "store_location",
    "summarise",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use, so importing the package stays cheap."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
