"""The provider interface: one class per API family (OpenAI-compatible, Anthropic, local)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator

from toolmesh.llm.types import ChatRequest, ChatResponse, StreamDone, StreamEvent


class Provider(ABC):
    """Talks to one model endpoint. Implementations must not retry on their own:
    retries, fallbacks and rate limits belong to toolmesh's router (LLM-1, LLM-3).

    Errors are raised as :mod:`toolmesh.errors` LLM errors: ``RateLimitedError`` (429,
    with ``retry_after``), ``ProviderUnavailableError`` (5xx, connection, timeout),
    ``ContextOverflowError``, ``UnknownModelError``, ``MalformedResponseError``,
    ``LLMError`` for the rest (with ``status``)."""

    #: Short provider name used in usage records and errors ("openai", "anthropic", "local").
    name: str = "provider"

    @abstractmethod
    async def complete(self, request: ChatRequest, *, timeout: float | None = None) -> ChatResponse:
        """One non-streaming completion."""

    async def stream(self, request: ChatRequest, *, timeout: float | None = None) -> AsyncIterator[StreamEvent]:
        """Stream the completion; the last event is :class:`StreamDone`.

        The default runs :meth:`complete` and replays it as events."""
        from toolmesh.llm.types import TextDelta, ToolCallDelta

        response = await self.complete(request, timeout=timeout)
        if response.message.reasoning:
            from toolmesh.llm.types import ReasoningDelta

            yield ReasoningDelta(response.message.reasoning)
        if response.message.content:
            yield TextDelta(response.message.content)
        for i, call in enumerate(response.message.tool_calls):
            yield ToolCallDelta(i, call.id, call.name, call.raw_arguments)
        yield StreamDone(response)

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
