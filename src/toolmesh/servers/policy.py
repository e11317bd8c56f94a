"""Production policy for hosted tool servers: timeouts, rate limits, connection caps, metrics.

:class:`ToolServer` is a drop-in subclass of the SDK's ``MCPServer``; the policy it carries is
enforced by toolmesh's own frontends (``toolmesh.servers.serve``), not by the SDK transports.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from mcp.server import MCPServer

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
        self.limiter = TokenBucket(rate_limit, rate_burst) if rate_limit else None
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


class ToolServer(MCPServer[Any]):
    """``MCPServer`` plus production policy, served by toolmesh's lean frontends.

    Args:
        max_execution_time: default limit in seconds for one tool call; ``None`` = unlimited.
            A call over its limit is cancelled and answered with JSON-RPC error ``-32001``
            ("Request timed out", ``data={"tool", "timeout"}``) — a protocol error, not a
            tool result, so clients can tell a timeout from a tool failure.
        tool_timeouts: per-tool overrides (also settable with ``@server.tool(timeout=...)``).
        rate_limit: requests per second allowed per client (token bucket); the client is
            the legacy session / WebSocket / SSE connection, else the remote address. Over
            the limit a request gets JSON-RPC error ``-32029`` "Rate limit exceeded" with
            ``data={"retryAfter": seconds}`` (HTTP status 429 plus ``Retry-After``).
        rate_burst: bucket capacity (default: ``max(1, rate_limit)``).
        max_connections: cap on concurrent client connections (HTTP connections, legacy
            sessions, SSE streams, WebSockets); beyond it HTTP answers 503, WebSocket closes 1013.
        list_ttl: seconds a 2026-07-28 client may cache the tool/resource/prompt listings
            (``ttlMs``); the SDK's default of 0 makes clients re-list before every use. Ignored
            when ``cache_hints`` is given.
        *args, **kwargs: passed to ``MCPServer``.
    """

    def __init__(
        self,
        name: str | None = None,
        *args: Any,
        max_execution_time: float | None = None,
        tool_timeouts: Mapping[str, float] | None = None,
        rate_limit: float | None = None,
        rate_burst: float | None = None,
        max_connections: int | None = None,
        list_ttl: float = 60.0,
        **kwargs: Any,
    ) -> None:
        if "cache_hints" not in kwargs and list_ttl > 0:
            from mcp.server.caching import CacheHint
            from mcp_types.methods import CACHEABLE_METHODS

            hint = CacheHint(ttl_ms=int(list_ttl * 1000))
            kwargs["cache_hints"] = {m: hint for m in CACHEABLE_METHODS if m.endswith("/list")}
        super().__init__(name, *args, **kwargs)
        self.policy = ServerPolicy(
            max_execution_time=max_execution_time,
            tool_timeouts=tool_timeouts,
            rate_limit=rate_limit,
            rate_burst=rate_burst,
            max_connections=max_connections,
        )

    def tool(  # type: ignore[override]
        self, name: str | None = None, *, timeout: float | None = None, **kwargs: Any
    ) -> Callable[[_F], _F]:
        """Register a tool like ``MCPServer.tool``; ``timeout`` overrides ``max_execution_time``."""
        register = super().tool(name, **kwargs)

        def decorator(fn: _F) -> _F:
            register(fn)
            if timeout is not None:
                self.policy.tool_timeouts[name or fn.__name__] = float(timeout)
            return fn

        return decorator

    def metrics(self) -> dict[str, Any]:
        """Snapshot of per-tool calls, errors, timeouts and latency, plus rate-limit/connection counts."""
        return self.policy.snapshot()

    def run(  # type: ignore[override]
        self,
        transport: Literal["stdio", "http", "sse", "websocket"] = "stdio",
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        path: str = "/mcp",
        **options: Any,
    ) -> None:
        """Serve this server with toolmesh's frontends (blocking); see ``toolmesh.servers.serve``."""
        from toolmesh.servers.app import serve

        serve(self, transport, host=host, port=port, path=path, **options)


def policy_of(server: MCPServer[Any]) -> ServerPolicy | None:
    """The policy a server carries (``ToolServer``), or ``None`` for a plain ``MCPServer``."""
    policy = getattr(server, "policy", None)
    return policy if isinstance(policy, ServerPolicy) else None
