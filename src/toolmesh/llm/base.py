"""What callers of the LLM layer depend on: :class:`ChatModel`, offered by the router and,
through :class:`DirectModel`, by any single provider.

    llm: ChatModel = router                         # routes on scenario / tenant / user
    llm = as_chat_model(OpenAIProvider(base_url))   # one endpoint; the routing context is ignored
    response = await llm.complete(request, scenario="peak", tenant="acme", user="u1", timeout=30)

The routing context (``scenario``, ``tenant``, ``user``) is part of every call, so a caller
never needs to know whether it holds a router or a bare provider.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from toolmesh.llm.provider import Provider
from toolmesh.llm.types import ChatRequest, ChatResponse, StreamEvent

__all__ = ["ChatModel", "DirectModel", "as_chat_model"]


@runtime_checkable
class ChatModel(Protocol):
    """A chat completion service: :class:`~toolmesh.llm.router.Router`, :class:`DirectModel`."""

    async def complete(self, request: ChatRequest, *, scenario: str | None = None, tenant: str | None = None,
                       user: str | None = None, timeout: float | None = None) -> ChatResponse:
        """One completion; raises the :mod:`toolmesh.errors` LLM errors."""
        ...

    def stream(self, request: ChatRequest, *, scenario: str | None = None, tenant: str | None = None,
               user: str | None = None, timeout: float | None = None) -> AsyncIterator[StreamEvent]:
        """Stream the completion; the last event is :class:`~toolmesh.llm.types.StreamDone`."""
        ...


class DirectModel:
    """One :class:`Provider` as a :class:`ChatModel`: no routing, so the routing context is ignored."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider

    async def complete(self, request: ChatRequest, *, scenario: str | None = None, tenant: str | None = None,
                       user: str | None = None, timeout: float | None = None) -> ChatResponse:
        """:meth:`Provider.complete`."""
        return await self.provider.complete(request, timeout=timeout)

    def stream(self, request: ChatRequest, *, scenario: str | None = None, tenant: str | None = None,
               user: str | None = None, timeout: float | None = None) -> AsyncIterator[StreamEvent]:
        """:meth:`Provider.stream` (its own iterator: no extra layer per event)."""
        return self.provider.stream(request, timeout=timeout)

    async def aclose(self) -> None:
        """Close the provider."""
        await self.provider.aclose()


def as_chat_model(llm: ChatModel | Provider) -> ChatModel:
    """``llm`` itself when it already routes, else the provider wrapped in :class:`DirectModel`."""
    if isinstance(llm, Provider):
        return DirectModel(llm)
    if not isinstance(llm, ChatModel):
        raise TypeError(f"expected a ChatModel (e.g. a Router) or a Provider, not {type(llm).__name__}")
    return llm
