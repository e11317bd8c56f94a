"""``/v1/chat/completions`` with ``tools``: a plain OpenAI endpoint in front of the LLM router.

The caller's tools go to the model as given and its ``tool_calls`` come back to the caller
(``finish_reason: "tool_calls"``), streaming included. The router still chooses the
deployment and falls back; the agent runtime's per-user limits and daily spend budgets
apply; usage and cost go to the ledger like the agent's own calls.

With the limits and the daily spend in Redis, the call's spend hold rides on its admission
script (:meth:`PassThrough.join_admission`): the tenant, key and user limits and the hold are
decided in one round trip, all or nothing.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from toolmesh.agent.budget import BudgetSet, CallAsk, Reservation
from toolmesh.gateway.auth import Principal
from toolmesh.gateway.errors import ApiError
from toolmesh.gateway.openai.agent import StartStream
from toolmesh.gateway.openai.errors import to_api_error
from toolmesh.gateway.openai.wire import (
    DONE,
    ChatCall,
    Chunks,
    assistant_message,
    completion,
    sse_error,
    usage_of,
)
from toolmesh.llm import types as t
from toolmesh.store.redis_budget import SpendHold

if TYPE_CHECKING:
    from toolmesh.gateway.state import Gateway

log = logging.getLogger("toolmesh.gateway.openai")

# Response ids: a random per-process prefix and a counter (uuid4 per request costs more than all the rest).
_PREFIX = "chatcmpl-" + secrets.token_hex(6)
_IDS = itertools.count(1)

#: Admits the request with a spend hold riding on its admission script; raises the limits' 429
#: (an :class:`ApiError`) when a limit refuses, returns when admitted or the hold was refused.
JoinedAdmission = Callable[[SpendHold], Awaitable[None]]


class PassThrough:
    """One chat completion forwarded to the router."""

    __slots__ = ("budgets", "call", "gw", "joined", "principal", "request", "rid", "scenario", "timeout", "user")

    def __init__(self, gw: Gateway, principal: Principal, call: ChatCall, user: str, model: str,
                 scenario: str | None) -> None:
        self.gw = gw
        self.principal = principal
        self.call = call
        self.user = user
        self.scenario = scenario
        self.rid = f"{_PREFIX}{next(_IDS):012x}"
        self.request = t.ChatRequest(
            model=model, messages=call.messages, tools=call.tools or None,
            tool_choice=call.tool_choice if call.tools else "auto", temperature=call.temperature,
            max_tokens=call.max_tokens, stop=call.stop, parallel_tool_calls=call.parallel_tool_calls,
            extra=call.extra,
        )
        agent = gw.agent
        self.timeout = agent.config.llm_timeout
        spend = agent.spend
        self.budgets = BudgetSet(spend.budgets(principal.tenant, user, agent.spend_seed)
                                 if spend.per_user is not None or spend.per_tenant is not None else [])
        self.joined: JoinedAdmission | None = None

    def can_join_admission(self) -> bool:
        """Whether this call's spend hold can ride on its admission script (daily spend in Redis)."""
        return self.gw.shared_spend is not None and bool(self.budgets.shared_scopes())

    def join_admission(self, admit: JoinedAdmission) -> None:
        """Leave the request's admission to this call: made with its spend hold, in one round trip."""
        self.joined = admit

    @contextlib.asynccontextmanager
    async def _admitted(self) -> AsyncIterator[Reservation | None]:
        """The agent runtime's per-user limits and daily spend budgets, as for an agent run."""
        limits = self.gw.agent.user_limits
        reservation = None
        try:
            if self.joined is not None:
                # The admission (limits and hold, one script) comes first; it preadmits the run
                # slot, so ``limits.run`` below enters without a round trip of its own.
                reservation = await self._reserve(self._confirm_joined)
            cm = limits.run(self.principal.tenant, self.user) if limits is not None else contextlib.nullcontext()
            async with cm:
                if reservation is None and self.budgets.budgets:
                    reservation = await self._reserve(None)
                yield reservation
        finally:
            if reservation is not None:
                self.budgets.release(reservation)  # no-op once committed

    async def _reserve(self, confirm: Callable[[Reservation], Awaitable[bool]] | None) -> Reservation:
        est = self._estimate()
        out = self.call.max_tokens or 256
        in_cost = self._price(self.request.model, t.Usage(est, 0)) or 0.0
        full = self._price(self.request.model, t.Usage(est, out)) or 0.0
        # The client's max_tokens is kept (no lower grant); a call blocked only by other
        # calls' reservations waits for them to settle (BudgetExceededError -> 429).
        ask = CallAsk(est, out, input_cost=in_cost, output_price=max(full - in_cost, 0.0) / out)
        reservation, _ = await self.budgets.reserve_call(ask, wait=self.gw.agent.config.budget_wait, confirm=confirm)
        return reservation

    async def _confirm_joined(self, r: Reservation) -> bool:
        # Each attempt is one admission script: a refused hold took no rate token, so trying again
        # after other calls' holds settled charges the limits once, with the hold that succeeds.
        spend, joined = self.gw.shared_spend, self.joined
        if spend is None or joined is None:
            raise RuntimeError("_confirm_joined() without a joined admission")
        rider = spend.rider(self.budgets.shared_scopes(), r)
        await joined(rider)
        return rider.held

    def _estimate(self) -> int:
        req = self.request
        return int(self.gw.agent.count_tokens(req.model, req.messages, req.tools))

    def _price(self, model: str, usage: t.Usage) -> float | None:
        try:
            cost = self.gw.registry.price(model, usage)
        except Exception:
            return None
        return float(cost.usd) if cost.priced and cost.usd is not None else None

    def _account(self, response: t.ChatResponse, reservation: Reservation | None) -> tuple[t.Usage, float | None]:
        """Ledger row and budget commit for one completion; returns (usage, cost)."""
        usage = response.usage
        if usage.total_tokens == 0:  # the provider reported none: count locally, flagged as estimated
            out = int(self.gw.agent.count_tokens(response.model, [response.message], None))
            usage = t.Usage(self._estimate(), out, estimated=True)
        cost = self._price(response.model, usage)
        if reservation is not None:
            self.budgets.commit(reservation, usage.total_tokens, cost or 0.0, 1)
        try:
            self.gw.ledger.record(tenant=self.principal.tenant, user=self.user, session=self.call.session,
                                  model=response.model, provider=response.provider, usage=usage,
                                  latency_ms=float(response.latency_ms), request_id=self.rid)
        except Exception:
            log.exception("usage ledger write failed")
        return usage, cost

    def _detail(self, response: t.ChatResponse, usage: t.Usage, cost: float | None) -> dict[str, Any]:
        return {"mode": "passthrough", "model": response.model, "provider": response.provider,
                "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                          "total_tokens": usage.total_tokens, "estimated": usage.estimated},
                "cost_usd": cost, "latency_ms": round(response.latency_ms, 2), "user": self.user}

    def _kw(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "tenant": self.principal.tenant, "user": self.user,
                "timeout": self.timeout}

    # -- the two response modes -------------------------------------------------------------------
    async def complete(self) -> tuple[int, bytes]:
        async with self._admitted() as reservation:
            response: t.ChatResponse = await self.gw.llm.complete(self.request, **self._kw())
            usage, cost = self._account(response, reservation)
        msg = response.message
        finish = "tool_calls" if msg.tool_calls else response.finish_reason
        body = completion(self.rid, response.model, assistant_message(msg.content, msg.tool_calls, msg.reasoning),
                          finish, usage_of(usage.input_tokens, usage.output_tokens, usage.cached_input_tokens,
                                           usage.reasoning_tokens), self._detail(response, usage, cost))
        return 200, body

    async def stream(self, start: StartStream) -> None:
        """Relay the router's stream as OpenAI chunks; the response starts with the first event,
        so an upstream failure before it still gets its HTTP status."""
        async with self._admitted() as reservation:
            chunks = Chunks(self.rid, self.call.model)
            body = None
            agen = self.gw.llm.stream(self.request, **self._kw())
            try:
                async with contextlib.aclosing(agen):
                    async for ev in agen:
                        if body is None:
                            body = await start()
                            await body(chunks.delta({"role": "assistant", "content": ""}), True)
                        if isinstance(ev, t.TextDelta):
                            await body(chunks.text(ev.text), True)
                        elif isinstance(ev, t.ToolCallDelta):
                            fn: dict[str, Any] = {"arguments": ev.arguments}
                            tc: dict[str, Any] = {"index": ev.index}
                            if ev.id is not None:
                                tc["id"] = ev.id
                                tc["type"] = "function"
                            if ev.name is not None:
                                fn["name"] = ev.name
                            tc["function"] = fn
                            await body(chunks.delta({"tool_calls": [tc]}), True)
                        elif isinstance(ev, t.ReasoningDelta):
                            await body(chunks.delta({"reasoning_content": ev.text}), True)
                        elif isinstance(ev, t.StreamDone):
                            await self._finish(ev.response, reservation, chunks, body)
                            return
            except Exception as exc:
                if body is None:
                    raise
                await body(sse_error(to_api_error(exc)), False)
                return
            if body is None:
                raise ApiError(502, "the model stream ended without any output", "api_error", code="upstream_malformed")
            # the stream ended without its final event
            await body(sse_error(ApiError(502, "the model stream ended early", "api_error",
                                          code="upstream_malformed")), False)

    async def _finish(self, response: t.ChatResponse, reservation: Reservation | None, chunks: Chunks,
                      body: Any) -> None:
        usage, cost = self._account(response, reservation)
        finish = "tool_calls" if response.message.tool_calls else response.finish_reason
        extra = {"toolmesh": self._detail(response, usage, cost)}
        if self.call.include_usage:
            await body(chunks.finish(finish), True)
            u = usage_of(usage.input_tokens, usage.output_tokens, usage.cached_input_tokens, usage.reasoning_tokens)
            await body(chunks.usage(u, extra) + DONE, False)
        else:
            await body(chunks.finish(finish, extra) + DONE, False)
