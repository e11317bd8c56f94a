"""Conversation memory (AGT-8): near the context window, older turns become a summary.

The newest ``keep_last_messages`` stay verbatim (cut at a user message so a tool
call is never separated from its result); everything older is summarised by the
configured model (tools disabled), archived in the history store, and replaced by
one system message carrying the summary. The run then continues.
"""

from __future__ import annotations

from dataclasses import dataclass

from toolmesh.agent.config import MemoryConfig
from toolmesh.llm import types as t
from toolmesh.llm.base import ChatModel

__all__ = ["SUMMARY_PREFIX", "SUMMARY_PROMPT", "Summarised", "split_point", "summarise"]

SUMMARY_PROMPT = (
    "Summarise the conversation so far for your own later use: the user's goal, facts learned from tools "
    "(exact numbers, ids, prices), decisions made and open questions. Be concise; keep the user's language."
)
SUMMARY_PREFIX = "Summary of the earlier conversation:\n"


@dataclass(frozen=True, slots=True)
class Summarised:
    """The outcome of :func:`summarise`: the new message list and what was folded."""

    messages: list[t.Message]
    summary: str
    #: The folded messages as text (archived with the summary).
    transcript: str
    folded: int

    @property
    def note(self) -> str:
        """A line for the event stream."""
        return f"summarised {self.folded} earlier messages to stay within the context window"


def split_point(messages: list[t.Message], keep_last: int) -> int:
    """Index where the verbatim tail starts: at a user message, leaving at least ``keep_last``."""
    start = max(0, len(messages) - keep_last)
    while start > 0 and messages[start].role != "user":
        start -= 1
    return start


async def summarise(messages: list[t.Message], llm: ChatModel, memory: MemoryConfig, *, model: str,
                    timeout: float | None = None, scenario: str | None = None, tenant: str | None = None,
                    user: str | None = None) -> Summarised | None:
    """Fold everything but the newest ``memory.keep_last_messages`` into one summary message.

    ``model`` is used unless ``memory.summary_model`` names another. Returns None when there
    was too little to fold or the model gave no summary; ``messages`` is left unchanged."""
    system = [m for m in messages[:1] if m.role == "system" and not (m.content or "").startswith(SUMMARY_PREFIX)]
    body = messages[len(system):]
    cut = split_point(body, memory.keep_last_messages)
    older, tail = body[:cut], body[cut:]
    if len(older) < 2:
        return None
    transcript = "\n".join(_line(m) for m in older)
    request = t.ChatRequest(
        model=memory.summary_model or model,
        messages=[t.Message("system", SUMMARY_PROMPT), t.Message("user", transcript)],
        tool_choice="none", temperature=0, max_tokens=memory.summary_max_tokens,
    )
    response = await llm.complete(request, scenario=scenario, tenant=tenant, user=user, timeout=timeout)
    summary = (response.message.content or "").strip()
    if not summary:
        return None
    return Summarised([*system, t.Message("system", SUMMARY_PREFIX + summary), *tail], summary, transcript,
                      len(older))


def _line(m: t.Message) -> str:
    if m.role == "tool":
        return f"[tool {m.name} result] {(m.content or '')[:2000]}"
    if m.tool_calls:
        calls = ", ".join(f"{c.name}({c.raw_arguments or c.arguments})" for c in m.tool_calls)
        return f"assistant called: {calls}" + (f"; said: {m.content}" if m.content else "")
    return f"{m.role}: {m.content or ''}"
