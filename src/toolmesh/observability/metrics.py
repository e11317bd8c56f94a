"""Per tool and per server call metrics, cache and session stats (HUB-9).

Hot path: get a :class:`ToolStats` handle once per (server, tool) with
:meth:`ToolMetrics.tool` and keep it; ``handle.record(...)`` then updates the tool and its
server aggregate with no dictionary lookup and no allocation. ``ToolMetrics.record_call`` is
the convenient, two-lookup form.

Counters: ``calls = successes + failures``; ``timeouts`` is the subset of failures that timed
out. Whether a tool's own ``isError`` result is a failure is the caller's decision (the Hub
counts it as a success of the transport and reports it separately if it wants).
Prometheus rendering lives in :mod:`toolmesh.observability.prometheus`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from toolmesh.observability.stats import LatencyStats

__all__ = ["ServerStats", "ToolMetrics", "ToolStats"]


class _Counts:
    __slots__ = ("calls", "failures", "latency", "successes", "timeouts")

    def __init__(self, latency_window: int) -> None:
        self.calls = 0
        self.successes = 0
        self.failures = 0
        self.timeouts = 0
        self.latency = LatencyStats(latency_window)

    def _counts(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "successes": self.successes,
            "failures": self.failures,
            "timeouts": self.timeouts,
            "error_rate": self.failures / self.calls if self.calls else 0.0,
            "latency": self.latency.snapshot(),
        }


class ServerStats(_Counts):
    """Aggregates of one server: calls over all its tools, cache and session counters."""

    __slots__ = ("cache_hits", "cache_misses", "coalesced", "connects", "name", "reconnects", "result_hits",
                 "result_misses", "sessions_lost", "tools")

    def __init__(self, name: str, latency_window: int) -> None:
        super().__init__(latency_window)
        self.name = name
        self.tools: dict[str, ToolStats] = {}
        self.cache_hits = 0
        self.cache_misses = 0
        #: Tool-result cache lookups that found a fresh result / did not.
        self.result_hits = 0
        self.result_misses = 0
        #: Calls that joined an identical call in flight instead of going upstream.
        self.coalesced = 0
        self.connects = 0
        self.reconnects = 0
        self.sessions_lost = 0

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable view including every tool."""
        data = self._counts()
        lookups = self.cache_hits + self.cache_misses
        data["cache"] = {
            "hits": self.cache_hits,
            "misses": self.cache_misses,
            "hit_rate": self.cache_hits / lookups if lookups else 0.0,
        }
        found = self.result_hits + self.result_misses
        data["results"] = {
            "hits": self.result_hits,
            "misses": self.result_misses,
            "hit_rate": self.result_hits / found if found else 0.0,
            "coalesced": self.coalesced,
        }
        data["sessions"] = {
            "connects": self.connects,
            "reconnects": self.reconnects,
            "lost": self.sessions_lost,
        }
        data["tools"] = {name: t.snapshot() for name, t in self.tools.items()}
        return data


class ToolStats(_Counts):
    """Counters and latency of one (server, tool); :meth:`record` also feeds the server."""

    __slots__ = ("name", "server")

    def __init__(self, server: ServerStats, name: str, latency_window: int) -> None:
        super().__init__(latency_window)
        self.server = server
        self.name = name

    def record(self, ok: bool, latency_ms: float, *, timeout: bool = False) -> None:
        """Record one finished call (a timeout is a failure)."""
        srv = self.server
        self.calls += 1
        srv.calls += 1
        if ok and not timeout:
            self.successes += 1
            srv.successes += 1
        else:
            self.failures += 1
            srv.failures += 1
            if timeout:
                self.timeouts += 1
                srv.timeouts += 1
        self.latency.record(latency_ms)
        srv.latency.record(latency_ms)

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable view."""
        return self._counts()


class ToolMetrics:
    """Registry of call metrics per (server, tool) and per server.

    ``labels`` are constant labels (e.g. ``{"tenant": "acme"}``) added to every Prometheus
    series of this registry, so one exporter can serve several registries.
    """

    def __init__(self, *, latency_window: int = 1024, labels: Mapping[str, str] | None = None) -> None:
        """``latency_window``: samples kept per tool and per server for percentiles."""
        self.latency_window = latency_window
        self.labels: dict[str, str] = dict(labels or {})
        self._servers: dict[str, ServerStats] = {}

    def server(self, server: str) -> ServerStats:
        """The aggregate of ``server`` (created on first use)."""
        stats = self._servers.get(server)
        if stats is None:
            stats = self._servers[server] = ServerStats(server, self.latency_window)
        return stats

    def tool(self, server: str, tool: str) -> ToolStats:
        """The handle of (``server``, ``tool``), created on first use; keep it for the hot path."""
        srv = self.server(server)
        stats = srv.tools.get(tool)
        if stats is None:
            stats = srv.tools[tool] = ToolStats(srv, tool, self.latency_window)
        return stats

    def record_call(self, server: str, tool: str, *, ok: bool, latency_ms: float, timeout: bool = False) -> None:
        """Record one finished call of ``tool`` on ``server``."""
        self.tool(server, tool).record(ok, latency_ms, timeout=timeout)

    def record_cache(self, server: str, hit: bool) -> None:
        """Record one catalogue-cache lookup for ``server``."""
        srv = self.server(server)
        if hit:
            srv.cache_hits += 1
        else:
            srv.cache_misses += 1

    def record_shared(self, server: str, event: str) -> None:
        """Record one shared-call event of ``server``: ``"hit"`` / ``"miss"`` (tool-result cache)
        or ``"coalesced"`` (a call joined an identical one in flight)."""
        srv = self.server(server)
        if event == "hit":
            srv.result_hits += 1
        elif event == "miss":
            srv.result_misses += 1
        elif event == "coalesced":
            srv.coalesced += 1
        else:
            raise ValueError(f"unknown shared-call event {event!r}")

    def record_connect(self, server: str) -> None:
        """A first connection (session) to ``server`` was established."""
        self.server(server).connects += 1

    def record_reconnect(self, server: str) -> None:
        """A session to ``server`` was re-established after being lost or closed."""
        self.server(server).reconnects += 1

    def record_session_lost(self, server: str) -> None:
        """A session to ``server`` was lost (404, closed stream, process exit)."""
        self.server(server).sessions_lost += 1

    def remove_server(self, server: str) -> None:
        """Forget ``server`` (on unregister)."""
        self._servers.pop(server, None)

    def servers(self) -> Iterator[ServerStats]:
        """Every server aggregate (a snapshot of the list: safe while recording)."""
        return iter(list(self._servers.values()))

    def snapshot(self) -> dict[str, Any]:
        """``{"labels", "totals", "servers": {server: {..., "tools": {tool: {...}}}}}``; JSON-serialisable."""
        servers = {name: s.snapshot() for name, s in self._servers.items()}
        totals = {"calls": 0, "successes": 0, "failures": 0, "timeouts": 0}
        for s in servers.values():
            for key in totals:
                totals[key] += s[key]
        return {"labels": dict(self.labels), "totals": totals, "servers": servers}
