"""The engine's link to the model layer and to the agent's mechanisms (budgets, ledger, memory).

All use of ``toolmesh.agent`` internals by the reasoning engine is kept in this module, so
a change there is a change here only.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any, Protocol

from toolmesh.agent import memory
from toolmesh.agent.budget import Budget, BudgetScope, BudgetSet, CallAsk, Reservation
from toolmesh.agent.config import BudgetConfig, MemoryConfig
from toolmesh.errors import RateLimitedError
from toolmesh.llm import types as t
from toolmesh.llm.base import ChatModel, as_chat_model
from toolmesh.llm.provider import Provider
from toolmesh.llm.tokens import count_messages, estimate_tokens
from toolmesh.resilience.retry import RetryPolicy

__all__ = ["ChatModel", "Ledger", "Meter", "PriceFn", "chat_model", "context_window", "default_price",
           "needs_summary", "run_budgets", "summarise_steps", "usage_dict"]

log = logging.getLogger("toolmesh.reasoning")

#: ``price(model, usage) -> USD or None`` (None = unpriced).
PriceFn = Callable[[str, t.Usage], float | None]


def chat_model(llm: ChatModel | Provider) -> ChatModel:
    """A Router as it is, a bare Provider wrapped (``TypeError`` for anything else)."""
    return as_chat_model(llm)


class Ledger(Protocol):
    """The usage ledger (``toolmesh.store.ledger.UsageLedger``)."""

    def record(self, *, tenant: str, user: str, session: str | None, model: str, provider: str, usage: t.Usage,
               latency_ms: float, request_id: str | None = None) -> Any: ...


def default_price(llm: object) -> PriceFn | None:
    """Prices from the router's model registry; None for a bare provider."""
    registry = getattr(llm, "registry", None)
    if registry is None:
        return None

    def price(model: str, usage: t.Usage) -> float | None:
        cost = registry.price(model, usage)
        return cost.usd if cost.priced else None

    return price


def context_window(llm: object, model: str) -> int | None:
    registry = getattr(llm, "registry", None)
    info = registry.get(model) if registry is not None else None
    window = getattr(info, "context_window", None)
    return window if isinstance(window, int) else None


def run_budgets(cfg: BudgetConfig, extra: list[BudgetScope] | None = None) -> BudgetSet:
    """The agent's budget machinery, one scope per run (plus any the caller adds)."""
    own = Budget("reasoning run", max_tokens=cfg.max_tokens, max_steps=cfg.max_steps,
                 max_cost_usd=cfg.max_cost_usd, warn_at=cfg.warn_at)
    return BudgetSet([own, *(extra or [])])


@functools.lru_cache(maxsize=16)
def _retry_policy(retries: int) -> RetryPolicy:
    # Shared per setting: a policy is immutable in use, and seeding a new RNG per run costs more than a step.
    return RetryPolicy(max_attempts=retries + 1, base_delay=0.25, max_delay=20.0)


def usage_dict(u: t.Usage) -> dict[str, int]:
    return {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens, "total_tokens": u.total_tokens}


