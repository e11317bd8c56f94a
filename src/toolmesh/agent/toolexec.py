"""Running one turn's tool calls (AGT-2): all at once, bounded, each with its own timeout.

Failures never end the run: a malformed call, an unknown tool, a tool error or a
timeout becomes a tool message the model can read, with the exact ``tool_call_id``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from toolmesh.agent.events import ToolCallRecord
from toolmesh.hub.render import result_to_text
from toolmesh.llm.types import ToolCall

if TYPE_CHECKING:
    from toolmesh.agent.runtime import _Run

#: Longest tool result handed to the model, in characters.
MAX_RESULT_CHARS = 16_000


async def execute_tool_calls(run: _Run, calls: list[ToolCall]) -> list[tuple[ToolCallRecord, str]]:
    """Results in the order of ``calls``: (record, text for the tool message)."""
    cfg = run.cfg
    runnable = [c for c in calls if c.parse_error is None]
    results = {}
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
        if r.ok and cfg.guard_tool_output and run.agent.guard is not None:
            text = _scan_output(run, call, text)
        out.append((record, text))
    return out


def _as_mcp(r: Any) -> dict[str, Any]:
    return {"content": r.content, "structuredContent": r.structured, "isError": r.is_error}


def _scan_output(run: _Run, call: ToolCall, text: str) -> str:
    result = run.agent.guard.apply_tool(text, tenant=run.tenant)
    if result.warning:
        note = f"tool {call.name}: {result.warning}"
        run.warnings.append(note)
        from toolmesh.agent.events import Warning

        run._pending_warnings.append(Warning("tool_output_injection", note))
    return str(result.text)
