"""Many tool calls at once, as a model asked for them (``Hub.batch_call``).

Each call is resolved by its namespaced name and run concurrently (bounded); a call's failure
becomes its :class:`~toolmesh.hub.result.ToolResult`, never an exception of the batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any, Protocol

from toolmesh.errors import ToolmeshError
from toolmesh.hub.result import ToolResult
from toolmesh.hub.toolcall import normalise_call

__all__ = ["BatchTarget", "run_batch"]

log = logging.getLogger("toolmesh.hub")


class BatchTarget(Protocol):
    """What a batch runs its calls through (the Hub)."""

    async def resolve_async(self, exposed: str, *, tenant: str = ..., user: str | None = None) -> tuple[str, str]:
        """(server, tool) for a namespaced tool name."""

    async def call_tool(self, server: str, tool: str, arguments: dict[str, Any] | None = None, *,
                        tenant: str = ..., user: str | None = None, timeout: float | None = None) -> ToolResult:
        """Call one tool."""


async def run_batch(
    target: BatchTarget,
    tool_calls: Iterable[Any],
    *,
    tenant: str,
    user: str | None,
    timeout: float | None,
    concurrency: int,
) -> dict[str, ToolResult]:
    """Run ``tool_calls`` through ``target``, at most ``concurrency`` at a time; results keyed by
    ``tool_call_id`` in input order (see :meth:`toolmesh.hub.Hub.batch_call` for the shapes)."""
    calls = [normalise_call(c, i) for i, c in enumerate(tool_calls)]
    sem = asyncio.Semaphore(concurrency)

    async def run(call_id: str, name: str, args: Any) -> ToolResult:
        start = time.perf_counter()
        server, tool = "", name
        async with sem:
            try:
                server, tool = await target.resolve_async(name, tenant=tenant, user=user)
                if isinstance(args, BaseException):
                    raise args
                res = await target.call_tool(server, tool, args, tenant=tenant, user=user, timeout=timeout)
            except (ToolmeshError, ValueError, LookupError, OSError) as exc:
                res = ToolResult.failure(server, tool, exc, (time.perf_counter() - start) * 1000)
            except Exception as exc:
                log.exception("unexpected error in batch call %s", name)
                res = ToolResult.failure(server, tool, exc, (time.perf_counter() - start) * 1000)
        res.call_id = call_id
        res.arguments = args if isinstance(args, dict) else None
        return res

    results = await asyncio.gather(*(run(*c) for c in calls))
    return {r.call_id or "": r for r in results}
