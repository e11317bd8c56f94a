"""OpenTelemetry traces for ``toolmesh serve`` (GW-5), only when ``gateway.otel.endpoint`` is set.

The SDK and the OTLP/HTTP exporter (extra ``toolmesh[otel]``) are imported here lazily:
a gateway without an endpoint never loads them and pays nothing per request. Spans are
exported in batches by the SDK's background thread, so a slow or absent collector never
delays a response.
"""

from __future__ import annotations

import logging
from typing import Any

from toolmesh.gateway.config import OtelSettings

__all__ = ["configure_tracing", "current_tracer", "shutdown_tracing"]

log = logging.getLogger("toolmesh.gateway")

_state: dict[str, Any] = {"tracer": None, "provider": None}


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of a collector base URL (``…/v1/traces`` is appended unless given)."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"


def configure_tracing(settings: OtelSettings, *, schedule_delay_ms: int = 1000) -> bool:
    """Install a tracer exporting to ``settings.endpoint``; True if tracing is on.

    Without an endpoint: nothing happens. Without the packages: one warning, no tracing
    (a missing optional extra must not stop the gateway).
    """
    shutdown_tracing()
    if not settings.endpoint:
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        log.warning("gateway.otel.endpoint is set but OpenTelemetry is not installed (pip install "
                    "'toolmesh[otel]'): tracing is off (%s)", exc)
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    exporter = OTLPSpanExporter(endpoint=traces_url(settings.endpoint), timeout=5)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=schedule_delay_ms))
    # A private provider (not the global one): toolmesh's spans never mix with an embedding app's set-up.
    _state["provider"] = provider
    _state["tracer"] = provider.get_tracer("toolmesh.gateway")
    log.info("OpenTelemetry traces go to %s", traces_url(settings.endpoint))
    return True


def current_tracer() -> Any | None:
    """The gateway's tracer, or None when tracing is off."""
    return _state["tracer"]


def shutdown_tracing() -> None:
    """Export what is pending and stop the exporter (also runs at interpreter exit via the SDK)."""
    provider = _state["provider"]
    _state["tracer"] = _state["provider"] = None
    if provider is not None:
        try:
            provider.shutdown()
        except Exception:  # an unreachable collector at shutdown is not worth a traceback
            log.debug("tracer shutdown failed", exc_info=True)
