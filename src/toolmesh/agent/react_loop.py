"""ReAct mode (AGT-5) for models without native tool calling: Thought / Action / Observation text."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from toolmesh.agent.answers import budget_answer, fallback_answer
from toolmesh.agent.events import AgentEvent, Final, ToolCallFinished, ToolCallStarted, Warning
from toolmesh.agent.model_call import call_model
from toolmesh.agent.react import (
    REACT_STOP,
    ReactAction,
    ReactError,
    ReactFinal,
    format_observation,
    parse_react,
    react_system_prompt,
)
from toolmesh.agent.run_state import RunState
from toolmesh.agent.toolexec import execute_tool_calls
from toolmesh.errors import BudgetExceededError
from toolmesh.llm import types as t

__all__ = ["react_events"]


async def react_events(run: RunState, messages: list[t.Message],
                       tools: list[dict[str, Any]]) -> AsyncIterator[AgentEvent]:
    """Run the ReAct loop on ``messages`` (the last one the user's question) until a final answer."""
    cfg = run.cfg
    names = {tool["function"]["name"] for tool in tools}
    schemas = {tool["function"]["name"]: tool["function"].get("parameters") or {} for tool in tools}
    convo = [t.Message("system", react_system_prompt(tools)), *[m for m in messages if m.role != "system"]]
    new_start = len(messages) - 1
    answer: str | None = None
    status = "completed"
    try:
        while run.turns < cfg.max_turns:
            response = None
            async for ev in call_model(run, convo, None, "none", list(REACT_STOP)):
                if isinstance(ev, t.ChatResponse):
                    response = ev
                else:
                    yield ev
            assert response is not None
            run.turns += 1
            text = response.message.content or ""
            step = parse_react(text, names, schemas=schemas)
            if isinstance(step, ReactFinal):
                answer = step.answer
                break
            convo.append(t.Message("assistant", text if not isinstance(step, ReactAction) else step.raw))
            if isinstance(step, ReactError):
                convo.append(t.Message("user", f"Observation: {step.message}"))
                continue
            assert isinstance(step, ReactAction)
            # actions listed together are independent: run them in parallel, observe in order
            calls = [t.ToolCall(f"react_{uuid.uuid4().hex[:8]}", a.tool, a.arguments) for a in [step, *step.parallel]]
            stop = run.loop_guard(calls)
            if stop is not None:
                status = stop
                break
            for call in calls:
                yield ToolCallStarted(call.id, call.name, call.arguments)
            outcomes = await execute_tool_calls(run, calls)
            observations = []
            for call, (record, result) in zip(calls, outcomes, strict=True):
                run.records.append(record)
                yield ToolCallFinished(call.id, call.name, record.ok, record.latency_ms, result, record.error)
                observations.append(format_observation(result, 4000))
            convo.append(t.Message("user", "\n".join(f"Observation: {o}" for o in observations)))
        else:
            status = "max_turns"
        if not answer:
            yield Warning(status, f"ReAct loop ended ({status}); asking for a final answer")
            convo.append(t.Message("user", "Give your Final Answer now."))
            response = None
            async for ev in call_model(run, convo, None, "none"):
                if isinstance(ev, t.ChatResponse):
                    response = ev
                else:
                    yield ev
            assert response is not None
            step = parse_react(response.message.content or "", names, schemas=schemas)
            answer = step.answer if isinstance(step, ReactFinal) else (response.message.content or "").strip()
            if not answer:
                observed = [t.Message("tool", (m.content or "").removeprefix("Observation: "))
                            for m in convo if m.role == "user" and (m.content or "").startswith("Observation: ")]
                answer = fallback_answer(observed)
    except BudgetExceededError as exc:
        yield Warning("budget_exceeded", str(exc))
        yield Final(run.result(budget_answer(convo), "budget_exceeded", exc.report))
        return
    messages.append(t.Message("assistant", answer))
    await run.agent.history.save(run.tenant, run.user, run.conversation, messages[new_start:])
    yield Final(run.result(answer, status, None))  # type: ignore[arg-type]
