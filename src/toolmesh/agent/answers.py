"""The texts a run ends with when the model cannot give one: a budget stop, a model that
stays silent, tool calls that were not executed."""

from __future__ import annotations

from toolmesh.llm import types as t

__all__ = ["FINAL_ANSWER_NUDGE", "budget_answer", "fallback_answer", "refusals"]

#: The user message that asks for a final answer with tools disabled.
FINAL_ANSWER_NUDGE = (
    "Answer the user now in plain text using the information above. Do not call any tools."
)


def fallback_answer(messages: list[t.Message]) -> str:
    """When the model still says nothing, answer from the tool results rather than with silence."""
    facts = [m.content for m in messages if m.role == "tool" and m.content and not m.content.startswith("[")]
    if facts:
        return "Here is what I found:\n" + "\n".join(f"- {f[:500]}" for f in facts[-5:])
    return "Sorry, I could not produce an answer to that. Please rephrase or try again."


def budget_answer(messages: list[t.Message]) -> str:
    """The last thing the assistant said (if anything) and why the run stopped."""
    last = next((m.content for m in reversed(messages) if m.role == "assistant" and m.content), None)
    note = "I had to stop here because the usage budget for this request or conversation is used up."
    return f"{last}\n\n({note})" if last else note


def refusals(calls: list[t.ToolCall], why: str) -> list[t.Message]:
    """Tool messages answering calls that were not run, so the transcript stays valid."""
    return [t.Message("tool", f"[{why}]", tool_call_id=c.id, name=c.name) for c in calls]
