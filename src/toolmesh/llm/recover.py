"""Recover tool calls that a model wrote as text instead of structured ``tool_calls``.

Local servers and small models often answer with the call in the content: bare JSON
(``{"name": ..., "arguments": {...}}``, ``"parameters"``, OpenAI-like
``{"type": "function", "function": {...}}``, a list of those, ``{"tool_calls": [...]}``),
```` ```json ```` fences, ``<tool_call>...</tool_call>`` tags (Qwen/Hermes) and
``<function=name>{...}</function>`` (Llama 3.1; also Qwen3-Coder's ``<parameter=k>v</parameter>``).

Only names of offered tools are recovered (exact, ``functions.``-prefixed, or a unique
case-insensitive match). Markup that clearly meant a call but does not parse becomes a
:class:`ToolCall` with ``parse_error`` set, so the agent can tell the model — never dropped.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from typing import Any

import orjson

from toolmesh.llm.types import ToolCall

__all__ = ["recover_tool_calls", "tool_names"]

_ids = itertools.count()


def _json_number(token: str) -> int | float:
    # Numbers as orjson (every other path here) reads them: NaN, Infinity and numbers that
    # overflow a double are not JSON; integers beyond 64 bits become floats.
    try:
        value: int | float = float(token) if any(c in token for c in ".eE") else int(token)
        if isinstance(value, int) and not -(2**63) <= value < 2**64:
            value = float(value)
    except (ValueError, OverflowError):
        value = math.inf
    if not math.isfinite(value):
        raise json.JSONDecodeError(f"number out of range: {token[:32]}", token, 0)
    return value


def _no_constant(token: str) -> Any:
    raise json.JSONDecodeError(f"{token} is not valid JSON", token, 0)


# The stdlib decoder is used where a position is needed (raw_decode), made as strict as orjson.
_DECODER = json.JSONDecoder(parse_int=_json_number, parse_float=_json_number, parse_constant=_no_constant)

_TAG = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)
_FUNC = re.compile(r"<function=([\w.\-]+)>\s*(.*?)\s*(?:</function>|$)", re.S)
_PARAM = re.compile(r"<parameter=([\w.\-]+)>\s*(.*?)\s*</parameter>", re.S)
_FENCE = re.compile(r"```[ \t]*(?:json|tool_call|tool_code|javascript|js)?[ \t]*\n?(.*?)```", re.S | re.I)
_NAME_IN = re.compile(r'"(?:name|function)"\s*:\s*"([^"]+)"')
# The head of an object that is a call by its first key(s), even if the rest is broken.
_CALL_HEAD = re.compile(r'\{\s*(?:"type"\s*:\s*"function"\s*,\s*)?(?:"function"\s*:\s*\{\s*)?'
                        r'"(?:name|function)"\s*:\s*"([^"]+)"')
# Special tokens some chat templates leave around a text-form call.
_MARKERS = ("[TOOL_CALLS]", "<|python_tag|>", "<tool_calls>", "</tool_calls>", "<|tool_call|>")
_ARG_KEYS = ("arguments", "parameters", "args", "input", "tool_input")


def tool_names(tools: list[dict[str, Any]]) -> list[str]:
    """Names of tools given in OpenAI function form (or bare ``{"name": ...}``)."""
    out = []
    for t in tools:
        fn = t.get("function")
        name = fn.get("name") if isinstance(fn, dict) else t.get("name")
        if isinstance(name, str):
            out.append(name)
    return out


class _Resolver:
    __slots__ = ("exact", "folded")

    def __init__(self, names: list[str]) -> None:
        self.exact: set[str] = set(names)
        folded: dict[str, str | None] = {}
        for n in names:
            k = n.lower()
            folded[k] = None if k in folded and folded[k] != n else n
        self.folded = folded

    def __call__(self, raw: object) -> str | None:
        if not isinstance(raw, str):
            return None
        name = raw.strip()
        if name in self.exact:
            return name
        if name.startswith("functions."):
            return self(name[10:])
        return self.folded.get(name.lower())


def _new(name: str, args: Any) -> ToolCall:
    """A recovered call from a decoded arguments value (dict, JSON string, or missing)."""
    cid = f"call_{next(_ids)}"
    if args is None:
        return ToolCall(cid, name, {}, "{}", recovered=True)
    if isinstance(args, dict):
        try:
            return ToolCall(cid, name, args, orjson.dumps(args).decode(), recovered=True)
        except TypeError as e:  # a lone surrogate ("\ud800") let through by the stdlib decoder
            return ToolCall(cid, name, {}, json.dumps(args), parse_error=f"arguments are not valid JSON: {e}",
                            recovered=True)
    if isinstance(args, str):
        try:
            decoded = orjson.loads(args) if args.strip() else {}
        except orjson.JSONDecodeError as e:
            return ToolCall(cid, name, {}, args, parse_error=f"arguments are not valid JSON: {e}", recovered=True)
        if isinstance(decoded, dict):
            return ToolCall(cid, name, decoded, args, recovered=True)
    return ToolCall(cid, name, {}, args if isinstance(args, str) else _dumps(args),
                    parse_error="arguments are not a JSON object", recovered=True)


def _dumps(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # a lone surrogate let through by the stdlib decoder
        return json.dumps(value)


def _broken(name: str, raw: str, err: str) -> ToolCall:
    return ToolCall(f"call_{next(_ids)}", name, {}, raw, parse_error=f"tool call is not valid JSON: {err}",
                    recovered=True)


def _shape(obj: Any, resolve: _Resolver) -> list[ToolCall] | None:
    """Tool calls in a decoded JSON value, or ``None`` when it is not tool-call shaped
    (or names a tool that was not offered)."""
    if isinstance(obj, list):
        if not obj:
            return None
        calls: list[ToolCall] = []
        for item in obj:
            got = _shape(item, resolve)
            if got is None:
                return None
            calls.extend(got)
        return calls
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("tool_calls"), list):
        return _shape(obj["tool_calls"], resolve)
    fn = obj.get("function")
    if isinstance(fn, dict):  # {"type": "function", "function": {"name", "arguments"}}
        return _shape(fn, resolve)
    raw_name = obj.get("name", fn if isinstance(fn, str) else obj.get("tool"))
    name = resolve(raw_name)
    if name is None:
        return None
    extra = set(obj) - {"name", "function", "tool", "type", "id", *_ARG_KEYS}
    if extra:
        return None
    args = next((obj[k] for k in _ARG_KEYS if k in obj), None)
    return [_new(name, args)]


def _from_json_text(body: str, resolve: _Resolver, explicit: bool) -> list[ToolCall] | None:
    """Calls in ``body`` (the inside of a tag or fence). ``explicit``: the markup itself says
    "tool call", so unparseable content still yields a call with ``parse_error``."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        seq = _json_sequence(body)
        if seq is not None:
            return _shape(seq, resolve)
        name_m = _NAME_IN.search(body)
        name = resolve(name_m.group(1)) if name_m else None
        if name is not None:
            return [_broken(name, body, str(e))]
        if explicit and name_m is None:
            return [_broken("", body, str(e))]
        return None
    return _shape(obj, resolve)


