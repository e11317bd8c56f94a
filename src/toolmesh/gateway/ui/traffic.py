"""Requests and tool calls over the last minutes, sampled from this worker's counters.

A background task copies the cumulative counters every ``interval`` seconds (a few dict
operations); the dashboard's Overview turns consecutive samples into rates. Counters are
per worker, so with several workers each shows its own share of the traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from toolmesh.observability.metrics import ServerStats

__all__ = ["RequestCounts", "ToolCounts", "Traffic"]

log = logging.getLogger("toolmesh.gateway")

#: Routes left out of the request rate: the dashboard's own polling would otherwise dominate it.
_QUIET_ROUTES = frozenset({"admin"})


class RequestCounts(Protocol):
    """The gateway's request counters (``toolmesh.gateway.ops.metrics.RequestStats``)."""

    @property
    def series(self) -> dict[tuple[str, int, str], list[float]]:
        """(route, status, tenant) -> [count, seconds, buckets...], cumulative."""
        ...


class ToolCounts(Protocol):
    """The Hub's per-server call counters (``toolmesh.observability.metrics.ToolMetrics``)."""

    def servers(self) -> Iterable[ServerStats]:
        """Every server aggregate."""
        ...


@dataclass(slots=True)
class Sample:
    """Cumulative counters at one moment."""

    at: float
    requests: dict[str, tuple[float, float]]  # tenant -> (requests, 4xx/5xx answers)
    tools: dict[str, tuple[int, int]]  # server label -> (calls, failures)


class Traffic:
    """A ring of samples (``keep`` × ``interval`` seconds: five minutes by default)."""

    def __init__(self, requests: RequestCounts, tools: ToolCounts, *, interval: float = 2.0, keep: int = 151) -> None:
        self.requests = requests
        self.tools = tools
        self.interval = interval
        self.samples: deque[Sample] = deque(maxlen=keep)
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        """Take one sample now."""
        req: dict[str, tuple[float, float]] = {}
        for (route, status, tenant), s in list(self.requests.series.items()):
            if route in _QUIET_ROUTES:
                continue
            n, bad = req.get(tenant, (0.0, 0.0))
            req[tenant] = (n + s[0], bad + (s[0] if status >= 400 else 0.0))
        tools = {s.name: (s.calls, s.failures) for s in self.tools.servers()}
        self.samples.append(Sample(time.time(), req, tools))

    def points(self, tenant: str, labels: Iterable[str]) -> list[dict[str, Any]]:
        """Per interval: ``{at, requests_per_s, errors, tool_calls_per_s, tool_errors}`` for one tenant."""
        wanted = set(labels)
        out: list[dict[str, Any]] = []
        prev: Sample | None = None
        for cur in list(self.samples):
            if prev is not None:
                dt = max(cur.at - prev.at, 1e-6)
                r1, e1 = cur.requests.get(tenant, (0.0, 0.0))
                r0, e0 = prev.requests.get(tenant, (0.0, 0.0))
                c1 = sum(cur.tools[k][0] for k in wanted if k in cur.tools)
                c0 = sum(prev.tools[k][0] for k in wanted if k in prev.tools)
                f1 = sum(cur.tools[k][1] for k in wanted if k in cur.tools)
                f0 = sum(prev.tools[k][1] for k in wanted if k in prev.tools)
                # A server registered or removed between samples can make a difference negative.
                out.append({"at": round(cur.at, 3), "requests_per_s": round(max(r1 - r0, 0) / dt, 3),
                            "errors": max(e1 - e0, 0), "tool_calls_per_s": round(max(c1 - c0, 0) / dt, 3),
                            "tool_errors": max(f1 - f0, 0)})
            prev = cur
        return out

    def start(self) -> None:
        """Sample every ``interval`` seconds in the background (call from the running loop)."""
        if self._task is None:
            self.sample()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="toolmesh-ui-traffic")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.sample()
            except Exception:  # never let a sampling hiccup end the sampler
                log.debug("dashboard traffic sample failed", exc_info=True)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
