"""The normalised model of chat completions shared by every provider (LLM-1).

Providers translate to and from these; the agent runtime, router, limits and
ledger only ever see these. Tools are given in OpenAI function-tool form
(``{"type": "function", "function": {"name", "description", "parameters"}}``),
which is what the Hub produces; the Anthropic provider converts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
ToolChoice = Literal["auto", "none", "required"] | dict[str, Any]


@dataclass(slots=True)
class ToolCall:
    """One tool call requested by the model."""

    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    #: The arguments exactly as the model produced them (a JSON string, usually).
    raw_arguments: str = ""
    #: Set when ``raw_arguments`` was not a JSON object; ``arguments`` is then ``{}``.
    parse_error: str | None = None
    #: True when recovered from text (bare JSON, fences, ``<tool_call>`` tags).
    recovered: bool = False

    def to_openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": self.raw_arguments or _dumps(self.arguments)}}


@dataclass(slots=True)
class Message:
    """One chat message. ``tool`` messages carry ``tool_call_id`` (and the tool ``name``)."""

    role: Role
    content: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None
    #: Reasoning text the model returned separately from its answer (never sent back as content).
    reasoning: str | None = None

    def to_openai(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [c.to_openai() for c in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None and self.role == "tool":
            out["name"] = self.name
        return out


@dataclass(slots=True)
class Usage:
    """Token usage of one completion."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    #: True when counted locally (tokeniser or estimate) because the provider gave none.
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
            self.estimated or other.estimated,
        )


@dataclass(slots=True)
class ChatRequest:
    """One completion request, provider-neutral."""

    model: str
    messages: list[Message]
    tools: list[dict[str, Any]] | None = None
    tool_choice: ToolChoice = "auto"
    temperature: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    parallel_tool_calls: bool | None = None
    #: Provider-specific extras passed through verbatim (e.g. ``{"top_p": 0.9}``).
    extra: dict[str, Any] = field(default_factory=dict)


FinishReason = Literal["stop", "tool_calls", "length", "content_filter", "error"]


@dataclass(slots=True)
class ChatResponse:
    """One completion, provider-neutral."""

    message: Message
    usage: Usage
    model: str
    provider: str
    finish_reason: FinishReason = "stop"
    latency_ms: float = 0.0
    #: Time to first token (streaming) or to the response headers (non-streaming).
    ttft_ms: float | None = None
    #: Response headers worth keeping (``x-ratelimit-*``, ``retry-after``), lower-cased.
    headers: dict[str, str] = field(default_factory=dict)


# -- streaming events ----------------------------------------------------------------------


@dataclass(slots=True)
class TextDelta:
    text: str


@dataclass(slots=True)
class ReasoningDelta:
    text: str


@dataclass(slots=True)
class ToolCallDelta:
    """A piece of a tool call; ``index`` identifies the call within the message."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(slots=True)
class StreamDone:
    """The last event of a stream: the complete response (usage included)."""

    response: ChatResponse


StreamEvent = TextDelta | ReasoningDelta | ToolCallDelta | StreamDone


def _dumps(obj: Any) -> str:
    import orjson

    return orjson.dumps(obj).decode()