class Meter:
    """Calls the model for one run and accounts every call: budget reservation, usage,
    cost (None once any call is unpriced) and one ledger row per call."""

    def __init__(self, llm: ChatModel, *, budgets: BudgetSet, price: PriceFn | None, ledger: Ledger | None,
                 run_id: str, tenant: str, user: str, timeout: float, scenario: str | None,
                 max_output_tokens: int | None, rate_limit_retries: int = 8, budget_wait: float = 60.0) -> None:
        """``budget_wait``: seconds a call may wait for other calls' reservations to settle when
        only they, not real spend, fill a budget (as the agent's ``budget_wait``)."""
        self.llm = llm
        self.budgets = budgets
        self.price = price
        self.ledger = ledger
        self.run_id = run_id
        self.tenant = tenant
        self.user = user
        self.timeout = timeout
        self.scenario = scenario
        self.max_output_tokens = max_output_tokens
        self.budget_wait = budget_wait
        self.usage = t.Usage()
        self.cost: float | None = 0.0
        self.models: list[str] = []
        self.warnings: list[str] = []
        # The router paces calls (RPM/TPM, AIMD on 429) and fails over; when every deployment
        # is cooling down it raises RateLimitedError with retry_after: wait that long and retry.
        self.retry = _retry_policy(rate_limit_retries)

    @staticmethod
    def _rate_limited(exc: BaseException) -> bool:
        return isinstance(exc, RateLimitedError)

    @property
    def cost_usd(self) -> float | None:
        return self.cost

    def _kw(self) -> dict[str, Any]:
        return {"timeout": self.timeout, "scenario": self.scenario, "tenant": self.tenant, "user": self.user}

    async def _reserve(self, request: t.ChatRequest) -> tuple[Reservation, int]:
        # reserve_call, as the agent's model calls: a shared daily spend (Redis) is held there
        # before the call, and a call kept out only by others' reservations waits for them.
        est_in = count_messages(request.model, request.messages)[0]
        est_out = request.max_tokens or self.max_output_tokens or 1024
        in_cost = full = 0.0
        if self.price is not None:
            in_cost = self._price(request.model, t.Usage(est_in, 0)) or 0.0
            full = self._price(request.model, t.Usage(est_in, est_out)) or 0.0
        ask = CallAsk(est_in, est_out, input_cost=in_cost, output_price=max(full - in_cost, 0.0) / est_out)
        reservation, _ = await self.budgets.reserve_call(ask, wait=self.budget_wait)
        return reservation, est_in

    def _price(self, model: str, usage: t.Usage) -> float | None:
        if self.price is None:
            return None
        try:
            return self.price(model, usage)
        except Exception:  # a pricing bug must not fail the run
            log.exception("pricing %s failed; counted as unpriced", model)
            return None

    async def stream(self, request: t.ChatRequest, *, scenario: str | None = None, tenant: str | None = None,
                     user: str | None = None, timeout: float | None = None) -> AsyncGenerator[t.StreamEvent, None]:
        """Stream one call (the routing context is the run's; arguments are accepted for
        :class:`ChatModel` compatibility). The caller may stop early: usage is then estimated.
        A 429 before the first event is retried after its ``retry_after``."""
        attempt = 1
        while True:
            reservation, est_in = await self._reserve(request)
            t0 = time.perf_counter()
            text: list[str] = []
            response: t.ChatResponse | None = None
            started = False
            events = self.llm.stream(request, **self._kw())
            try:
                async for ev in events:
                    started = True
                    if isinstance(ev, t.StreamDone):
                        response = ev.response
                    elif isinstance(ev, (t.TextDelta, t.ReasoningDelta)):
                        text.append(ev.text)
                    yield ev
            except Exception as exc:
                if not started:
                    self.budgets.release(reservation)
                    wait = self.retry.backoff(attempt, exc) if self._rate_limited(exc) else None
                    if wait is None:
                        raise
                    await self.retry.sleep(wait)
                    attempt += 1
                    continue
                await self._settle(reservation, request, response, est_in, "".join(text), t0)
                raise
            except BaseException:  # cancelled, or the caller stopped reading (GeneratorExit)
                if not started:
                    self.budgets.release(reservation)
                    raise
                await self._settle(reservation, request, response, est_in, "".join(text), t0)
                raise
            finally:  # a step cut short closes its HTTP stream now, not when the GC gets to it
                aclose = getattr(events, "aclose", None)
                if aclose is not None:
                    await aclose()
            await self._settle(reservation, request, response, est_in, "".join(text), t0)
            return

    async def complete(self, request: t.ChatRequest, *, scenario: str | None = None, tenant: str | None = None,
                       user: str | None = None, timeout: float | None = None) -> t.ChatResponse:
        """One metered completion (judge, summaries); a 429 is retried after its ``retry_after``."""

        async def once() -> t.ChatResponse:
            reservation, est_in = await self._reserve(request)
            t0 = time.perf_counter()
            try:
                response = await self.llm.complete(request, **self._kw())
            except BaseException:
                self.budgets.release(reservation)
                raise
            await self._settle(reservation, request, response, est_in, "", t0)
            return response

        return await self.retry.run(once, is_retryable=self._rate_limited)

    async def _settle(self, reservation: Reservation, request: t.ChatRequest, response: t.ChatResponse | None,
                      est_in: int, text: str, t0: float) -> None:
        latency = (time.perf_counter() - t0) * 1000.0
        if response is not None and response.usage.total_tokens > 0:
            usage, model, provider = response.usage, response.model, response.provider
            latency = response.latency_ms or latency
        else:  # stopped early (step cut) or no usage reported: count what we sent and saw
            usage = t.Usage(est_in, estimate_tokens(text) if text else 0, estimated=True)
            model = response.model if response is not None else request.model
            provider = response.provider if response is not None else getattr(self.llm, "name", "unknown")
        cost = self._price(model, usage)
        self.usage = self.usage + usage
        if cost is None:
            self.cost = None
        elif self.cost is not None:
            self.cost += cost
        if model not in self.models:
            self.models.append(model)
        self.warnings.extend(self.budgets.commit(reservation, usage.total_tokens, cost or 0.0, 1))
        if self.ledger is not None:
            try:
                pending = self.ledger.record(tenant=self.tenant, user=self.user, session=self.run_id, model=model,
                                             provider=provider, usage=usage, latency_ms=float(latency),
                                             request_id=self.run_id)
                if inspect.isawaitable(pending):
                    await pending
            except Exception:
                log.exception("usage ledger write failed")


async def summarise_steps(meter: Meter, mem: MemoryConfig, *, model: str, system: str, prompt: str,
                          summary: str | None, steps: list[tuple[int, str]]) -> tuple[str, int] | None:
    """Fold older steps into a summary with the agent's memory mechanism.

    The chain is laid out as the conversation the agent's memory expects (each step an
    assistant turn); returns ``(summary, last folded step)`` or None when nothing was folded."""
    msgs = [t.Message("system", system)]
    if summary:
        msgs.append(t.Message("system", memory.SUMMARY_PREFIX + summary))
    msgs.append(t.Message("user", prompt))
    numbers: list[int] = []
    for n, text in steps:
        msgs.append(t.Message("assistant", text))
        msgs.append(t.Message("user", "continue"))
        numbers.append(n)
    done = await memory.summarise(msgs, meter, mem, model=model, timeout=meter.timeout)
    if done is None:
        return None
    folded = msgs[1:1 + done.folded]  # the body starts after the system prompt
    upto = sum(1 for m in folded if m.role == "assistant")
    if upto == 0:
        return None
    return done.summary, numbers[upto - 1]


def needs_summary(model: str, messages: list[t.Message], window: int | None, mem: MemoryConfig) -> bool:
    """The request nears the context window (``memory.threshold`` of it)."""
    if window is None or not mem.enabled:
        return False
    return count_messages(model, messages)[0] > mem.threshold * window
