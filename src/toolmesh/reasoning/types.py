"""Public types of the reasoning engine (RSN-1, RSN-2): config, steps, verdicts, events, results.

These are the stable surface other modules (``toolmesh eval``, the CLI, the gateway)
build on; fields may be added, never renamed.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from toolmesh.agent.config import BudgetConfig, MemoryConfig
from toolmesh.errors import validate_section

Status = Literal["ok", "timeout", "error", "budget"]


class StepState(enum.StrEnum):
    """Where a step is in its life: THINKING → VERIFIED | REVISING → COMMITTED → TERMINAL."""

    THINKING = "thinking"
    VERIFIED = "verified"
    REVISING = "revising"
    COMMITTED = "committed"
    #: The answer step (or the last step of a run that stopped early).
    TERMINAL = "terminal"


@dataclass(slots=True)
class Verdict:
    """A verifier's judgement of one step.

    ``score`` is 0..1 or None when the verifier could not tell ("unknown");
    ``ok`` is the pass/fail decision (None = unknown, which never triggers a revision).
    """

    score: float | None
    ok: bool | None
    reason: str = ""
    #: Which verifier(s) produced it ("arithmetic", "judge+python", ...).
    verifier: str = ""
    #: Problems of the verifier itself (malformed judge JSON, sandbox failure) — not of the step.
    warnings: list[str] = field(default_factory=list)

    @property
    def unknown(self) -> bool:
        return self.ok is None

    def to_json(self) -> dict[str, Any]:
        return {"score": self.score, "ok": self.ok, "reason": self.reason}


@dataclass(slots=True)
class Transition:
    """One state change of a step; ``at_ms`` is milliseconds since the run started."""

    state: StepState
    at_ms: float


@dataclass(slots=True)
class Step:
    """One reasoning step as committed (or as far as it got)."""

    n: int
    text: str
    state: StepState = StepState.THINKING
    verdict: Verdict | None = None
    revisions: int = 0
    forced: bool = False
    #: From the step's first token to its commit, revisions included.
    latency_ms: float = 0.0
    transitions: list[Transition] = field(default_factory=list)
    #: Texts rejected by the verifier before the committed one (oldest first).
    rejected: list[str] = field(default_factory=list)
    #: False when the model wrote no step marker (the engine then asks for the answer).
    marked: bool = True
    #: Tokens of the model calls of this step (generation, revisions, judge).
    usage: dict[str, int] = field(default_factory=lambda: empty_usage())
    cost_usd: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "text": self.text, "state": self.state.value,
                "verdict": self.verdict.to_json() if self.verdict is not None else None,
                "revisions": self.revisions, "forced": self.forced, "latency_ms": round(self.latency_ms, 3),
                "usage": dict(self.usage), "cost_usd": self.cost_usd}


EventKind = Literal[
    "run_started",      # run_id
    "step_started",     # step
    "step_delta",       # step, text
    "reasoning_delta",  # provider reasoning (kept apart from step text), text
    "step_verified",    # step, verdict
    "step_revised",     # step, attempt, verdict (the reason it was sent back)
    "step_committed",   # step, latency_ms, forced, text
    "answer_delta",     # text of the answer as it streams
    "checkpointed",     # step (last committed step written)
    "usage",            # usage, cost_usd (run totals so far)
    "warning",          # text
    "final",            # result
]


@dataclass(slots=True)
class ReasoningEvent:
    """One event of :meth:`Reasoner.stream`; ``kind`` says which fields are set."""

    kind: EventKind
    run_id: str
    step: int | None = None
    text: str = ""
    verdict: Verdict | None = None
    attempt: int | None = None
    forced: bool | None = None
    latency_ms: float | None = None
    usage: dict[str, int] | None = None
    cost_usd: float | None = None
    result: ReasoningResult | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.kind, "run_id": self.run_id}
        if self.step is not None:
            out["step"] = self.step
        if self.text:
            out["text"] = self.text
        if self.verdict is not None:
            out["verdict"] = self.verdict.to_json()
        if self.attempt is not None:
            out["attempt"] = self.attempt
        if self.forced is not None:
            out["forced"] = self.forced
        if self.latency_ms is not None:
            out["latency_ms"] = round(self.latency_ms, 3)
        if self.usage is not None:
            out["usage"] = self.usage
            out["cost_usd"] = self.cost_usd
        if self.result is not None:
            out["result"] = self.result.to_json()
        return out


def empty_usage() -> dict[str, int]:
    return {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}


@dataclass(slots=True)
class ReasoningResult:
    """The outcome of one run. ``status`` is never "ok" for a partial chain."""

    run_id: str
    status: Status
    answer: str | None
    steps: list[Step] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=empty_usage)
    #: None when any call of the run was unpriced (never a silent 0.0).
    cost_usd: float | None = None
    elapsed_ms: float = 0.0
    #: Why the run is not "ok" (timeout, budget, error, coherence failure).
    error: str | None = None
    model: str | None = None
    coherence: Verdict | None = None
    warnings: list[str] = field(default_factory=list)
    #: True when this result came from :meth:`Reasoner.resume`.
    resumed: bool = False

    @property
    def revisions(self) -> int:
        return sum(s.revisions for s in self.steps)

    def to_json(self) -> dict[str, Any]:
        """The CLI's ``--json`` object."""
        out: dict[str, Any] = {
            "run_id": self.run_id, "status": self.status, "answer": self.answer,
            "steps": [s.to_json() for s in self.steps], "usage": dict(self.usage),
            "cost_usd": self.cost_usd, "elapsed_ms": round(self.elapsed_ms, 3),
        }
        if self.error is not None:
            out["error"] = self.error
        if self.coherence is not None:
            out["coherence"] = self.coherence.to_json()
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


