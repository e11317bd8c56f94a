"""The typed events of an agent run (AGT-9). ``Agent.stream`` yields these; ``Agent.run`` collects them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

RunStatus = Literal["completed", "max_turns", "repeated_calls", "max_tool_calls", "budget_exceeded", "error"]


@dataclass(slots=True)
class ToolCallRecord:
    """One tool call made during a run (what the CLI's ``--json`` reports)."""

    id: str
    name: str
    arguments: dict[str, Any]
    ok: bool
    latency_ms: float
    error: str | None = None
    server: str = ""
    tool: str = ""


@dataclass(slots=True)
class RunResult:
    """Everything a finished run produced."""

    answer: str
    status: RunStatus
    run_id: str
    turns: int
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    cost_usd: float | None = 0.0
    priced: bool = True
    models: list[str] = field(default_factory=list)
    latency_ms: float = 0.0
    warnings: list[str] = field(default_factory=list)
    budget_report: dict[str, Any] | None = None
    conversation: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class RunStarted:
    run_id: str
    conversation: str | None
    type: str = "run_started"


@dataclass(slots=True)
class TextDelta:
    text: str
    type: str = "text_delta"


@dataclass(slots=True)
class ReasoningDelta:
    text: str
    type: str = "reasoning_delta"


@dataclass(slots=True)
class ToolCallStarted:
    id: str
    name: str
    arguments: dict[str, Any]
    type: str = "tool_call_started"


@dataclass(slots=True)
class ToolCallFinished:
    id: str
    name: str
    ok: bool
    latency_ms: float
    result: str
    error: str | None = None
    type: str = "tool_call_finished"


@dataclass(slots=True)
class UsageUpdate:
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    total_cost_usd: float | None
    latency_ms: float
    type: str = "usage"


@dataclass(slots=True)
class Warning:
    kind: str
    message: str
    type: str = "warning"


@dataclass(slots=True)
class Final:
    result: RunResult
    type: str = "final"


AgentEvent = (
    RunStarted | TextDelta | ReasoningDelta | ToolCallStarted | ToolCallFinished | UsageUpdate | Warning | Final
)


def event_to_dict(event: AgentEvent) -> dict[str, Any]:
    """JSON-ready form of an event (for SSE, logs, the CLI)."""
    return asdict(event)
