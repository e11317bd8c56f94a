"""``toolmesh chat``: one question (or an interactive session) through the agent runtime."""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import Any

from rich.console import Console

from toolmesh.agent.events import (
    Final,
    ReasoningDelta,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    UsageUpdate,
    Warning,
)
from toolmesh.cli.common import EXIT_FAILED, EXIT_OK, emit_json
from toolmesh.hub.configfile import ToolmeshConfig


def result_json(result: Any) -> dict[str, Any]:
    """The ``--json`` shape: ``{answer, tool_calls, usage, cost_usd, turns}`` plus detail."""
    return {
        "answer": result.answer,
        "tool_calls": [{"name": c.name, "arguments": c.arguments, "ok": c.ok, "latency_ms": c.latency_ms,
                        **({"error": c.error} if c.error else {})} for c in result.tool_calls],
        "usage": result.usage,
        "cost_usd": result.cost_usd,
        "turns": result.turns,
        "status": result.status,
        "models": result.models,
        "latency_ms": result.latency_ms,
        "warnings": result.warnings,
        "conversation": result.conversation,
    }


async def run_chat(config: ToolmeshConfig, question: str | None, *, model: str | None, as_json: bool,
                   user: str, tenant: str, conversation: str | None) -> int:
    from toolmesh.agent.factory import build_agent

    stack = await build_agent(config, model=model)
    console = Console(stderr=True)
    try:
        if question is not None:
            return await _one(stack, question, as_json=as_json, console=console, user=user, tenant=tenant,
                              conversation=conversation)
        conversation = conversation or uuid.uuid4().hex[:12]
        console.print(f"[bold]toolmesh chat[/] — model {stack.agent.config.model}; empty line or Ctrl-D to quit")
        while True:
            try:
                line = (await asyncio.to_thread(input, "you> ")).strip()
            except (EOFError, KeyboardInterrupt):
                break
            if not line:
                break
            await _one(stack, line, as_json=False, console=console, user=user, tenant=tenant,
                       conversation=conversation)
        return EXIT_OK
    finally:
        await stack.aclose()


async def _one(stack: Any, question: str, *, as_json: bool, console: Console, user: str, tenant: str,
               conversation: str | None) -> int:
    result = None
    streamed = False
    async for ev in stack.agent.stream(question, tenant=tenant, user=user, conversation=conversation):
        if isinstance(ev, Final):
            result = ev.result
        elif as_json:
            continue
        elif isinstance(ev, TextDelta):
            sys.stdout.write(ev.text)
            sys.stdout.flush()
            streamed = True
        elif isinstance(ev, ReasoningDelta):
            console.print(f"[dim]{ev.text}[/]", end="")
        elif isinstance(ev, ToolCallStarted):
            console.print(f"[cyan]→ {ev.name}[/] {ev.arguments}")
        elif isinstance(ev, ToolCallFinished):
            mark = "[green]✓[/]" if ev.ok else "[red]✗[/]"
            console.print(f"  {mark} {ev.name} {ev.latency_ms:.0f} ms" + (f" — {ev.error}" if ev.error else ""))
        elif isinstance(ev, UsageUpdate):
            cost = "unpriced" if ev.cost_usd is None else f"${ev.cost_usd:.6f}"
            console.print(f"[dim]  {ev.model}: {ev.input_tokens}+{ev.output_tokens} tokens, {cost}, "
                          f"{ev.latency_ms:.0f} ms[/]")
        elif isinstance(ev, Warning):
            console.print(f"[yellow]! {ev.message}[/]")
    assert result is not None
    if as_json:
        emit_json(result_json(result))
    else:
        if not streamed or result.status != "completed":
            sys.stdout.write(result.answer)
        sys.stdout.write("\n")
        cost = "unpriced" if result.cost_usd is None else f"${result.cost_usd:.6f}"
        console.print(f"[dim]{result.turns} turns, {len(result.tool_calls)} tool calls, "
                      f"{result.usage.get('total_tokens', 0)} tokens, {cost}, {result.latency_ms:.0f} ms[/]")
    return EXIT_OK if result.status in ("completed", "max_turns", "repeated_calls", "max_tool_calls") else EXIT_FAILED
