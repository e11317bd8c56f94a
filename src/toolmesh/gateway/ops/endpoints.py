"""Operations (GW-5): ``/healthz``, ``/readyz``, ``/metrics``, per-request metrics and spans.

Logging and tracing are set up by :mod:`toolmesh.gateway.run` before uvicorn starts (see
:mod:`toolmesh.gateway.ops.logs` and :mod:`toolmesh.gateway.ops.tracing`).
"""

from __future__ import annotations

import os
import time
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from toolmesh.gateway.ops.metrics import LEDGER_FAMILIES, GatewayCollector, RequestStats, UsageTotals
from toolmesh.gateway.ops.tracing import current_tracer
from toolmesh.gateway.ops.workers import WORKERS_DIR_ENV, WorkerPeers
from toolmesh.gateway.state import Gateway
from toolmesh.gateway.web import send_bytes, send_error, send_json
from toolmesh.net.asgi import Receive, Scope, Send
from toolmesh.observability.prometheus import ToolmeshCollector

__all__ = ["Ops"]

_PROM_TYPE = CONTENT_TYPE_LATEST.encode()
#: The open span of the request being served (tracing only).
CURRENT_SPAN: ContextVar[Any] = ContextVar("toolmesh_gateway_span", default=None)


class Ops:
    """Health, readiness and metrics of one gateway worker."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.requests = RequestStats()
        self.usage = UsageTotals()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(GatewayCollector(gw, self.requests, self.usage))
        # The Hub's per tool / per server call counters and latency summaries.
        self.registry.register(ToolmeshCollector(lambda: (gw.hub.tool_metrics,)))
        #: With ``--workers N``: the sibling workers whose families a scrape merges (see ops.workers).
        self.peers: WorkerPeers | None = None
        workers_dir = os.environ.get(WORKERS_DIR_ENV)
        if workers_dir:
            self.peers = WorkerPeers(Path(workers_dir), self.registry,
                                     local_only=(f"toolmesh_{name}" for name in LEDGER_FAMILIES))
        self._tracer: Any = current_tracer()
        #: True when spans are recorded (the app and the MCP dispatcher check it first).
        self.tracing = self._tracer is not None
        self._span_kind: Any = None
        self._error: Any = None
        if self._tracer is not None:
            from opentelemetry import trace
            from opentelemetry.trace import SpanKind, Status, StatusCode
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

            self._span_kind = SpanKind.SERVER
            self._client_kind = SpanKind.CLIENT
            self._error = Status(StatusCode.ERROR)
            self._propagator = TraceContextTextMapPropagator()
            self._in_context = trace.set_span_in_context
            gw.tool_spans = self
        else:
            # No tracing: the app's per-request call goes straight to the counters (one call less).
            self.observe = self.requests.observe  # type: ignore[method-assign]

    # -- hot path ------------------------------------------------------------------------
    def observe(self, route: str, status: int, seconds: float, tenant: str) -> None:
        """Count one finished HTTP request (called by the app for every authenticated request)."""
        self.requests.observe(route, status, seconds, tenant)
        if self._tracer is not None:
            self._span(route, status, seconds, tenant)

    def begin(self, scope: Scope) -> None:
        """Open this request's span (tracing only), joining the caller's trace from its
        ``traceparent`` / ``tracestate`` headers; :meth:`observe` closes it."""
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]
                   if k in (b"traceparent", b"tracestate")}
        parent = self._propagator.extract(carrier) if carrier else None
        CURRENT_SPAN.set(self._tracer.start_span("gateway request", context=parent, kind=self._span_kind))

    def _span(self, route: str, status: int, seconds: float, tenant: str) -> None:
        span = CURRENT_SPAN.get()
        end = time.time_ns()
        if span is None:  # refused at the edge before a span was opened: record it after the fact
            span = self._tracer.start_span(f"gateway {route}", kind=self._span_kind,
                                           start_time=end - int(seconds * 1e9))
        else:
            span.update_name(f"gateway {route}")
            CURRENT_SPAN.set(None)
        span.set_attributes({"http.route": route, "http.response.status_code": status, "toolmesh.tenant": tenant})
        if status >= 500:
            span.set_status(self._error)
        span.end(end_time=end)

    def tool_span(self, server: str, tool: str) -> tuple[Any, bytes]:
        """A child span for one forwarded tool call and the ``traceparent`` header line that
        carries it upstream (so an instrumented MCP server joins the same trace)."""
        parent = CURRENT_SPAN.get()
        span = self._tracer.start_span(
            f"tools/call {server}/{tool}", kind=self._client_kind,
            context=self._in_context(parent) if parent is not None else None,
            attributes={"mcp.server": server, "mcp.tool": tool},
        )
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=self._in_context(span))
        lines = "".join(f"{k}: {v}\r\n" for k, v in carrier.items())
        return span, lines.encode("latin-1")

    def end_tool_span(self, span: Any, status: str) -> None:
        span.set_attribute("mcp.status", status)
        if status not in ("ok", "tool_error"):
            span.set_status(self._error)
        span.end()

    # -- endpoints -----------------------------------------------------------------------
    async def health(self, scope: Scope, receive: Receive, send: Send, *, ready: bool) -> None:
        """``/healthz``: 200 while the process serves. ``/readyz``: 200 once every configured
        upstream was tried and the worker is not draining, else 503 (the body says why)."""
        if scope["method"] not in ("GET", "HEAD"):
            await send_error(send, 405, "use GET", headers=[(b"allow", b"GET, HEAD")])
            return
        gw = self.gw
        if not ready:
            await send_json(send, 200, {"status": "ok", "worker": os.getpid(),
                                        "uptime_s": round(time.time() - gw.started_at, 3)})
            return
        ok = gw.ready and not gw.draining
        status = "ready" if ok else "draining" if gw.draining else "starting"
        body = {"status": status, "worker": os.getpid(), "upstreams_tried": gw.upstreams_tried,
                "upstreams_configured": sum(1 for servers in gw.config.tenants.values()
                                            for cfg in servers.values() if cfg.enabled)}
        await send_json(send, 200 if ok else 503, body)

    async def metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``/metrics`` in the Prometheus text format."""
        if scope["method"] not in ("GET", "HEAD"):
            await send_error(send, 405, "use GET", headers=[(b"allow", b"GET, HEAD")])
            return
        await self.usage.refresh(self.gw.store)
        body = self.render() if self.peers is None else await self.peers.render()
        await send_bytes(send, 200, body, _PROM_TYPE)

    async def start(self) -> None:
        """Begin answering the sibling workers' scrapes (``--workers N`` only)."""
        if self.peers is not None:
            await self.peers.start()

    async def aclose(self) -> None:
        if self.peers is not None:
            await self.peers.aclose()

    def render(self) -> bytes:
        """The current exposition text."""
        return generate_latest(self.registry)
