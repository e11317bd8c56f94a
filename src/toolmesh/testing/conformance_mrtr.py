"""The conformance suite's 2026-07-28 fixtures: multi-round-trip (``InputRequiredResult``) tools,
the capability probe, the stream diagnostics and the list-change triggers (SEP-2322, SEP-2575).

On the 2026-07-28 wire a server asks the client for input by answering ``tools/call`` /
``prompts/get`` with ``resultType: "input_required"`` plus ``inputRequests``; the client retries
the same request carrying ``inputResponses`` (and the echoed ``requestState``), which the tools
read through the SDK's ``ctx.input_responses`` / ``ctx.request_state``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from typing import Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.prompts.base import UserMessage
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, MISSING_REQUIRED_CLIENT_CAPABILITY, InputRequiredResult

from toolmesh.servers import ToolServer

#: Signs requestState so a tampered one is refused (per-process secret).
_SECRET = secrets.token_bytes(32)


def _elicit(message: str, field: str, kind: str = "string") -> dict[str, Any]:
    schema = {"type": "object", "properties": {field: {"type": kind}}, "required": [field]}
    return {"method": "elicitation/create", "params": {"message": message, "requestedSchema": schema}}


def _sample(text: str, max_tokens: int) -> dict[str, Any]:
    messages = [{"role": "user", "content": {"type": "text", "text": text}}]
    return {"method": "sampling/createMessage", "params": {"messages": messages, "maxTokens": max_tokens}}


_ROOTS: dict[str, Any] = {"method": "roots/list", "params": {}}


def _input_required(requests: dict[str, dict[str, Any]], state: str | None = None) -> InputRequiredResult:
    wire: dict[str, Any] = {"resultType": "input_required", "inputRequests": requests}
    if state is not None:
        wire["requestState"] = state
    return InputRequiredResult.model_validate(wire, by_name=False)


def _responses(ctx: Context) -> dict[str, dict[str, Any]]:
    """The retry's ``inputResponses`` as wire dicts (empty on the first round)."""
    found = ctx.input_responses or {}
    return {k: v.model_dump(by_alias=True, mode="json", exclude_none=True) for k, v in found.items()}


def _field(response: dict[str, Any] | None, name: str) -> str:
    content = (response or {}).get("content")
    value = content.get(name) if isinstance(content, dict) else None
    return value if isinstance(value, str) else "unknown"


def _state(payload: dict[str, Any]) -> str:
    return json.dumps({**payload, "nonce": uuid.uuid4().hex})


def _read_state(ctx: Context) -> dict[str, Any]:
    try:
        state = json.loads(ctx.request_state or "")
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}


def sign_state(payload: dict[str, Any]) -> str:
    """``payload`` as an HMAC-signed requestState."""
    data = json.dumps({**payload, "nonce": uuid.uuid4().hex})
    mac = hmac.new(_SECRET, data.encode(), hashlib.sha256).hexdigest()
    return json.dumps({"data": data, "hmac": mac})


def verify_state(raw: str) -> dict[str, Any] | None:
    """The payload of a signed requestState, ``None`` when it was altered."""
    try:
        outer = json.loads(raw)
        data, mac = outer["data"], outer["hmac"]
        expected = hmac.new(_SECRET, data.encode(), hashlib.sha256).hexdigest()
        if not isinstance(mac, str) or not hmac.compare_digest(mac, expected):
            return None
        payload = json.loads(data)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return payload if isinstance(payload, dict) else None


def _declared(ctx: Context, capability: str) -> bool:
    caps = ctx.client_capabilities
    return caps is not None and getattr(caps, capability, None) is not None


