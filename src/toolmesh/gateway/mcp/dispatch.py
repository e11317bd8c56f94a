"""The gateway's MCP method handlers: a dispatcher whose methods forward to upstreams via the Hub.

It plugs into toolmesh's server frontends (Streamable HTTP in both eras, legacy SSE,
WebSocket) through the frontend↔dispatcher interface of :mod:`toolmesh.servers.dispatch`,
and reuses that module's envelope checks, cancellation tracking and result decoration.

Forwarding, per direction:

* client → upstream: requests by name/URI routing (:class:`~toolmesh.gateway.mcp.view.View`),
  cancellation (the downstream request's task is cancelled, the Hub tells the upstream);
* upstream → client: progress (re-keyed to the client's ``progressToken``), log messages
  (filtered by the client's level), and in the handshake era the upstream's sampling /
  elicitation / roots requests, asked of the client on the same stream. A 2026-07-28
  upstream's ``input_required`` result passes through to a 2026-07-28 client as it is;
  for a handshake-era client the gateway asks the client itself and retries upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from typing import Any

from mcp.server.caching import CacheHint
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import X_MCP_HEADER_KEY, validate_mcp_param_headers
from mcp_types import CLIENT_CAPABILITIES_META_KEY, LOG_LEVEL_META_KEY, SERVER_INFO_META_KEY

from toolmesh import __version__
from toolmesh.errors import (
    CircuitOpenError,
    ConcurrencyLimitError,
    ConnectionFailedError,
    McpRemoteError,
    ServerNotFoundError,
    ToolmeshError,
    ToolNotFoundError,
    ToolTimeoutError,
    did_you_mean,
)
from toolmesh.gateway.auth import Principal
from toolmesh.gateway.mcp.changes import ChangeFanout
from toolmesh.gateway.mcp.view import View
from toolmesh.gateway.state import Gateway
from toolmesh.hub.transports.http import FORWARDED_HEADERS
from toolmesh.servers.dispatch import Dispatcher
from toolmesh.servers.methods import handshake
from toolmesh.servers.reqcontext import Req, ask_client, can_ask_client
from toolmesh.servers.state import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    LOG_LEVELS,
    RATE_LIMITED,
    REQUEST_TIMEOUT,
    Conn,
    RpcError,
)

log = logging.getLogger("toolmesh.gateway.mcp.endpoints")

#: The authenticated caller of the request being served (set by :class:`McpRoutes`).
CURRENT_PRINCIPAL: ContextVar[Principal] = ContextVar("toolmesh_gateway_principal")
#: The raw HTTP headers of that request (for servers with ``forward_headers``).
CURRENT_HEADERS: ContextVar[Any] = ContextVar("toolmesh_gateway_headers", default=())
#: JSON-RPC code for "the upstream server is unavailable" (implementation-defined range).
UPSTREAM_UNAVAILABLE = -32003
#: How many sampling/elicitation rounds the gateway runs for a handshake-era client.
_MAX_INPUT_ROUNDS = 8
_LIST_TTL_MS = 5_000
_ENVELOPE_PREFIX = "io.modelcontextprotocol/"
_CAPABILITIES: dict[str, Any] = {
    "tools": {"listChanged": True},
    "prompts": {"listChanged": True},
    "resources": {"listChanged": True, "subscribe": True},
    "completions": {},
}


def rpc_error_for(exc: BaseException) -> RpcError:
    """The JSON-RPC error a downstream client gets for a Hub failure."""
    if isinstance(exc, McpRemoteError):
        return RpcError(exc.code, exc.message, exc.data)
    if isinstance(exc, ToolNotFoundError | ServerNotFoundError):
        return RpcError(INVALID_PARAMS, str(exc))
    if isinstance(exc, ToolTimeoutError):
        return RpcError(REQUEST_TIMEOUT, str(exc))
    if isinstance(exc, CircuitOpenError):
        retry = getattr(exc, "retry_after", None)
        return RpcError(UPSTREAM_UNAVAILABLE, str(exc), {"retryAfter": retry} if retry else None)
    if isinstance(exc, ConcurrencyLimitError):
        return RpcError(RATE_LIMITED, str(exc), {"retryAfter": 1})
    if isinstance(exc, ConnectionFailedError):
        return RpcError(UPSTREAM_UNAVAILABLE, str(exc))
    if isinstance(exc, ToolmeshError):
        return RpcError(INTERNAL_ERROR, str(exc))
    return RpcError(INTERNAL_ERROR, "Internal error")


class GatewayDispatcher(Dispatcher):
    """Serves one :class:`View` of one tenant."""

    pushes = True  # upstream changes reach handshake-era clients outside requests

    def __init__(self, gw: Gateway, view: View) -> None:
        # Dispatcher.__init__ binds an SDK MCPServer; the gateway has none, so set up what
        # Dispatcher.handle uses directly.
        self.gw = gw
        self.view = view
        self.policy = None
        self.lifespan_state = {}
        self.server_info = {"name": f"toolmesh-gateway/{view.name}" if view.name else "toolmesh-gateway",
                            "version": __version__}
        # 2026-07-28 has no resources/subscribe; its subscriptions/listen carries list changes.
        self.modern_caps = {**_CAPABILITIES, "resources": {"listChanged": True}}
        self.changes = ChangeFanout(view.tenant, view.servers)
        self.changes.attach(gw.hub)
        self.legacy_caps = {**_CAPABILITIES, "logging": {}}
        self._param_schemas: dict[int, tuple[Any, bool]] = {}
        self.instructions: str | None = None if view.servers else (
            f"Tenant {view.tenant!r} has no MCP servers registered yet, so this endpoint offers no tools, "
            "resources or prompts. Register one with POST /admin/servers or under `servers:` in the gateway's "
            "config file; connected clients are told when the lists change."
        )
        common: dict[str, Callable[[Req], Any]] = {
            "tools/list": self.tools_list,
            "tools/call": self.tools_call,
            "resources/list": self.resources_list,
            "resources/templates/list": self.templates_list,
            "resources/read": self.resources_read,
            "prompts/list": self.prompts_list,
            "prompts/get": self.prompts_get,
            "completion/complete": self.complete,
        }
        self.modern_methods = {**common, "server/discover": self.discover, "subscriptions/listen": self.listen}
        # resources/subscribe exists only in the handshake era (2026-07-28 has subscriptions/listen).
        self.legacy_methods = {**common, "initialize": self.initialize, "ping": self.ping,
                               "logging/setLevel": self.set_level, "resources/subscribe": self.subscribe,
                               "resources/unsubscribe": self.subscribe}
        hint = CacheHint(ttl_ms=_LIST_TTL_MS, scope="private")
        self._hints = {m: hint for m in ("tools/list", "prompts/list", "resources/list", "resources/templates/list",
                                         "server/discover")}

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[Any]:
        yield {}

    # -- lifecycle -----------------------------------------------------------------------
    def channel_opened(self, conn: Conn) -> None:
        self.changes.opened(conn)

    def channel_closed(self, conn: Conn) -> None:
        self.changes.closed(conn)

    def close(self) -> None:
        """The endpoint is being replaced or the gateway stops: stop change delivery."""
        self.changes.close()

    async def listen(self, req: Req) -> dict[str, Any]:
        if req.notify is None:
            raise RpcError(INVALID_REQUEST,
                           "subscriptions/listen needs a streaming response (Accept: text/event-stream)")
        return await self.changes.listen(req, self._route_uri_quietly)

    async def _route_uri_quietly(self, uri: str) -> tuple[str, str] | None:
        try:
            return await self.view.route_uri(uri)
        except Exception:
            return None

    async def initialize(self, req: Req) -> dict[str, Any]:
        return handshake(req, self.legacy_caps, self.server_info, self.instructions)

    async def discover(self, req: Req) -> dict[str, Any]:
        result: dict[str, Any] = {"supportedVersions": ["2026-07-28"], "capabilities": self.modern_caps}
        if self.instructions:
            result["instructions"] = self.instructions
        return result

    # -- tools / prompts -----------------------------------------------------------------
    async def tools_list(self, req: Req) -> dict[str, Any]:
        return {"tools": await self._listed("tools")}

    async def prompts_list(self, req: Req) -> dict[str, Any]:
        return {"prompts": await self._listed("prompts")}

    async def _listed(self, kind: str) -> list[dict[str, Any]]:
        try:
            return await self.view.served(kind)
        except Exception as exc:
            raise rpc_error_for(exc) from None

    async def tools_call(self, req: Req) -> dict[str, Any]:
        params = req.params
        name = params.get("name")
        if type(name) is not str:
            raise RpcError(INVALID_PARAMS, "tools/call: 'name' must be a string")
        arguments = params.get("arguments")
        if arguments is not None and type(arguments) is not dict:
            raise RpcError(INVALID_PARAMS, "tools/call: 'arguments' must be an object")
        try:
            route = await self.view.route("tools", name)
        except Exception as exc:
            raise rpc_error_for(exc) from None
        if route is None:
            hint = await self._near("tools", name)
            raise RpcError(INVALID_PARAMS, f"Unknown tool: {name}{hint}", {"tool": name})
        server, tool = route
        if req.headers is not None:
            handle = self.gw.hub.server(server, tenant=CURRENT_PRINCIPAL.get().tenant)
            definition = handle.catalog.tool(tool)
            if definition is None:
                try:
                    definition = await handle.tool_definition(tool)
                except Exception:
                    definition = None  # unknown upstream tool: the upstream answers that itself
            if definition is not None and self._mirrors_params(definition):
                rejected = validate_mcp_param_headers(definition.get("inputSchema"), arguments or {}, req.headers)
                if rejected is not None:
                    raise RpcError(rejected.code, rejected.message, rejected.data)
        forwarded = params.copy()
        forwarded.pop("_meta", None)
        forwarded["name"] = tool
        principal = CURRENT_PRINCIPAL.get()
        spans = self.gw.tool_spans
        span, trace_line = spans.tool_span(server, tool) if spans is not None else (None, b"")
        started = time.perf_counter()
        status = "error"
        error: str | None = None
        try:
            result = await self._forward(req, server, "tools/call", forwarded, trace_line)
            status = "tool_error" if result.get("isError") else "ok"
            return result
        except RpcError as exc:
            status = "timeout" if exc.code == REQUEST_TIMEOUT else "error"
            error = exc.message[:500]  # the audit log (and the dashboard) name what went wrong
            raise
        except asyncio.CancelledError:
            status = "cancelled"  # the client cancelled or went away; the upstream call was cancelled too
            raise
        finally:
            self.gw.audit(principal, server, tool, arguments or {}, status,
                          (time.perf_counter() - started) * 1000.0, request_id=str(req.id), error=error)
            if span is not None and spans is not None:
                spans.end_tool_span(span, status)

    async def _near(self, kind: str, name: str) -> str:
        """`` (did you mean 'x'?)`` for a served name close to an unknown ``name`` (error path only)."""
        try:
            served = await self.view.served(kind)
        except Exception:
            return ""
        return did_you_mean(name, (str(item.get("name")) for item in served if isinstance(item, dict)))

    def _mirrors_params(self, definition: dict[str, Any]) -> bool:
        """SEP-2243: does the tool mirror arguments into ``Mcp-Param-*`` headers (which must then
        match the body)? Decided once per definition object: most tools do not, and cost no check."""
        cached = self._param_schemas.get(id(definition))
        if cached is None or cached[0] is not definition:
            cached = (definition, X_MCP_HEADER_KEY in str(definition.get("inputSchema")))
            self._param_schemas[id(definition)] = cached
        return cached[1]

    async def prompts_get(self, req: Req) -> dict[str, Any]:
        name = req.params.get("name")
        if type(name) is not str:
            raise RpcError(INVALID_PARAMS, "prompts/get: 'name' must be a string")
        route = await self._route_name("prompts", name)
        if route is None:
            hint = await self._near("prompts", name)
            raise RpcError(INVALID_PARAMS, f"Unknown prompt: {name}{hint}", {"prompt": name})
        forwarded = {k: v for k, v in req.params.items() if k != "_meta"}
        forwarded["name"] = route[1]
        return await self._forward(req, route[0], "prompts/get", forwarded)

    async def _route_name(self, kind: str, name: str) -> tuple[str, str] | None:
        try:
            return await self.view.route(kind, name)
        except Exception as exc:
            raise rpc_error_for(exc) from None

    # -- resources -----------------------------------------------------------------------
    async def resources_list(self, req: Req) -> dict[str, Any]:
        try:
            return {"resources": await self.view.resources()}
        except Exception as exc:
            raise rpc_error_for(exc) from None

    async def templates_list(self, req: Req) -> dict[str, Any]:
        try:
            return {"resourceTemplates": await self.view.resource_templates()}
        except Exception as exc:
            raise rpc_error_for(exc) from None

    async def _uri_route(self, req: Req) -> tuple[str, str, str]:
        """(requested URI, server, upstream URI) of a request's ``uri`` param, or the right error."""
        uri = req.params.get("uri")
        if type(uri) is not str:
            raise RpcError(INVALID_PARAMS, f"{req.method}: 'uri' must be a string")
        try:
            route = await self.view.route_uri(uri)
        except Exception as exc:
            raise rpc_error_for(exc) from None
        if route is None:
            raise RpcError(INVALID_PARAMS, f"Resource not found: {uri}", {"uri": uri})
        return uri, route[0], route[1]

    async def resources_read(self, req: Req) -> dict[str, Any]:
        uri, server, upstream_uri = await self._uri_route(req)
        route = (server, upstream_uri)
        forwarded = {k: v for k, v in req.params.items() if k != "_meta"}
        forwarded["uri"] = route[1]
        result = await self._forward(req, route[0], "resources/read", forwarded)
        if route[1] != uri:  # served under a prefixed URI: answer with the URI the client asked for
            for item in result.get("contents") or ():
                if isinstance(item, dict) and item.get("uri") == route[1]:
                    item["uri"] = uri
        return result

    async def subscribe(self, req: Req) -> dict[str, Any]:
        """Forward resources/(un)subscribe to the upstream that owns the URI.

        The upstream's ``notifications/resources/updated`` then reach the client on its
        outbound channel (WebSocket, SSE stream or GET stream), under the URI it subscribed to."""
        uri, server, upstream_uri = await self._uri_route(req)
        result = await self._forward(req, server, req.method, {"uri": upstream_uri})
        if req.conn is not None:
            self.changes.subscribe(req.conn, server, upstream_uri, uri, req.method == "resources/subscribe")
        return result

    # -- completion ----------------------------------------------------------------------
    async def complete(self, req: Req) -> dict[str, Any]:
        ref = req.params.get("ref")
        if type(ref) is not dict:
            raise RpcError(INVALID_PARAMS, "completion/complete: 'ref' must be an object")
        forwarded = {k: v for k, v in req.params.items() if k != "_meta"}
        if ref.get("type") == "ref/prompt" and type(ref.get("name")) is str:
            route = await self._route_name("prompts", ref["name"])
            if route is None:
                raise RpcError(INVALID_PARAMS, f"Unknown prompt: {ref['name']}")
            forwarded["ref"] = {**ref, "name": route[1]}
        elif ref.get("type") == "ref/resource" and type(ref.get("uri")) is str:
            found = None
            if self.view.single is not None:
                found = (self.view.single, ref["uri"])
            else:
                await self.view.resource_templates()
                for pattern, owner in self.view.templates:
                    if pattern.fullmatch(ref["uri"]) or ref["uri"] in pattern.pattern:
                        found = (owner, ref["uri"])
                        break
            if found is None:
                raise RpcError(INVALID_PARAMS, f"Unknown resource template: {ref['uri']}")
            route = found
        else:
            raise RpcError(INVALID_PARAMS, "completion/complete: unsupported ref")
        return await self._forward(req, route[0], "completion/complete", forwarded)

    # -- the forwarding core -------------------------------------------------------------
    async def _forward(self, req: Req, server: str, method: str, params: dict[str, Any],
                       trace_line: bytes = b"") -> dict[str, Any]:
        meta = req.meta
        token = meta.get("progressToken") if meta is not None else None
        on_progress = None
        notify = req.notify
        if notify is not None and type(token) in (str, int):
            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                p: dict[str, Any] = {"progressToken": token, "progress": progress}
                if total is not None:
                    p["total"] = total
                if message is not None:
                    p["message"] = message
                await notify({"jsonrpc": "2.0", "method": "notifications/progress", "params": p})

        on_log = self._log_forwarder(req) if notify is not None else None  # None when nothing would pass
        on_request = self._asker(req) if can_ask_client(req) else None
        if req.modern and meta is not None:
            # The upstream must see what the client can do (not the gateway's own capabilities),
            # so it never asks a 2026-07-28 client for input it cannot give.
            extra = {}
            if LOG_LEVEL_META_KEY in meta:  # plain ifs: a comprehension is a function call per request
                extra[LOG_LEVEL_META_KEY] = meta[LOG_LEVEL_META_KEY]
            if CLIENT_CAPABILITIES_META_KEY in meta:
                extra[CLIENT_CAPABILITIES_META_KEY] = meta[CLIENT_CAPABILITIES_META_KEY]
            if extra:
                params["_meta"] = extra
        tenant = CURRENT_PRINCIPAL.get().tenant
        if not req.modern:
            try:
                tenant, server = await self.gw.handshake_route(tenant, server)
            except Exception as exc:
                raise rpc_error_for(exc) from None
        passed = self._passed_headers(tenant, server) + trace_line
        for _ in range(_MAX_INPUT_ROUNDS):
            reset = FORWARDED_HEADERS.set(passed) if passed else None
            try:
                result = await self.gw.hub.forward(
                    server, method, params, tenant=tenant,
                    on_progress=on_progress, on_request=on_request, on_log=on_log,
                )
            except RpcError:
                raise
            except Exception as exc:
                raise rpc_error_for(exc) from None
            finally:
                if reset is not None:
                    FORWARDED_HEADERS.reset(reset)
            meta_out = result.get("_meta")
            if type(meta_out) is dict and SERVER_INFO_META_KEY in meta_out:
                result["_meta"] = {k: v for k, v in meta_out.items() if k != SERVER_INFO_META_KEY}
                if not result["_meta"]:
                    del result["_meta"]
            if req.modern or result.get("resultType") != "input_required":
                return result
            # A 2026-07-28 upstream needs input but this client speaks the handshake era:
            # ask the client ourselves, then retry upstream with the answers.
            params = {**params, "inputResponses": await self._answer_inputs(req, result),
                      "requestState": result.get("requestState")}
            if params["requestState"] is None:
                del params["requestState"]
        raise RpcError(INTERNAL_ERROR, f"upstream {server!r} kept asking for input after {_MAX_INPUT_ROUNDS} rounds")

    def _passed_headers(self, tenant: str, server: str) -> bytes:
        """The caller's headers this server's ``forward_headers`` lets through (usually none)."""
        try:
            wanted = self.gw.hub.server(server, tenant=tenant).config.forward_headers
        except ToolmeshError:
            return b""
        if not wanted:
            return b""
        out = b""
        for name, value in CURRENT_HEADERS.get():
            if name.decode("latin-1").lower() in wanted and not any(c in value for c in b"\r\n\0"):
                out += name + b": " + value + b"\r\n"
        return out

    async def _answer_inputs(self, req: Req, result: dict[str, Any]) -> dict[str, Any]:
        requests = result.get("inputRequests") or {}
        if not can_ask_client(req):
            raise RpcError(INVALID_PARAMS, "the upstream needs input from the client, but this connection "
                                           "cannot carry server→client requests")
        answers: dict[str, Any] = {}
        for key, item in requests.items():
            if not isinstance(item, dict) or type(item.get("method")) is not str:
                continue
            try:
                answers[key] = await ask_client(req, item["method"], item.get("params"))
            except MCPError as exc:
                raise RpcError(exc.error.code, exc.error.message, exc.error.data) from None
        return answers

    def _asker(self, req: Req) -> Callable[[str, dict[str, Any]], Any]:
        async def ask(method: str, params: dict[str, Any]) -> dict[str, Any]:
            try:
                return await ask_client(req, method, params)
            except MCPError as exc:
                raise McpRemoteError(exc.error.code, exc.error.message, exc.error.data) from None

        return ask

    def _log_forwarder(self, req: Req) -> Callable[[dict[str, Any]], Any] | None:
        notify = req.notify
        assert notify is not None
        if req.modern:
            # 2026-07-28 clients get logs only when they opt in (logLevel in _meta).
            wanted = req.meta.get(LOG_LEVEL_META_KEY) if req.meta is not None else None
            if wanted not in LOG_LEVELS:
                return None
            floor = LOG_LEVELS.index(wanted)
        else:
            floor = req.conn.log_level if req.conn is not None else 0

        async def forward_log(params: dict[str, Any]) -> None:
            level = params.get("level")
            if level in LOG_LEVELS and LOG_LEVELS.index(level) >= floor:
                await notify({"jsonrpc": "2.0", "method": "notifications/message", "params": params})

        return forward_log


def strip_envelope(meta: dict[str, Any]) -> dict[str, Any]:
    """``_meta`` without the 2026-07-28 envelope keys (the Hub adds its own upstream)."""
    return {k: v for k, v in meta.items() if not k.startswith(_ENVELOPE_PREFIX)}
