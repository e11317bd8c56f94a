"""GBNF grammars for Qwen-style tool calls, built from the offered tools' JSON Schemas.

The tool-call grammar accepts one or more blocks, exactly as Qwen2.5 was trained to write them::

    <tool_call>
    {"name": "NAME", "arguments": {...}}
    </tool_call>

``<tool_call>`` / ``</tool_call>`` are matched as the model's special tokens (GBNF ``<...>`` token
syntax), the name is one of the offered tools and the arguments follow that tool's schema via
llama.cpp's JSON-Schema converter. A schema the converter cannot express falls back to a generic
JSON object for that tool only (the Hub validates arguments anyway).

The plain-answer branch is ``answer_grammar()``: any text that does not contain a tool-call
token. The provider decides between the branches from the first-token distribution (see
``provider.py``) and then decodes under one grammar.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from typing import Any

log = logging.getLogger(__name__)

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"

_cache: OrderedDict[str, str] = OrderedDict()
_CACHE_SIZE = 32


def _literal(text: str) -> str:
    # A GBNF string literal; json.dumps escapes quotes, backslashes and control characters.
    return json.dumps(text, ensure_ascii=False)


def tool_names(tools: list[dict[str, Any]]) -> list[str]:
    """Function names of OpenAI-form tools, in order."""
    return [t["function"]["name"] for t in tools if t.get("type", "function") == "function" and "function" in t]


def tool_call_grammar(tools: list[dict[str, Any]], *, only: str | None = None, parallel: bool = True) -> str:
    """GBNF text accepting one (or, when ``parallel``, several) tool-call blocks for ``tools``.

    ``only`` restricts the name to one tool (``tool_choice`` naming a function). Cached by content.
    """
    key = json.dumps([tools, only, parallel], sort_keys=True, ensure_ascii=False)
    hit = _cache.get(key)
    if hit is not None:
        _cache.move_to_end(key)
        return hit
    text = _build(tools, only=only, parallel=parallel)
    _cache[key] = text
    if len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return text


def _build(tools: list[dict[str, Any]], *, only: str | None, parallel: bool) -> str:
    from llama_cpp import llama_grammar

    # The converter is untyped upstream code; treat it as Any.
    lg: Any = llama_grammar
    PRIMITIVE_RULES = lg.PRIMITIVE_RULES
    conv: Any = lg.SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    alts: list[str] = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") or {}
        name = fn.get("name")
        if not isinstance(name, str) or (only is not None and name != only):
            continue
        schema = fn.get("parameters") or {"type": "object"}
        args_rule = _args_rule(conv, schema, f"t{i}-args", PRIMITIVE_RULES)
        head = _literal('{"name": "' + name + '", "arguments": ')
        alts.append(str(conv._add_rule(f"t{i}-call", f'{head} {args_rule} "}}"')))
    if not alts:
        raise ValueError(f"no tool named {only!r} is offered" if only else "no tools to build a grammar from")
    body = str(conv.format_grammar())
    call = f'call ::= {TOOL_CALL_OPEN} "\\n" ( {" | ".join(alts)} ) "\\n" {TOOL_CALL_CLOSE}'
    root = 'root ::= call ( "\\n" call )*' if parallel else "root ::= call"
    return f"{root}\n{call}\n{body}\n"


def _args_rule(conv: Any, schema: dict[str, Any], name: str, primitives: dict[str, Any]) -> str:
    """Rule name for a tool's arguments; a generic object rule when the converter gives up."""
    snapshot = dict(conv._rules)
    try:
        resolved = conv.resolve_refs(json.loads(json.dumps(schema)), "tool")
        rule: str = conv.visit(resolved, name)
        return rule
    except Exception as exc:  # the converter asserts/raises on schema features it lacks
        log.info("tool schema %s not expressible as a grammar (%s); using a generic JSON object", name, exc)
        conv._rules = snapshot
        generic: str = conv._add_primitive("object", primitives["object"])
        return generic


def answer_grammar() -> str:
    """GBNF for a plain answer: any tokens except a tool-call opener."""
    return f"root ::= ( !{TOOL_CALL_OPEN} )*\n"


__all__ = ["TOOL_CALL_CLOSE", "TOOL_CALL_OPEN", "answer_grammar", "tool_call_grammar", "tool_names"]
