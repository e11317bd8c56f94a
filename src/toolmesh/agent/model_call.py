"""One model call of a run (AGT-4, AGT-9): reserved against every budget, streamed as events,
committed with the reported usage and written to the usage ledger.

The reservation is an upper bound: calibrated input tokens plus the request's
``max_tokens``. When the budget left allows less output than that, the request's
``max_tokens`` is lowered to what fits (once the model is calibrated, and never below the
largest output seen), so the last call that fits is made and spend stays under the limit.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import AsyncIterator
from typing import Any

from toolmesh.agent.budget import CallAsk
from toolmesh.agent.events import AgentEvent, ReasoningDelta, TextDelta, UsageUpdate
from toolmesh.agent.run_state import RunState
from toolmesh.errors import LLMError
from toolmesh.llm import types as t

__all__ = ["call_model", "record_usage"]

log = logging.getLogger("toolmesh.agent")

#: Output tokens assumed for a call without ``max_output_tokens`` until the model's are seen.
DEFAULT_OUTPUT_TOKENS = 1024


async def call_model(run: RunState, messages: list[t.Message], tools: list[dict[str, Any]] | None,
                     choice: t.ToolChoice, stop: list[str] | None = None,
                     ) -> AsyncIterator[AgentEvent | t.ChatResponse]:
    """One model call, charged to every budget; yields events, then the :class:`ChatResponse`.

    Until the model's token counts are calibrated against reported usage, budget-limited
    calls to it run one at a time, so concurrent runs can overshoot a limit by at most one
    in-flight call."""
    agent, model = run.agent, run.cfg.model
    if run.budgets.budgets and agent.calibration(model) is None:
        async with agent.probe_lock(model):
            if agent.calibration(model) is None:
                async for item in _call_once(run, messages, tools, choice, stop):
                    yield item
                return
    async for item in _call_once(run, messages, tools, choice, stop):
        yield item


def _ask(run: RunState, request: t.ChatRequest, est_in: int) -> CallAsk:
    """The most this call may use, priced, and how far its output may be capped."""
    cfg, agent = run.cfg, run.agent
    calibrated = agent.calibration(cfg.model)
    ratio, seen_out = calibrated or (1.0, 0)
    # rounded up, but an exact calibrated count (2800.0000001) stays exact
    reserve_in = max(1, math.ceil(est_in * ratio * (1 - 1e-9)))
    reserve_out = cfg.max_output_tokens or max(seen_out, DEFAULT_OUTPUT_TOKENS)
    in_cost = run.price(cfg.model, t.Usage(reserve_in, 0)) or 0.0
    full_cost = run.price(cfg.model, t.Usage(reserve_in, reserve_out)) or 0.0
    out_price = max(full_cost - in_cost, 0.0) / reserve_out
    # capping max_tokens is safe only once the model's real output sizes are known
    least = max(seen_out, 1) if calibrated is not None else None
    return CallAsk(reserve_in, reserve_out, in_cost, out_price, least if least is None else min(least, reserve_out))


async def _call_once(run: RunState, messages: list[t.Message], tools: list[dict[str, Any]] | None,
                     choice: t.ToolChoice, stop: list[str] | None) -> AsyncIterator[AgentEvent | t.ChatResponse]:
    agent, cfg = run.agent, run.cfg
    request = t.ChatRequest(
        model=cfg.model, messages=list(messages), tools=tools or None,
        tool_choice=choice if tools else "auto", temperature=cfg.temperature, max_tokens=cfg.max_output_tokens,
        stop=stop,
    )
    est_in = agent.count_tokens(cfg.model, request.messages, request.tools)
    ask = _ask(run, request, est_in)
    reservation, granted = await run.budgets.reserve_call(ask, wait=cfg.budget_wait)
    if granted < ask.output_tokens:
        request.max_tokens = granted  # the reservation is then a true upper bound
    try:
        response = None
        async for ev in agent.chat_model.stream(request, scenario=cfg.scenario, tenant=run.tenant, user=run.user,
                                                timeout=cfg.llm_timeout):
            if isinstance(ev, t.TextDelta):
                yield TextDelta(ev.text)
            elif isinstance(ev, t.ReasoningDelta):
                yield ReasoningDelta(ev.text)
            elif isinstance(ev, t.StreamDone):
                response = ev.response
    except BaseException:
        run.budgets.release(reservation)
        raise
    if response is None:
        run.budgets.release(reservation)
        raise LLMError("the model stream ended without a response")
    usage = response.usage
    if usage.total_tokens == 0:
        usage = t.Usage(est_in, agent.count_tokens(response.model, [response.message], None), estimated=True)
    agent.calibrate(cfg.model, est_in, usage)
    cost = run.price(response.model, usage)
    run.usage = run.usage + usage
    if cost is None:
        run.priced = False
    elif run.cost is not None:
        run.cost += cost
    if response.model not in run.models:
        run.models.append(response.model)
    for note in run.budgets.commit(reservation, usage.total_tokens, cost or 0.0, 1):
        yield run.warn("budget", note)
    await record_usage(run, response, usage)
    yield UsageUpdate(response.model, usage.input_tokens, usage.output_tokens, cost,
                      run.cost if run.priced else None, response.latency_ms)
    yield response


async def record_usage(run: RunState, response: t.ChatResponse, usage: t.Usage) -> None:
    """Write one completion to the agent's usage ledger (a failed write is logged, never raised)."""
    ledger = run.agent.ledger
    if ledger is None:
        return
    try:
        pending = ledger.record(tenant=run.tenant, user=run.user, session=run.conversation, model=response.model,
                                provider=response.provider, usage=usage, latency_ms=response.latency_ms,
                                request_id=run.run_id)
        if inspect.isawaitable(pending):
            await pending
    except Exception:
        log.exception("usage ledger write failed")
