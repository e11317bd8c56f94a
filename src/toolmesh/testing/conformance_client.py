"""The Hub as the MCP conformance suite's client: ``python -m toolmesh.testing.conformance_client URL``.

``npx @modelcontextprotocol/conformance client --command "python -m toolmesh.testing.conformance_client"``
starts one scenario server per client scenario and runs this command with the server's URL
as the last argument, the scenario's name in ``MCP_CONFORMANCE_SCENARIO``, the protocol
revision under test in ``MCP_CONFORMANCE_PROTOCOL_VERSION`` and scenario data in
``MCP_CONFORMANCE_CONTEXT`` (JSON). Every scenario is driven through the public Hub API
(``list_tools``, ``call_tool``, ``forward``, ``list_catalog``...) so the suite measures
toolmesh's client, not a special path. Exit status 0 means the flow ran; the suite judges
what it saw on the wire.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from toolmesh.errors import McpRemoteError, ToolmeshError
from toolmesh.hub import Hub, ServerConfig
from toolmesh.hub.mrtr import complete, needs_input

log = logging.getLogger("toolmesh.conformance_client")

SERVER = "upstream"
MODERN = "2026-07-28"
CAPABILITIES: dict[str, Any] = {"roots": {"listChanged": False}, "elicitation": {"form": {}}}

Scenario = Callable[[Hub, dict[str, Any]], Awaitable[None]]
SCENARIOS: dict[str, Scenario] = {}


def scenario(*names: str) -> Callable[[Scenario], Scenario]:
    def register(fn: Scenario) -> Scenario:
        for name in names:
            SCENARIOS[name] = fn
        return fn

    return register


# -- helpers ---------------------------------------------------------------------------


def form_defaults(params: dict[str, Any]) -> dict[str, Any]:
    """An ``elicitation/create`` (form mode) accepted with every default the schema offers (SEP-1034)."""
    schema = params.get("requestedSchema") or {}
    content = {
        name: prop["default"]
        for name, prop in (schema.get("properties") or {}).items()
        if isinstance(prop, dict) and "default" in prop
    }
    return {"action": "accept", "content": content}


def sample_arguments(tool: dict[str, Any]) -> dict[str, Any]:
    """Minimal arguments satisfying the required properties of ``tool``'s input schema."""
    schema = tool.get("inputSchema") or {}
    props = schema.get("properties") or {}
    samples = {"string": "sample", "integer": 1, "number": 1, "boolean": True, "object": {}, "array": []}
    out: dict[str, Any] = {}
    for name in schema.get("required") or []:
        kind = (props.get(name) or {}).get("type")
        out[name] = samples.get(kind if isinstance(kind, str) else "string", "sample")
    return out


