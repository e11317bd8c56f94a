"""Agent benchmark: the floor, a hand-written agent with no framework.

It does exactly the HTTP exchanges every framework must do for one run (chat completion →
three concurrent MCP ``tools/call`` over Streamable HTTP, protocol 2026-07-28 → chat
completion) with aiohttp and orjson and nothing else: no validation, no events, no budgets,
no retries. Its latency is what this machine and these two servers cost; a framework's
overhead above the floor is the framework's own cost.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import orjson

from . import frameworks as F

MODEL = "bench-floor"
_TOOL_DEFS = [
    {"type": "function", "function": {
        "name": name, "description": f"{name} of a product",
        "parameters": {"type": "object", "properties": {k: {"type": "string"} for k in args},
                       "required": list(args)}}}
    for name, args, _ in F.TOOLS
]
_JSON = {"content-type": "application/json"}


class FloorAgent:
    """The floor client: ``await open(llm_url, mcp_url)``, ``run(question)``, ``aclose()``."""

    name = "floor"

    def __init__(self, session: Any, llm_url: str, mcp_url: str) -> None:
        self._s = session
        self._llm = llm_url.rstrip("/") + "/chat/completions"
        self._mcp = mcp_url
        self._ids = itertools.count(1)

    @classmethod
    async def open(cls, llm_url: str, mcp_url: str, **_: Any) -> FloorAgent:
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        return cls(session, llm_url, mcp_url)

    async def _complete(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        body = orjson.dumps({"model": MODEL, "messages": messages, "tools": _TOOL_DEFS})
        async with self._s.post(self._llm, data=body, headers=_JSON) as resp:
            data = orjson.loads(await resp.read())
        message: dict[str, Any] = data["choices"][0]["message"]
        return message

    async def _call(self, name: str, arguments: dict[str, Any]) -> str:
        msg = {"jsonrpc": "2.0", "id": next(self._ids), "method": "tools/call",
               "params": {"name": name, "arguments": arguments,
                          "_meta": {"io.modelcontextprotocol/protocolVersion": F.PROTOCOL,
                                    "io.modelcontextprotocol/clientCapabilities": {}}}}
        headers = {"content-type": "application/json", "accept": "application/json, text/event-stream",
                   "mcp-protocol-version": F.PROTOCOL, "mcp-method": "tools/call", "mcp-name": name}
        async with self._s.post(self._mcp, data=orjson.dumps(msg), headers=headers) as resp:
            data = orjson.loads(await resp.read())
        result = data.get("result") or {}
        if "error" in data or result.get("isError"):
            raise RuntimeError(f"tool {name} failed: {data}")
        return "".join(c.get("text", "") for c in result.get("content", ()))

    async def run(self, question: str) -> tuple[str, int]:
        messages: list[dict[str, Any]] = [{"role": "system", "content": F.INSTRUCTIONS},
                                          {"role": "user", "content": question}]
        first = await self._complete(messages)
        calls = first.get("tool_calls") or []
        messages.append(first)
        outputs = await asyncio.gather(*(self._call(c["function"]["name"], orjson.loads(c["function"]["arguments"]))
                                         for c in calls))
        ok = 0
        for call, text in zip(calls, outputs, strict=True):
            ok += F.real_result(call["function"]["name"], text)
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": text})
        final = await self._complete(messages)
        return str(final.get("content") or ""), ok

    async def aclose(self) -> None:
        await self._s.close()
