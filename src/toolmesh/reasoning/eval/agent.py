"""``agent`` mode of an evaluation: each sample is one agent run with tools, scored on its answer and,
for the ``shop`` set, on the tools it called.

The runner sees only the :class:`ToolAgent` protocol; :class:`HubAgent` is the implementation over
the Hub and the agent runtime (the same :class:`~toolmesh.agent.runtime.Agent` that ``toolmesh chat``,
``toolmesh demo`` and the gateway run), so what is measured is what users run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from toolmesh.errors import TaskSetError
from toolmesh.reasoning.tasks import Task

if TYPE_CHECKING:  # typing only: importing the eval package loads neither the agent nor the Hub
    from toolmesh.agent.events import RunResult
    from toolmesh.agent.runtime import Agent
    from toolmesh.hub import Hub

#: ``task -> the system prompt for its run`` (``None``: the agent's configured one).
PromptFn = Callable[[Task], Awaitable[str | None]]


class ToolAgent(Protocol):
    """What ``agent`` mode needs from its collaborator."""

    async def ask(self, model: str, task: Task) -> RunResult:
        """One run of ``task.prompt`` in a fresh conversation, on ``model``."""
        ...

    async def call(self, tool: str, arguments: dict[str, Any]) -> Any:
        """A direct tool call (the expected facts of a ``shop`` task); its structured result.
        Raises :class:`~toolmesh.errors.TaskSetError` when the call fails."""
        ...


@dataclass
class HubAgent:
    """:class:`ToolAgent` over ``agent`` and its Hub. ``system_prompt`` may build a prompt per task
    (the ``shop`` set: from the customer's profile); a task's ``meta["customer"]`` is the run's user."""

    hub: Hub
    agent: Agent
    system_prompt: PromptFn | None = None

    async def ask(self, model: str, task: Task) -> RunResult:
        update: dict[str, Any] = {"model": model}
        if self.system_prompt is not None:
            prompt = await self.system_prompt(task)
            if prompt is not None:
                update["system_prompt"] = prompt
        config = self.agent.config.model_copy(update=update)
        user = task.meta.get("customer")
        return await self.agent.run(task.prompt, user=str(user or "anonymous"), config=config)

    async def call(self, tool: str, arguments: dict[str, Any]) -> Any:
        result = await self.hub.call(tool, arguments)
        if not result.ok:
            # the task cannot be scored: a data or server problem, not the model's
            raise TaskSetError(f"the expected call {tool}({arguments}) failed: {result.error}")
        return result.structured


__all__ = ["HubAgent", "PromptFn", "ToolAgent"]
