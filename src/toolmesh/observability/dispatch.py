"""Fire-and-forget delivery of callbacks from the call path.

State-change listeners (circuit breakers, health trackers) are user code: they may be slow,
async, or raise. :func:`notify` calls a listener and, if it returns an awaitable, schedules it
as a task, so the caller never waits for it and never sees its exceptions (they are logged).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["drain", "notify", "pending"]

log = logging.getLogger("toolmesh.observability")

# Strong references: the event loop only keeps weak ones, so an unreferenced task may vanish.
_tasks: set[asyncio.Task[Any]] = set()


def _done(task: asyncio.Task[Any]) -> None:
    _tasks.discard(task)
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("listener %s failed", task.get_name(), exc_info=exc)


def notify(callback: Callable[..., Any], *args: Any) -> None:
    """Call ``callback(*args)`` without letting it block or break the caller.

    A sync callback runs inline (keep it quick); an exception it raises is logged and
    swallowed. If it returns an awaitable (an ``async def`` listener), the awaitable is
    scheduled as a task on the running loop; with no running loop it is closed and a
    warning is logged, since nothing could ever run it.
    """
    try:
        result = callback(*args)
    except Exception:
        log.exception("listener %r failed", callback)
        return
    if result is None or not inspect.isawaitable(result):
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        if inspect.iscoroutine(result):
            result.close()
        log.warning("async listener %r dropped: no running event loop", callback)
        return
    coro = result if inspect.iscoroutine(result) else _await(result)
    task = loop.create_task(coro, name=f"toolmesh-listener:{getattr(callback, '__qualname__', callback)}")
    _tasks.add(task)
    task.add_done_callback(_done)


async def _await(aw: Awaitable[Any]) -> Any:
    return await aw


def pending() -> int:
    """Number of listener tasks scheduled and not yet finished (for tests and shutdown)."""
    return len(_tasks)


async def drain(timeout: float | None = None) -> None:
    """Wait until the listener tasks scheduled so far have finished (used at shutdown and in tests)."""
    if not _tasks:
        return
    await asyncio.wait(list(_tasks), timeout=timeout)
