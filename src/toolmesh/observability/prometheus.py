"""Prometheus exposition of toolmesh metrics (HUB-9, for the gateway's ``/metrics``, GW-5).

:class:`ToolmeshCollector` is a custom ``prometheus_client`` collector: it reads the live
registries at scrape time, so recording stays a few integer additions and nothing is
duplicated into ``prometheus_client`` objects. Latencies are exported in seconds (the
Prometheus base unit) as summaries with 0.5 / 0.95 / 0.99 quantiles over the recent window.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily

from toolmesh.observability.health import HealthStatus, HealthTracker
from toolmesh.observability.metrics import ServerStats, ToolMetrics, ToolStats

if TYPE_CHECKING:
    from toolmesh.resilience.circuit import CircuitBreaker

__all__ = ["ToolmeshCollector", "render_prometheus"]

_QUANTILES = (0.5, 0.95, 0.99)
_QUANTILE_LABELS = ("0.5", "0.95", "0.99")
_CIRCUIT_STATES = ("closed", "open", "half-open")


class _Families:
    """The call-count families for one scope (``tool`` or ``server``)."""

    def __init__(self, prefix: str, scope: str) -> None:
        p = f"{prefix}_{scope}"
        self.calls = CounterMetricFamily(f"{p}_calls", f"Finished tool calls per {scope}.")
        self.successes = CounterMetricFamily(f"{p}_successes", f"Successful tool calls per {scope}.")
        self.failures = CounterMetricFamily(f"{p}_failures", f"Failed tool calls (timeouts included) per {scope}.")
        self.timeouts = CounterMetricFamily(f"{p}_timeouts", f"Tool calls that timed out per {scope}.")
        self.latency = SummaryMetricFamily(
            f"{p}_latency_seconds", f"Tool call latency per {scope} (quantiles over recent calls)."
        )

    def add(self, labels: dict[str, str], stats: ToolStats | ServerStats) -> None:
        self.calls.add_sample(self.calls.name + "_total", labels, stats.calls)
        self.successes.add_sample(self.successes.name + "_total", labels, stats.successes)
        self.failures.add_sample(self.failures.name + "_total", labels, stats.failures)
        self.timeouts.add_sample(self.timeouts.name + "_total", labels, stats.timeouts)
        lat = stats.latency
        name = self.latency.name
        for q, value in zip(_QUANTILE_LABELS, lat.quantiles(*_QUANTILES), strict=True):
            if value is not None:
                self.latency.add_sample(name, {**labels, "quantile": q}, value / 1000.0)
        self.latency.add_sample(name + "_count", labels, lat.count)
        self.latency.add_sample(name + "_sum", labels, lat.sum_ms / 1000.0)

    def families(self) -> Iterator[Metric]:
        yield from (self.calls, self.successes, self.failures, self.timeouts, self.latency)


class ToolmeshCollector:
    """Collector over one or more :class:`ToolMetrics`, and optionally health trackers and
    circuit breakers (given as callables returning the current ones, read at scrape time).

    Register it with a ``prometheus_client.CollectorRegistry`` (or use :func:`render_prometheus`).
    """

    def __init__(
        self,
        metrics: ToolMetrics | Iterable[ToolMetrics] | Callable[[], Iterable[ToolMetrics]],
        *,
        health: Callable[[], Iterable[HealthTracker]] | None = None,
        circuits: Callable[[], Iterable[CircuitBreaker]] | None = None,
        prefix: str = "toolmesh",
    ) -> None:
        """``metrics``: a registry, a fixed collection of them, or a callable returning them."""
        if isinstance(metrics, ToolMetrics):
            fixed: tuple[ToolMetrics, ...] = (metrics,)
            self._metrics: Callable[[], Iterable[ToolMetrics]] = lambda: fixed
        elif callable(metrics):
            self._metrics = metrics
        else:
            fixed_list = tuple(metrics)
            self._metrics = lambda: fixed_list
        self._health = health
        self._circuits = circuits
        self.prefix = prefix

    def describe(self) -> list[Metric]:
        """No up-front description: series appear as servers and tools do."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Build every metric family from the live registries."""
        p = self.prefix
        tool = _Families(p, "tool")
        server = _Families(p, "server")
        hits = CounterMetricFamily(f"{p}_cache_hits", "Tool catalogue cache hits per server.")
        misses = CounterMetricFamily(f"{p}_cache_misses", "Tool catalogue cache misses per server.")
        rhits = CounterMetricFamily(f"{p}_result_cache_hits", "Tool results served from the result cache per server.")
        rmisses = CounterMetricFamily(f"{p}_result_cache_misses", "Result-cache lookups that missed per server.")
        coalesced = CounterMetricFamily(f"{p}_calls_coalesced", "Calls that joined an identical call in flight.")
        connects = CounterMetricFamily(f"{p}_session_connects", "Sessions established per server.")
        reconnects = CounterMetricFamily(f"{p}_session_reconnects", "Sessions re-established per server.")
        lost = CounterMetricFamily(f"{p}_sessions_lost", "Sessions lost per server.")
        for registry in self._metrics():
            base = registry.labels
            for srv in registry.servers():
                slabels = {**base, "server": srv.name}
                server.add(slabels, srv)
                hits.add_sample(hits.name + "_total", slabels, srv.cache_hits)
                misses.add_sample(misses.name + "_total", slabels, srv.cache_misses)
                rhits.add_sample(rhits.name + "_total", slabels, srv.result_hits)
                rmisses.add_sample(rmisses.name + "_total", slabels, srv.result_misses)
                coalesced.add_sample(coalesced.name + "_total", slabels, srv.coalesced)
                connects.add_sample(connects.name + "_total", slabels, srv.connects)
                reconnects.add_sample(reconnects.name + "_total", slabels, srv.reconnects)
                lost.add_sample(lost.name + "_total", slabels, srv.sessions_lost)
                for t in list(srv.tools.values()):
                    tool.add({**slabels, "tool": t.name}, t)
        yield from tool.families()
        yield from server.families()
        yield from (hits, misses, rhits, rmisses, coalesced, connects, reconnects, lost)
        if self._health is not None:
            yield from self._collect_health(self._health())
        if self._circuits is not None:
            yield from self._collect_circuits(self._circuits())

    def _collect_health(self, trackers: Iterable[HealthTracker]) -> Iterator[Metric]:
        p = self.prefix
        status = GaugeMetricFamily(f"{p}_server_health", "1 for the server's current health status.")
        rate = GaugeMetricFamily(f"{p}_server_error_rate", "Error rate over the server's recent requests.")
        for h in trackers:
            for st in HealthStatus:
                status.add_sample(status.name, {"server": h.server, "status": st.value}, 1.0 if h.status is st else 0.0)
            rate.add_sample(rate.name, {"server": h.server}, h.error_rate)
        yield from (status, rate)

    def _collect_circuits(self, breakers: Iterable[CircuitBreaker]) -> Iterator[Metric]:
        p = self.prefix
        state = GaugeMetricFamily(f"{p}_circuit_state", "1 for the circuit breaker's current state.")
        opens = CounterMetricFamily(f"{p}_circuit_opens", "Times the circuit breaker opened.")
        for b in breakers:
            current = b.state.value
            for st in _CIRCUIT_STATES:
                state.add_sample(state.name, {"circuit": b.name, "state": st}, 1.0 if current == st else 0.0)
            opens.add_sample(opens.name + "_total", {"circuit": b.name}, b.opens)
        yield from (state, opens)


def render_prometheus(
    metrics: ToolMetrics | Iterable[ToolMetrics],
    *,
    health: Callable[[], Iterable[HealthTracker]] | None = None,
    circuits: Callable[[], Iterable[CircuitBreaker]] | None = None,
) -> str:
    """The Prometheus text exposition of ``metrics`` (and health / circuits, if given)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ToolmeshCollector(metrics, health=health, circuits=circuits))
    return generate_latest(registry).decode("utf-8")
