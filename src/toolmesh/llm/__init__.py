"""The LLM layer: one normalised chat model, providers, the router, rate limits, prices (SPEC §3).

    from toolmesh.llm import ChatRequest, Deployment, Message, ModelRegistry, OpenAIProvider, Router

    router = Router([Deployment("main", "deepseek-chat", OpenAIProvider(base_url, api_key))], ModelRegistry.load())
    response = await router.complete(ChatRequest("auto", [Message("user", "hi")]), scenario="peak")

Names are imported on first use: the provider SDKs and the local llama.cpp model load only when asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toolmesh.llm.anthropic_provider import AnthropicProvider
    from toolmesh.llm.base import ChatModel, DirectModel, as_chat_model
    from toolmesh.llm.local import LocalProvider
    from toolmesh.llm.models import Cost, ModelInfo, ModelRegistry
    from toolmesh.llm.openai_provider import OpenAIProvider
    from toolmesh.llm.provider import Provider
    from toolmesh.llm.ratelimit import AdaptiveLimiter, KeyedLimits, KeyLimiter
    from toolmesh.llm.router import Router
    from toolmesh.llm.routing import STRATEGIES, Attempt, Deployment, Rule, attempts_of
    from toolmesh.llm.tokens import count_messages, count_tokens
    from toolmesh.llm.types import (
        ChatRequest,
        ChatResponse,
        Message,
        ReasoningDelta,
        Role,
        StreamDone,
        StreamEvent,
        TextDelta,
        ToolCall,
        ToolCallDelta,
        ToolChoice,
        Usage,
    )

#: public name -> the module that defines it (imported on first use: see ``__getattr__``)
_EXPORTS: dict[str, str] = {
    "AnthropicProvider": "toolmesh.llm.anthropic_provider",
    "ChatModel": "toolmesh.llm.base",
    "DirectModel": "toolmesh.llm.base",
    "as_chat_model": "toolmesh.llm.base",
    "LocalProvider": "toolmesh.llm.local",
    "Cost": "toolmesh.llm.models",
    "ModelInfo": "toolmesh.llm.models",
    "ModelRegistry": "toolmesh.llm.models",
    "OpenAIProvider": "toolmesh.llm.openai_provider",
    "Provider": "toolmesh.llm.provider",
    "AdaptiveLimiter": "toolmesh.llm.ratelimit",
    "KeyedLimits": "toolmesh.llm.ratelimit",
    "KeyLimiter": "toolmesh.llm.ratelimit",
    "Router": "toolmesh.llm.router",
    "Attempt": "toolmesh.llm.routing",
    "Deployment": "toolmesh.llm.routing",
    "Rule": "toolmesh.llm.routing",
    "STRATEGIES": "toolmesh.llm.routing",
    "attempts_of": "toolmesh.llm.routing",
    "count_messages": "toolmesh.llm.tokens",
    "count_tokens": "toolmesh.llm.tokens",
    "ChatRequest": "toolmesh.llm.types",
    "ChatResponse": "toolmesh.llm.types",
    "Message": "toolmesh.llm.types",
    "ReasoningDelta": "toolmesh.llm.types",
    "Role": "toolmesh.llm.types",
    "StreamDone": "toolmesh.llm.types",
    "StreamEvent": "toolmesh.llm.types",
    "TextDelta": "toolmesh.llm.types",
    "ToolCall": "toolmesh.llm.types",
    "ToolCallDelta": "toolmesh.llm.types",
    "ToolChoice": "toolmesh.llm.types",
    "Usage": "toolmesh.llm.types",
}

__all__ = [
    "STRATEGIES",
    "AdaptiveLimiter",
    "AnthropicProvider",
    "Attempt",
    "ChatModel",
    "ChatRequest",
    "ChatResponse",
    "Cost",
    "Deployment",
    "DirectModel",
    "KeyLimiter",
    "KeyedLimits",
    "LocalProvider",
    "Message",
    "ModelInfo",
    "ModelRegistry",
    "OpenAIProvider",
    "Provider",
    "ReasoningDelta",
    "Role",
    "Router",
    "Rule",
    "StreamDone",
    "StreamEvent",
    "TextDelta",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "Usage",
    "as_chat_model",
    "attempts_of",
    "count_messages",
    "count_tokens",
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
