"""The Anthropic Messages API (LLM-1) over the official ``anthropic`` SDK, retries off.

Converts the normalised model both ways: system messages → ``system``; assistant tool
calls → ``tool_use`` blocks; tool results → ``tool_result`` blocks in one user turn
(consecutive results, and a user message right after them, merged: the API wants strict
user/assistant alternation); OpenAI-form tools → ``input_schema`` tools; thinking blocks →
reasoning. Usage: ``input_tokens`` is the whole prompt (uncached + cache reads + cache writes),
``cached_input_tokens`` the cache reads.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import anthropic
import httpx2

from toolmesh.errors import LLMError, MalformedResponseError, ProviderUnavailableError
from toolmesh.llm.openai_provider import error_for_status, keep_headers, parse_arguments, with_recovery
from toolmesh.llm.provider import Provider
from toolmesh.llm.types import (
    ChatRequest,
    ChatResponse,
    FinishReason,
    Message,
    ReasoningDelta,
    StreamDone,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)

__all__ = ["DEFAULT_MAX_TOKENS", "AnthropicProvider", "to_anthropic"]

#: ``max_tokens`` is required by the API; used when the request gives none.
DEFAULT_MAX_TOKENS = 4096
_STOP: dict[str, FinishReason] = {"end_turn": "stop", "stop_sequence": "stop", "tool_use": "tool_calls",
                                  "max_tokens": "length", "refusal": "content_filter", "pause_turn": "stop"}

_ERROR_STATUS = {"overloaded_error": 529, "api_error": 500, "rate_limit_error": 429, "not_found_error": 404,
                 "invalid_request_error": 400, "request_too_large": 413}


def _tool(t: dict[str, Any]) -> dict[str, Any]:
    fn = t.get("function")
    if not isinstance(fn, dict):
        return t  # already Anthropic-shaped
    out: dict[str, Any] = {"name": fn["name"],
                           "input_schema": fn.get("parameters") or {"type": "object", "properties": {}}}
    if fn.get("description"):
        out["description"] = fn["description"]
    return out


def _tool_choice(choice: Any, parallel: bool | None) -> dict[str, Any]:
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") or choice.get("name")
        out: dict[str, Any] = {"type": "tool", "name": name}
    else:
        out = {"type": {"auto": "auto", "required": "any", "none": "none"}.get(choice, "auto")}
    if parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


def to_anthropic(request: ChatRequest) -> dict[str, Any]:
    """The Messages API parameters for a normalised request."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for m in request.messages:
        if m.role == "system":
            if m.content:
                system.append(m.content)
        elif m.role == "user":
            add("user", [{"type": "text", "text": m.content or ""}])
        elif m.role == "tool":
            add("user", [{"type": "tool_result", "tool_use_id": m.tool_call_id or "", "content": m.content or ""}])
        else:
            blocks: list[dict[str, Any]] = []
            if m.content:
                blocks.append({"type": "text", "text": m.content})
            blocks.extend({"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                          for c in m.tool_calls)
            add("assistant", blocks or [{"type": "text", "text": ""}])
    params: dict[str, Any] = {"model": request.model, "messages": turns,
                              "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS}
    if system:
        params["system"] = "\n\n".join(system)
    if request.tools:
        params["tools"] = [_tool(t) for t in request.tools]
        params["tool_choice"] = _tool_choice(request.tool_choice, request.parallel_tool_calls)
    if request.temperature is not None:
        params["temperature"] = request.temperature
    if request.stop:
        params["stop_sequences"] = request.stop
    return params


def _usage(u: Any, output_tokens: int | None = None) -> Usage:
    if u is None:
        return Usage(estimated=True)
    read = int(getattr(u, "cache_read_input_tokens", 0) or 0)
    made = int(getattr(u, "cache_creation_input_tokens", 0) or 0)
    out = output_tokens if output_tokens is not None else int(getattr(u, "output_tokens", 0) or 0)
    return Usage(int(getattr(u, "input_tokens", 0) or 0) + read + made, out, read)


class AnthropicProvider(Provider):
    """Claude models (or any Messages-API-compatible endpoint). ``api_key`` defaults to
    ``$ANTHROPIC_API_KEY``; ``base_url`` is the API root (the SDK appends ``/v1/messages``)."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *, name: str = "anthropic",
                 timeout: float = 60.0) -> None:
        self.name = name
        self.timeout = timeout
        self._client = anthropic.AsyncAnthropic(
            base_url=base_url, api_key=api_key or os.environ.get("ANTHROPIC_API_KEY") or "not-needed",
            max_retries=0, timeout=timeout)
        self._create = cast(Any, self._client.messages.with_raw_response).create

    def _params(self, request: ChatRequest, stream: bool) -> dict[str, Any]:
        body = to_anthropic(request)
        body.update(request.extra)  # e.g. {"thinking": {...}}
        # The body rides in extra_body (merged over the SDK's JSON), skipping the SDK's
        # per-field TypedDict transform of every message (~1 ms a call, no change to the JSON).
        params: dict[str, Any] = {"model": body.pop("model"), "max_tokens": body.pop("max_tokens"), "messages": (),
                                  "extra_body": body}
        if stream:
            params["stream"] = True
        return params

    def _fail(self, e: Exception, model: str) -> LLMError:
        if isinstance(e, anthropic.APIStatusError):
            body: dict[str, Any] = e.body if isinstance(e.body, dict) else {}
            inner = body.get("error")
            err: dict[str, Any] = inner if isinstance(inner, dict) else body
            status = e.status_code
            if status < 400:  # an ``error`` event inside a 200 stream: its type says what it is
                status = _ERROR_STATUS.get(str(err.get("type")), 500)
            return error_for_status(status, str(err.get("message") or e.message), provider=self.name,
                                    model=model, code=err.get("type"), headers=e.response.headers)
        if isinstance(e, anthropic.APIResponseValidationError):
            return MalformedResponseError(f"{self.name} {model}: malformed response: {e}", provider=self.name,
                                          model=model, status=e.status_code)
        if isinstance(e, ValueError):  # the SDK's JSON decoding of a broken body or event
            return MalformedResponseError(f"{self.name} {model}: malformed response: {e}", provider=self.name,
                                          model=model, status=200)
        what = "timed out" if isinstance(e, (anthropic.APITimeoutError, httpx2.TimeoutException)) else "unreachable"
        return ProviderUnavailableError(f"{self.name} {model}: {what}: {e}", provider=self.name, model=model)

    async def complete(self, request: ChatRequest, *, timeout: float | None = None) -> ChatResponse:
        model = request.model
        t0 = time.perf_counter()
        try:
            raw = await self._create(**self._params(request, False), timeout=timeout or self.timeout)
            ttft = (time.perf_counter() - t0) * 1000
            msg = await raw.parse()
        except (anthropic.APIError, httpx2.HTTPError, ValueError) as e:
            raise self._fail(e, model) from e
        try:
            text: list[str] = []
            reasoning: list[str] = []
            calls: list[ToolCall] = []
            for block in msg.content:
                kind = block.type
                if kind == "text":
                    text.append(block.text)
                elif kind == "thinking":
                    reasoning.append(block.thinking)
                elif kind == "tool_use":
                    args = block.input if isinstance(block.input, dict) else {}
                    calls.append(ToolCall(block.id, block.name, args, _dumps(args)))
            message = Message("assistant", "".join(text) or None, calls, reasoning="".join(reasoning) or None)
            finish = _STOP.get(msg.stop_reason or "end_turn", "stop")
            usage = _usage(getattr(msg, "usage", None))
        except AttributeError as e:
            raise MalformedResponseError(f"{self.name} {model}: malformed response: {e}", provider=self.name,
                                         model=model, status=raw.status_code) from e
        if with_recovery(request, message):
            finish = "tool_calls"
        return ChatResponse(message, usage, str(getattr(msg, "model", None) or model), self.name, finish,
                            (time.perf_counter() - t0) * 1000, ttft, keep_headers(raw.headers))

    async def stream(self, request: ChatRequest, *, timeout: float | None = None) -> AsyncIterator[StreamEvent]:
        model = request.model
        t0 = time.perf_counter()
        ttft: float | None = None
        text: list[str] = []
        reasoning: list[str] = []
        calls: dict[int, list[str]] = {}  # content block index -> [id, name, json pieces...]
        order: list[int] = []
        start_usage: Any = None
        started = False
        out_tokens: int | None = None
        finish: FinishReason = "stop"
        served = model
        headers: dict[str, str] = {}
        try:
            raw = await self._create(**self._params(request, True), timeout=timeout or self.timeout)
            headers = keep_headers(raw.headers)
            events = await raw.parse()
            async for ev in events:
                kind = ev.type
                if kind == "content_block_delta":
                    d = ev.delta
                    ttft = ttft or (time.perf_counter() - t0) * 1000
                    if d.type == "text_delta":
                        text.append(d.text)
                        yield TextDelta(d.text)
                    elif d.type == "thinking_delta":
                        reasoning.append(d.thinking)
                        yield ReasoningDelta(d.thinking)
                    elif d.type == "input_json_delta" and ev.index in calls:
                        calls[ev.index].append(d.partial_json)
                        yield ToolCallDelta(order.index(ev.index), None, None, d.partial_json)
                elif kind == "content_block_start":
                    block = ev.content_block
                    if block.type == "tool_use":
                        ttft = ttft or (time.perf_counter() - t0) * 1000
                        calls[ev.index] = [block.id, block.name]
                        order.append(ev.index)
                        yield ToolCallDelta(len(order) - 1, block.id, block.name, "")
                elif kind == "message_start":
                    started = True
                    start_usage = getattr(ev.message, "usage", None)
                    served = ev.message.model or model
                elif kind == "message_delta":
                    if ev.delta.stop_reason:
                        finish = _STOP.get(ev.delta.stop_reason, "stop")
                    if ev.usage is not None and ev.usage.output_tokens is not None:
                        out_tokens = int(ev.usage.output_tokens)
        except (anthropic.APIError, httpx2.HTTPError, ValueError) as e:
            raise self._fail(e, model) from e
        except AttributeError as e:
            raise MalformedResponseError(f"{self.name} {model}: malformed stream event: {e}", provider=self.name,
                                         model=model, status=200) from e
        if not started:
            raise MalformedResponseError(f"{self.name} {model}: malformed stream: no message_start event",
                                         provider=self.name, model=model, status=200)
        tool_calls = [parse_arguments(calls[i][0], calls[i][1], "".join(calls[i][2:])) for i in order]
        message = Message("assistant", "".join(text) or None, tool_calls, reasoning="".join(reasoning) or None)
        if with_recovery(request, message):
            finish = "tool_calls"
            for i, call in enumerate(message.tool_calls):
                yield ToolCallDelta(i, call.id, call.name, call.raw_arguments)
        usage = _usage(start_usage, out_tokens) if start_usage is not None else Usage(estimated=True)
        yield StreamDone(ChatResponse(message, usage, served, self.name, finish, (time.perf_counter() - t0) * 1000,
                                      ttft, headers))

    async def aclose(self) -> None:
        await self._client.close()


def _dumps(obj: Any) -> str:
    import orjson

    return orjson.dumps(obj).decode()
