"""ReAct text protocol (AGT-5) for models without native tool calling.

    system = react_system_prompt(tools)          # OpenAI-form tools -> instructions + compact tool list
    step = parse_react(reply, {"inventory__check_stock", ...}, schemas=...)
    # ReactAction(thought, tool, arguments, raw) | ReactFinal(thought, answer) | ReactError(message, raw)

Parsing is lenient where the intent is clear and strict where it is not: markers in any
case, with ``:`` or ``：``, in Markdown bold or numbered (``Thought 2:``); ``Action Input``
as JSON, fenced JSON, Python-ish dicts, ``key=value`` pairs, a call ``tool({...})`` on the
Action line, or a bare string for a tool with one required parameter. Everything from
the first ``Observation:`` on is cut: the model must not invent tool results.
Several Action blocks before any Observation are all returned (``ReactAction.parallel``)
so independent calls run concurrently; the prompt allows it. A reply with no protocol
marker at all is taken as the final answer (never an empty reply); a reply with
markers but no usable Action or Final Answer is a :class:`ReactError` whose message is
fed back to the model as the Observation.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["REACT_STOP", "ReactAction", "ReactError", "ReactFinal", "ReactStep", "format_observation", "parse_react",
           "react_system_prompt"]

#: Stop sequences to pass to the provider so generation ends before an invented Observation.
REACT_STOP = ["\nObservation:", "\nObservation：", "\n观察："]


@dataclass(slots=True)
class ReactAction:
    """A tool call. ``parallel`` holds further complete actions listed before any Observation."""

    thought: str
    tool: str
    arguments: dict[str, Any]
    raw: str
    parallel: list[ReactAction] = field(default_factory=list)


@dataclass(slots=True)
class ReactFinal:
    thought: str
    answer: str


@dataclass(slots=True)
class ReactError:
    """The reply could not be used; ``message`` goes back to the model as an Observation."""

    message: str
    raw: str


ReactStep = ReactAction | ReactFinal | ReactError

# -- prompt ---------------------------------------------------------------------------------------


def _type_of(schema: Mapping[str, Any]) -> str:
    if "enum" in schema:
        return "|".join(json.dumps(v, ensure_ascii=False) for v in schema["enum"][:8])
    t = schema.get("type", "any")
    if isinstance(t, list):
        t = "|".join(str(x) for x in t)
    if t == "array" and isinstance(schema.get("items"), Mapping):
        return f"array of {_type_of(schema['items'])}"
    return str(t)


def _render_tool(fn: Mapping[str, Any]) -> str:
    params = fn.get("parameters") or {}
    props: Mapping[str, Any] = params.get("properties") or {}
    required = set(params.get("required") or ())
    args = []
    for name, sch in props.items():
        sch = sch if isinstance(sch, Mapping) else {}
        desc = f" - {sch['description'].strip()}" if sch.get("description") else ""
        args.append(f"    {name}: {_type_of(sch)}{' (required)' if name in required else ''}{desc}")
    head = f"- {fn['name']}: {(fn.get('description') or '').strip()}".rstrip(": ")
    return "\n".join([head, *args]) if args else head + "\n    (no arguments)"


def react_system_prompt(tools: list[dict[str, Any]], *, preamble: str = "") -> str:
    """Instructions for the ReAct protocol with a compact list of the (OpenAI-form) tools."""
    fns = [t.get("function", t) for t in tools]
    names = ", ".join(f["name"] for f in fns)
    listing = "\n".join(_render_tool(f) for f in fns)
    return (
        (preamble.strip() + "\n\n" if preamble.strip() else "")
        + "You answer the user's question. You can use these tools:\n\n" + listing + "\n\n"
        "To use a tool, reply in exactly this format:\n\n"
        "Thought: what you need to find out next\n"
        f"Action: the tool name, one of [{names}]\n"
        'Action Input: the arguments as one JSON object, e.g. {"key": "value"}\n\n'
        "Then stop. The tool result will be given to you as:\n"
        "Observation: the result\n\n"
        "Never write an Observation yourself. If several calls are independent, you may list several "
        "Action / Action Input pairs in one reply; you will get one Observation per action, in order.\n"
        "Repeat Thought / Action / Action Input / Observation as needed. When you can answer, reply:\n\n"
        "Thought: I can answer now\n"
        "Final Answer: the answer to the user, in the user's language"
    )


# -- parsing --------------------------------------------------------------------------------------

_MARKER = re.compile(
    r"^[ \t>*_#-]*(?:\d+[.)]\s*)?(?P<kind>thought|思考|想法|action[ \t_-]*input|动作输入|行动输入|操作输入|"
    r"action|动作|行动|"
    r"observation|观察结果|观察|final[ \t_-]*answer|最终答案|最终回答|最终回复)[ \t]*\d*[ \t*_]*[:：][ \t*_]*",
    re.I | re.M)
# the same markers in mid-line, used only when no line-start Action/Final marker exists
_INLINE = re.compile(r"(?P<kind>Thought|Action[ _]?Input|Action|Observation|Final Answer)[ \t]*[:：][ \t]*")
_KINDS = {"思考": "thought", "想法": "thought", "动作输入": "input", "行动输入": "input", "操作输入": "input",
          "动作": "action", "行动": "action", "观察结果": "observation", "观察": "observation",
          "最终答案": "final", "最终回答": "final", "最终回复": "final"}
_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.S | re.I)
_FENCE = re.compile(r"^```[\w-]*\s*\n?(.*?)\n?```", re.S)
_CALL = re.compile(r"^([\w.\-/]+)\s*[(\[](.*)[)\]]\s*$", re.S)
_KV = re.compile(r"""\s*([A-Za-z_][\w-]*)\s*[=:]\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^,;\n]*)\s*(?:[,;\n]|$)""")
_NONE = {"", "none", "null", "{}", "n/a", "无", "空", "no input", "nothing"}


def _kind(raw: str) -> str:
    k = raw.lower().replace(" ", "").replace("_", "").replace("-", "").replace("\t", "")
    if k in _KINDS:
        return _KINDS[k]
    return {"thought": "thought", "actioninput": "input", "action": "action", "observation": "observation",
            "finalanswer": "final"}.get(k, k)


def _segments(text: str, rx: re.Pattern[str]) -> list[tuple[str, str, int]]:
    """(kind, content, start) for each marker, plus ("pre", text before the first marker, 0)."""
    ms = list(rx.finditer(text))
    segs = [("pre", (text[: ms[0].start()] if ms else text).strip(), 0)]
    for i, m in enumerate(ms):
        end = ms[i + 1].start() if i + 1 < len(ms) else len(text)
        segs.append((_kind(m.group("kind")), text[m.end(): end].strip(), m.start()))
    return segs


def parse_react(text: str, tool_names: Iterable[str], *,
                schemas: Mapping[str, Mapping[str, Any]] | None = None) -> ReactStep:
    """Parse one model reply. ``schemas`` (tool name -> JSON Schema of its arguments) enables bare-string
    inputs for single-parameter tools and coercion of ``key=value`` numbers."""
    names = set(tool_names)
    raw = text
    body = _THINK.sub("", text)
    segs = _segments(body, _MARKER)
    if not any(k in ("action", "final") for k, _, _ in segs):
        inline = _segments(body, _INLINE)
        if any(k in ("action", "final") for k, _, _ in inline):
            segs = inline
    # cut at the first Observation: anything after it was invented by the model
    for i, (k, _, start) in enumerate(segs):
        if k == "observation":
            raw = body[:start].rstrip()
            segs = segs[:i]
            break
    kinds = [k for k, _, _ in segs]
    if "action" not in kinds and "final" not in kinds:
        if len(segs) == 1 and segs[0][1].strip():
            return ReactFinal("", segs[0][1].strip())  # plain text with no protocol at all: an answer
        if not body.strip():
            return ReactError("Your reply was empty. Reply with Action and Action Input, or with Final Answer.", raw)
        return ReactError("Invalid format: no Action or Final Answer. Reply with 'Action:' and 'Action Input:', "
                          "or with 'Final Answer:'.", raw)
    thought = ""
    actions: list[ReactAction] = []
    i = 0
    while i < len(segs):
        k, content, _ = segs[i]
        if k in ("pre", "thought") and content and not actions:
            thought = content
        elif k == "final":
            if actions:
                break  # an answer written before seeing the observation is not an answer
            return ReactFinal(thought, content)
        elif k == "action":
            given = None
            if i + 1 < len(segs) and segs[i + 1][0] == "input":
                given = segs[i + 1][1]
                i += 1
            step = _action(content, given, names, schemas or {}, thought, raw)
            if isinstance(step, (ReactError, ReactFinal)):
                if not actions:
                    return step
                why = step.message if isinstance(step, ReactError) else "mixed with a Final Answer"
                return ReactError(f"Action {len(actions) + 1} of this reply is invalid: {why}", raw)
            actions.append(step)
        i += 1
    if not actions:
        return ReactError("Invalid format: no Action or Final Answer.", raw)
    first = actions[0]
    first.parallel = actions[1:]
    first.raw = raw
    return first


def _action(line: str, given: str | None, names: set[str], schemas: Mapping[str, Mapping[str, Any]],
            thought: str, raw: str) -> ReactAction | ReactFinal | ReactError:
    line = line.strip()
    head, _, rest = line.partition("\n")
    head = head.strip().strip("`*\"' ")
    rest = rest.strip()
    # LangChain-style JSON blob on the Action line: {"action": ..., "action_input": ...}
    blob = _FENCE.sub(lambda m: m.group(1), line).strip()
    if blob.startswith("{"):
        obj = _loads(blob)
        if isinstance(obj, dict):
            name = next((obj[k] for k in ("action", "tool", "name", "function", "tool_name") if k in obj), None)
            args: Any = next((obj[k] for k in ("action_input", "tool_input", "arguments", "args", "input", "parameters")
                         if k in obj), {})
            if isinstance(name, str):
                if _norm(name) == "finalanswer":
                    return ReactFinal(thought, args if isinstance(args, str) else json.dumps(args, ensure_ascii=False))
                return _finish(name, args, names, schemas, thought, raw)
    inline_args: str | None = None
    m = _CALL.match(head)
    if m and m.group(1):
        head, inline_args = m.group(1), m.group(2)
    elif " " in head or "{" in head:
        name_part, _, tail = head.partition("{")
        if tail:
            head, inline_args = name_part.strip(), "{" + tail
        else:
            head = _pick_name(head, names) or head
    if _norm(head) in ("none", "na", "finalanswer", "无"):
        return ReactError("No tool was named. If you can answer, reply with 'Final Answer:'.", raw)
    args_text = given if given is not None else (inline_args if inline_args is not None else rest)
    return _finish(head, args_text, names, schemas, thought, raw)


def _finish(name: str, args: Any, names: set[str], schemas: Mapping[str, Mapping[str, Any]], thought: str,
            raw: str) -> ReactAction | ReactError:
    tool = _resolve(name, names)
    if tool is None:
        return ReactError(f"Unknown tool {name!r}. Use one of: {', '.join(sorted(names))}.", raw)
    schema = schemas.get(tool) or {}
    parsed = args if isinstance(args, dict) else _arguments(str(args or ""), schema)
    if isinstance(parsed, str):
        return ReactError(f"Invalid Action Input for {tool}: {parsed}", raw)
    return ReactAction(thought, tool, parsed, raw)


def _norm(s: str) -> str:
    return re.sub(r"[^0-9a-z\u4e00-\u9fff]", "", s.lower())


def _pick_name(text: str, names: set[str]) -> str | None:
    """A known tool name mentioned inside a sentence ("use the check_stock tool")."""
    found = [n for n in names if re.search(rf"(?<![\w]){re.escape(n)}(?![\w])", text)]
    return max(found, key=len) if found else None


def _resolve(name: str, names: set[str]) -> str | None:
    if name in names:
        return name
    low = {n.lower(): n for n in names}
    if name.lower() in low:
        return low[name.lower()]
    key = _norm(name)
    by_key = [n for n in names if _norm(n) == key]  # inventory.check_stock, inventory/check-stock ...
    if len(by_key) == 1:
        return by_key[0]
    short = [n for n in names if n.rsplit("__", 1)[-1].lower() == name.lower()]  # check_stock -> server__check_stock
    if len(short) == 1:
        return short[0]
    return None


def _loads(s: str) -> Any:
    try:
        return json.loads(s)
    except ValueError:
        pass
    try:
        obj, _ = json.JSONDecoder().raw_decode(s)  # JSON followed by chatter
        return obj
    except ValueError:
        pass
    fixed = re.sub(r",\s*([}\]])", r"\1", s)  # trailing commas
    try:
        return json.loads(fixed)
    except ValueError:
        pass
    try:
        return ast.literal_eval(re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False",
                                                                     re.sub(r"\bnull\b", "None", fixed))))
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return _ERR


_ERR = object()


def _only_param(schema: Mapping[str, Any]) -> str | None:
    req = list(schema.get("required") or ())
    if len(req) == 1:
        return str(req[0])
    props = list((schema.get("properties") or {}).keys())
    return str(props[0]) if len(props) == 1 else None


def _coerce(value: Any, sch: Mapping[str, Any]) -> Any:
    t = sch.get("type") if isinstance(sch, Mapping) else None
    if isinstance(value, str):
        try:
            if t == "integer" and re.fullmatch(r"-?\d+", value.strip()):
                return int(value)
            if t == "number" and re.fullmatch(r"-?\d+(?:\.\d+)?", value.strip()):
                return float(value)
        except ValueError:
            return value
        if t == "boolean" and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
    return value


def _arguments(text: str, schema: Mapping[str, Any]) -> dict[str, Any] | str:
    """The arguments dict, or an error message."""
    s = text.strip()
    fence = _FENCE.search(s)
    if fence:
        s = fence.group(1).strip()
    s = s.strip("`").strip()
    props: Mapping[str, Any] = schema.get("properties") or {}
    if s.lower() in _NONE:
        req = list(schema.get("required") or ())
        return {} if not req else f"missing arguments; required: {', '.join(map(str, req))}."
    if s[0] in "{[\"'":
        obj = _loads(s)
        if isinstance(obj, dict):
            return obj
        if isinstance(obj, str):
            s = obj  # a JSON string: treat as a bare value below
        elif obj is not _ERR:
            return "expected a JSON object of arguments, got " + type(obj).__name__ + "."
        elif s[0] == "{":
            return "not valid JSON. Write the arguments as one JSON object, e.g. {\"key\": \"value\"}."
    pairs = _KV.findall(s)
    if pairs and _KV.sub("", s).strip() == "" and all(k in props or not props for k, _ in pairs):
        out: dict[str, Any] = {}
        for k, v in pairs:
            v = v.strip()
            if v[:1] in "\"'" and v[-1:] == v[:1] and len(v) >= 2:
                v = v[1:-1]
            elif v.lower() in ("true", "false", "null"):
                out[k] = json.loads(v.lower())
                continue
            out[k] = _coerce(v, props.get(k) or {})
        return out
    only = _only_param(schema)
    if only is not None:
        return {only: _coerce(s, props.get(only) or {})}
    need = ", ".join(map(str, props)) or "the tool's parameters"
    return f"expected a JSON object with keys: {need}."


def format_observation(result_text: str, max_chars: int = 4000) -> str:
    """The text after ``Observation:``: stripped and cut to ``max_chars`` with a visible marker.
    A role marker at a line start inside the result is indented so the model does not read the
    result as the protocol's own lines."""
    s = (result_text or "").strip() or "(empty result)"
    if len(s) > max_chars:
        s = s[: max(0, max_chars - 40)].rstrip() + f"\n... [truncated {len(s) - max(0, max_chars - 40)} chars]"
    return _MARKER.sub(lambda m: "  " + m.group(0).lstrip(), s)
