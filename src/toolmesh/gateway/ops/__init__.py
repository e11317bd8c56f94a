"""Operations (GW-5): health and readiness, Prometheus metrics, JSON logs, OpenTelemetry traces.

:mod:`~toolmesh.gateway.ops.endpoints` answers ``/healthz``, ``/readyz`` and ``/metrics`` and
records every request; :mod:`~toolmesh.gateway.ops.metrics` holds the metric families,
:mod:`~toolmesh.gateway.ops.logs` the log formats, :mod:`~toolmesh.gateway.ops.tracing` the tracer.
"""

from toolmesh.gateway.ops.endpoints import Ops
from toolmesh.gateway.ops.logs import JsonFormatter, configure_logging
from toolmesh.gateway.ops.tracing import configure_tracing, shutdown_tracing

__all__ = ["JsonFormatter", "Ops", "configure_logging", "configure_tracing", "shutdown_tracing"]
