"""``/v1/chat/completions`` with ``"toolmesh": {"reasoning": {...}}``: the reasoning engine answers.

The last user message is the problem; the request's system messages are the engine's extra
instructions. Options are :class:`~toolmesh.reasoning.ReasoningConfig` fields, merged over the
config file's ``reasoning:`` section; only :data:`REQUEST_OPTIONS` may be set per request, and
a request may only pick verifiers the operator allowed (``python`` runs model-written code on
the gateway host, so it is available only when the config's ``reasoning.verifiers`` lists it).

Streaming: step text goes out as ``delta.reasoning_content`` **and** ``delta.reasoning`` (clients
read one name or the other), step boundaries, verdicts, revisions and commits as chunks with an
empty delta and a top-level ``toolmesh`` field, the answer as ``content`` once the chain is
final (a step can still be sent back after its text streamed; the answer never is). The last
chunk's ``toolmesh`` field is the run's ``--json`` object. The user's and tenant's daily spend
budgets and per-user limits apply as for agent runs; usage goes to the ledger.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError

from toolmesh.errors import validation_message
from toolmesh.gateway.auth import Principal
from toolmesh.gateway.errors import ApiError
from toolmesh.gateway.openai.agent import SendBody, StartStream
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
from toolmesh.reasoning import Reasoner, ReasoningConfig, ReasoningEvent, ReasoningResult

if TYPE_CHECKING:
    from toolmesh.gateway.state import Gateway

#: ReasoningConfig fields a request may set (budgets, tenant, user, limits of the sandbox: config only).
REQUEST_OPTIONS = frozenset({
    "verifiers", "combine", "threshold", "max_revisions", "max_steps", "max_seconds", "step_seconds",
    "checkpoint_every", "step_marker", "answer_marker", "coherence", "judge_model", "temperature",
    "max_output_tokens", "tool_arguments",
})
#: Verifiers any request may use; others only when the config's ``reasoning.verifiers`` lists them.
OPEN_VERIFIERS = frozenset({"arithmetic", "judge", "none"})
_FINISH = {"ok": "stop", "error": "stop", "timeout": "length", "budget": "length"}
#: Engine events sent while streaming (``answer_delta`` is not: the answer goes out once final).
_SENT = frozenset({"step_started", "step_delta", "step_verified", "step_revised", "step_committed", "checkpointed",
                   "reasoning_delta", "warning"})


def reasoning_options(call: ChatCall) -> dict[str, Any] | None:
    """The request's reasoning options, or None when it did not ask for the engine."""
    ext = call.extra_toolmesh
    if ext is None:
        return None
    if type(ext) is not dict:
        raise bad("'toolmesh' must be an object", "toolmesh")
    opts = ext.get("reasoning")
    if opts is None or opts is False:
        return None
    if opts is True:
        return {}
    if type(opts) is not dict:
        raise bad("'toolmesh.reasoning' must be an object of reasoning options (or true)", "toolmesh.reasoning")
    unknown = sorted(set(opts) - REQUEST_OPTIONS)
    if unknown:
        raise bad(f"'toolmesh.reasoning.{unknown[0]}' cannot be set per request (allowed: "
                  f"{', '.join(sorted(REQUEST_OPTIONS))})", f"toolmesh.reasoning.{unknown[0]}")
    return opts