def _json_sequence(body: str) -> list[Any] | None:
    """Several JSON values one after another (one call per line, say), or ``None``."""
    out: list[Any] = []
    i, n = 0, len(body)
    while i < n:
        while i < n and body[i] in " \t\r\n,;":
            i += 1
        if i >= n:
            break
        try:
            obj, i = _DECODER.raw_decode(body, i)
        except json.JSONDecodeError:
            return None
        out.append(obj)
    return out if len(out) > 1 else None


def _parse_param_value(v: str) -> Any:
    try:
        return orjson.loads(v)
    except orjson.JSONDecodeError:
        return v


def recover_tool_calls(text: str, tools: list[dict[str, Any]]) -> tuple[list[ToolCall], str]:
    """Tool calls written as text in ``text``, and the text that is not tool-call markup.

    Returns ``([], text)`` when nothing is recovered. Recovered calls have
    ``recovered=True`` and ids ``call_<n>`` unique within the process."""
    if not text or not tools:
        return [], text
    if "{" not in text and "<" not in text:
        return [], text
    resolve = _Resolver(tool_names(tools))
    spans: list[tuple[int, int, list[ToolCall]]] = []

    def add(start: int, end: int, calls: list[ToolCall] | None) -> None:
        if calls:
            spans.append((start, end, calls))

    if "<tool_call>" in text:
        for m in _TAG.finditer(text):
            inner = m.group(1)
            fm = _FUNC.search(inner)
            add(m.start(), m.end(), _from_function_tag(fm, resolve) if fm else _from_json_text(inner, resolve, True))
    if "<function=" in text:
        for m in _FUNC.finditer(text):
            if not _covered(spans, m.start()):
                add(m.start(), m.end(), _from_function_tag(m, resolve))
    if "```" in text:
        for m in _FENCE.finditer(text):
            if not _covered(spans, m.start()):
                add(m.start(), m.end(), _from_json_text(m.group(1).strip(), resolve, False))
    if not spans:
        _bare(text, resolve, add)
    if not spans:
        return [], text
    spans.sort(key=lambda s: s[0])
    calls: list[ToolCall] = []
    rest: list[str] = []
    pos = 0
    for start, end, got in spans:
        rest.append(text[pos:start])
        calls.extend(got)
        pos = end
    rest.append(text[pos:])
    remaining = "".join(rest)
    for marker in _MARKERS:
        if marker in remaining:
            remaining = remaining.replace(marker, "")
    return calls, remaining.strip()


def _covered(spans: list[tuple[int, int, list[ToolCall]]], i: int) -> bool:
    return any(s <= i < e for s, e, _ in spans)


def _from_function_tag(m: re.Match[str], resolve: _Resolver) -> list[ToolCall] | None:
    name = resolve(m.group(1))
    if name is None:
        return None
    body = m.group(2).strip()
    if "<parameter=" in body:
        return [_new(name, {k: _parse_param_value(v.strip()) for k, v in _PARAM.findall(body)})]
    if not body:
        return [_new(name, None)]
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        return [_broken(name, body, str(e))]
    if isinstance(obj, dict) and resolve(obj.get("name")) == name and any(k in obj for k in _ARG_KEYS):
        obj = next(obj[k] for k in _ARG_KEYS if k in obj)
    return [_new(name, obj)]


def _bare(text: str, resolve: _Resolver, add: Any) -> None:
    """JSON objects/lists embedded in the text (or the whole text) that are tool-call shaped."""
    i, n = 0, len(text)
    while i < n:
        j = _next_open(text, i)
        if j < 0:
            return
        try:
            obj, end = _DECODER.raw_decode(text, j)
        except json.JSONDecodeError as e:
            # An object that names an offered tool but does not parse: a broken call, not prose.
            nm = _CALL_HEAD.match(text, j)
            name = resolve(nm.group(1)) if nm else None
            if name is not None:
                add(j, n, [_broken(name, text[j:].strip(), e.msg)])
                return
            i = j + 1
            continue
        calls = _shape(obj, resolve)
        if calls:
            add(j, end, calls)
        i = end  # a decoded value that is not a call is data; do not look inside it


def _next_open(text: str, i: int) -> int:
    a, b = text.find("{", i), text.find("[", i)
    if a < 0:
        return b
    if b < 0:
        return a
    return min(a, b)
