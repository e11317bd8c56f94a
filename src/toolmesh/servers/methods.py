"""MCP method implementations over an SDK ``MCPServer``'s public async API.

Each handler takes a :class:`Req` and returns the JSON-ready ``result`` (or raises
:class:`~toolmesh.servers.state.RpcError`). Envelope handling lives in ``dispatch.py``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from typing import Any

import orjson
from mcp.server import MCPServer
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import (
    ResourceError,
    ResourceNotFoundError,
    ToolError,
    UnexpectedResourceError,
    UnexpectedToolError,
)
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import X_MCP_HEADER_KEY, validate_mcp_param_headers
from mcp_types import CLIENT_CAPABILITIES_META_KEY, LOG_LEVEL_META_KEY, InputResponseRequestParams
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION
from pydantic import BaseModel

from toolmesh.errors import did_you_mean
from toolmesh.servers.policy import ServerPolicy
from toolmesh.servers.reqcontext import Req, RequestInfo, RequestSession
from toolmesh.servers.state import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    LOG_LEVELS,
    REQUEST_TIMEOUT,
    RpcError,
)

logger = logging.getLogger("toolmesh.servers")


def dump(model: BaseModel) -> dict[str, Any]:
    """Wire form of an SDK result model."""
    out: dict[str, Any] = model.model_dump(by_alias=True, exclude_none=True, mode="json")
    return out


def handshake(req: Req, capabilities: dict[str, Any], server_info: dict[str, Any],
              instructions: str | None = None) -> dict[str, Any]:
    """The ``initialize`` answer: agree on a handshake-era version and remember the client's
    capabilities on the connection (shared by every dispatcher, the gateway's included)."""
    requested = req.params.get("protocolVersion")
    version = requested if requested in HANDSHAKE_PROTOCOL_VERSIONS else LATEST_HANDSHAKE_VERSION
    if req.conn is not None:
        req.conn.version = version
        req.conn.client_caps = req.params.get("capabilities")
    result: dict[str, Any] = {"protocolVersion": version, "capabilities": capabilities, "serverInfo": server_info}
    if instructions:
        result["instructions"] = instructions
    return result


class _Deadline:
    __slots__ = ("fired", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.fired = False

    def fire(self) -> None:
        self.fired = True
        self.task.cancel()


class McpMethods:
    """Handlers for the MCP methods, bound to one ``MCPServer``."""

    def __init__(self, server: MCPServer[Any], policy: ServerPolicy | None) -> None:
        self.server = server
        self.policy = policy
        self.lifespan_state: Any = {}
        low = server._lowlevel_server
        self.server_info: dict[str, Any] = low.server_info.model_dump(by_alias=True, mode="json", exclude_none=True)
        caps = dump(low.get_capabilities())
        resources = caps.get("resources")
        if isinstance(resources, dict) and resources.get("subscribe"):
            # resources/subscribe does not exist on the 2026-07-28 wire (subscriptions/listen replaced it).
            self.modern_caps = {**caps, "resources": {**resources, "subscribe": False}}
        else:
            self.modern_caps = caps
        # Handshake-era clients may call logging/setLevel, which we serve.
        self.legacy_caps = {**caps, "logging": {}}
        self._tools_key: tuple[int, ...] | None = None
        self._param_headers: dict[int, tuple[Any, bool]] = {}
        self._tools_fragment: orjson.Fragment | None = None
        # Tools that never look at their Context share one (building a pydantic model per call costs).
        self._bare_ctx: Context[Any, Any] = Context(mcp_server=server, subscriptions=server._subscriptions)

    # -- lifecycle -------------------------------------------------------------------------------
    async def initialize(self, req: Req) -> dict[str, Any]:
        return handshake(req, self.legacy_caps, self.server_info, self.server.instructions)

    async def discover(self, req: Req) -> dict[str, Any]:
        result: dict[str, Any] = {
            "supportedVersions": ["2026-07-28"],
            "capabilities": self.modern_caps,
        }
        if self.server.instructions:
            result["instructions"] = self.server.instructions
        return result

    async def ping(self, req: Req) -> dict[str, Any]:
        return {}

    async def set_level(self, req: Req) -> dict[str, Any]:
        level = req.params.get("level")
        if level not in LOG_LEVELS:
            raise RpcError(INVALID_PARAMS, f"Unknown logging level: {level!r}")
        if req.conn is not None:
            req.conn.log_level = LOG_LEVELS.index(level)
        return {}

    # -- tools -----------------------------------------------------------------------------------
    async def tools_list(self, req: Req) -> dict[str, Any]:
        tools = getattr(self.server._tool_manager, "_tools", None)
        key = tuple(map(id, tools.values())) if isinstance(tools, dict) else None
        if key is None or key != self._tools_key or self._tools_fragment is None:
            listed = [dump(t) for t in await self.server.list_tools()]
            self._tools_fragment = orjson.Fragment(orjson.dumps(listed))
            self._tools_key = key
        return {"tools": self._tools_fragment}

    async def tools_call(self, req: Req) -> dict[str, Any]:
        params = req.params
        name = params.get("name")
        if not isinstance(name, str):
            raise RpcError(INVALID_PARAMS, "tools/call: 'name' must be a string")
        arguments = params.get("arguments")
        if arguments is None:
            arguments = {}
        elif not isinstance(arguments, dict):
            raise RpcError(INVALID_PARAMS, "tools/call: 'arguments' must be an object")
        tool = self.server._tool_manager.get_tool(name)
        if tool is None:
            # Spec (2025-11-25 and later): an unknown tool is a protocol error, not a tool result.
            known = (t.name for t in self.server._tool_manager.list_tools())
            raise RpcError(INVALID_PARAMS, f"Unknown tool: {name}{did_you_mean(name, known)}", {"tool": name})
        if req.headers is not None and self._has_param_headers(tool):
            # SEP-2243: arguments the tool mirrors into Mcp-Param-* headers must agree with the body.
            rejected = validate_mcp_param_headers(tool.parameters, arguments, req.headers)
            if rejected is not None:
                raise RpcError(rejected.code, rejected.message, rejected.data)
        needs_ctx = tool.context_kwarg is not None or bool(getattr(tool, "resolved_params", None))
        ctx = self.context(req) if needs_ctx else self._bare_ctx
        policy = self.policy
        if policy is None:
            return await self._run_tool(name, arguments, ctx)
        timeout = policy.timeout_for(name)
        started = time.perf_counter()
        outcome = "ok"
        try:
            if timeout is None:
                result = await self._run_tool(name, arguments, ctx)
            else:
                # A bare timer is a few µs cheaper than asyncio.timeout(); the only suspension
                # points before handle.cancel() are inside the tool, so the cancel lands there.
                task = asyncio.current_task()
                assert task is not None
                deadline = _Deadline(task)
                handle = asyncio.get_running_loop().call_later(timeout, deadline.fire)
                try:
                    result = await self._run_tool(name, arguments, ctx)
                except asyncio.CancelledError:
                    if not deadline.fired:
                        raise
                    task.uncancel()
                    outcome = "timeout"
                    raise RpcError(REQUEST_TIMEOUT, "Request timed out", {"tool": name, "timeout": timeout}) from None
                finally:
                    handle.cancel()
            if result.get("isError"):
                outcome = "error"
            return result
        except BaseException:
            if outcome == "ok":
                outcome = "error"
            raise
        finally:
            policy.metrics_for(name).record(time.perf_counter() - started, outcome)  # type: ignore[arg-type]

    def _has_param_headers(self, tool: Any) -> bool:
        # Whether the tool's input schema declares x-mcp-header parameters (cached per tool object).
        key = id(tool)
        found = self._param_headers.get(key)
        if found is None or found[0] is not tool:
            found = (tool, X_MCP_HEADER_KEY in orjson.dumps(tool.parameters).decode())
            self._param_headers[key] = found
        return found[1]

    async def _run_tool(self, name: str, arguments: dict[str, Any], ctx: Context[Any, Any]) -> dict[str, Any]:
        # Mirrors MCPServer._handle_call_tool: MCPError passes through, anything else is an isError result.
        try:
            result = await self.server.call_tool(name, arguments, ctx)
        except MCPError:
            raise
        except Exception as exc:
            if isinstance(exc, ToolError) and not isinstance(exc, UnexpectedToolError):
                logger.info("Tool %r failed: %r", name, str(exc))
            else:
                logger.exception("Tool %r raised an unexpected exception", name)
            return {"content": [{"type": "text", "text": str(exc)}], "isError": True}
        return dump(result)

    # -- resources -------------------------------------------------------------------------------
    async def resources_list(self, req: Req) -> dict[str, Any]:
        return {"resources": [dump(r) for r in await self.server.list_resources()]}

    async def templates_list(self, req: Req) -> dict[str, Any]:
        return {"resourceTemplates": [dump(t) for t in await self.server.list_resource_templates()]}

    async def resources_read(self, req: Req) -> dict[str, Any]:
        uri = req.params.get("uri")
        if not isinstance(uri, str):
            raise RpcError(INVALID_PARAMS, "resources/read: 'uri' must be a string")
        try:
            results = await self.server.read_resource(uri, self.context(req))
        except ResourceError as err:
            if isinstance(err, UnexpectedResourceError):
                logger.exception("Resource %r raised an unexpected exception", uri)
            code = INVALID_PARAMS if isinstance(err, ResourceNotFoundError) else INTERNAL_ERROR
            raise RpcError(code, str(err), {"uri": uri}) from None
        if isinstance(results, BaseModel):  # InputRequiredResult (2026-07-28 multi-round-trip)
            return dump(results)
        contents: list[dict[str, Any]] = []
        for item in results:
            entry: dict[str, Any] = {"uri": uri}
            if isinstance(item.content, bytes):
                entry["blob"] = base64.b64encode(item.content).decode()
                entry["mimeType"] = item.mime_type or "application/octet-stream"
            else:
                entry["text"] = item.content
                entry["mimeType"] = item.mime_type or "text/plain"
            if item.meta:
                entry["_meta"] = item.meta
            contents.append(entry)
        return {"contents": contents}

    # -- prompts ---------------------------------------------------------------------------------
    async def prompts_list(self, req: Req) -> dict[str, Any]:
        return {"prompts": [dump(p) for p in await self.server.list_prompts()]}

    async def prompts_get(self, req: Req) -> dict[str, Any]:
        name = req.params.get("name")
        if not isinstance(name, str):
            raise RpcError(INVALID_PARAMS, "prompts/get: 'name' must be a string")
        arguments = req.params.get("arguments")
        if arguments is not None and not isinstance(arguments, dict):
            raise RpcError(INVALID_PARAMS, "prompts/get: 'arguments' must be an object")
        if self.server._prompt_manager.get_prompt(name) is None:
            raise RpcError(INVALID_PARAMS, f"Unknown prompt: {name}", {"prompt": name})
        try:
            result = await self.server.get_prompt(name, arguments, self.context(req))
        except ValueError as exc:  # MCPServer wraps render failures (missing arguments...) in ValueError
            raise RpcError(INVALID_PARAMS, str(exc)) from None
        return dump(result)

    # -- anything else the SDK server registered (completion/complete, extension methods) -------
    async def lowlevel(self, req: Req) -> dict[str, Any]:
        entry = self.server._lowlevel_server.get_request_handler(req.method)
        if entry is None:
            raise RpcError(-32601, "Method not found", req.method)
        typed = entry.params_type.model_validate(req.params, by_name=False)
        result = await entry.handler(self.context(req).request_context, typed)
        if isinstance(result, BaseModel):
            return dump(result)
        return dict(result or {})

    # -- context ---------------------------------------------------------------------------------
    def context(self, req: Req) -> Context[Any, Any]:
        """An SDK ``Context`` whose session writes progress/logs to this request's channel."""
        meta = req.meta
        token = meta.get("progressToken") if meta is not None else None
        if isinstance(token, bool) or not isinstance(token, str | int):
            token = None
        if req.modern:
            wanted = meta.get(LOG_LEVEL_META_KEY) if meta is not None else None
            min_log = LOG_LEVELS.index(wanted) if wanted in LOG_LEVELS else None
            caps = meta.get(CLIENT_CAPABILITIES_META_KEY) if meta is not None else None
        else:
            min_log = req.conn.log_level if req.conn is not None else 0
            caps = req.conn.client_caps if req.conn is not None else None
        session = RequestSession(
            req.notify,
            request_id=req.id,
            progress_token=token,
            min_log_level=min_log,
            client_capabilities=caps,
            req=req,
        )
        rc: ServerRequestContext[Any, Any] = ServerRequestContext(
            session=session,  # type: ignore[arg-type]  # duck-typed stand-in for ServerSession
            lifespan_context=self.lifespan_state,
            protocol_version=req.version,
            method=req.method,
            params=req.params,
            request_id=req.id,
            meta=meta,  # type: ignore[arg-type]
            request=RequestInfo(req.headers),
        )
        input_params = None
        if req.modern and ("inputResponses" in req.params or "requestState" in req.params):
            # 2026-07-28 multi-round-trip retry: ctx.input_responses / ctx.request_state.
            # A malformed inputResponses is a ValidationError, answered as -32602.
            input_params = InputResponseRequestParams.model_validate(
                {"inputResponses": req.params.get("inputResponses"), "requestState": req.params.get("requestState")},
                by_name=False,
            )
        return Context(
            request_context=rc,
            mcp_server=self.server,
            input_params=input_params,
            subscriptions=self.server._subscriptions,
        )