#: A verifier: ``async (step, chain) -> Verdict`` where ``chain`` is the committed steps before it.
Verifier = Callable[[Step, list[Step]], Awaitable[Verdict]]
#: A final coherence check: ``async (prompt, chain, answer) -> Verdict``.
CoherenceCheck = Callable[[str, list[Step], str], Awaitable[Verdict]]

DEFAULT_STEP_MARKER = "【STEP {n}】"
DEFAULT_ANSWER_MARKER = "【ANSWER】"


class ReasoningConfig(BaseModel):
    """How a reasoning run behaves; loadable from the config file's ``reasoning:`` section
    and from a gateway request's ``"toolmesh": {"reasoning": {...}}``."""

    model_config = ConfigDict(extra="forbid")

    model: str = "auto"
    system_prompt: str | None = Field(None, description="extra instructions before the step-format rules")
    step_marker: str = Field(DEFAULT_STEP_MARKER, description="must contain {n}")
    answer_marker: str = DEFAULT_ANSWER_MARKER
    verifiers: list[str] = Field(
        default_factory=lambda: ["arithmetic"],
        description="arithmetic, python, judge, tool:NAME, none; combined by `combine`")
    combine: Literal["min", "mean", "all"] = Field(
        "min", description="how several verdicts become one (unknown verdicts are skipped)")
    threshold: float = Field(0.5, ge=0, le=1, description="a score below this sends the step back")
    max_revisions: int = Field(2, ge=0)
    max_steps: int = Field(16, ge=1, description="steps before the run stops with an error")
    max_seconds: float | None = Field(None, gt=0, description="wall-clock limit of the run")
    step_seconds: float | None = Field(None, gt=0, description="limit per step (its generation and verification)")
    checkpoint_every: int = Field(1, ge=1, description="committed steps between checkpoints")
    checkpoint_retention_days: float | None = Field(
        7.0, gt=0, description="runs whose last checkpoint is older are deleted (whole runs); None keeps all")
    coherence: Literal["none", "judge", "auto"] = Field(
        "auto", description="final check: judge, none, or auto (judge only if a judge verifier is configured)")
    judge_model: str | None = Field(None, description="model of the judge (default: the run's model)")
    python_timeout: float = Field(5.0, gt=0)
    python_memory_mb: int = Field(256, ge=16)
    tool_timeout: float = Field(15.0, gt=0)
    tool_arguments: dict[str, str] = Field(
        default_factory=lambda: {"step": "{step}"},
        description="arguments of the tool verifier; {step} {n} {prompt} {chain} are filled in")
    temperature: float | None = Field(0.0, ge=0, le=2)
    max_output_tokens: int | None = Field(1024, ge=1)
    llm_timeout: float = Field(60.0, gt=0)
    rate_limit_retries: int = Field(8, ge=0, description="waits for retry_after when every deployment is at its limit")
    budget_wait: float = Field(60.0, ge=0, description=(
        "seconds a model call may wait for other calls' reservations when only they fill a budget"))
    scenario: str | None = None
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    context_window: int | None = Field(None, ge=256, description="override of the model's context window")
    tenant: str = "default"
    user: str = "reasoning"

    @field_validator("step_marker")
    @classmethod
    def _has_n(cls, v: str) -> str:
        if "{n}" not in v:
            raise ValueError("step_marker must contain {n}")
        return v

    @field_validator("verifiers")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for name in v:
            base = name.split(":", 1)[0]
            if base not in ("arithmetic", "python", "judge", "tool", "none"):
                raise ValueError(f"unknown verifier {name!r} (arithmetic, python, judge, tool:NAME, none)")
            if base == "tool" and not name.partition(":")[2]:
                raise ValueError("the tool verifier needs a tool name: tool:SERVER.TOOL")
        return v

    @classmethod
    def from_section(cls, section: dict[str, Any], source: str | None = None, **overrides: Any) -> ReasoningConfig:
        """Validate the raw ``reasoning`` section (``overrides`` on top); a :class:`ConfigError`
        names the first bad key, and an unknown key its closest allowed one."""
        return validate_section(cls, {**section, **overrides}, "reasoning", source)
