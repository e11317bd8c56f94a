"""MCP tool definitions to OpenAI / Anthropic tools, and tool calls back (HUB-8).

Input tools are wire-format dicts (``name``, ``title``, ``description``,
``inputSchema``, ``outputSchema``, ``annotations``) or ``mcp_types.Tool``
objects. JSON Schema is passed through untouched except where a provider
requires otherwise: the root gets ``type: object`` and (for OpenAI)
``properties``. ``$defs``, ``$ref``, ``$schema`` and every other keyword stay.
Inputs are never mutated; untouched sub-schemas are shared, not copied.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from toolmesh.errors import InvalidArgumentsError
from toolmesh.hub.naming import ToolNameMap
from toolmesh.hub.types import JsonDict, as_mapping

__all__ = [
    "ResolvedCall",
    "anthropic_tool",
    "make_strict_schema",
    "mcp_tool_exposed",
    "normalize_input_schema",
    "openai_tool",
    "resolve_anthropic_tool_use",
    "resolve_openai_tool_call",
    "tools_to_anthropic",
    "tools_to_openai",
]


def _as_dict(tool: Any) -> Mapping[str, Any]:
    return as_mapping(tool, "an MCP tool dict or model")


def _description(tool: Mapping[str, Any], server: str | None) -> str:
    desc = tool.get("description") or tool.get("title") or ""
    if server is not None:
        return f"[{server}] {desc}" if desc else f"[{server}]"
    return str(desc)


def normalize_input_schema(schema: Any, *, require_properties: bool = False) -> JsonDict:
    """The root object schema a provider accepts, sharing everything unchanged.

    A missing schema becomes ``{"type": "object", "properties": {}}``; a root
    whose ``type`` is not ``"object"`` gets ``type: object``; with ``require_properties`` an
    empty ``properties`` is added when absent. Never mutates ``schema``.
    """
    if not isinstance(schema, Mapping):
        return {"type": "object", "properties": {}}
    needs_type = schema.get("type") != "object"
    needs_props = require_properties and not isinstance(schema.get("properties"), Mapping)
    if not needs_type and not needs_props and isinstance(schema, dict):
        return schema
    out = dict(schema)
    if needs_type:
        # MCP requires an object root; a missing or odd type (["object", "null"]) is coerced.
        out["type"] = "object"
    if needs_props:
        out["properties"] = {}
    return out


_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")
_SUBSCHEMA_ONE = ("items", "not", "if", "then", "else", "contains", "additionalItems")


def make_strict_schema(schema: Mapping[str, Any]) -> JsonDict | None:
    """A copy of ``schema`` fit for OpenAI structured outputs, or ``None`` if impossible.

    Every object gets ``additionalProperties: false`` and all its properties
    required; properties that were optional become nullable (the model sends
    ``null`` for "absent"). Schemas with open objects (``additionalProperties``
    a schema or ``true``, ``patternProperties``) cannot be strict.
    """

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(x) for x in node]
        if not isinstance(node, Mapping):
            return node
        out: JsonDict = {}
        for key, value in node.items():
            if key in _SUBSCHEMA_MAPS and isinstance(value, Mapping):
                out[key] = {k: walk(v) for k, v in value.items()}
            elif key in _SUBSCHEMA_LISTS or key in _SUBSCHEMA_ONE:
                out[key] = walk(value)
            else:
                out[key] = value
        is_object = node.get("type") == "object" or "properties" in node
        if is_object:
            if "patternProperties" in node or node.get("additionalProperties", False) is not False:
                raise _NotStrictable
            props: JsonDict = out.get("properties") or {}
            required = set(node.get("required") or ())
            for pname, pschema in list(props.items()):
                if pname not in required:
                    props[pname] = _nullable(pschema)
            out["properties"] = props
            out["required"] = list(props)
            out["additionalProperties"] = False
        return out

    try:
        result: JsonDict = walk(schema)
    except _NotStrictable:
        return None
    return result


class _NotStrictable(Exception):
    pass


def _nullable(schema: Any) -> Any:
    if not isinstance(schema, Mapping):
        return schema
    t = schema.get("type")
    if isinstance(t, str | list) and "enum" not in schema and "const" not in schema:
        types = [t] if isinstance(t, str) else t
        return schema if "null" in types else {**schema, "type": [*types, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def openai_tool(tool: Any, name: str, *, strict: bool = False, server: str | None = None) -> JsonDict:
    """One MCP tool as an OpenAI function tool exposed under ``name``.

    ``server``, when given, is prefixed to the description. With ``strict``
    the schema is made strict-compatible; if it cannot be, strict is left off.
    """
    t = _as_dict(tool)
    params = normalize_input_schema(t.get("inputSchema"), require_properties=True)
    fn: JsonDict = {"name": name, "description": _description(t, server), "parameters": params}
    if strict:
        strict_params = make_strict_schema(params)
        if strict_params is not None:
            fn["parameters"] = strict_params
            fn["strict"] = True
    return {"type": "function", "function": fn}


def anthropic_tool(tool: Any, name: str, *, server: str | None = None) -> JsonDict:
    """One MCP tool as an Anthropic Messages API tool exposed under ``name``."""
    t = _as_dict(tool)
    return {
        "name": name,
        "description": _description(t, server),
        "input_schema": normalize_input_schema(t.get("inputSchema")),
    }


def mcp_tool_exposed(tool: Any, name: str) -> JsonDict:
    """The MCP tool definition itself, renamed to ``name`` (for aggregated MCP views)."""
    t = dict(_as_dict(tool))
    t["name"] = name
    return t


def _iter_pairs(tools_by_server: Mapping[str, Iterable[Any]]) -> Iterable[tuple[str, Mapping[str, Any]]]:
    for server, tools in tools_by_server.items():
        for tool in tools:
            yield server, _as_dict(tool)


def tools_to_openai(
    tools_by_server: Mapping[str, Iterable[Any]],
    names: ToolNameMap,
    *,
    strict: bool = False,
    include_server: bool = False,
) -> list[JsonDict]:
    """All tools of all servers as OpenAI tools; their names are added to ``names``."""
    return [
        openai_tool(t, names.add(server, t["name"]), strict=strict, server=server if include_server else None)
        for server, t in _iter_pairs(tools_by_server)
    ]


def tools_to_anthropic(
    tools_by_server: Mapping[str, Iterable[Any]], names: ToolNameMap, *, include_server: bool = False
) -> list[JsonDict]:
    """All tools of all servers as Anthropic tools; their names are added to ``names``."""
    return [
        anthropic_tool(t, names.add(server, t["name"]), server=server if include_server else None)
        for server, t in _iter_pairs(tools_by_server)
    ]


@dataclass(frozen=True, slots=True)
class ResolvedCall:
    """A model's tool call mapped back to the MCP server and tool it names."""

    id: str | None
    server: str
    tool: str
    arguments: JsonDict


