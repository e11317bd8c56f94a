"""Wire formats of the scripted LLM server: one rendered turn → OpenAI or Anthropic JSON/SSE.

A :class:`Turn` is a script response after templating; it is API-neutral. The functions
here produce exactly the shapes the real services send (field names, event order).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass(slots=True)
class TurnCall:
    """One tool call to play. ``arguments`` is sent verbatim when it is a string."""

    id: str
    name: str
    arguments: dict[str, Any] | str


@dataclass(slots=True)
class Turn:
    """One successful completion to play (status 200, API-neutral)."""

    model: str
    text: str = ""
    reasoning: str = ""
    tool_calls: list[TurnCall] = field(default_factory=list)
    #: ``None`` → no usage in the response at all.
    usage: dict[str, int] | None = None
    finish_reason: str | None = None
    chunk_chars: int = 16
    reasoning_field: str = "reasoning_content"

    def args_json(self, call: TurnCall) -> str:
        a = call.arguments
        return a if isinstance(a, str) else orjson.dumps(a).decode()

    def finish(self) -> str:
        return self.finish_reason or ("tool_calls" if self.tool_calls else "stop")


def _pieces(s: str, n: int) -> Iterator[str]:
    n = max(1, n)
    for i in range(0, len(s), n):
        yield s[i : i + n]


# -- OpenAI chat completions ---------------------------------------------------------------


def _openai_usage(u: dict[str, int]) -> dict[str, Any]:
    i, o = u.get("input_tokens", 0), u.get("output_tokens", 0)
    return {
        "prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o,
        "prompt_tokens_details": {"cached_tokens": u.get("cached_input_tokens", 0)},
        "completion_tokens_details": {"reasoning_tokens": u.get("reasoning_tokens", 0)},
    }


def openai_completion(t: Turn, cid: str) -> bytes:
    msg: dict[str, Any] = {"role": "assistant", "content": t.text or None, "refusal": None}
    if t.reasoning:
        msg[t.reasoning_field] = t.reasoning
    if t.tool_calls:
        msg["tool_calls"] = [{"id": c.id, "type": "function",
                              "function": {"name": c.name, "arguments": t.args_json(c)}} for c in t.tool_calls]
    body: dict[str, Any] = {
        "id": cid, "object": "chat.completion", "created": int(time.time()), "model": t.model,
        "choices": [{"index": 0, "message": msg, "logprobs": None, "finish_reason": t.finish()}],
        "system_fingerprint": None,
    }
    if t.usage is not None:
        body["usage"] = _openai_usage(t.usage)
    return orjson.dumps(body)


def openai_chunks(t: Turn, cid: str, include_usage: bool) -> Iterator[bytes]:
    """SSE ``data:`` frames of one streamed completion, ``[DONE]`` included."""
    created = int(time.time())

    def frame(delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": t.model,
                 "system_fingerprint": None,
                 "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    yield frame({"role": "assistant", "content": ""})
    for p in _pieces(t.reasoning, t.chunk_chars):
        yield frame({t.reasoning_field: p})
    for p in _pieces(t.text, t.chunk_chars):
        yield frame({"content": p})
    for i, c in enumerate(t.tool_calls):
        yield frame({"tool_calls": [{"index": i, "id": c.id, "type": "function",
                                     "function": {"name": c.name, "arguments": ""}}]})
        for p in _pieces(t.args_json(c), t.chunk_chars):
            yield frame({"tool_calls": [{"index": i, "function": {"arguments": p}}]})
    yield frame({}, t.finish())
    if include_usage and t.usage is not None:
        tail = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": t.model,
                "system_fingerprint": None, "choices": [], "usage": _openai_usage(t.usage)}
        yield b"data: " + orjson.dumps(tail) + b"\n\n"
    yield b"data: [DONE]\n\n"


def openai_error(status: int, message: str, code: str | None, etype: str | None) -> bytes:
    default_type = {429: "requests", 404: "invalid_request_error", 400: "invalid_request_error"}.get(
        status, "server_error")
    return orjson.dumps({"error": {"message": message, "type": etype or default_type, "param": None, "code": code}})


# -- Anthropic Messages --------------------------------------------------------------------

_STOP = {"stop": "end_turn", "tool_calls": "tool_use", "length": "max_tokens"}


def _anthropic_usage(u: dict[str, int] | None, output: bool = True) -> dict[str, Any]:
    u = u or {}
    return {"input_tokens": u.get("input_tokens", 0), "output_tokens": u.get("output_tokens", 0) if output else 1,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": u.get("cached_input_tokens", 0)}


def _input_of(t: Turn, c: TurnCall) -> dict[str, Any]:
    if isinstance(c.arguments, dict):
        return c.arguments
    try:
        v = orjson.loads(c.arguments)
    except orjson.JSONDecodeError:
        return {}
    return v if isinstance(v, dict) else {}


def anthropic_message(t: Turn, mid: str) -> bytes:
    content: list[dict[str, Any]] = []
    if t.reasoning:
        content.append({"type": "thinking", "thinking": t.reasoning, "signature": "c2lnbmF0dXJl"})
    if t.text:
        content.append({"type": "text", "text": t.text})
    for c in t.tool_calls:
        content.append({"type": "tool_use", "id": c.id, "name": c.name, "input": _input_of(t, c)})
    body: dict[str, Any] = {"id": mid, "type": "message", "role": "assistant", "model": t.model, "content": content,
                            "stop_reason": _STOP.get(t.finish(), t.finish()), "stop_sequence": None}
    if t.usage is not None:
        body["usage"] = _anthropic_usage(t.usage)
    return orjson.dumps(body)


def anthropic_events(t: Turn, mid: str) -> Iterator[bytes]:
    """SSE ``event:``/``data:`` frames of one streamed message, in the API's order."""

    def ev(name: str, data: dict[str, Any]) -> bytes:
        return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    start: dict[str, Any] = {"id": mid, "type": "message", "role": "assistant", "model": t.model, "content": [],
             "stop_reason": None, "stop_sequence": None, "usage": _anthropic_usage(t.usage, output=False)}
    yield ev("message_start", {"type": "message_start", "message": start})
    yield ev("ping", {"type": "ping"})
    idx = 0
    if t.reasoning:
        yield ev("content_block_start", {"type": "content_block_start", "index": idx,
                                         "content_block": {"type": "thinking", "thinking": "", "signature": ""}})
        for p in _pieces(t.reasoning, t.chunk_chars):
            yield ev("content_block_delta", {"type": "content_block_delta", "index": idx,
                                             "delta": {"type": "thinking_delta", "thinking": p}})
        yield ev("content_block_delta", {"type": "content_block_delta", "index": idx,
                                         "delta": {"type": "signature_delta", "signature": "c2lnbmF0dXJl"}})
        yield ev("content_block_stop", {"type": "content_block_stop", "index": idx})
        idx += 1
    if t.text:
        yield ev("content_block_start", {"type": "content_block_start", "index": idx,
                                         "content_block": {"type": "text", "text": ""}})
        for p in _pieces(t.text, t.chunk_chars):
            yield ev("content_block_delta", {"type": "content_block_delta", "index": idx,
                                             "delta": {"type": "text_delta", "text": p}})
        yield ev("content_block_stop", {"type": "content_block_stop", "index": idx})
        idx += 1
    for c in t.tool_calls:
        yield ev("content_block_start", {"type": "content_block_start", "index": idx,
                                         "content_block": {"type": "tool_use", "id": c.id, "name": c.name,
                                                           "input": {}}})
        for p in _pieces(t.args_json(c), t.chunk_chars):
            yield ev("content_block_delta", {"type": "content_block_delta", "index": idx,
                                             "delta": {"type": "input_json_delta", "partial_json": p}})
        yield ev("content_block_stop", {"type": "content_block_stop", "index": idx})
        idx += 1
    delta: dict[str, Any] = {"type": "message_delta",
                             "delta": {"stop_reason": _STOP.get(t.finish(), t.finish()), "stop_sequence": None},
                             "usage": {"output_tokens": (t.usage or {}).get("output_tokens", 0)}}
    yield ev("message_delta", delta)
    yield ev("message_stop", {"type": "message_stop"})


_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                    529: "overloaded_error"}


def anthropic_error(status: int, message: str, etype: str | None) -> bytes:
    return orjson.dumps({"type": "error",
                         "error": {"type": etype or _ANTHROPIC_TYPES.get(status, "api_error"), "message": message}})
