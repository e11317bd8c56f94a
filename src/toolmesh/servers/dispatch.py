"""Transport-independent JSON-RPC core: bytes in, response dicts out.

Both protocol eras run through :meth:`Dispatcher.handle`: a request whose
``params._meta`` carries ``io.modelcontextprotocol/protocolVersion`` is a 2026-07-28
(stateless, per-request envelope) request; anything else is handshake-era (2025-11-25
and older). Frontends own framing, sessions and the notification channel.

The frontend↔dispatcher interface (what ``StreamableHttp``, ``LegacySse``,
``WebSocketFrontend`` and ``serve_stdio`` call; another dispatcher, e.g. the gateway's,
plugs in by offering the same):

- ``await handle(msg, conn, notify=None, *, headers=None, client=None)``: one decoded
  message; returns the response dict (or list, for a 2025-03-26 batch) or ``None`` when
  none is owed (notifications, JSON-RPC responses, cancelled requests). ``notify`` is the
  request's outbound channel: it carries notifications and, in the handshake era, the
  server→client requests of :func:`toolmesh.servers.reqcontext.ask_client`; frontends pass
  ``None`` when the channel cannot carry messages (a JSON-only HTTP client). A JSON-RPC
  response (``id`` plus ``result``/``error``, no ``method``) must reach ``handle`` with the
  same ``conn`` as the request it answers: it resolves ``conn.pending`` (``Conn.resolve``).
- ``lifespan()``: an async context manager run around serving.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import orjson
from mcp.server import MCPServer
from mcp.server.caching import CacheHint
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import decode_header_value
from mcp_types import CLIENT_CAPABILITIES_META_KEY, PROTOCOL_VERSION_META_KEY, SERVER_INFO_META_KEY
from mcp_types.methods import CACHEABLE_METHODS
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from toolmesh.servers.methods import McpMethods, dump
from toolmesh.servers.policy import ServerPolicy, policy_of
from toolmesh.servers.reqcontext import Notify, Req
from toolmesh.servers.state import (
    HEADER_MISMATCH,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    RATE_LIMITED,
    UNSUPPORTED_PROTOCOL_VERSION,
    Conn,
    RpcError,
)

logger = logging.getLogger("toolmesh.servers")

_MISSING: Any = object()
_NAME_PARAM = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
Handler = Callable[[Req], Awaitable[dict[str, Any]]]


def error_response(rid: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    """A JSON-RPC error response (``id`` null when the request id is unknown)."""
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "id": rid, "error": err}


def decode(body: bytes | str) -> Any:
    """Parse a JSON text; raises :class:`RpcError` ``-32700`` when it is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RpcError(PARSE_ERROR, f"Parse error: {exc}") from None


def encode(message: Any) -> bytes:
    """Serialise a response or notification."""
    return orjson.dumps(message)


