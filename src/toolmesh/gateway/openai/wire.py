"""The OpenAI chat-completions wire format: request parsing and validation, response shapes.

Parsing is hand-written over the ``orjson`` result (no per-request pydantic model): it checks
exactly what the gateway relies on, keeps the caller's ``tools`` objects as they are (no
copies), and raises :class:`ApiError` with OpenAI's ``param`` naming the offending field.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from toolmesh.gateway.errors import ApiError
from toolmesh.llm import types as t

#: Request fields forwarded verbatim to the model on the pass-through path (``tools`` given).
PASS_THROUGH = ("top_p", "presence_penalty", "frequency_penalty", "seed", "response_format", "logit_bias",
                "reasoning_effort")
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
_CHOICES = frozenset({"auto", "none", "required"})
_FN_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_MAX_ID = 256
#: The largest ``max_tokens`` taken (no model writes more; a bigger integer cannot be sent on as one:
#: orjson reads integers past 64 bits as floats, and 1e30 made into an int failed to encode).
MAX_TOKENS_LIMIT = 2**31 - 1


def bad(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    """A 400 ``invalid_request_error``."""
    return ApiError(400, message, param=param, code=code)


@dataclass(slots=True)
class ChatCall:
    """One validated ``POST /v1/chat/completions`` request."""

    model: str
    messages: list[t.Message]
    stream: bool = False
    include_usage: bool = False
    #: ``None``: no ``tools`` field (the agent runs the tenant's MCP tools); a list: pass-through.
    tools: list[dict[str, Any]] | None = None
    tool_choice: t.ToolChoice = "auto"
    parallel_tool_calls: bool | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    user: str | None = None
    session: str | None = None
    scenario: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: The request's ``toolmesh`` extension object as sent (e.g. ``{"reasoning": {...}}``), unvalidated.
    extra_toolmesh: Any = None


def parse_chat(raw: bytes, session_header: str | None = None) -> ChatCall:
    """Validate a request body; raises :class:`ApiError` (400) naming the first problem."""
    if not raw:
        raise bad("the request body is empty; expected a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad(f"the request body is not valid JSON: {exc}") from None
    if type(body) is not dict:
        raise bad("the request body must be a JSON object")
    model = body.get("model")
    if type(model) is not str or not model:
        raise bad("'model' is required and must be a non-empty string", "model")
    call = ChatCall(model, _messages(body.get("messages")))
    get = body.get
    stream = get("stream")
    if stream is not None:
        call.stream = _bool(stream, "stream")
    opts = get("stream_options")
    if opts is not None:
        if type(opts) is not dict:
            raise bad("'stream_options' must be an object", "stream_options")
        inc = opts.get("include_usage")
        call.include_usage = inc is not None and _bool(inc, "stream_options.include_usage")
    n = get("n")
    if n is not None and (type(n) is bool or n != 1):  # True == 1 in Python, not in JSON
        raise bad("only n=1 is supported", "n")
    tools = get("tools")
    if tools is not None:
        call.tools = _tools(tools)
    choice = get("tool_choice")
    if choice is not None:
        call.tool_choice = _tool_choice(choice)
    ptc = get("parallel_tool_calls")
    if ptc is not None:
        call.parallel_tool_calls = _bool(ptc, "parallel_tool_calls")
    temp = get("temperature")
    if temp is not None:
        if not _number(temp) or not 0 <= temp <= 2:
            raise bad("'temperature' must be a number between 0 and 2", "temperature")
        call.temperature = float(temp)
    for key in ("max_tokens", "max_completion_tokens"):  # both checked; the newer name wins when both are set
        mt = get(key)
        if mt is not None:
            if type(mt) is float and mt.is_integer() and mt <= MAX_TOKENS_LIMIT:  # JSON: 16.0 is the integer 16
                mt = int(mt)
            if type(mt) is not int or not 1 <= mt <= MAX_TOKENS_LIMIT:
                raise bad(f"'{key}' must be a positive integer (at most {MAX_TOKENS_LIMIT})", key)
            call.max_tokens = mt
    stop = get("stop")
    if stop is not None:
        if type(stop) is str:
            call.stop = [stop]
        elif type(stop) is list and len(stop) <= 4 and all(type(s) is str for s in stop):
            call.stop = stop or None
        else:
            raise bad("'stop' must be a string or a list of up to 4 strings", "stop")
    user = get("user")
    if user is not None:
        call.user = _ident(user, "user")
    meta = get("metadata")
    if meta is not None:
        if type(meta) is not dict or not all(type(v) is str for v in meta.values()):
            raise bad("'metadata' must be an object of string values", "metadata")
        if "session_id" in meta:
            call.session = _ident(meta["session_id"], "metadata.session_id")
        if "scenario" in meta:
            call.scenario = _ident(meta["scenario"], "metadata.scenario")
    if session_header is not None:
        call.session = _ident(session_header, "X-Toolmesh-Session")
    for key in PASS_THROUGH:
        v = get(key)
        if v is not None:
            call.extra[key] = v
    call.extra_toolmesh = get("toolmesh")
    return call


def _bool(v: Any, param: str) -> bool:
    if type(v) is not bool:
        raise bad(f"'{param}' must be a boolean", param)
    return v


def _number(v: Any) -> bool:
    return type(v) is int or type(v) is float


def _ident(v: Any, param: str) -> str:
    if type(v) is not str or not v or len(v) > _MAX_ID:
        raise bad(f"'{param}' must be a non-empty string of at most {_MAX_ID} characters", param)
    return v


def _text(content: Any, param: str) -> str | None:
    """Message content: a string, ``null``, or a list of text parts (joined)."""
    if content is None or type(content) is str:
        return content
    if type(content) is list:
        out = []
        for i, part in enumerate(content):
            if type(part) is not dict or part.get("type") not in ("text", "refusal"):
                raise bad("only text content parts are supported (type 'text')", f"{param}[{i}]")
            text = part.get("text", part.get("refusal"))
            if type(text) is not str:
                raise bad("a text content part needs a string 'text'", f"{param}[{i}].text")
            out.append(text)
        return "".join(out)
    raise bad("'content' must be a string, an array of text parts or null", param)


def _messages(raw: Any) -> list[t.Message]:
    if type(raw) is not list or not raw:
        raise bad("'messages' is required and must be a non-empty array", "messages")
    out: list[t.Message] = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if type(m) is not dict:
            raise bad("each message must be an object", where)
        role = m.get("role")
        if role not in _ROLES:
            raise bad("'role' must be one of system, developer, user, assistant, tool", f"{where}.role")
        content = _text(m.get("content"), f"{where}.content")
        if role == "assistant":
            calls = _assistant_calls(m.get("tool_calls"), where)
            if content is None and not calls:
                raise bad("an assistant message needs 'content' or 'tool_calls'", f"{where}.content")
            out.append(t.Message("assistant", content, calls))
        elif role == "tool":
            tcid = m.get("tool_call_id")
            if type(tcid) is not str or not tcid:
                raise bad("a tool message needs a string 'tool_call_id'", f"{where}.tool_call_id")
            name = m.get("name")
            out.append(t.Message("tool", content or "", tool_call_id=tcid, name=name if type(name) is str else None))
        else:
            if content is None:
                raise bad(f"a {role} message needs 'content'", f"{where}.content")
            out.append(t.Message("system" if role == "developer" else role, content))
    return out


def _assistant_calls(raw: Any, where: str) -> list[t.ToolCall]:
    if raw is None:
        return []
    if type(raw) is not list:
        raise bad("'tool_calls' must be an array", f"{where}.tool_calls")
    calls = []
    for j, c in enumerate(raw):
        p = f"{where}.tool_calls[{j}]"
        fn = c.get("function") if type(c) is dict else None
        if type(fn) is not dict or type(c.get("id")) is not str or type(fn.get("name")) is not str:
            raise bad("a tool call needs 'id' and 'function': {'name', 'arguments'}", p)
        args = fn.get("arguments", "")
        if type(args) is not str:
            raise bad("'arguments' must be a JSON string", f"{p}.function.arguments")
        # kept raw: the pass-through sends it back as it came, the agent never re-parses history
        calls.append(t.ToolCall(c["id"], fn["name"], {}, args or "{}"))
    return calls


def _tools(raw: Any) -> list[dict[str, Any]]:
    if type(raw) is not list:
        raise bad("'tools' must be an array of function tools", "tools")
    for i, tool in enumerate(raw):
        fn = tool.get("function") if type(tool) is dict else None
        if type(fn) is not dict or tool.get("type", "function") != "function":
            raise bad("each tool must be {'type': 'function', 'function': {...}}", f"tools[{i}]")
        name = fn.get("name")
        if type(name) is not str or not _FN_NAME.match(name):
            raise bad("a function name must be 1-64 characters of a-z, A-Z, 0-9, _, - or .",
                      f"tools[{i}].function.name")
        params = fn.get("parameters")
        if params is not None and type(params) is not dict:
            raise bad("'parameters' must be a JSON Schema object", f"tools[{i}].function.parameters")
        desc = fn.get("description")
        if desc is not None and type(desc) is not str:
            raise bad("'description' must be a string", f"tools[{i}].function.description")
    return raw


def _tool_choice(raw: Any) -> t.ToolChoice:
    if type(raw) is str:
        if raw not in _CHOICES:
            raise bad("'tool_choice' must be auto, none, required or a function choice", "tool_choice")
        return raw  # type: ignore[return-value]
    fn = raw.get("function") if type(raw) is dict else None
    if type(fn) is not dict or type(fn.get("name")) is not str or raw.get("type", "function") != "function":
        raise bad("'tool_choice' object must be {'type': 'function', 'function': {'name': ...}}", "tool_choice")
    return {"type": "function", "function": {"name": fn["name"]}}


# -- responses ---------------------------------------------------------------------------------


def usage_of(input_tokens: int, output_tokens: int, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    """OpenAI's ``usage`` object."""
    out: dict[str, Any] = {"prompt_tokens": input_tokens, "completion_tokens": output_tokens,
                           "total_tokens": input_tokens + output_tokens}
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    if reasoning:
        out["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return out


def completion(rid: str, model: str, message: dict[str, Any], finish: str, usage: dict[str, Any],
               toolmesh: dict[str, Any] | None = None) -> bytes:
    """A ``chat.completion`` object, serialised."""
    body: dict[str, Any] = {
        "id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": usage, "system_fingerprint": None,
    }
    if toolmesh is not None:
        body["toolmesh"] = toolmesh
    return orjson.dumps(body)


def assistant_message(content: str | None, calls: list[t.ToolCall] | None = None,
                      reasoning: str | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if calls:
        msg["tool_calls"] = [c.to_openai() for c in calls]
    if reasoning:
        msg["reasoning_content"] = reasoning
    return msg


class Chunks:
    """Serialised ``chat.completion.chunk`` SSE frames of one response (the constant prefix built once)."""

    __slots__ = ("_head", "_tail_none", "model", "rid")

    def __init__(self, rid: str, model: str) -> None:
        self.rid = rid
        self.model = model
        head = orjson.dumps({"id": rid, "object": "chat.completion.chunk", "created": int(time.time()),
                             "model": model, "system_fingerprint": None})
        self._head = b"data: " + head[:-1] + b',"choices":[{"index":0,"delta":'
        self._tail_none = b',"logprobs":null,"finish_reason":null}]}\n\n'

    def delta(self, delta: dict[str, Any]) -> bytes:
        return self._head + orjson.dumps(delta) + self._tail_none

    def text(self, text: str) -> bytes:
        return self._head + b'{"content":' + orjson.dumps(text) + b"}" + self._tail_none

    def finish(self, reason: str, extra: dict[str, Any] | None = None) -> bytes:
        tail = b',"logprobs":null,"finish_reason":' + orjson.dumps(reason) + b"}]"
        if extra:
            tail += b"," + orjson.dumps(extra)[1:]
            return self._head + b"{}" + tail + b"\n\n"
        return self._head + b"{}" + tail + b"}\n\n"

    def usage(self, usage: dict[str, Any], extra: dict[str, Any] | None = None) -> bytes:
        body: dict[str, Any] = {"id": self.rid, "object": "chat.completion.chunk", "created": int(time.time()),
                                "model": self.model, "system_fingerprint": None, "choices": [], "usage": usage}
        if extra:
            body.update(extra)
        return b"data: " + orjson.dumps(body) + b"\n\n"


DONE = b"data: [DONE]\n\n"


def sse_error(err: ApiError) -> bytes:
    """An error after the stream started (the SDK raises ``APIError`` on it)."""
    return b"data: " + err.openai_body() + b"\n\n"
