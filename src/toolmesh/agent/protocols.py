"""The collaborators an :class:`~toolmesh.agent.runtime.Agent` depends on, as small Protocols.

The defaults are :class:`~toolmesh.agent.guard.Guard` (``InputGuard``),
:class:`~toolmesh.store.ledger.UsageLedger` (``UsageRecorder``) and
:class:`~toolmesh.store.limits.UserLimits` (``UserLimiter``); anything with the same
methods fits (e.g. limits kept in a shared store for several gateway workers).
The model itself is a :class:`~toolmesh.llm.base.ChatModel`; budgets are in
:mod:`toolmesh.agent.budget`.
"""

from __future__ import annotations

from collections.abc import Awaitable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from toolmesh.llm.types import Usage

__all__ = ["GuardOutcome", "InputGuard", "UsageRecorder", "UserLimiter"]


class GuardOutcome(Protocol):
    """The text to use (possibly sanitised) and a warning when something was found."""

    @property
    def text(self) -> str: ...

    @property
    def warning(self) -> str | None: ...


class InputGuard(Protocol):
    """Scans user input and tool output for injected instructions."""

    def apply_user(self, text: str, *, tenant: str | None = None) -> GuardOutcome:
        """The user's message as the policy leaves it; raises ``RequestRejectedError`` on block."""
        ...

    def apply_tool(self, text: str, *, tenant: str | None = None) -> GuardOutcome:
        """A tool result as the policy leaves it (never raises for a tool result's content)."""
        ...


class UsageRecorder(Protocol):
    """Where each model call's usage is written (the ledger); may return an awaitable."""

    def record(self, *, tenant: str, user: str, session: str | None, model: str, provider: str, usage: Usage,
               latency_ms: float, request_id: str | None = None) -> object | Awaitable[object]:
        """Record one completion."""
        ...


class UserLimiter(Protocol):
    """Admission of runs per (tenant, user): ``async with limiter.run(tenant, user): ...``."""

    def run(self, tenant: str, user: str) -> AbstractAsyncContextManager[None]:
        """Hold one run slot; entering raises ``RequestRejectedError`` when the user is over a limit."""
        ...