class ReasoningTurn:
    """One chat completion answered by the reasoning engine."""

    __slots__ = ("call", "gw", "model", "principal", "prompt", "reasoner", "user")

    def __init__(self, gw: Gateway, principal: Principal, call: ChatCall, user: str, model: str,
                 scenario: str | None, options: dict[str, Any]) -> None:
        if call.tools is not None:
            raise bad("'toolmesh.reasoning' cannot be combined with 'tools'", "tools")
        last = call.messages[-1]
        if last.role != "user" or not (last.content or "").strip():
            raise bad("with 'toolmesh.reasoning' the last message must be the user's problem", "messages")
        self.gw, self.principal, self.call, self.user, self.model = gw, principal, call, user, model
        self.prompt = last.content or ""
        section = gw.config.section("reasoning")
        allowed = OPEN_VERIFIERS | {v.split(":", 1)[0] for v in section.get("verifiers") or ()}
        for v in options.get("verifiers") or ():
            if isinstance(v, str) and v.split(":", 1)[0] not in allowed:
                raise bad(f"the verifier {v!r} is not enabled on this gateway (allowed: {', '.join(sorted(allowed))})",
                          "toolmesh.reasoning.verifiers")
        system = "\n\n".join(m.content or "" for m in call.messages[:-1] if m.role == "system") or None
        merged: dict[str, Any] = {**section, **options, "model": model, "tenant": principal.tenant, "user": user,
                                  "scenario": scenario or section.get("scenario")}
        if system is not None:
            merged["system_prompt"] = system
        if call.temperature is not None and "temperature" not in options:
            merged["temperature"] = call.temperature
        if call.max_tokens is not None and "max_output_tokens" not in options:
            merged["max_output_tokens"] = call.max_tokens
        try:
            cfg = ReasoningConfig.model_validate(merged)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            msg = validation_message(first, ReasoningConfig)
            if not first["loc"] or first["loc"][0] not in options:  # the operator's section, not the caller
                raise ApiError(500, f"the gateway's reasoning configuration is invalid: reasoning.{where}: "
                                    f"{msg}", "server_error", code="config_error") from None
            raise bad(f"toolmesh.reasoning.{where}: {msg}", f"toolmesh.reasoning.{where}") from None
        agent = gw.agent
        spend = agent.spend.budgets(principal.tenant, user, agent.spend_seed) \
            if agent.spend.per_user is not None or agent.spend.per_tenant is not None else []
        self.reasoner = Reasoner(gw.llm, cfg, store=gw.store, ledger=gw.ledger, hub=gw.hub, budgets=spend)

    @contextlib.asynccontextmanager
    async def _admitted(self) -> Any:
        limits = self.gw.agent.user_limits
        cm = limits.run(self.principal.tenant, self.user) if limits is not None else contextlib.nullcontext()
        async with cm:
            yield

    def _check(self, result: ReasoningResult) -> None:
        """Nothing was reasoned at all: an HTTP error rather than an empty 200."""
        if result.steps or result.answer is not None:
            return
        if result.status == "budget":
            raise budget_error(result.error or "budget exceeded")
        if result.status == "error":
            raise ApiError(502, f"reasoning failed: {result.error}", "api_error", code="reasoning_failed")

    def _usage(self, result: ReasoningResult) -> dict[str, Any]:
        return usage_of(result.usage["input_tokens"], result.usage["output_tokens"])

    def _message(self, result: ReasoningResult) -> dict[str, Any]:
        chain = "\n".join(f"Step {s.n}: {s.text}" for s in result.steps) or None
        msg = assistant_message(result.answer, reasoning=chain)
        if chain:
            msg["reasoning"] = chain
        return msg

    async def complete(self) -> tuple[int, bytes]:
        async with self._admitted():
            result = await self.reasoner.run(self.prompt)
        self._check(result)
        body = completion("chatcmpl-" + result.run_id, result.model or self.model, self._message(result),
                          _FINISH[result.status], self._usage(result), {"mode": "reasoning", **result.to_json()})
        return 200, body

    async def stream(self, start: StartStream) -> None:
        chunks: Chunks | None = None
        body: SendBody | None = None
        try:
            async with self._admitted(), contextlib.aclosing(self.reasoner.stream(self.prompt)) as events:
                async for ev in events:
                    if ev.kind == "final":
                        assert ev.result is not None
                        await self._end(ev.result, chunks, body, start)
                        return
                    if ev.kind not in _SENT:
                        continue
                    if body is None or chunks is None:  # the response starts with the first step
                        chunks = Chunks("chatcmpl-" + ev.run_id, self.model)
                        body = await start()
                        await body(chunks.delta({"role": "assistant", "content": ""}), True)
                    await body(_frame(ev, chunks), True)
        except Exception as exc:
            if body is None:
                raise
            await body(sse_error(to_api_error(exc)), False)

    async def _end(self, result: ReasoningResult, chunks: Chunks | None, body: SendBody | None,
                   start: StartStream) -> None:
        if body is None or chunks is None:
            self._check(result)
            chunks = Chunks("chatcmpl-" + result.run_id, self.model)
            body = await start()
            await body(chunks.delta({"role": "assistant", "content": ""}), True)
        if result.answer:
            await body(chunks.text(result.answer), True)
        extra = {"toolmesh": {"type": "final", "mode": "reasoning", **result.to_json()}}
        finish = _FINISH[result.status]
        if self.call.include_usage:
            await body(chunks.finish(finish), True)
            await body(chunks.usage(self._usage(result), extra) + DONE, False)
        else:
            await body(chunks.finish(finish, extra) + DONE, False)


def _frame(ev: ReasoningEvent, chunks: Chunks) -> bytes:
    """The SSE frame of an engine event: step text as reasoning deltas, the rest in ``toolmesh``."""
    if ev.kind == "step_delta":
        return chunks.delta({"reasoning_content": ev.text, "reasoning": ev.text})
    info = ev.to_json()
    info.pop("run_id", None)
    if ev.kind == "reasoning_delta":  # the provider's own reasoning, kept apart from the steps
        info["type"] = "provider_reasoning"
    return _with_toolmesh(chunks.delta({}), info)


def _with_toolmesh(frame: bytes, info: dict[str, Any]) -> bytes:
    """Add a top-level ``toolmesh`` field to a serialised chunk frame (``data: {...}\\n\\n``)."""
    return frame[:-3] + b',"toolmesh":' + orjson.dumps(info) + b"}\n\n"