async def answer(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """What this client answers when a server asks for input."""
    if method == "elicitation/create":
        return form_defaults(params)
    if method == "roots/list":
        return {"roots": []}
    raise McpRemoteError(-32601, f"client does not support {method}")


async def call(hub: Hub, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """``tools/call`` through the Hub; a 2026-07-28 ``input_required`` result is completed."""
    params = {"name": tool, "arguments": arguments}
    result = await hub.forward(SERVER, "tools/call", params, on_request=answer)
    if needs_input(result):
        result = await complete(lambda p: hub.forward(SERVER, "tools/call", p, on_request=answer),
                                params, result, answer)
    return result


async def tools(hub: Hub) -> list[dict[str, Any]]:
    """The server's tools under their own names (the Hub's catalogue, invalid definitions dropped)."""
    return [{**t, "name": t["_tool"]} for t in await hub.list_tools(server=SERVER)]


# -- scenarios -------------------------------------------------------------------------


@scenario("initialize")
async def run_initialize(hub: Hub, context: dict[str, Any]) -> None:
    await tools(hub)


@scenario("tools_call")
async def run_tools_call(hub: Hub, context: dict[str, Any]) -> None:
    await tools(hub)
    result = await hub.call_tool(SERVER, "add_numbers", {"a": 5, "b": 3})
    log.info("add_numbers: %s", result.text)


@scenario("sse-retry")
async def run_sse_retry(hub: Hub, context: dict[str, Any]) -> None:
    await tools(hub)
    result = await hub.call_tool(SERVER, "test_reconnection", {})
    log.info("test_reconnection: %s", result.text)


@scenario("elicitation-sep1034-client-defaults")
async def run_elicitation_defaults(hub: Hub, context: dict[str, Any]) -> None:
    await tools(hub)
    await call(hub, "test_client_elicitation_defaults", {})


@scenario("json-schema-2020-12-preservation")
async def run_schema_preservation(hub: Hub, context: dict[str, Any]) -> None:
    listed = {t["name"]: t for t in await tools(hub)}
    focal = next(name for name in listed if name != "json_schema_echo")
    await hub.call_tool(SERVER, "json_schema_echo", {"schema": listed[focal]["inputSchema"]})


@scenario("json-schema-ref-no-deref")
async def run_ref_no_deref(hub: Hub, context: dict[str, Any]) -> None:
    # Listing plus a validated call: the Hub resolves same-document refs, never fetches a network one.
    for tool in await tools(hub):
        with_profile = {**sample_arguments(tool), "id": "user-1", "profile": {"displayName": "Ada"}}
        for arguments in (sample_arguments(tool) | {"id": "user-1"}, with_profile):
            try:
                await hub.call_tool(SERVER, tool["name"], arguments)
            except ToolmeshError as exc:
                log.info("%s: %s", tool["name"], exc)


@scenario("sep-2322-client-request-state")
async def run_request_state(hub: Hub, context: dict[str, Any]) -> None:
    await tools(hub)

    async def between_rounds(method: str, params: dict[str, Any]) -> dict[str, Any]:
        # Another call while a multi-round call is pending must not inherit its state.
        await call(hub, "test_mrtr_unrelated", {})
        return await answer(method, params)

    params = {"name": "test_mrtr_echo_state", "arguments": {}}
    first = await hub.forward(SERVER, "tools/call", params)
    await complete(lambda p: hub.forward(SERVER, "tools/call", p), params, first, between_rounds)
    await call(hub, "test_mrtr_no_state", {})
    await call(hub, "test_mrtr_no_result_type", {})


@scenario("http-custom-headers")
async def run_custom_headers(hub: Hub, context: dict[str, Any]) -> None:
    await tools(hub)
    for item in context.get("toolCalls") or []:
        # Sent as given (forward: no local validation), e.g. a null optional argument.
        await call(hub, item["name"], item.get("arguments") or {})


@scenario("http-invalid-tool-headers")
async def run_invalid_tool_headers(hub: Hub, context: dict[str, Any]) -> None:
    for tool in await tools(hub):  # the Hub has dropped the definitions with invalid x-mcp-header
        await hub.call_tool(SERVER, tool["name"], sample_arguments(tool))


@scenario("http-standard-headers", "request-metadata")
async def run_everything(hub: Hub, context: dict[str, Any]) -> None:
    """List and use every tool, resource and prompt the server offers."""
    for tool in await tools(hub):
        await call(hub, tool["name"], sample_arguments(tool))
    catalog = await hub.list_catalog("resources", server=SERVER)
    for resource in catalog.get(SERVER, []):
        await hub.read_resource(SERVER, resource["uri"])
    prompts = await hub.list_catalog("prompts", server=SERVER)
    for prompt in prompts.get(SERVER, []):
        args = {a["name"]: "sample" for a in prompt.get("arguments") or [] if a.get("required")}
        await hub.get_prompt(SERVER, prompt["name"], args)


async def run(url: str, name: str, version: str, context: dict[str, Any]) -> None:
    """Run scenario ``name`` against ``url`` at protocol ``version``."""
    if name.startswith("auth/"):
        raise SystemExit(f"{name}: toolmesh's Hub has no OAuth client (credentials come from server config)")
    protocol = "auto" if version == MODERN else version
    async with Hub(client_capabilities=CAPABILITIES) as hub:
        await hub.register(ServerConfig(name=SERVER, url=url, protocol=protocol, retries=0,  # type: ignore[arg-type]
                                        # the suite's scenario servers answer their first request
                                        # slowly (schema compilation) when eight start at once
                                        timeout=20.0, connect_timeout=30.0))
        await SCENARIOS.get(name, run_everything)(hub, context)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        raise SystemExit("usage: python -m toolmesh.testing.conformance_client URL")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    name = os.environ.get("MCP_CONFORMANCE_SCENARIO", "")
    version = os.environ.get("MCP_CONFORMANCE_PROTOCOL_VERSION", "2025-11-25")
    context = json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")
    asyncio.run(run(args[-1], name, version, context))


if __name__ == "__main__":
    main()
