"""The callers of the fault campaign: one call through the Hub, the gateway's /mcp or its /v1, classified.

Every call ends as one of:

* ``ok``: the right answer (``add(19, 23)`` is 42; the scripted model's text);
* ``clear``: an error a caller can act on, of a type that fits an unavailable upstream — Hub:
  ``ToolTimeoutError``, ``ConnectionFailedError`` (and ``SessionLostError``), ``CircuitOpenError``,
  ``ConcurrencyLimitError``, ``ProtocolError``; gateway MCP: a JSON-RPC error ``-32001`` (timeout),
  ``-32003`` (upstream unavailable) or ``-32029`` (rate limited) with a message; gateway /v1: HTTP
  429, 502, 503 or 504 with an OpenAI-shaped error body, or, once a stream has started, an SSE
  ``error`` event;
* ``unclear``: anything else (a wrong answer, a generic internal error, a 500, a stream that
  just stops, an exception of another type). Its label says what it was.

A call that has not ended ``HARD_CAP`` seconds after its timeout is abandoned and counted as hung
(so is any call that took longer than its timeout + 1 s, whatever its outcome).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import aiohttp
import orjson

from toolmesh.errors import (
    CircuitOpenError,
    ConcurrencyLimitError,
    ConnectionFailedError,
    ProtocolError,
    ToolmeshError,
    ToolTimeoutError,
)
from toolmesh.hub import Hub

HARD_CAP = 10.0  # seconds past its timeout after which a call is abandoned (and counted hung)
Outcome = tuple[str, str]  # (ok | clear | unclear, label)
HUB_CLEAR = (ToolTimeoutError, ConnectionFailedError, CircuitOpenError, ConcurrencyLimitError, ProtocolError)
MCP_CLEAR = {-32001: "timeout", -32003: "upstream_unavailable", -32029: "rate_limited"}
CHAT_CLEAR = (429, 502, 503, 504)
ERA = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": ERA, "io.modelcontextprotocol/clientCapabilities": {}}


class Target(Protocol):
    """Something the callers call: ``timeout`` is the call's own budget in seconds."""

    name: str
    timeout: float

    async def call(self) -> Outcome: ...


class HubTarget:
    """``hub.call_tool(server, "add", {"a": 19, "b": 23}, timeout=...)`` in this process."""

    def __init__(self, hub: Hub, server: str, timeout: float) -> None:
        self.hub, self.server, self.timeout = hub, server, timeout
        self.name = f"hub/{server}"

    async def call(self) -> Outcome:
        try:
            result = await self.hub.call_tool(self.server, "add", {"a": 19, "b": 23}, timeout=self.timeout)
        except HUB_CLEAR as exc:
            return ("clear", type(exc).__name__) if str(exc) else ("unclear", f"{type(exc).__name__} (no message)")
        except ToolmeshError as exc:
            return "unclear", f"{type(exc).__name__}: {str(exc)[:80]}"
        except Exception as exc:
            return "unclear", f"{type(exc).__name__} (not a ToolmeshError): {str(exc)[:80]}"
        if result.ok and "42" in orjson.dumps(result.content).decode():
            return "ok", "ok"
        return "unclear", f"result {result.error_type}: {(result.error or '')[:80]}"


class GatewayMcpTarget:
    """A stateless (2026-07-28) ``tools/call`` of ``{server}__add`` on the gateway's ``/mcp``."""

    def __init__(self, session: aiohttp.ClientSession, base: str, key: str, server: str, timeout: float) -> None:
        self.session, self.timeout = session, timeout
        self.name = f"gateway/{server}"
        self.url = base + "/mcp"
        tool = f"{server}__add"
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                        "Accept": "application/json, text/event-stream", "Mcp-Protocol-Version": ERA,
                        "Mcp-Method": "tools/call", "Mcp-Name": tool}
        self.body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                  "params": {"name": tool, "arguments": {"a": 19, "b": 23}, "_meta": META}})

    async def call(self) -> Outcome:
        try:
            async with self.session.post(self.url, data=self.body, headers=self.headers) as r:
                raw = await r.read()
                status = r.status
        except aiohttp.ClientError as exc:
            return "unclear", f"gateway connection: {type(exc).__name__}"
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return "unclear", f"HTTP {status}, not JSON"
        if not isinstance(msg, dict):
            return "unclear", f"HTTP {status}, not a JSON-RPC message"
        if "result" in msg:
            result = msg["result"]
            if isinstance(result, dict) and not result.get("isError") and "42" in orjson.dumps(result).decode():
                return "ok", "ok"
            return "unclear", f"tool result isError: {orjson.dumps(result)[:80].decode(errors='replace')}"
        error = msg.get("error") if isinstance(msg.get("error"), dict) else {}
        code, message = error.get("code"), str(error.get("message") or "")
        if code in MCP_CLEAR and message:
            return "clear", f"{code} {MCP_CLEAR[code]}"
        return "unclear", f"HTTP {status} JSON-RPC {code}: {message[:80]}"


class ChatTarget:
    """``POST /v1/chat/completions`` (with ``tools``: passed through to the model), plain or streamed."""

    def __init__(self, session: aiohttp.ClientSession, base: str, key: str, model: str, timeout: float,
                 *, stream: bool = False) -> None:
        self.session, self.timeout, self.stream = session, timeout, stream
        self.name = "gateway/v1" + (" stream" if stream else "")
        self.url = base + "/v1/chat/completions"
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        tool = {"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {}}}}
        self.body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": "say the word"}],
                                  "tools": [tool], "stream": stream})

    async def call(self) -> Outcome:
        try:
            async with self.session.post(self.url, data=self.body, headers=self.headers) as r:
                status = r.status
                if status == 200 and self.stream:
                    return await _read_stream(r)
                raw = await r.read()
        except aiohttp.ClientPayloadError:
            return "unclear", "stream cut without an error event"
        except aiohttp.ClientError as exc:
            return "unclear", f"gateway connection: {type(exc).__name__}"
        try:
            msg: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return "unclear", f"HTTP {status}, not JSON"
        if status == 200:
            text = orjson.dumps(msg).decode()
            return ("ok", "ok") if "FAULTLESS" in text else ("unclear", f"HTTP 200, wrong answer: {text[:80]}")
        error = msg.get("error") if isinstance(msg, dict) and isinstance(msg.get("error"), dict) else {}
        if status in CHAT_CLEAR and error.get("message"):
            return "clear", f"HTTP {status}"
        return "unclear", f"HTTP {status}: {str(error.get('message') or raw[:80])[:80]}"


async def _read_stream(r: aiohttp.ClientResponse) -> Outcome:
    text, done, error = "", False, None
    async for line in r.content:
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            done = True
            break
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return "unclear", "stream: a data line that is not JSON"
        if isinstance(event, dict) and event.get("error"):
            error = event["error"]
            continue
        for choice in event.get("choices") or ():
            text += str((choice.get("delta") or {}).get("content") or "")
    if error is not None:
        return "clear", "stream error event"
    if done and "FAULTLESS" in text:
        return "ok", "ok"
    return "unclear", "stream ended without [DONE] or an error event" if not done else "stream: wrong text"


async def timed(target: Target) -> tuple[float, Outcome]:
    """One call, abandoned ``HARD_CAP`` s past its timeout: (seconds taken, outcome)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        async with asyncio.timeout(target.timeout + HARD_CAP):
            outcome = await target.call()
    except TimeoutError:
        outcome = ("unclear", "abandoned (no answer)")
    return loop.time() - start, outcome
