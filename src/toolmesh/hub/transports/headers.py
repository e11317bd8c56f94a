"""2026-07-28 HTTP request headers (SEP-2243): header-value encoding and ``x-mcp-header`` parameters.

A tool's input schema may mark top-level (or nested, via ``properties`` only) string,
integer or boolean parameters with ``"x-mcp-header": "Region"``; the client then mirrors
the argument into ``Mcp-Param-Region`` on every ``tools/call`` POST. Values that would
not survive as an HTTP field (non-ASCII, control characters, edge whitespace) travel as
``=?base64?...?=``. A tool whose annotations are invalid must not be used at all.

Own implementation (same rules as the SDK's ``mcp.shared.inbound``) so the HTTP transport
does not import the whole ``mcp`` package: client start-up time matters to short-lived CLIs.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator, Mapping
from typing import Any

X_MCP_HEADER = "x-mcp-header"
PARAM_PREFIX = "Mcp-Param-"

_SAFE = re.compile(r"[\x20-\x7E]*")
_SENTINEL = re.compile(r"=\?base64\?.*\?=")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_TYPES = frozenset({"string", "integer", "boolean"})
# JSON Schema 2020-12 applicators whose values are schema positions; crossing any of them
# leaves the pure ``properties`` chain. ``$ref`` is deliberately not followed.
_ONE = frozenset({"items", "contains", "unevaluatedItems", "additionalProperties", "propertyNames",
                  "unevaluatedProperties", "not", "if", "then", "else", "contentSchema"})
_LIST = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_MAP = frozenset({"patternProperties", "dependentSchemas", "$defs", "definitions"})


def encode_header_value(value: str) -> str:
    """``value`` as is when it is plain printable ASCII without edge whitespace, else base64-wrapped."""
    if _SAFE.fullmatch(value) and value == value.strip() and not _SENTINEL.fullmatch(value):
        return value
    return f"=?base64?{base64.b64encode(value.encode()).decode('ascii')}?="


def _positions(root: Any) -> Iterator[tuple[tuple[str, ...] | None, dict[str, Any]]]:
    """Every schema position with its ``properties`` path (``None`` once off that chain)."""
    stack: list[tuple[tuple[str, ...] | None, Any]] = [((), root)]
    while stack:
        path, node = stack.pop()
        if not isinstance(node, dict):
            continue
        yield path, node
        for kw, val in node.items():
            if kw == "properties" and isinstance(val, dict):
                stack.extend(((*path, k) if path is not None else None, sub) for k, sub in val.items())
            elif kw in _ONE:
                stack.append((None, val))
            elif kw in _LIST and isinstance(val, list):
                stack.extend((None, sub) for sub in val)
            elif kw in _MAP and isinstance(val, dict):
                stack.extend((None, sub) for sub in val.values())


def invalid_header_reason(schema: Any) -> str | None:
    """Why ``schema``'s ``x-mcp-header`` annotations make the tool unusable, or ``None`` when fine."""
    seen: dict[str, str] = {}
    for path, node in _positions(schema):
        if X_MCP_HEADER not in node:
            continue
        if not path:
            return f"{X_MCP_HEADER} outside a plain properties chain"
        where = ".".join(path)
        token = node[X_MCP_HEADER]
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            return f"property {where!r}: {X_MCP_HEADER} is not a valid header name token"
        if node.get("type") not in _HEADER_TYPES:
            return f"property {where!r}: {X_MCP_HEADER} is only allowed on string, integer or boolean properties"
        if token.lower() in seen:
            return f"property {where!r}: {X_MCP_HEADER} {token!r} duplicates property {seen[token.lower()]!r}"
        seen[token.lower()] = where
    return None


def header_map(schema: Any) -> dict[tuple[str, ...], str]:
    """``{property path: header token}`` of a schema that :func:`invalid_header_reason` accepts."""
    return {path: node[X_MCP_HEADER] for path, node in _positions(schema)
            if path and isinstance(node.get(X_MCP_HEADER), str)}


def param_headers(mapping: Mapping[tuple[str, ...], str], arguments: Any) -> str:
    """The ``Mcp-Param-*`` header lines (CRLF-terminated) for ``arguments``; absent/null values are omitted."""
    lines = []
    for path, token in mapping.items():
        value: Any = arguments
        for key in path:
            value = value.get(key) if isinstance(value, Mapping) else None
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str | int | float):
            text = str(value)
        else:
            continue
        lines.append(f"{PARAM_PREFIX}{token}: {encode_header_value(text)}\r\n")
    return "".join(lines)
