"""Agent settings (AGT-1..AGT-8), one validated model; loadable from the config file's ``agent:`` section."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from toolmesh.errors import validate_section


class BudgetConfig(BaseModel):
    """Limits per run and per session; ``None`` means unlimited (AGT-4)."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int | None = Field(None, ge=1, description="input + output tokens")
    max_steps: int | None = Field(None, ge=1, description="model calls plus tool calls")
    max_cost_usd: float | None = Field(None, gt=0)
    warn_at: float = Field(0.7, gt=0, le=1, description="fraction of a limit that emits a warning event")


class SpendLimits(BaseModel):
    """Daily spend limits in USD per user and per tenant (AGT-4)."""

    model_config = ConfigDict(extra="forbid")

    per_user_daily_usd: float | None = Field(None, gt=0)
    per_tenant_daily_usd: float | None = Field(None, gt=0)


class UserLimitsConfig(BaseModel):
    """Per-user limits (AGT-6)."""

    model_config = ConfigDict(extra="forbid")

    max_concurrent_runs: int = Field(4, ge=1)
    requests_per_minute: int = Field(60, ge=1)


class MemoryConfig(BaseModel):
    """Summarise older turns when the conversation nears the context window (AGT-8)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    threshold: float = Field(0.7, gt=0, lt=1)
    keep_last_messages: int = Field(6, ge=2)
    summary_model: str | None = Field(None, description="model for summaries (default: the run's model)")
    summary_max_tokens: int = Field(400, ge=32)


class AgentConfig(BaseModel):
    """How an agent run behaves."""

    model_config = ConfigDict(extra="forbid")

    model: str = "auto"
    system_prompt: str | None = None
    mode: Literal["native", "react"] = "native"
    scenario: str | None = Field(None, description="router scenario rule (e.g. 'peak')")
    temperature: float | None = Field(None, ge=0, le=2)
    max_output_tokens: int | None = Field(1024, ge=1)
    # loop guards (AGT-3)
    max_turns: int = Field(8, ge=1, description="model calls that may request tools")
    max_tool_calls: int = Field(32, ge=1, description="tool calls per run")
    max_repeats: int = Field(2, ge=1, description="identical (tool, arguments) calls allowed per run")
    # tools (AGT-2)
    max_parallel_tools: int = Field(8, ge=1)
    tool_timeout: float = Field(15.0, gt=0)
    tool_fallback: str = Field(
        "The tool did not answer in time; answer with what you know and say this part is unavailable.",
        description="tool result given to the model when a call fails to finish",
    )
    llm_timeout: float = Field(60.0, gt=0)
    final_answer_prompt: str | None = Field(
        None,
        description="the user message that asks for the final answer once tool use stops; '{question}' "
                    "is replaced by the user's question (default: a generic 'answer now in plain text')",
    )
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    session_budget: BudgetConfig = Field(default_factory=BudgetConfig)
    spend: SpendLimits = Field(default_factory=SpendLimits)
    budget_wait: float = Field(
        60.0, ge=0,
        description="seconds a model call may wait for calls in flight to settle when only their "
                    "reservations, not real spend, fill a budget (0: refuse at once)",
    )
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    user_limits: UserLimitsConfig = Field(default_factory=UserLimitsConfig)
    guard_tool_output: bool = Field(True, description="scan tool outputs for injected instructions")

    @classmethod
    def from_section(cls, section: dict[str, Any], source: str | None = None, **overrides: Any) -> AgentConfig:
        """Validate the raw ``agent`` section (``overrides`` on top); a :class:`ConfigError` names
        the first bad key, and an unknown key its closest allowed one."""
        return validate_section(cls, {**section, **overrides}, "agent", source)
