"""MCP tools → OpenAI/Anthropic tools, calls back, and result rendering (HUB-8)."""

from __future__ import annotations

import base64
import copy
import json

import mcp_types
import pytest

from toolmesh.errors import InvalidArgumentsError, ToolNotFoundError
from toolmesh.hub.convert import (
    anthropic_tool,
    make_strict_schema,
    mcp_tool_exposed,
    normalize_input_schema,
    openai_tool,
    resolve_anthropic_tool_use,
    resolve_openai_tool_call,
    tools_to_anthropic,
    tools_to_openai,
)
from toolmesh.hub.naming import ToolNameMap
from toolmesh.hub.render import (
    anthropic_tool_result,
    openai_image_parts,
    render_batch,
    result_to_anthropic_content,
    result_to_openai_content,
    result_to_text,
    truncate,
)

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "sku": {"type": "string", "pattern": "^[A-Z]{3}-\\d+$"},
        "city": {"$ref": "#/$defs/City"},
        "qty": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]},
        "tags": {"type": "array", "prefixItems": [{"type": "string"}], "unevaluatedItems": False},
    },
    "required": ["sku"],
    "$defs": {"City": {"type": "object", "properties": {"name": {"type": "string", "enum": ["广州", "深圳"]}}}},
    "unevaluatedProperties": False,
}
TOOL = {
    "name": "check_stock",
    "title": "Check stock",
    "description": "Stock of a product per city.",
    "inputSchema": SCHEMA,
    "outputSchema": {"type": "object"},
    "annotations": {"readOnlyHint": True},
}


def test_openai_tool_passes_schema_through_and_does_not_mutate() -> None:
    before = copy.deepcopy(TOOL)
    out = openai_tool(TOOL, "inventory__check_stock")
    assert TOOL == before
    assert out == {
        "type": "function",
        "function": {
            "name": "inventory__check_stock",
            "description": "Stock of a product per city.",
            "parameters": SCHEMA,
        },
    }
    assert "strict" not in out["function"]
    assert out["function"]["parameters"]["$defs"] == SCHEMA["$defs"]


def test_anthropic_tool_and_server_in_description() -> None:
    out = anthropic_tool(TOOL, "inventory__check_stock", server="inventory")
    assert out == {
        "name": "inventory__check_stock",
        "description": "[inventory] Stock of a product per city.",
        "input_schema": SCHEMA,
    }


def test_schema_root_normalisation() -> None:
    assert normalize_input_schema(None) == {"type": "object", "properties": {}}
    bare = {"type": "object"}
    assert normalize_input_schema(bare) is bare  # Anthropic: accepted as-is
    assert normalize_input_schema(bare, require_properties=True) == {"type": "object", "properties": {}}
    assert bare == {"type": "object"}
    no_type = {"properties": {"a": {"type": "string"}}, "$defs": {"X": {}}}
    fixed = normalize_input_schema(no_type, require_properties=True)
    assert fixed == {"type": "object", "properties": {"a": {"type": "string"}}, "$defs": {"X": {}}}
    assert "type" not in no_type
    # OpenAI always gets properties
    t = openai_tool({"name": "ping", "inputSchema": {"type": "object"}}, "ping")
    assert t["function"]["parameters"] == {"type": "object", "properties": {}}
    assert t["function"]["description"] == ""


def test_description_falls_back_to_title() -> None:
    assert anthropic_tool({"name": "x", "title": "Do X", "inputSchema": {}}, "x")["description"] == "Do X"


def test_strict_mode() -> None:
    before = copy.deepcopy(TOOL)
    out = openai_tool(TOOL, "n", strict=True)
    assert TOOL == before
    fn = out["function"]
    assert fn["strict"] is True
    p = fn["parameters"]
    assert p["additionalProperties"] is False
    assert p["required"] == ["sku", "city", "qty", "tags"]
    assert p["properties"]["sku"] == {"type": "string", "pattern": "^[A-Z]{3}-\\d+$"}
    assert p["properties"]["city"] == {"anyOf": [{"$ref": "#/$defs/City"}, {"type": "null"}]}
    assert p["properties"]["tags"]["type"] == ["array", "null"]
    city = p["$defs"]["City"]
    assert city["additionalProperties"] is False and city["required"] == ["name"]
    assert city["properties"]["name"] == {"anyOf": [{"type": "string", "enum": ["广州", "深圳"]}, {"type": "null"}]}


