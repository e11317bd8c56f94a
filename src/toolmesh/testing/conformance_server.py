"""The MCP conformance suite's server fixtures, written with the SDK's ``MCPServer`` API.

``python -m toolmesh.testing.conformance_server --port P [--host 127.0.0.1]`` serves them over
Streamable HTTP at ``/mcp`` (both protocol eras on one endpoint) with toolmesh's own
frontends (:func:`toolmesh.servers.serve`), so ``conformance server --url …/mcp`` measures
toolmesh, not the SDK's transports. Names, payloads and behaviour follow the suite's
scenarios (``@modelcontextprotocol/conformance``, ``src/scenarios/server``) and its reference
``everything-server``. The 2026-07-28 multi-round-trip (``InputRequiredResult``) fixtures live
in :mod:`toolmesh.testing.conformance_mrtr`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
from typing import Annotated, Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.prompts.base import UserMessage
from mcp_types import (
    AudioContent,
    Completion,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    SamplingMessage,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)
from pydantic import Field

from toolmesh.servers import ToolServer, close_sse_stream, serve
from toolmesh.testing.conformance_mrtr import register_mrtr

#: 1x1 red PNG and a minimal WAV (the suite's own sample payloads).
IMAGE_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
AUDIO_B64 = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="
LOGGER = "conformance-test-server"

#: SEP-1613 / SEP-2106: a raw JSON Schema 2020-12 input schema that must survive tools/list verbatim.
JSON_SCHEMA_2020_12: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}

_DEFAULTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "User name", "default": "John Doe"},
        "age": {"type": "integer", "description": "User age", "default": 30},
        "score": {"type": "number", "description": "User score", "default": 95.5},
        "status": {
            "type": "string",
            "description": "User status",
            "enum": ["active", "inactive", "pending"],
            "default": "active",
        },
        "verified": {"type": "boolean", "description": "Verification status", "default": True},
    },
    "required": [],
}

_OPTIONS = ["option1", "option2", "option3"]
_ENUMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "untitledSingle": {"type": "string", "description": "Select one option", "enum": _OPTIONS},
        "titledSingle": {
            "type": "string",
            "description": "Select one option with titles",
            "oneOf": [
                {"const": "value1", "title": "First Option"},
                {"const": "value2", "title": "Second Option"},
                {"const": "value3", "title": "Third Option"},
            ],
        },
        "legacyEnum": {
            "type": "string",
            "description": "Select one option (legacy)",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        },
        "untitledMulti": {
            "type": "array",
            "description": "Select multiple options",
            "minItems": 1,
            "maxItems": 3,
            "items": {"type": "string", "enum": _OPTIONS},
        },
        "titledMulti": {
            "type": "array",
            "description": "Select multiple options with titles",
            "minItems": 1,
            "maxItems": 3,
            "items": {
                "anyOf": [
                    {"const": "value1", "title": "First Choice"},
                    {"const": "value2", "title": "Second Choice"},
                    {"const": "value3", "title": "Third Choice"},
                ]
            },
        },
    },
    "required": [],
}


def _text(text: str) -> TextContent:
    return TextContent(type="text", text=text)


def _image() -> ImageContent:
    return ImageContent(type="image", data=IMAGE_B64, mime_type="image/png")


def _embedded(uri: str, text: str, mime: str = "text/plain") -> EmbeddedResource:
    return EmbeddedResource(type="resource", resource=TextResourceContents(uri=uri, mime_type=mime, text=text))


def _register_tools(server: ToolServer) -> None:
    @server.tool(description="Tests simple text content response")
    def test_simple_text() -> list[TextContent]:
        return [_text("This is a simple text response for testing.")]

    @server.tool(description="Tests image content response")
    def test_image_content() -> list[ImageContent]:
        return [_image()]

    @server.tool(description="Tests audio content response")
    def test_audio_content() -> list[AudioContent]:
        return [AudioContent(type="audio", data=AUDIO_B64, mime_type="audio/wav")]

    @server.tool(description="Tests embedded resource content response")
    def test_embedded_resource() -> list[EmbeddedResource]:
        return [_embedded("test://embedded-resource", "This is an embedded resource content.")]

    @server.tool(description="Tests response with multiple content types (text, image, resource)")
    def test_multiple_content_types() -> list[TextContent | ImageContent | EmbeddedResource]:
        data = json.dumps({"test": "data", "value": 123})
        return [
            _text("Multiple content types test:"),
            _image(),
            _embedded("test://mixed-content-resource", data, "application/json"),
        ]

    @server.tool(description="Tests tool that emits log messages during execution")
    async def test_tool_with_logging(ctx: Context) -> str:
        for step, message in enumerate(("Tool execution started", "Tool processing data", "Tool execution completed")):
            if step:
                await asyncio.sleep(0.05)
            await ctx.session.send_log_message(level="info", data=message, logger=LOGGER)
        return "Tool with logging executed successfully"

    @server.tool(description="Tests tool that reports progress notifications")
    async def test_tool_with_progress(ctx: Context) -> str:
        for step, progress in enumerate((0, 50, 100)):
            if step:
                await asyncio.sleep(0.05)
            await ctx.report_progress(progress, 100, f"Completed step {progress} of 100")
        token = ctx.request_context.meta.get("progressToken") if ctx.request_context.meta else None
        return str(token if token is not None else 0)

    @server.tool(description="Tests SSE stream disconnection and client reconnection (SEP-1699): the server "
                             "closes the stream mid-call and sends the result after the client reconnects")
    async def test_reconnection() -> str:
        await close_sse_stream()
        await asyncio.sleep(0.1)  # the result is produced while the client is away
        return ("Reconnection test completed successfully. If you received this, the client properly "
                "reconnected after stream closure.")

    @server.tool(description="Tests error response handling")
    def test_error_handling() -> str:
        raise RuntimeError("This tool intentionally returns an error for testing")

    @server.tool(description="Tests server-initiated sampling (LLM completion request)")
    async def test_sampling(prompt: str, ctx: Context) -> str:
        message = SamplingMessage(role="user", content=_text(prompt))
        result = await ctx.session.create_message([message], max_tokens=100)
        content = result.content
        text = content.text if isinstance(content, TextContent) else "No response"
        return f"LLM response: {text}"

    @server.tool(description="Tests server-initiated elicitation (user input request)")
    async def test_elicitation(message: str, ctx: Context) -> str:
        schema = {
            "type": "object",
            "properties": {
                "username": {"type": "string", "description": "User's response"},
                "email": {"type": "string", "description": "User's email address"},
            },
            "required": ["username", "email"],
        }
        result = await ctx.session.elicit_form(message, schema)
        return f"User response: action={result.action}, content={json.dumps(result.content or {})}"

    @server.tool(description="Lists the client's roots (server-initiated roots/list; not a suite fixture)")
    async def test_list_roots(ctx: Context) -> str:
        result = await ctx.session.list_roots()
        return f"Roots: {', '.join(str(r.uri) for r in result.roots)}"

    @server.tool(description="Tests elicitation with default values per SEP-1034")
    async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
        result = await ctx.session.elicit_form(
            "Please review and update the form fields with defaults", _DEFAULTS_SCHEMA
        )
        return f"Elicitation completed: action={result.action}, content={json.dumps(result.content or {})}"

    @server.tool(description="Tests elicitation with enum schema improvements per SEP-1330")
    async def test_elicitation_sep1330_enums(ctx: Context) -> str:
        result = await ctx.session.elicit_form("Please select options from the enum fields", _ENUMS_SCHEMA)
        return f"Elicitation completed: action={result.action}, content={json.dumps(result.content or {})}"

    @server.tool(description="Tool with JSON Schema 2020-12 features for conformance testing (SEP-1613)")
    def json_schema_2020_12_tool(name: str | None = None, address: dict[str, Any] | None = None, **extra: Any) -> str:
        args = {k: v for k, v in {"name": name, "address": address}.items() if v is not None}
        return f"JSON Schema 2020-12 tool called with: {json.dumps(args)}"

    @server.tool(description="Echoes a region the client mirrors into the Mcp-Param-Region header (SEP-2243)")
    def test_header_param(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})]) -> str:
        return f"region={region}"

    # Advertise the raw 2020-12 schema (the SDK would derive one from the signature).
    tool = server._tool_manager.get_tool("json_schema_2020_12_tool")
    assert tool is not None
    tool.parameters = JSON_SCHEMA_2020_12


def _register_resources(server: ToolServer) -> None:
    @server.resource(
        "test://static-text",
        name="static-text",
        title="Static Text Resource",
        description="A static text resource for testing",
        mime_type="text/plain",
    )
    def static_text() -> str:
        return "This is the content of the static text resource."

    @server.resource(
        "test://static-binary",
        name="static-binary",
        title="Static Binary Resource",
        description="A static binary resource (image) for testing",
        mime_type="image/png",
    )
    def static_binary() -> bytes:
        return base64.b64decode(IMAGE_B64)

    @server.resource(
        "test://template/{id}/data",
        name="template",
        title="Resource Template",
        description="A resource template with parameter substitution",
        mime_type="application/json",
    )
    def template(id: str) -> str:
        return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})

    @server.resource(
        "test://watched-resource",
        name="watched-resource",
        title="Watched Resource",
        description="A resource clients may subscribe to",
        mime_type="text/plain",
    )
    def watched() -> str:
        return "Watched resource content"

    subscribed: set[str] = set()

    async def subscribe(ctx: Any, params: SubscribeRequestParams) -> EmptyResult:
        subscribed.add(str(params.uri))
        return EmptyResult()

    async def unsubscribe(ctx: Any, params: UnsubscribeRequestParams) -> EmptyResult:
        subscribed.discard(str(params.uri))
        return EmptyResult()

    # The SDK's lowlevel hook for resources/subscribe (MCPServer has no decorator for it).
    low = server._lowlevel_server
    low.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
    low.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)


def _register_prompts(server: ToolServer) -> None:
    @server.prompt(
        name="test_simple_prompt", title="Simple Test Prompt", description="A simple prompt without arguments"
    )
    def simple() -> list[UserMessage]:
        return [UserMessage("This is a simple prompt for testing.")]

    @server.prompt(
        name="test_prompt_with_arguments",
        title="Prompt With Arguments",
        description="A prompt with required arguments",
    )
    def with_arguments(arg1: str, arg2: str) -> list[UserMessage]:
        return [UserMessage(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'")]

    @server.prompt(
        name="test_prompt_with_embedded_resource",
        title="Prompt With Embedded Resource",
        description="A prompt that includes an embedded resource",
    )
    def with_resource(resourceUri: str) -> list[UserMessage]:
        return [
            UserMessage(_embedded(resourceUri, "Embedded resource content for testing.")),
            UserMessage("Please process the embedded resource above."),
        ]

    @server.prompt(
        name="test_prompt_with_image", title="Prompt With Image", description="A prompt that includes image content"
    )
    def with_image() -> list[UserMessage]:
        return [UserMessage(_image()), UserMessage("Please analyze the image above.")]

    @server.completion()  # type: ignore[no-untyped-call, untyped-decorator]  # the SDK leaves it untyped
    async def complete(ref: Any, argument: Any, context: Any) -> Completion:
        return Completion(values=[], total=0, has_more=False)


def build_server() -> ToolServer:
    """The fixtures server: every tool, resource and prompt the suite's server scenarios call."""
    server = ToolServer("mcp-conformance-test-server", version="1.0.0", list_ttl=300.0)
    _register_tools(server)
    _register_resources(server)
    _register_prompts(server)
    register_mrtr(server)
    return server


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and serve until interrupted; returns the exit code."""
    ap = argparse.ArgumentParser(
        prog="python -m toolmesh.testing.conformance_server",
        description="Serve the MCP conformance suite's server fixtures (Streamable HTTP at /mcp by default).",
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=3000)
    ap.add_argument(
        "--transport", choices=["http", "stdio"], default="http", help="http: /mcp, /sse and /ws on one listener"
    )
    args = ap.parse_args(argv)
    serve(build_server(), args.transport, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