def register_mrtr(server: ToolServer) -> None:
    """Add the 2026-07-28 fixtures to ``server``."""

    @server.tool(description="Test tool requiring sampling")
    def test_missing_capability(ctx: Context) -> str:
        if not _declared(ctx, "sampling"):
            raise MCPError(
                MISSING_REQUIRED_CLIENT_CAPABILITY,
                "MissingRequiredClientCapabilityError: this tool needs the 'sampling' capability",
                {"requiredCapabilities": {"sampling": {}}},
            )
        return "Success"

    @server.tool(description="MRTR: returns InputRequiredResult with elicitation request")
    def test_input_required_result_elicitation(ctx: Context) -> Any:
        answer = _responses(ctx).get("user_name")
        if answer is None:
            return _input_required({"user_name": _elicit("What is your name?", "name")})
        return f"Hello, {_field(answer, 'name')}!"

    @server.tool(description="MRTR: returns InputRequiredResult with sampling request")
    def test_input_required_result_sampling(ctx: Context) -> Any:
        answer = _responses(ctx).get("sample_request")
        if answer is None:
            return _input_required({"sample_request": _sample("What is the capital of France?", 100)})
        content = answer.get("content")
        text = content.get("text") if isinstance(content, dict) else None
        return f"Sampling result: {text if isinstance(text, str) else 'no response'}"

    @server.tool(description="MRTR: returns InputRequiredResult with roots/list request")
    def test_input_required_result_list_roots(ctx: Context) -> Any:
        answer = _responses(ctx).get("roots_request")
        if answer is None:
            return _input_required({"roots_request": _ROOTS})
        roots = answer.get("roots")
        return f"Found {len(roots) if isinstance(roots, list) else 0} root(s)"

    @server.tool(description="MRTR: returns InputRequiredResult with requestState")
    def test_input_required_result_request_state(ctx: Context) -> Any:
        answer = _responses(ctx).get("confirm")
        content = (answer or {}).get("content")
        if _read_state(ctx).get("kind") == "request-state" and isinstance(content, dict) and content.get("ok") is True:
            return "state-ok: requestState validated"
        return _input_required(
            {"confirm": _elicit("Please confirm", "ok", "boolean")}, _state({"kind": "request-state"})
        )

    @server.tool(description="MRTR: returns InputRequiredResult with multiple input requests")
    def test_input_required_result_multiple_inputs(ctx: Context) -> Any:
        got = _responses(ctx)
        if _read_state(ctx).get("kind") == "multiple-inputs" and {"user_name", "greeting", "client_roots"} <= set(got):
            greeting = got["greeting"].get("content")
            text = greeting.get("text") if isinstance(greeting, dict) else None
            roots = got["client_roots"].get("roots")
            count = len(roots) if isinstance(roots, list) else 0
            name = _field(got["user_name"], "name")
            return f"Name: {name}; Greeting: {text if isinstance(text, str) else 'Hello there!'}; Roots: {count}"
        requests = {
            "user_name": _elicit("What is your name?", "name"),
            "greeting": _sample("Generate a greeting", 50),
            "client_roots": _ROOTS,
        }
        return _input_required(requests, _state({"kind": "multiple-inputs"}))

    @server.tool(description="MRTR: multi-round InputRequiredResult workflow")
    def test_input_required_result_multi_round(ctx: Context) -> Any:
        state, got = _read_state(ctx), _responses(ctx)
        if state.get("round") == 1 and "step1" in got:
            name = _field(got["step1"], "name")
            step2 = _elicit("Step 2: What is your favorite color?", "color")
            return _input_required({"step2": step2}, _state({"round": 2, "name": name}))
        if state.get("round") == 2 and "step2" in got:
            who = state.get("name")
            color = _field(got["step2"], "color")
            return f"Multi-round complete for {who if isinstance(who, str) else 'friend'} who likes {color}"
        return _input_required({"step1": _elicit("Step 1: What is your name?", "name")}, _state({"round": 1}))

    @server.tool(description="MRTR: HMAC-signed requestState integrity test")
    def test_input_required_result_tampered_state(ctx: Context) -> Any:
        if ctx.request_state is not None:
            verified = verify_state(ctx.request_state)
            if verified is None:
                raise MCPError(INVALID_PARAMS, "requestState integrity check failed")
            if verified.get("kind") == "tamper-test" and "confirm" in _responses(ctx):
                return "integrity-ok: state verified"
        confirm = _elicit("Please confirm", "ok", "boolean")
        return _input_required({"confirm": confirm}, sign_state({"kind": "tamper-test"}))

    @server.tool(description="MRTR: respects client capabilities in inputRequests")
    def test_input_required_result_capabilities(ctx: Context) -> Any:
        got = _responses(ctx)
        if got:
            return f"capabilities-ok: received {','.join(got)}"
        requests: dict[str, dict[str, Any]] = {}
        if _declared(ctx, "elicitation"):
            requests["elicit_input"] = _elicit("Elicitation input", "value")
        if _declared(ctx, "sampling"):
            requests["sample_input"] = _sample("Sample request", 50)
        if not requests:
            return "No supported capabilities declared"
        return _input_required(requests, sign_state({"kind": "capabilities-test"}))

    @server.tool(description="Diagnostic tool validating response progress streams")
    async def test_streaming_elicitation(ctx: Context) -> str:
        await ctx.report_progress(50, 100)
        return "Streaming complete"

    @server.tool(description="Diagnostic logging validator tool")
    async def test_logging_tool(ctx: Context) -> str:
        # Delivered only when the request's _meta opted into a log level.
        await ctx.session.send_log_message(level="info", data="Diagnostic trace logging activated")
        return "Logging evaluated"

    @server.tool(description="Publishes a tools list-changed event to subscriptions/listen streams")
    async def test_trigger_tool_change(ctx: Context) -> str:
        await ctx.notify_tools_changed()
        return "Mutation triggered"

    @server.tool(description="Publishes a prompts list-changed event to subscriptions/listen streams")
    async def test_trigger_prompt_change(ctx: Context) -> str:
        await ctx.notify_prompts_changed()
        return "Mutation triggered"

    @server.prompt(name="test_input_required_result_prompt", description="MRTR: prompt that requires elicitation input")
    def input_required_prompt(ctx: Context) -> Any:
        answer = _responses(ctx).get("user_context")
        if answer is None:
            return _input_required({"user_context": _elicit("What context should the prompt use?", "context")})
        return [UserMessage(f"Prompt with context: {_field(answer, 'context')}")]