class Dispatcher(McpMethods):
    """Routes JSON-RPC messages to an ``MCPServer`` (policy from ``ToolServer`` when present)."""

    #: Whether this dispatcher sends messages outside requests (a handshake-era session may
    #: then open the Streamable HTTP GET stream; otherwise GET answers 405).
    pushes = False

    def channel_opened(self, conn: Conn) -> None:
        """``conn.sink`` now reaches the client (SSE stream, WebSocket, or GET stream opened)."""

    def channel_closed(self, conn: Conn) -> None:
        """``conn.sink`` no longer reaches the client."""

    def __init__(self, server: MCPServer[Any], policy: ServerPolicy | None = None) -> None:
        super().__init__(server, policy if policy is not None else policy_of(server))
        common: dict[str, Handler] = {
            "tools/list": self.tools_list,
            "tools/call": self.tools_call,
            "resources/list": self.resources_list,
            "resources/templates/list": self.templates_list,
            "resources/read": self.resources_read,
            "prompts/list": self.prompts_list,
            "prompts/get": self.prompts_get,
        }
        # The SDK's 2026-07-28 surface drops ping / logging/setLevel / initialize.
        self.modern_methods: dict[str, Handler] = {**common, "server/discover": self.discover}
        self.legacy_methods: dict[str, Handler] = {
            **common,
            "initialize": self.initialize,
            "ping": self.ping,
            "logging/setLevel": self.set_level,
        }
        # Methods served by the SDK server's own handlers when it registered one.
        low_methods = {
            "completion/complete": True,
            "resources/subscribe": False,  # handshake era only: 2026-07-28 uses subscriptions/listen
            "resources/unsubscribe": False,
        }
        for method, modern in low_methods.items():
            if server._lowlevel_server.get_request_handler(method) is not None:
                self.legacy_methods[method] = self.lowlevel
                if modern:
                    self.modern_methods[method] = self.lowlevel
        if server._lowlevel_server.get_request_handler("subscriptions/listen") is not None:
            # 2026-07-28 change notifications (SEP-2575): the SDK's ListenHandler streams them.
            self.modern_methods["subscriptions/listen"] = self.listen
            self.modern_caps = dump(server._lowlevel_server.get_capabilities(protocol_version="2026-07-28"))
        low = server._lowlevel_server
        self._hints: dict[str, CacheHint] = {m: low.cache_hints.get(m) or CacheHint() for m in CACHEABLE_METHODS}

    async def listen(self, req: Req) -> dict[str, Any]:
        """``subscriptions/listen``: acknowledge, then stream matching events until the client leaves."""
        if req.notify is None:
            raise RpcError(
                INVALID_REQUEST, "subscriptions/listen needs a streaming response (Accept: text/event-stream)"
            )
        return await self.lowlevel(req)

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[Any]:
        """Run the server's lifespan (``MCPServer(lifespan=...)``) around serving."""
        low = self.server._lowlevel_server
        async with low.lifespan(low) as state:
            self.lifespan_state = state
            yield state

    async def handle(
        self,
        msg: Any,
        conn: Conn | None,
        notify: Notify | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        client: str | None = None,
    ) -> Any:
        """Handle one decoded message (or batch); returns the response, or ``None`` when none is owed.

        ``conn`` is the connection/session (``None`` for stateless HTTP), ``notify`` the channel
        for progress/log notifications, ``headers`` the HTTP headers (enables the 2026-07-28
        header checks), ``client`` the rate-limit key when ``conn`` is ``None``.
        """
        if type(msg) is not dict:
            if isinstance(msg, list) and msg and conn is not None and conn.version == "2025-03-26":
                # JSON-RPC batches exist only in the 2025-03-26 revision.
                out = [await self.handle(m, conn, notify, headers=headers, client=client) for m in msg]
                return [r for r in out if r is not None] or None
            what = "Batch requests are not supported" if isinstance(msg, list) else "Request must be an object"
            return error_response(None, INVALID_REQUEST, what)
        method = msg.get("method")
        rid = msg.get("id", _MISSING)
        if msg.get("jsonrpc") != "2.0" or type(method) is not str:
            if rid is not _MISSING and "method" not in msg and ("result" in msg or "error" in msg):
                # The client's answer to a server→client request (see reqcontext.ask_client);
                # a response never has a "method" member, so {"method": null, "error": ...} is invalid.
                if conn is not None and not conn.resolve(msg):
                    logger.debug("dropped a response to unknown server request %r", rid)
                return None
            ok_id = rid if type(rid) in (str, int) else None
            return error_response(ok_id, INVALID_REQUEST, "Invalid Request: not a JSON-RPC 2.0 message")
        params = msg.get("params")
        if rid is _MISSING:
            await self._notification(method, params, conn)
            return None
        if type(rid) not in (str, int):
            return error_response(None, INVALID_REQUEST, "Invalid Request: id must be a string or integer")
        if params is None:
            params = {}
        elif type(params) is not dict:
            return error_response(rid, INVALID_PARAMS, "params must be an object")
        try:
            policy = self.policy
            if policy is not None and policy.limiter is not None:
                wait = await policy.limiter.take(conn.client_key if conn is not None else (client or "-"))
                if wait:
                    policy.rate_limited += 1
                    raise RpcError(RATE_LIMITED, "Rate limit exceeded", {"retryAfter": round(wait, 3)})
            req = self._route(rid, method, params, conn, notify, headers)
            if conn is None:
                result = await req.handler(req.req)
            else:
                tracked = await self._tracked(req, conn)
                if tracked is None:
                    return None
                result = tracked
        except RpcError as exc:
            return {"jsonrpc": "2.0", "id": rid, "error": exc.to_error()}
        except MCPError as exc:
            return error_response(rid, exc.code, exc.message, exc.data)
        except ValidationError:
            return error_response(rid, INVALID_PARAMS, "Invalid request parameters")
        except Exception:
            logger.exception("handler for %r raised", method)
            return error_response(rid, INTERNAL_ERROR, "Internal error")
        if req.req.modern:
            if "resultType" not in result:
                result["resultType"] = "complete"
            if method in self._hints and "ttlMs" not in result:
                hint = self._hints[method]
                result["ttlMs"] = hint.ttl_ms
                result["cacheScope"] = hint.scope
            meta = result.get("_meta")
            if meta is None:
                result["_meta"] = {SERVER_INFO_META_KEY: self.server_info}
            elif isinstance(meta, dict) and SERVER_INFO_META_KEY not in meta:
                result["_meta"] = {**meta, SERVER_INFO_META_KEY: self.server_info}
        else:
            result.pop("resultType", None)
        return {"jsonrpc": "2.0", "id": rid, "result": result}

    async def _tracked(self, r: _Routed, conn: Conn) -> dict[str, Any] | None:
        # Registered so notifications/cancelled can cancel this very task.
        rid = r.req.id
        task = asyncio.current_task()
        if task is not None:
            conn.inflight[rid] = task
        try:
            return await r.handler(r.req)
        except asyncio.CancelledError:
            if rid in conn.cancelled and task is not None:
                conn.cancelled.discard(rid)
                task.uncancel()
                return None
            raise
        finally:
            conn.inflight.pop(rid, None)

    def _route(
        self,
        rid: Any,
        method: str,
        params: dict[str, Any],
        conn: Conn | None,
        notify: Notify | None,
        headers: Mapping[str, str] | None,
    ) -> _Routed:
        meta = params.get("_meta")
        if type(meta) is dict and PROTOCOL_VERSION_META_KEY in meta:
            version = self._check_envelope(method, params, meta, headers)
            handler = self.modern_methods.get(method)
            if handler is None:
                raise RpcError(METHOD_NOT_FOUND, "Method not found", method)
            return _Routed(handler, Req(rid, method, params, meta, version, True, conn, notify, headers))
        handler = self.legacy_methods.get(method)
        if handler is None:
            raise RpcError(METHOD_NOT_FOUND, "Method not found", method)
        version = (conn.version if conn is not None else None) or "2025-11-25"
        meta_map = meta if type(meta) is dict else None
        return _Routed(handler, Req(rid, method, params, meta_map, version, False, conn, notify, headers))

    @staticmethod
    def _check_envelope(
        method: str, params: dict[str, Any], meta: dict[str, Any], headers: Mapping[str, str] | None
    ) -> str:
        """The 2026-07-28 validation ladder (same order and codes as the SDK's classifier)."""
        if CLIENT_CAPABILITIES_META_KEY not in meta:
            raise RpcError(
                INVALID_PARAMS, f"params._meta is missing the required envelope key(s): {CLIENT_CAPABILITIES_META_KEY}"
            )
        version = meta[PROTOCOL_VERSION_META_KEY]
        if headers is not None:
            # Field values may carry optional whitespace around them (RFC 9110 OWS).
            if _header(headers, "mcp-protocol-version") != version:
                raise RpcError(HEADER_MISMATCH, "mcp-protocol-version header does not match the request envelope")
            if _header(headers, "mcp-method") != method:
                raise RpcError(HEADER_MISMATCH, "mcp-method header does not match the request body's method")
            key = _NAME_PARAM.get(method)
            if key is not None:
                value = params.get(key)
                name = _header(headers, "mcp-name")
                if value is not None and name != value and decode_header_value(name) != value:
                    raise RpcError(HEADER_MISMATCH, f"mcp-name header does not match the body's {key!r}")
        if type(version) is not str:
            raise RpcError(INVALID_PARAMS, "the protocol-version envelope value must be a string")
        if version not in MODERN_PROTOCOL_VERSIONS:
            raise RpcError(
                UNSUPPORTED_PROTOCOL_VERSION,
                "Unsupported protocol version",
                {"supported": list(MODERN_PROTOCOL_VERSIONS), "requested": version},
            )
        return version

    async def _notification(self, method: str, params: Any, conn: Conn | None) -> None:
        if conn is None:
            return
        if method == "notifications/initialized":
            conn.initialized = True
        elif method == "notifications/cancelled" and isinstance(params, dict):
            conn.cancel(params.get("requestId"))


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    return value.strip(" \t") if value is not None else None


class _Routed:
    __slots__ = ("handler", "req")

    def __init__(self, handler: Handler, req: Req) -> None:
        self.handler = handler
        self.req = req