def _arguments(raw: Any, name: str) -> JsonDict:
    if raw is None or raw == "":
        return {}
    if isinstance(raw, (str, bytes)):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise InvalidArgumentsError(f"arguments of {name!r} are not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise InvalidArgumentsError(f"arguments of {name!r} must be a JSON object, got {type(raw).__name__}")
    return raw


def resolve_openai_tool_call(call: Mapping[str, Any], names: ToolNameMap) -> ResolvedCall:
    """An OpenAI ``tool_calls[i]`` (``{"id", "function": {"name", "arguments"}}``) → server, tool, args.

    Raises ``ToolNotFoundError`` for an unknown name and ``InvalidArgumentsError``
    when the arguments are not a JSON object.
    """
    fn = call.get("function") or {}
    name = fn.get("name") or ""
    server, tool = names.resolve(name)
    return ResolvedCall(call.get("id"), server, tool, _arguments(fn.get("arguments"), name))


def resolve_anthropic_tool_use(block: Mapping[str, Any], names: ToolNameMap) -> ResolvedCall:
    """An Anthropic ``tool_use`` block (``{"id", "name", "input"}``) → server, tool, args."""
    name = block.get("name") or ""
    server, tool = names.resolve(name)
    return ResolvedCall(block.get("id"), server, tool, _arguments(block.get("input"), name))
