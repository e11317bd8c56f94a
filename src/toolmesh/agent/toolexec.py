"""Running one turn's tool calls (AGT-2): all at once, bounded, each with its own timeout.

Failures never end the run: a malformed call, an unknown tool, a tool error or a
timeout becomes a tool message the model can read, with the exact ``tool_call_id``.
"""

from __future__ import annotations

from typing import Any

from toolmesh.agent.events import ToolCallRecord
from toolmesh.agent.run_state import RunState
from toolmesh.hub import ToolResult
from toolmesh.hub.render import result_to_text
from toolmesh.llm.types import ToolCall

__all__ = ["MAX_RESULT_CHARS", "execute_tool_calls"]

#: Longest tool result handed to the model, in characters.
MAX_RESULT_CHARS = 16_000


async def execute_tool_calls(run: RunState, calls: list[ToolCall]) -> list[tuple[ToolCallRecord, str]]:
    """Results in the order of ``calls``: (record, text for the tool message)."""
    cfg = run.cfg
    runnable = [c for c in calls if c.parse_error is None]
    results: dict[str, ToolResult] = {}
    if runnable:
        results = await run.agent.hub.batch_call(
            [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in runnable],
            tenant=run.tenant, user=run.user, timeout=cfg.tool_timeout, concurrency=cfg.max_parallel_tools,
        )
    out: list[tuple[ToolCallRecord, str]] = []
    for call in calls:
        if call.parse_error is not None:
            msg = (f"Error: the arguments of this call were not valid JSON ({call.parse_error}). "
                   "Call it again with a JSON object.")
            out.append((ToolCallRecord(call.id, call.name, {}, False, 0.0, call.parse_error), msg))
            continue
        r = results[call.id]
        record = ToolCallRecord(call.id, call.name, call.arguments, r.ok, round(r.latency_ms, 3), r.error,
                                r.server, r.tool)
        if r.ok or r.is_error:
            text = result_to_text(_as_mcp(r), max_chars=MAX_RESULT_CHARS)
        elif r.error_type == "ToolTimeoutError":
            text = f"[{cfg.tool_fallback}]"
        else:
            text = f"Error: {r.error_type}: {r.error}"
        guard = run.agent.guard
        if r.ok and cfg.guard_tool_output and guard is not None:
            result = guard.apply_tool(text, tenant=run.tenant)
            if result.warning:
                run.defer_warning("tool_output_injection", f"tool {call.name}: {result.warning}")
            text = str(result.text)
        out.append((record, text))
    return out


def _as_mcp(r: ToolResult) -> dict[str, Any]:
    return {"content": r.content, "structuredContent": r.structured, "isError": r.is_error}