def test_strict_impossible_falls_back_to_non_strict() -> None:
    open_schema = {"type": "object", "properties": {"m": {"type": "object", "additionalProperties": True}}}
    assert make_strict_schema(open_schema) is None
    fn = openai_tool({"name": "x", "inputSchema": open_schema}, "x", strict=True)["function"]
    assert "strict" not in fn and fn["parameters"] == open_schema


def test_bulk_conversion_and_calls_back() -> None:
    names = ToolNameMap()
    tools = {
        "inventory": [TOOL],
        "catalog.v2": [{"name": "get.product", "inputSchema": {"type": "object"}}],
    }
    oa = tools_to_openai(tools, names, include_server=True)
    an = tools_to_anthropic(tools, names)
    assert [t["function"]["name"] for t in oa] == [t["name"] for t in an]
    assert oa[0]["function"]["name"] == "inventory__check_stock"
    assert oa[0]["function"]["description"].startswith("[inventory] ")
    odd = oa[1]["function"]["name"]
    assert odd.startswith("catalog_v2__get_product__")

    call = {"id": "call_1", "type": "function", "function": {"name": odd, "arguments": '{"id": 7}'}}
    r = resolve_openai_tool_call(call, names)
    assert (r.id, r.server, r.tool, r.arguments) == ("call_1", "catalog.v2", "get.product", {"id": 7})
    empty = resolve_openai_tool_call({"id": "c", "function": {"name": odd, "arguments": ""}}, names)
    assert empty.arguments == {}

    use = {"type": "tool_use", "id": "toolu_1", "name": "inventory__check_stock", "input": {"sku": "ABC-1"}}
    r2 = resolve_anthropic_tool_use(use, names)
    assert (r2.server, r2.tool, r2.arguments) == ("inventory", "check_stock", {"sku": "ABC-1"})

    with pytest.raises(ToolNotFoundError):
        resolve_openai_tool_call({"id": "x", "function": {"name": "nope", "arguments": "{}"}}, names)
    with pytest.raises(InvalidArgumentsError, match="not valid JSON"):
        resolve_openai_tool_call({"id": "x", "function": {"name": odd, "arguments": "{bad"}}, names)
    with pytest.raises(InvalidArgumentsError, match="JSON object"):
        resolve_openai_tool_call({"id": "x", "function": {"name": odd, "arguments": "[1]"}}, names)


def test_accepts_sdk_tool_objects() -> None:
    tool = mcp_types.Tool.model_validate(TOOL)
    out = openai_tool(tool, "n")
    assert out["function"]["parameters"] == SCHEMA
    renamed = mcp_tool_exposed(TOOL, "inventory__check_stock")
    assert renamed["name"] == "inventory__check_stock" and TOOL["name"] == "check_stock"


# --- rendering -----------------------------------------------------------------------------------

PNG = base64.b64encode(b"\x89PNG" + b"\0" * 12_596).decode()  # 12,600 bytes = 12.3 KB


def _result(**kw: object) -> dict[str, object]:
    return {"content": [], **kw}


