"""The gateway's ASGI app: edge checks (Host, Origin, auth, scopes, rate limits), then routing.

Routes::

    GET  /healthz, /readyz                          no auth
    GET  /metrics                                   admin scope (or public with gateway.metrics_public)
    *    /mcp, /sse, /messages/, /ws                mcp scope: every server of the caller's tenant
    *    /servers/{name}/mcp|sse|messages/|ws       mcp scope: a virtual server or one upstream
    *    /v1/...                                    chat scope: OpenAI-compatible API
    *    /admin/...                                 admin scope
    GET  /ui/...                                    the dashboard's static files (its data: /admin/, admin key)
    GET  /openapi.json                              no auth: the OpenAPI 3.1 document of /v1 and /admin
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

from toolmesh.errors import StateUnavailableError
from toolmesh.gateway.admin import AdminApi
from toolmesh.gateway.config import GatewaySettings
from toolmesh.gateway.mcp import McpRoutes
from toolmesh.gateway.openai import OpenAIApi
from toolmesh.gateway.ops import Ops
from toolmesh.gateway.ops.openapi import document_bytes
from toolmesh.gateway.state import DEFERRED_LIMITS_KEY, Gateway
from toolmesh.gateway.ui import Dashboard
from toolmesh.gateway.web import PRINCIPAL_KEY, send_bytes, send_error
from toolmesh.hub.configfile import ToolmeshConfig
from toolmesh.net.asgi import Message, Receive, Scope, Send
from toolmesh.servers.guard import is_loopback

log = logging.getLogger("toolmesh.gateway")

_MCP_TAILS = ("mcp", "sse", "messages", "ws")
#: The scope the edge demands, by the path's first segment (anything unlisted: ``mcp``);
#: /healthz, /readyz and /ui/ need no key. tests/test_security_routes.py walks this table.
ROUTE_SCOPES: dict[str, str] = {
    **dict.fromkeys(_MCP_TAILS, "mcp"), "servers": "mcp", "v1": "chat", "admin": "admin", "metrics": "admin",
}


@dataclass(slots=True)
class SubApps:
    """The sub-apps of a started gateway, built together in the lifespan."""

    ops: Ops
    mcp: McpRoutes
    openai: OpenAIApi
    admin: AdminApi
    ui: Dashboard


class GatewayApp:
    """ASGI entry point of ``toolmesh serve``; builds the :class:`Gateway` in the lifespan."""

    def __init__(
        self,
        config: ToolmeshConfig,
        settings: GatewaySettings | None = None,
        *,
        store_path: str | None = None,
    ) -> None:
        self.config = config
        self.settings = settings or GatewaySettings.from_section(config.section("gateway"), config.source)
        self.store_path = store_path
        self.gw: Gateway | None = None
        self.apps: SubApps | None = None
        #: GET /openapi.json, built at start-up from the live route tables (ops/openapi.py).
        self.openapi = b"{}"
        self._hosts = _allowed_hosts(self.settings)
        self._host_verdicts: dict[str, bool] = {}  # Host header → allowed? (clients send a handful)
        self._origins = frozenset(o.rstrip("/").lower() for o in self.settings.allowed_origins)

    # -- lifespan ------------------------------------------------------------------------
    async def startup(self) -> Gateway:
        """Build the gateway and its sub-apps (also usable without an ASGI server, in tests)."""
        gw = await Gateway.create(self.config, self.settings, store_path=self.store_path)
        self.gw = gw
        ops, admin = Ops(gw), AdminApi(gw)
        ui = Dashboard(gw, ops.requests)
        admin.add_routes(ui.routes())
        self.apps = SubApps(ops=ops, mcp=McpRoutes(gw), openai=OpenAIApi(gw), admin=admin, ui=ui)
        self.openapi = document_bytes([*self.apps.openai.route_table(), *admin.route_table()])
        ui.start()
        await gw.start()
        await ops.start()
        return gw

    async def shutdown(self) -> None:
        if self.gw is not None:
            await self.gw.aclose()
            if self.apps is not None:
                await self.apps.ops.aclose()
                await self.apps.mcp.aclose()
                await self.apps.ui.aclose()
            self.gw = None

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("gateway start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                with contextlib.suppress(Exception):
                    await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- requests ------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        gw, apps = self.gw, self.apps
        path: str = scope["path"]
        if gw is None or apps is None:
            await _refuse(scope, receive, send, 503, "gateway is not started")
            return
        if kind == "http" and path in ("/healthz", "/readyz"):
            await apps.ops.health(scope, receive, send, ready=path == "/readyz")
            return
        headers = scope["headers"]
        host = origin = token = None
        for k, v in headers:
            if k == b"host":
                host = v.decode("latin-1")
            elif k == b"origin":
                origin = v.decode("latin-1")
            elif k == b"authorization":
                token = v.decode("latin-1")
        if self._hosts is not None and (host is None or not self._host_allowed(host, self._hosts)):
            await self._deny(scope, receive, send, 421 if kind == "http" else 403, f"Host {host!r} is not allowed")
            return
        if origin is not None and not self._origin_ok(origin):
            await self._deny(scope, receive, send, 403, f"Origin {origin!r} is not allowed")
            return
        if gw.draining:
            await self._deny(scope, receive, send, 503, "gateway is shutting down", [(b"retry-after", b"1")])
            return
        parts = path.strip("/").split("/")
        head = parts[0]
        if head == "ui":  # the dashboard's static files hold no data: its pages send an admin key for data
            await apps.ui(scope, receive, send)
            return
        if path == "/" and kind == "http" and scope["method"] in ("GET", "HEAD"):
            await _to_dashboard(send)  # a browser opening the gateway's address lands on the dashboard
            return
        if path == "/openapi.json" and kind == "http":  # describes the API, holds no data: no key
            await _openapi(self.openapi, scope, send)
            return
        if head == "metrics" and self.settings.metrics_public and kind == "http":
            await apps.ops.metrics(scope, receive, send)
            return
        if token is not None and token[:7].lower() == "bearer ":
            token = token[7:].strip()
        else:
            token = None
        try:
            principal = await gw.principal(token)
        except StateUnavailableError:  # a key not cached here while the store's database is down
            await self._deny(scope, receive, send, 503, "the key store is unreachable; retry shortly",
                             [(b"retry-after", b"1")])
            return
        if principal is None:
            await self._deny(scope, receive, send, 401, "missing or invalid API key (Authorization: Bearer KEY)",
                          [(b"www-authenticate", b'Bearer realm="toolmesh"')], kind="authentication_error")
            return
        needed = ROUTE_SCOPES.get(head, "mcp")
        if not principal.allows(needed):
            await self._deny(scope, receive, send, 403, f"this key lacks the {needed!r} scope",
                          kind="permission_error")
            return
        shared = gw.shared_limits
        if shared is None:
            wait = gw.limits.check(principal)
        elif head == "v1" and kind == "http" and scope["method"] == "POST" and gw.defers_chat_limits() \
                and path.rstrip("/") == "/v1/chat/completions":
            scope[DEFERRED_LIMITS_KEY] = True  # decided with the user's limits, in one round trip
            wait = 0.0
        else:
            wait = await shared.check(principal)
        if wait:
            retry = str(max(1, round(wait + 0.499))).encode()
            await self._deny(scope, receive, send, 429, "rate limit exceeded for this tenant or key",
                          [(b"retry-after", retry)], kind="rate_limit_error")
            return
        scope[PRINCIPAL_KEY] = principal
        if apps.ops.tracing:
            apps.ops.begin(scope)
        gw.enter()
        started = time.perf_counter()
        status = [0]

        async def tracked_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        route = "other"
        try:
            route = await _route(apps, head, parts, scope, receive, tracked_send)
        finally:
            gw.leave()
            if kind == "http":
                apps.ops.observe(route, status[0] or 499, time.perf_counter() - started, principal.tenant)

    async def _deny(
        self, scope: Scope, receive: Receive, send: Send, status: int, message: str,
        headers: list[tuple[bytes, bytes]] | None = None, *, kind: str = "invalid_request_error",
    ) -> None:
        """Refuse at the edge, and count it (refusals are traffic too)."""
        await _refuse(scope, receive, send, status, message, headers, kind=kind)
        if scope["type"] == "http" and self.apps is not None:
            self.apps.ops.observe("refused", status, 0.0, "-")

    def _host_allowed(self, host: str, allowed: frozenset[str]) -> bool:
        """:func:`_host_ok`, remembered per Host value (bounded: the values come from clients)."""
        verdict = self._host_verdicts.get(host)
        if verdict is None:
            if len(self._host_verdicts) >= 256:
                self._host_verdicts.clear()
            verdict = self._host_verdicts[host] = _host_ok(host, allowed)
        return verdict

    def _origin_ok(self, origin: str) -> bool:
        norm = origin.rstrip("/").lower()
        if norm in self._origins:
            return True
        host = norm.split("://", 1)[-1].split("/", 1)[0]
        host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return is_loopback(host.strip("[]")) or host in ("localhost",)


async def _to_dashboard(send: Send) -> None:
    """307 to ``/ui/`` (relative, so it holds behind a proxy's path prefix too)."""
    await send({"type": "http.response.start", "status": 307,
                "headers": [(b"location", b"ui/"), (b"content-type", b"text/plain; charset=utf-8")]})
    await send({"type": "http.response.body",
                "body": b"The dashboard is at /ui/. APIs: /v1 (OpenAI), /mcp (MCP), /admin, /metrics.\n"})


async def _route(apps: SubApps, head: str, parts: list[str], scope: Scope, receive: Receive, send: Send) -> str:
    """Dispatch to a sub-app; returns the route label for metrics."""
    if head in _MCP_TAILS and len(parts) == 1:
        await apps.mcp(None, head, scope, receive, send)
        return "mcp"
    if head == "servers" and len(parts) == 3 and parts[2] in _MCP_TAILS:
        await apps.mcp(parts[1], parts[2], scope, receive, send)
        return "mcp_server"
    if head == "v1":
        await apps.openai(scope, receive, send)
        return "openai"
    if head == "admin":
        await apps.admin(scope, receive, send)
        return "admin"
    if head == "metrics" and scope["type"] == "http":
        await apps.ops.metrics(scope, receive, send)
        return "metrics"
    await _refuse(scope, receive, send, 404, f"no route {scope['path']!r}", kind="not_found_error")
    return "not_found"


async def _openapi(document: bytes, scope: Scope, send: Send) -> None:
    if scope["method"] not in ("GET", "HEAD"):
        await send_error(send, 405, "use GET for /openapi.json", headers=[(b"allow", b"GET, HEAD")])
        return
    await send_bytes(send, 200, b"" if scope["method"] == "HEAD" else document)


def _allowed_hosts(settings: GatewaySettings) -> frozenset[str] | None:
    """Host names accepted in the Host header; ``None`` = no check (public bind, none configured)."""
    if settings.allowed_hosts:
        return frozenset(h.lower() for h in settings.allowed_hosts)
    if is_loopback(settings.host):
        return frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})
    return None


def _host_ok(host: str, allowed: frozenset[str]) -> bool:
    host = host.lower()
    if host in allowed:
        return True
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    return name in allowed or (name.startswith("127.") and "127.0.0.1" in allowed)


async def _refuse(
    scope: Scope, receive: Receive, send: Send, status: int, message: str,
    headers: list[tuple[bytes, bytes]] | None = None, *, kind: str = "invalid_request_error",
) -> None:
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": 1008 if status in (401, 403) else 1013, "reason": message})
        return
    await send_error(send, status, message, kind, headers)
