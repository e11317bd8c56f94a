"""Shorter prompts for the embedded model: compact tool definitions and compact JSON tool results.

A CPU reads prompt tokens at a few hundred per second, so every token of the prompt is latency.
The OpenAI-form tools a Hub produces carry multi-line docstrings, JSON-Schema ``title``s and
nullable ``anyOf`` wrappers (the nine demo tools: ~1,950 tokens); the model needs the name, one
sentence of description and each parameter's type, enum and a short hint. Tool results arrive as
indented JSON; the same JSON without indentation reads the same to the model at ~half the tokens.

Only the prompt is compacted: the tool-call grammar is still built from the full schemas.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from toolmesh.llm.types import Message

#: Longest description kept for a tool / a parameter (characters; cut at a sentence or clause end).
TOOL_DESCRIPTION_CHARS = 90
PARAM_DESCRIPTION_CHARS = 60
# JSON-Schema keys the model does not need to choose a tool and write its arguments.
# Numeric bounds go too: the grammar enforces them anyway.
_DROPPED_KEYS = frozenset({"title", "additionalProperties", "$schema", "examples", "format", "$defs",
                           "definitions", "readOnly", "writeOnly", "deprecated", "minimum", "maximum",
                           "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength"})
# A sentence ends at ". " before a capital or CJK (not after "e.g."/"i.e."), or at a blank line.
_SENTENCE_END = re.compile(r"(?<!e\.g\.)(?<!i\.e\.)(?<=[.!?])\s+(?=[A-Z\u4e00-\u9fff])|(?<=[。！？])|\n\s*\n")
_SPACES = re.compile(r"\s+")
# "e.g. 'SAVE20'" in a parameter's description: a small model copies the example into calls nobody
# asked for, and with the example in the prompt even an empty message "asks" for it.
_EXAMPLE = re.compile(r"[,;]?\s*\(?\b(?:e\.g\.|for example|such as)", re.IGNORECASE)


def shorten(text: str | None, limit: int) -> str:
    """The first sentence of ``text`` (whitespace collapsed); past ``limit`` characters, cut at the
    first clause break (``:``, ``(``, ``;``, ``,``) or else at a word."""
    if not text:
        return ""
    head = _SENTENCE_END.split(text.strip(), maxsplit=1)[0]
    head = _SPACES.sub(" ", head).strip()
    if len(head) <= limit:
        return head
    for mark in (": ", " (", "; ", ", "):
        cut = head.find(mark, 16)
        if 0 < cut <= limit:
            return head[:cut]
    cut = head.rfind(" ", 0, limit)
    return head[: cut if cut > limit // 2 else limit].rstrip(",;: ")


def compact_schema(schema: Any) -> Any:
    """``schema`` without titles and other keys the model does not use, nullable unions unwrapped."""
    if isinstance(schema, list):
        return [compact_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    for union in ("anyOf", "oneOf"):
        options = schema.get(union)
        if isinstance(options, list):
            # ``X | None`` (pydantic's Optional) reads as plain X: leaving it out already means None.
            kept = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            if len(kept) == 1 and isinstance(kept[0], dict):
                rest = {k: v for k, v in schema.items() if k != union}
                return compact_schema({**kept[0], **rest})
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "description" and isinstance(value, str):
            value = shorten(_EXAMPLE.split(value, maxsplit=1)[0], PARAM_DESCRIPTION_CHARS)
            if not value:
                continue
        elif key == "default":
            continue  # a small model copies defaults ("regular") over facts it was told ("gold")
        elif key == "properties" and isinstance(value, dict):
            value = {name: compact_schema(sub) for name, sub in value.items()}
        elif isinstance(value, dict | list):
            value = compact_schema(value)
        out[key] = value
    return out


def compact_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI-form tools with one-sentence descriptions and lean parameter schemas."""
    out: list[dict[str, Any]] = []
    for tool in tools:
        fn = tool.get("function")
        if tool.get("type", "function") != "function" or not isinstance(fn, dict):
            out.append(tool)
            continue
        lean: dict[str, Any] = {"name": fn.get("name")}
        description = shorten(fn.get("description"), TOOL_DESCRIPTION_CHARS)
        if description:
            lean["description"] = description
        lean["parameters"] = compact_schema(fn.get("parameters") or {"type": "object", "properties": {}})
        out.append({"type": "function", "function": lean})
    return out


def compact_json_text(text: str) -> str:
    """``text`` re-serialised without indentation when it is a JSON document; otherwise unchanged."""
    stripped = text.strip()
    if not stripped or stripped[0] not in "{[":
        return text
    try:
        value = json.loads(stripped)
    except ValueError:
        return text
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _SPACES.sub(" ", value).strip()
    return json.dumps(value, ensure_ascii=False)


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _words(key: str) -> str:
    # "final_price" -> "final price": the words the answer uses, so the model finds the field
    return key.replace("_", " ")


def _scalars(value: Any) -> str | None:
    """A scalar, or a list of scalars as ``a, b``; ``None`` for anything that nests."""
    if isinstance(value, list):
        if any(isinstance(v, dict | list) for v in value):
            return None
        return ", ".join(_scalar(v) for v in value if not _empty(v))
    return None if isinstance(value, dict) else _scalar(value)


def _flat(value: dict[str, Any]) -> str | None:
    """A dict of scalars as one ``key: value; …`` line (``None`` when it nests further)."""
    parts = []
    for key, item in value.items():
        if _empty(item):
            continue
        text = _scalars(item)
        if text is None:
            return None
        parts.append(f"{_words(key)}: {text}")
    return "; ".join(parts)


def json_as_text(value: Any, indent: str = "") -> str:
    """``value`` (parsed JSON) as plain ``key: value`` lines: lists as ``- `` items, a list item
    of scalars on one line, null and empty fields left out.

    Why: shown JSON, the 0.5B model answers in JSON or markdown lists (it echoed a tool result
    back as its answer); shown the same facts as lines of text (about as many tokens as
    unindented JSON) it names the fields it was asked for, e.g. the final price rather than the
    list price (docs/local-model.md). Keys read as words ("final price").
    """
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if _empty(item):
                continue
            text = _scalars(item)
            if text is None:
                lines.append(f"{indent}{_words(key)}:")
                lines.append(json_as_text(item, indent + "  "))
            else:
                lines.append(f"{indent}{_words(key)}: {text}")
    elif isinstance(value, list):
        for item in value:
            flat = _flat(item) if isinstance(item, dict) else None
            if flat is not None:
                lines.append(f"{indent}- {flat}")
            elif isinstance(item, dict | list):
                lines.append(f"{indent}-")
                lines.append(json_as_text(item, indent + "  "))
            elif not _empty(item):
                lines.append(f"{indent}- {_scalar(item)}")
    else:
        lines.append(indent + _scalar(value))
    return "\n".join(line for line in lines if line)


def results_as_text(messages: list[Message]) -> list[Message]:
    """``messages`` with JSON tool results shown as text lines (:func:`json_as_text`), for the
    answer step; non-JSON results are left as they are."""
    out: list[Message] = []
    for m in messages:
        if m.role == "tool" and m.content:
            stripped = m.content.strip()
            if stripped[:1] in ("{", "["):
                try:
                    m = dataclasses.replace(m, content=json_as_text(json.loads(stripped)))
                except ValueError:
                    pass
        out.append(m)
    return out


def compact_messages(messages: list[Message]) -> list[Message]:
    """``messages`` with JSON tool results compacted (other messages untouched)."""
    out: list[Message] = []
    for m in messages:
        if m.role == "tool" and m.content:
            compact = compact_json_text(m.content)
            if compact != m.content:
                m = dataclasses.replace(m, content=compact)
        out.append(m)
    return out


__all__ = ["compact_json_text", "compact_messages", "compact_schema", "compact_tools", "json_as_text",
           "results_as_text", "shorten"]