def test_text_blocks_and_structured_content() -> None:
    r = _result(content=[{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], structuredContent={"x": 1})
    assert result_to_text(r) == "a\nb"
    assert result_to_text(r, structured=True) == 'a\nb\n{"x":1}'
    assert result_to_text(_result(structuredContent={"stock": 5, "城市": "广州"})) == '{"stock":5,"城市":"广州"}'
    assert result_to_text(_result()) == ""


def test_binary_placeholders_and_data_urls() -> None:
    r = _result(
        content=[
            {"type": "image", "data": PNG, "mimeType": "image/png"},
            {"type": "audio", "data": "AAAA", "mimeType": "audio/wav"},
        ]
    )
    assert result_to_text(r) == "[image image/png, 12.3 KB]\n[audio audio/wav, 3 B]"
    assert result_to_text(r, data_urls=True).startswith(f"data:image/png;base64,{PNG}")


def test_resources() -> None:
    r = _result(
        content=[
            {"type": "resource_link", "uri": "file:///a.txt", "name": "a.txt", "mimeType": "text/plain"},
            {"type": "resource", "resource": {"uri": "mem://note", "text": "hello", "mimeType": "text/plain"}},
            {"type": "resource", "resource": {"uri": "mem://bin", "blob": "AAAAAA==", "mimeType": "x/y"}},
        ]
    )
    assert result_to_text(r) == (
        "[resource link file:///a.txt text/plain a.txt]\n[resource mem://note]\nhello\n[resource mem://bin x/y, 4 B]"
    )


def test_errors_and_truncation() -> None:
    r = _result(content=[{"type": "text", "text": "no such sku"}], isError=True)
    assert result_to_text(r) == "Error: no such sku"
    assert result_to_openai_content(_result(isError=True)) == "Error"
    long = _result(content=[{"type": "text", "text": "x" * 100}])
    assert result_to_text(long, max_chars=10) == "x" * 10 + "…[truncated 90 chars]"
    assert truncate("abc", 3) == "abc"


def test_sdk_result_object() -> None:
    r = mcp_types.CallToolResult(content=[mcp_types.TextContent(text="hi")], structured_content={"a": 1}, is_error=True)
    assert result_to_text(r, structured=True) == 'Error: hi\n{"a":1}'


def test_anthropic_content_blocks() -> None:
    pdf = base64.b64encode(b"%PDF-1.4").decode()
    r = _result(
        content=[
            {"type": "text", "text": "see image"},
            {"type": "image", "data": PNG, "mimeType": "image/png"},
            {"type": "image", "data": "AAAA", "mimeType": "image/bmp"},
            {"type": "resource", "resource": {"uri": "file:///r.pdf", "blob": pdf, "mimeType": "application/pdf"}},
        ]
    )
    blocks = result_to_anthropic_content(r)
    assert blocks[0] == {"type": "text", "text": "see image"}
    assert blocks[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    assert blocks[2] == {"type": "text", "text": "[image image/bmp, 3 B]"}
    assert blocks[3]["type"] == "document" and blocks[3]["source"]["data"] == pdf
    tr = anthropic_tool_result("toolu_1", _result(content=[{"type": "text", "text": "bad"}], isError=True))
    assert tr == {
        "type": "tool_result",
        "tool_use_id": "toolu_1",
        "content": [{"type": "text", "text": "bad"}],
        "is_error": True,
    }
    assert openai_image_parts(r) == [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]


BATCH = [
    {
        "tool": "catalog__get_product_info",
        "arguments": {"sku": "P-1"},
        "ok": True,
        "result": {"content": [{"type": "text", "text": "Phone X\n```\ncode\n```"}], "structuredContent": {"p": 1}},
        "latency_ms": 12.34,
    },
    {"tool": "inventory__check_stock", "arguments": {}, "ok": False, "error": "timed out", "latency_ms": 3000},
]


def test_render_batch_markdown() -> None:
    md = render_batch(BATCH, "markdown")
    assert md.startswith('### 1. catalog__get_product_info (ok, 12.3 ms)\nArguments: `{"sku":"P-1"}`\n````\n')
    assert "Phone X\n```\ncode\n```\n````" in md  # fence longer than any run inside
    assert "### 2. inventory__check_stock (error, 3000 ms)" in md
    assert "timed out" in md


def test_render_batch_json_and_plain() -> None:
    data = json.loads(render_batch(BATCH, "json"))
    assert data[0] == {
        "tool": "catalog__get_product_info",
        "arguments": {"sku": "P-1"},
        "ok": True,
        "latency_ms": 12.3,
        "result": "Phone X\n```\ncode\n```",
        "structured": {"p": 1},
    }
    assert data[1] == {
        "tool": "inventory__check_stock",
        "arguments": {},
        "ok": False,
        "latency_ms": 3000.0,
        "error": "timed out",
    }
    plain = render_batch(BATCH, "plain").splitlines()
    assert plain == [
        '1. catalog__get_product_info({"sku":"P-1"}) -> ok, 12.3 ms: Phone X ``` code ```',
        "2. inventory__check_stock({}) -> error, 3000 ms: timed out",
    ]


def test_render_batch_objects_errors_and_truncation() -> None:
    class Item:
        def __init__(self) -> None:
            self.server, self.tool, self.arguments = "pricing", "calc", {"a": 1}
            self.ok, self.error, self.latency_ms = False, TimeoutError("slow"), None
            self.result = None

    is_error = {"tool": "t", "result": {"content": [{"type": "text", "text": "y" * 50}], "isError": True}}
    lines = render_batch([Item(), is_error], "plain", max_chars=5).splitlines()
    assert lines[0] == '1. pricing/calc({"a":1}) -> error: TimeoutError: slow'
    assert lines[1] == "2. t({}) -> error: yyyyy…[truncated 45 chars]"
    with pytest.raises(ValueError, match="unknown batch format"):
        render_batch([], "html")  # type: ignore[arg-type]
