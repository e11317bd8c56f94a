"""Observability: latency statistics, server health, call metrics.

Prometheus rendering is in :mod:`toolmesh.observability.prometheus` (imported on demand, so the
hot path does not load ``prometheus_client``).
"""

from toolmesh.observability.health import HealthEvent, HealthStatus, HealthTracker
from toolmesh.observability.metrics import ServerStats, ToolMetrics, ToolStats
from toolmesh.observability.stats import LatencyStats

__all__ = [
    "HealthEvent",
    "HealthStatus",
    "HealthTracker",
    "LatencyStats",
    "ServerStats",
    "ToolMetrics",
    "ToolStats",
]
