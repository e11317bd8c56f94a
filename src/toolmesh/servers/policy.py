"""Production policy for hosted tool servers: timeouts, rate limits, connection caps, metrics.

A :class:`~toolmesh.servers.toolserver.ToolServer` carries a :class:`ServerPolicy`; toolmesh's
own frontends (``toolmesh.servers.serve``) enforce it, not the SDK transports.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from mcp.server import MCPServer

from toolmesh.resilience.abc import ClientRateLimiter

_F = TypeVar("_F", bound=Callable[..., Any])

#: How many recent latency samples per tool feed the percentiles.
_SAMPLES = 2048
#: Above this many tracked clients, idle buckets are dropped (bounded memory).
_MAX_BUCKETS = 10_000


class TokenBucket:
    """Per-key token buckets: ``rate`` tokens/s refill, ``burst`` capacity."""

    __slots__ = ("_buckets", "burst", "rate")

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1.0, rate))
        self._buckets: dict[str, list[float]] = {}

    def acquire(self, key: str) -> float:
        """Take one token for ``key``: 0.0 when granted, else seconds until a token is available."""
        now = time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= _MAX_BUCKETS:
                self._evict(now)
            self._buckets[key] = [self.burst - 1.0, now]
            return 0.0
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / self.rate

    async def take(self, key: str) -> float:
        """:meth:`acquire`, as the :class:`~toolmesh.resilience.abc.ClientRateLimiter` protocol asks."""
        return self.acquire(key)

    def _evict(self, now: float) -> None:
        # A bucket idle long enough to be full again carries no state worth keeping.
        full_after = self.burst / self.rate
        for key in [k for k, b in self._buckets.items() if now - b[1] >= full_after]:
            del self._buckets[key]
        if len(self._buckets) >= _MAX_BUCKETS:
            self._buckets.clear()


@dataclass
class ToolMetrics:
    """Counters and recent latencies of one tool (or method)."""

    calls: int = 0
    errors: int = 0
    timeouts: int = 0
    total_s: float = 0.0
    max_s: float = 0.0
    samples: deque[float] = field(default_factory=lambda: deque(maxlen=_SAMPLES))

    def record(self, seconds: float, outcome: Literal["ok", "error", "timeout"]) -> None:
        """Count one finished call."""
        self.calls += 1
        if outcome == "error":
            self.errors += 1
        elif outcome == "timeout":
            self.errors += 1
            self.timeouts += 1
        self.total_s += seconds
        if seconds > self.max_s:
            self.max_s = seconds
        self.samples.append(seconds)

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready summary: counts, mean/max and p50/p95/p99 latency in milliseconds."""
        ordered = sorted(self.samples)

        def pct(p: float) -> float:
            if not ordered:
                return 0.0
            return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000.0, 3)

        return {
            "calls": self.calls,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "mean_ms": round(self.total_s / self.calls * 1000.0, 3) if self.calls else 0.0,
            "max_ms": round(self.max_s * 1000.0, 3),
            "p50_ms": pct(0.50),
            "p95_ms": pct(0.95),
            "p99_ms": pct(0.99),
        }


class ServerPolicy:
    """The limits a frontend enforces for one server, plus its metrics registry."""

    def __init__(
        self,
        *,
        max_execution_time: float | None = None,
        tool_timeouts: Mapping[str, float] | None = None,
        rate_limit: float | None = None,
        rate_burst: float | None = None,
        max_connections: int | None = None,
    ) -> None:
        self.max_execution_time = max_execution_time
        self.tool_timeouts: dict[str, float] = dict(tool_timeouts or {})
        #: Per-client rate limits (a shared implementation can replace the local buckets).
        self.limiter: ClientRateLimiter | None = TokenBucket(rate_limit, rate_burst) if rate_limit else None
        self.max_connections = max_connections
        self.tools: dict[str, ToolMetrics] = {}
        self.rate_limited = 0
        self.connections_rejected = 0
        self.connections = 0

    def timeout_for(self, tool: str) -> float | None:
        """The execution limit of ``tool`` in seconds (per-tool override, else the default)."""
        return self.tool_timeouts.get(tool, self.max_execution_time)

    def metrics_for(self, tool: str) -> ToolMetrics:
        """The metrics record of ``tool``, created on first use."""
        m = self.tools.get(tool)
        if m is None:
            m = self.tools[tool] = ToolMetrics()
        return m

    def snapshot(self) -> dict[str, Any]:
        """All metrics as one JSON-ready dict."""
        tools = {name: m.snapshot() for name, m in self.tools.items()}
        return {
            "tools": tools,
            "calls": sum(t["calls"] for t in tools.values()),
            "errors": sum(t["errors"] for t in tools.values()),
            "rate_limited": self.rate_limited,
            "connections": self.connections,
            "connections_rejected": self.connections_rejected,
        }


def policy_of(server: MCPServer[Any]) -> ServerPolicy | None:
    """The policy a server carries (``ToolServer``), or ``None`` for a plain ``MCPServer``."""
    policy = getattr(server, "policy", None)
    return policy if isinstance(policy, ServerPolicy) else None
