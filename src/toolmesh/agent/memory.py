"""Conversation memory (AGT-8): near the context window, older turns become a summary.

The newest ``keep_last_messages`` stay verbatim (cut at a user message so a tool
call is never separated from its result); everything older is summarised by the
configured model (tools disabled), archived in the history store, and replaced by
one system message carrying the summary. The run then continues.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from toolmesh.llm import types as t

if TYPE_CHECKING:
    from toolmesh.agent.runtime import _Run

SUMMARY_PROMPT = (
    "Summarise the conversation so far for your own later use: the user's goal, facts learned from tools "
    "(exact numbers, ids, prices), decisions made and open questions. Be concise; keep the user's language."
)
SUMMARY_PREFIX = "Summary of the earlier conversation:\n"


def split_point(messages: list[t.Message], keep_last: int) -> int:
    """Index where the verbatim tail starts: at a user message, leaving at least ``keep_last``."""
    start = max(0, len(messages) - keep_last)
    while start > 0 and messages[start].role != "user":
        start -= 1
    return start


async def summarise_older(run: _Run, messages: list[t.Message]) -> str | None:
    """Summarise in place; returns a note for the event stream, or None when there was nothing to fold."""
    mem = run.cfg.memory
    system = [m for m in messages[:1] if m.role == "system" and not (m.content or "").startswith(SUMMARY_PREFIX)]
    body = messages[len(system):]
    cut = split_point(body, mem.keep_last_messages)
    older, tail = body[:cut], body[cut:]
    if len(older) < 2:
        return None
    transcript = "\n".join(_line(m) for m in older)
    request = t.ChatRequest(
        model=mem.summary_model or run.cfg.model,
        messages=[t.Message("system", SUMMARY_PROMPT), t.Message("user", transcript)],
        tool_choice="none", temperature=0, max_tokens=mem.summary_max_tokens,
    )
    response = None
    async for ev in _complete(run, request):
        response = ev
    if response is None or not (response.message.content or "").strip():
        return None
    summary = response.message.content.strip()
    messages[:] = [*system, t.Message("system", SUMMARY_PREFIX + summary), *tail]
    await run.agent.history.replace(run.tenant, run.user, run.conversation, messages, summary=transcript)
    return f"summarised {len(older)} earlier messages to stay within the context window"


async def _complete(run: _Run, request: t.ChatRequest):  # type: ignore[no-untyped-def]
    llm = run.agent.llm
    kw: dict[str, object] = {"timeout": run.cfg.llm_timeout}
    if hasattr(llm, "set_rules"):
        kw.update(scenario=run.cfg.scenario, tenant=run.tenant, user=run.user)
    yield await llm.complete(request, **kw)


def _line(m: t.Message) -> str:
    if m.role == "tool":
        return f"[tool {m.name} result] {(m.content or '')[:2000]}"
    if m.tool_calls:
        calls = ", ".join(f"{c.name}({c.raw_arguments or c.arguments})" for c in m.tool_calls)
        return f"assistant called: {calls}" + (f"; said: {m.content}" if m.content else "")
    return f"{m.role}: {m.content or ''}"
