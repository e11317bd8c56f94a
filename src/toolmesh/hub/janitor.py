"""The Hub's idle janitor: a background task that closes connections nobody used for a while.

It runs only while connections may be open (the Hub starts it on the first connect), so a Hub
that never connects leaves no task behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

__all__ = ["IdleJanitor"]


class IdleJanitor:
    """Calls ``sweep()`` every ``interval`` seconds from :meth:`ensure` until :meth:`stop`."""

    def __init__(self, interval: float, sweep: Callable[[], Awaitable[object]]) -> None:
        """``sweep`` closes what is idle (the Hub's ``close_idle``)."""
        self.interval = interval
        self._sweep = sweep
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    def ensure(self) -> None:
        """Start the task unless it runs (or the janitor was stopped)."""
        if not self._stopped and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._run(), name="toolmesh-janitor")

    async def _run(self) -> None:
        while not self._stopped:
            await asyncio.sleep(self.interval)
            await self._sweep()

    async def stop(self) -> None:
        """Stop the task for good and wait for it to end."""
        self._stopped = True
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
