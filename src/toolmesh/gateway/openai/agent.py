"""``/v1/chat/completions`` without ``tools``: the agent runtime answers with the tenant's MCP tools.

The run happens server-side (:meth:`Agent.stream` with the caller's tenant and user); the
response carries the final answer, and a top-level ``toolmesh`` field (OpenAI clients
ignore unknown fields) with the tool calls made, usage, cost, models and turns. Every tool
call is written to the audit log, also when the client goes away mid-run.

Conversation state: with a session id (``X-Toolmesh-Session`` header or
``metadata.session_id``) the gateway's stored history is the context and only the last user
message of the request is new; without one the request's own earlier messages are the
context (the usual stateless OpenAI contract) and nothing is stored.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, cast

import orjson

from toolmesh.agent.events import (
    AgentEvent,
    Final,
    ReasoningDelta,
    RunResult,
    RunStarted,
    TextDelta,
    ToolCallFinished,
    ToolCallRecord,
    ToolCallStarted,
)
from toolmesh.gateway.auth import Principal
from toolmesh.gateway.errors import ApiError
from toolmesh.gateway.openai.errors import budget_error, to_api_error
from toolmesh.gateway.openai.wire import (
    DONE,
    ChatCall,
    Chunks,
    assistant_message,
    bad,
    completion,
    sse_error,
    usage_of,
)
from toolmesh.llm.types import Message

if TYPE_CHECKING:
    from toolmesh.agent.config import AgentConfig
    from toolmesh.gateway.state import Gateway

SendBody = Callable[[bytes, bool], Awaitable[None]]
StartStream = Callable[[], Awaitable[SendBody]]

#: (system messages, earlier messages) of the request being served, read by :class:`RequestHistory`.
_REQUEST_CONTEXT: ContextVar[tuple[list[Message], list[Message]] | None] = ContextVar(
    "toolmesh_openai_context", default=None)


def _comment(kind: str, data: dict[str, Any]) -> bytes:
    return b": toolmesh " + kind.encode() + b" " + orjson.dumps(data) + b"\n\n"


class RequestHistory:
    """The agent's history, plus the current request's own context.

    A run without a conversation id starts from the request's earlier messages; a run in a
    session starts from the stored history with the request's system messages in front
    (stored history never holds them)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def load(self, tenant: str, user: str, conversation: str | None) -> list[Message]:
        ctx = _REQUEST_CONTEXT.get()
        if conversation is None:
            return list(ctx[1]) if ctx else []
        stored: list[Message] = await self.inner.load(tenant, user, conversation)
        if ctx and ctx[0]:
            return [*ctx[0], *(m for m in stored if m.role != "system")]
        return stored

    async def save(self, tenant: str, user: str, conversation: str | None, new: list[Message]) -> None:
        await self.inner.save(tenant, user, conversation, new)

    async def replace(self, tenant: str, user: str, conversation: str | None, messages: list[Message],
                      summary: str | None = None) -> None:
        await self.inner.replace(tenant, user, conversation, messages, summary)


def install_history(agent: Any) -> None:
    """Wrap the agent's history once so requests can hand it their own context."""
    if not isinstance(agent.history, RequestHistory):
        agent.history = RequestHistory(agent.history)


