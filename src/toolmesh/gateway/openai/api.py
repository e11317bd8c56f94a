"""The OpenAI-compatible API (GW-1), mounted at ``/v1`` (the ``chat`` scope).

    POST /v1/chat/completions   non-streaming and SSE streaming (``stream: true``)
    GET  /v1/models             the configured models, ``auto`` and the routing scenarios
    GET  /v1/models/{id}        one of them

Without ``tools`` in the request the agent runtime answers with the caller's tenant's MCP
tools (:mod:`toolmesh.gateway.openai.agent`); with ``tools`` the gateway is a plain OpenAI
endpoint in front of the LLM router (:mod:`toolmesh.gateway.openai.passthrough`); with
``"toolmesh": {"reasoning": {...}}`` the reasoning engine answers
(:mod:`toolmesh.gateway.openai.reasoning`). Errors
use OpenAI's error shape and status codes, so the official SDK raises its usual types.

Raw ASGI, ``orjson`` and hand-written validation keep the added latency per request small.
A watcher on ``receive`` cancels the run when the client disconnects.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson

from toolmesh.gateway.errors import ApiError
from toolmesh.gateway.openai.agent import AgentTurn, SendBody, install_history
from toolmesh.gateway.openai.errors import to_api_error
from toolmesh.gateway.openai.passthrough import PassThrough
from toolmesh.gateway.openai.reasoning import ReasoningTurn, reasoning_options
from toolmesh.gateway.openai.wire import ChatCall, parse_chat, sse_error
from toolmesh.gateway.state import DEFERRED_LIMITS_KEY, Gateway
from toolmesh.gateway.web import principal_of, read_body, send_bytes
from toolmesh.llm.types import ChatRequest
from toolmesh.net.asgi import Receive, Scope, Send
from toolmesh.store.redis_budget import SpendHold
from toolmesh.store.shared_users import SharedUserLimits

if TYPE_CHECKING:
    from toolmesh.agent.config import AgentConfig

log = logging.getLogger("toolmesh.gateway.openai")

_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no")]
_MAX_CACHED = 256
#: Scope key of the admission that holds a chat completion's shared limits (user slot) until it ends.
_ADMISSION = "toolmesh.chat_admission"


class _Cycle:
    """Response state of one request, shared with the disconnect watcher."""

    __slots__ = ("disconnected", "done", "send", "started")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False
        self.done = False
        self.disconnected = False

    async def start(self) -> SendBody:
        """Begin the SSE response; returns the function that sends frames."""
        self.started = True
        await self.send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        return self.body

    async def body(self, data: bytes, more: bool) -> None:
        if not more:
            self.done = True
        await self.send({"type": "http.response.body", "body": data, "more_body": more})

    async def error(self, err: ApiError) -> None:
        self.done = True
        await send_bytes(self.send, err.status, err.openai_body(), headers=err.response_headers())


class OpenAIApi:
    """Raw ASGI app for ``/v1/*``; the caller's principal comes from the gateway app."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        install_history(gw.agent)
        self._configs: dict[tuple[Any, ...], tuple[AgentConfig, AgentConfig]] = {}
        self._models: set[str] = set()
        self._created = int(time.time())

    @staticmethod
    def route_table() -> list[tuple[str, str]]:
        """Every route as ``(method, path template)`` (what :meth:`__call__` dispatches; /openapi.json)."""
        return [("POST", "/v1/chat/completions"), ("GET", "/v1/models"), ("GET", "/v1/models/{id}")]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await receive()
            await send({"type": "websocket.close", "code": 1008, "reason": "the OpenAI API is HTTP only"})
            return
        path: str = scope["path"].rstrip("/")
        method: str = scope["method"]
        try:
            if path == "/v1/chat/completions":
                if method != "POST":
                    raise ApiError(405, "use POST for /v1/chat/completions", code="method_not_allowed")
                await self._chat(scope, receive, send)
            elif path == "/v1/models" or path.startswith("/v1/models/"):
                if method != "GET":
                    raise ApiError(405, "use GET for /v1/models", code="method_not_allowed")
                await self._list_models(path[len("/v1/models/"):] if path != "/v1/models" else None, send)
            else:
                raise ApiError(404, f"no route {scope['path']!r} in the OpenAI-compatible API", code="not_found")
        except ApiError as err:
            await send_bytes(send, err.status, err.openai_body(), headers=err.response_headers())

    # -- chat completions -----------------------------------------------------------------------
    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        gw = self.gw
        cycle = _Cycle(send)
        try:
            principal = principal_of(scope)
            session = length = None
            for k, v in scope["headers"]:
                if k == b"content-length":
                    length = v
                elif k == b"x-toolmesh-session":
                    session = v.decode("latin-1")
            limit = gw.settings.max_body
            if length is not None and length.isdigit() and int(length) > limit:
                raise ApiError(413, f"request body exceeds {limit} bytes", code="request_too_large")
            call = parse_chat(await read_body(receive, limit), session)
            model, scenario = self._resolve_model(call)
            user = call.user or principal.user or principal.key_id
            handler: AgentTurn | PassThrough | ReasoningTurn
            options = reasoning_options(call)
            if options is not None:
                handler = ReasoningTurn(gw, principal, call, user, model, scenario, options)
            elif call.tools is None:
                handler = AgentTurn(gw, principal, call, user, self._config(model, scenario, call))
            else:
                handler = PassThrough(gw, principal, call, user, model, scenario)
        except Exception as exc:
            refused = await self._deferred_limits(scope, None)  # rate limits answer before bad requests
            await cycle.error(refused or to_api_error(exc))
            return
        refused = await self._deferred_limits(scope, user, handler)
        if refused is not None:
            await cycle.error(refused)
            return
        task = asyncio.current_task()
        watcher = asyncio.create_task(_watch(receive, cycle, task))
        try:
            if call.stream:
                await handler.stream(cycle.start)
            else:
                status, body = await handler.complete()
                cycle.done = True
                await send_bytes(send, status, body)
        except asyncio.CancelledError:
            if cycle.disconnected and task is not None:
                task.uncancel()  # we asked for it: the client left, the run is abandoned
                log.info("client disconnected: chat completion cancelled")
                return
            raise
        except Exception as exc:
            err = to_api_error(exc)
            if not cycle.started:
                await cycle.error(err)
            elif not cycle.done:
                await cycle.body(sse_error(err), False)
        finally:
            cycle.done = True
            watcher.cancel()
            admission = scope.pop(_ADMISSION, None)
            if admission is not None:
                SharedUserLimits.clear_preadmitted()
                await admission.release()

    async def _deferred_limits(self, scope: Scope, user: str | None,
                               handler: AgentTurn | PassThrough | ReasoningTurn | None = None) -> ApiError | None:
        """Admit a request whose tenant and key limits the edge left for here (shared limits: with
        the user's, one round trip); the 429 when refused. A pass-through call with its daily spend
        in Redis is admitted by the call itself, its spend hold in the same script."""
        if not scope.pop(DEFERRED_LIMITS_KEY, False):
            return None
        if user is not None and isinstance(handler, PassThrough) and handler.can_join_admission():
            handler.join_admission(functools.partial(self._joined_admission, scope, user))
            return None
        return await self._admit_chat(scope, user, None)

    async def _joined_admission(self, scope: Scope, user: str, rider: SpendHold) -> None:
        # A PassThrough's admission with its spend hold: raises the 429 of a refusing limit.
        refused = await self._admit_chat(scope, user, rider)
        if refused is not None:
            raise refused

    async def _admit_chat(self, scope: Scope, user: str | None, rider: SpendHold | None) -> ApiError | None:
        gw = self.gw
        admission = await gw.admit_chat(principal_of(scope), user, rider)
        if admission.admitted:
            scope[_ADMISSION] = admission  # released when the response is over
            return None
        if rider is not None and rider.refused:
            return None  # the spend refused, not a limit: the caller's budget waits or refuses
        users = gw.agent.user_limits
        if isinstance(users, SharedUserLimits) and users.is_user_limit(admission.refused_by):
            return to_api_error(users.rejection(admission))
        return ApiError(429, "rate limit exceeded for this tenant or key", "rate_limit_error",
                        retry_after=max(1.0, admission.retry_after))

    def _resolve_model(self, call: ChatCall) -> tuple[str, str | None]:
        """(model for the router, scenario): a served model or deployment, ``auto``, or a scenario name."""
        name, scenario = call.model, call.scenario
        if name in self._models or name == "auto":
            return name, scenario
        llm = self.gw.llm
        rules = getattr(llm, "rules", None) or {}
        if name in rules:
            return "auto", scenario or name
        candidates = getattr(llm, "candidates", None)
        if candidates is not None:
            try:
                candidates(ChatRequest(name, []))
            except LookupError:
                raise ApiError(404, f"the model {name!r} does not exist or is not served by this gateway "
                                    "(GET /v1/models lists them)", param="model", code="model_not_found") from None
        self._models.add(name)  # only names that resolved: bounded by the configuration
        return name, scenario

    def _config(self, model: str, scenario: str | None, call: ChatCall) -> AgentConfig:
        """The agent settings for this request (cached: no pydantic work per request)."""
        base: AgentConfig = self.gw.agent.config
        key = (model, scenario, call.temperature, call.max_tokens)
        hit = self._configs.get(key)
        if hit is not None and hit[0] is base:
            return hit[1]
        update: dict[str, Any] = {"model": model, "scenario": scenario or base.scenario}
        if call.temperature is not None:
            update["temperature"] = call.temperature
        if call.max_tokens is not None:
            update["max_output_tokens"] = call.max_tokens
        cfg = base.model_copy(update=update)
        if len(self._configs) >= _MAX_CACHED:
            self._configs.clear()
        self._configs[key] = (base, cfg)
        return cfg

    # -- models ---------------------------------------------------------------------------------
    def model_list(self) -> list[dict[str, Any]]:
        """Served models, deployment names, ``auto`` and the routing scenarios, in OpenAI's form."""
        llm = self.gw.llm
        out: dict[str, str] = {}
        # the model names as configured first, then the registry's canonical names they resolve to
        for spec in self.gw.config.section("llm").get("deployments") or ():
            if isinstance(spec, dict) and spec.get("model"):
                out.setdefault(str(spec["model"]), "toolmesh")
        snapshot = llm.snapshot() if hasattr(llm, "snapshot") else {"deployments": {}, "rules": {}}
        for dep in snapshot["deployments"].values():
            out.setdefault(str(dep["model"]), "toolmesh")
        for name in snapshot["deployments"]:
            out.setdefault(str(name), "toolmesh-deployment")
        out.setdefault("auto", "toolmesh-router")
        for rule in snapshot.get("rules", {}):
            if rule != "default":
                out.setdefault(str(rule), "toolmesh-scenario")
        return [{"id": k, "object": "model", "created": self._created, "owned_by": v} for k, v in out.items()]

    async def _list_models(self, one: str | None, send: Send) -> None:
        models = self.model_list()
        if one is None:
            await send_bytes(send, 200, orjson.dumps({"object": "list", "data": models}))
            return
        found = next((m for m in models if m["id"] == one), None)
        if found is None:
            raise ApiError(404, f"the model {one!r} does not exist", param="model", code="model_not_found")
        await send_bytes(send, 200, orjson.dumps(found))


async def _watch(receive: Receive, cycle: _Cycle, task: asyncio.Task[Any] | None) -> None:
    """Cancel the request's task when the client goes away before the response is complete."""
    try:
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                if not cycle.done and task is not None:
                    cycle.disconnected = True
                    task.cancel()
                return
    except Exception:  # the server's receive failing must not outlive the request
        return