class AgentTurn:
    """One chat completion served by the agent runtime."""

    __slots__ = ("call", "cfg", "finished", "gw", "principal", "question", "result", "run_id", "spans", "started",
                 "user")

    def __init__(self, gw: Gateway, principal: Principal, call: ChatCall, user: str, cfg: AgentConfig) -> None:
        last = call.messages[-1]
        if last.role != "user":
            raise bad("without 'tools' the last message must be the user's (the gateway runs the tools itself)",
                      "messages")
        if not (last.content or "").strip():
            raise bad("the last user message is empty", f"messages[{len(call.messages) - 1}].content")
        self.gw = gw
        self.principal = principal
        self.call = call
        self.user = user
        self.cfg = cfg
        self.question = last.content or ""
        self.run_id = ""
        self.result: RunResult | None = None
        self.started: dict[str, tuple[str, dict[str, Any]]] = {}
        self.finished: list[ToolCallFinished] = []
        #: Open tool-call spans by call id (tracing only).
        self.spans: dict[str, Any] = {}

    async def _events(self) -> AsyncGenerator[AgentEvent, None]:
        call = self.call
        earlier = call.messages[:-1]
        system = [m for m in earlier if m.role == "system"]
        token = _REQUEST_CONTEXT.set((system, earlier))
        agen = cast(AsyncGenerator[AgentEvent, None], self.gw.agent.stream(
            self.question, tenant=self.principal.tenant, user=self.user, conversation=call.session, config=self.cfg))
        tracer = self.gw.tool_spans
        try:
            async for ev in agen:
                if isinstance(ev, ToolCallStarted):
                    self.started[ev.id] = (ev.name, ev.arguments)
                    if tracer is not None:
                        server, tool = self._route(ev.name)
                        self.spans[ev.id] = tracer.tool_span(server, tool)[0]
                elif isinstance(ev, ToolCallFinished):
                    self.finished.append(ev)
                    if tracer is not None and (span := self.spans.pop(ev.id, None)) is not None:
                        tracer.end_tool_span(span, "ok" if ev.ok else "error")
                elif isinstance(ev, Final):
                    self.result = ev.result
                elif isinstance(ev, RunStarted):
                    self.run_id = ev.run_id
                yield ev
        finally:
            await agen.aclose()
            with contextlib.suppress(ValueError):  # closed from another context: nothing to restore
                _REQUEST_CONTEXT.reset(token)
            for span in self.spans.values():  # cut off with the run
                if tracer is not None:
                    tracer.end_tool_span(span, "cancelled")
            self.spans.clear()
            self._audit()

    def _audit(self) -> None:
        """Audit every tool call of the run (exact records when it finished, events when it did not)."""
        gw, principal, user = self.gw, self.principal, self.user
        if self.result is not None:
            records = [(r, "ok" if r.ok else "error") for r in self.result.tool_calls]
        else:  # the run did not finish (client gone, error): what finished, and what was cut off
            done = {ev.id for ev in self.finished}
            records = [(self._record(ev), "ok" if ev.ok else "error") for ev in self.finished]
            records += [(self._record(ToolCallFinished(cid, name, False, 0.0, "", "cancelled")), "cancelled")
                        for cid, (name, _) in self.started.items() if cid not in done]
        for r, status in records:
            gw.audit(principal, r.server, r.tool or r.name, r.arguments, status, r.latency_ms,
                     user=user, request_id=self.run_id or None, error=r.error)

    def _record(self, ev: ToolCallFinished) -> ToolCallRecord:
        name, args = self.started.get(ev.id, (ev.name, {}))
        server, tool = self._route(name)
        return ToolCallRecord(ev.id, name, args, ev.ok, ev.latency_ms, ev.error, server, tool)

    def _route(self, name: str) -> tuple[str, str]:
        try:
            return self.gw.hub.resolve(name, tenant=self.principal.tenant, user=self.user)
        except Exception:  # an unknown name (the model made it up): recorded as such
            return "", name

    def _refusal(self, result: RunResult) -> ApiError | None:
        """A run stopped by a budget before any model call produced nothing: that is a 429."""
        if result.status == "budget_exceeded" and result.turns == 0:
            why = next((w for w in reversed(result.warnings) if "budget" in w), "budget exceeded")
            return budget_error(why)
        return None

    def detail(self, result: RunResult) -> dict[str, Any]:
        """The ``toolmesh`` field."""
        return {
            "run_id": result.run_id, "status": result.status,
            "model": result.models[-1] if result.models else self.cfg.model, "models": result.models,
            "turns": result.turns,
            "tool_calls": [{"id": r.id, "name": r.name, "server": r.server, "tool": r.tool, "arguments": r.arguments,
                            "status": "ok" if r.ok else "error", "latency_ms": r.latency_ms, "error": r.error}
                           for r in result.tool_calls],
            "usage": result.usage, "cost_usd": result.cost_usd, "latency_ms": result.latency_ms,
            "user": self.user, "session": result.conversation, "warnings": result.warnings,
        }

    def _usage(self, result: RunResult) -> dict[str, Any]:
        u = result.usage
        return usage_of(u.get("input_tokens", 0), u.get("output_tokens", 0))

    # -- the two response modes -----------------------------------------------------------------
    async def complete(self) -> tuple[int, bytes]:
        """Run to the end; the status and body of a ``chat.completion``."""
        async with contextlib.aclosing(self._events()) as events:
            async for _ in events:
                pass
        result = self.result
        if result is None:  # the generator always ends with Final; defensive
            raise ApiError(500, "the agent run ended without a result", "server_error")
        refusal = self._refusal(result)
        if refusal is not None:
            raise refusal
        model = result.models[-1] if result.models else self.call.model
        body = completion("chatcmpl-" + result.run_id, model, assistant_message(result.answer), "stop",
                          self._usage(result), self.detail(result))
        return 200, body

    async def stream(self, start: StartStream) -> None:
        """Stream ``chat.completion.chunk`` frames. The response starts with the first output
        (text, a tool call or the end), so errors before it still get their HTTP status."""
        chunks: Chunks | None = None
        body: SendBody | None = None
        try:
            async with contextlib.aclosing(self._events()) as events:
                async for ev in events:
                    if isinstance(ev, TextDelta | ReasoningDelta | ToolCallStarted):
                        if body is None:
                            chunks = Chunks("chatcmpl-" + self.run_id, self.call.model)
                            body = await start()
                            await body(chunks.delta({"role": "assistant", "content": ""}), True)
                        assert chunks is not None
                        if isinstance(ev, TextDelta):
                            await body(chunks.text(ev.text), True)
                        elif isinstance(ev, ReasoningDelta):
                            await body(chunks.delta({"reasoning_content": ev.text}), True)
                        else:
                            await body(_comment("tool_call_started", {"id": ev.id, "name": ev.name,
                                                                      "arguments": ev.arguments}), True)
                    elif isinstance(ev, ToolCallFinished) and body is not None:
                        # SSE comments: progress (and keep-alive) during tool calls; clients skip them
                        # The result is cut to 4 KB: enough for the dashboard's playground, bounded for proxies.
                        await body(_comment("tool_call_finished", {"id": ev.id, "name": ev.name, "ok": ev.ok,
                                                                   "latency_ms": ev.latency_ms, "error": ev.error,
                                                                   "result": ev.result[:4096]}), True)
                    elif isinstance(ev, Final):
                        await self._end(ev.result, chunks, body, start)
                        return
        except Exception as exc:
            if body is None:
                raise
            await body(sse_error(to_api_error(exc)), False)

    async def _end(self, result: RunResult, chunks: Chunks | None, body: SendBody | None, start: StartStream) -> None:
        if body is None or chunks is None:  # nothing streamed yet: the whole answer in one chunk
            refusal = self._refusal(result)
            if refusal is not None:
                raise refusal
            chunks = Chunks("chatcmpl-" + self.run_id, self.call.model)
            body = await start()
            await body(chunks.delta({"role": "assistant", "content": result.answer}), True)
        extra = {"toolmesh": self.detail(result)}
        if self.call.include_usage:
            await body(chunks.finish("stop"), True)
            await body(chunks.usage(self._usage(result), extra) + DONE, False)
        else:
            await body(chunks.finish("stop", extra) + DONE, False)
