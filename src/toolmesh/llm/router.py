"""Routing across model deployments (LLM-3): strategies, scenario rules, fallback, cooldown.

Strategies order the candidate deployments of a request:

* ``cost``: cheapest first, priced on this request's estimated input and output tokens;
  unpriced models last.
* ``latency``: lowest measured EWMA first — total latency for :meth:`Router.complete`,
  time to first token for :meth:`Router.stream` — seeded from the registry's typical latency.
* ``quality``: highest ``quality`` rank (models.yaml) first.
* ``balanced``: ``0.4·quality + 0.3·cost + 0.3·latency`` (weights configurable), each
  min-max normalised across the candidates (unpriced counts as the most expensive).

Lower ``priority`` values are tried first whatever the strategy (0 = primary tier); ties are
broken by a weighted random draw on ``weight``. Everything here is in memory: no I/O, and
O(deployments) work per call.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from typing import Any

from toolmesh.errors import (
    ConfigError,
    ContextOverflowError,
    LLMError,
    MalformedResponseError,
    ProviderUnavailableError,
    RateLimitedError,
    UnknownModelError,
)
from toolmesh.llm.models import ModelRegistry
from toolmesh.llm.ratelimit import AdaptiveLimiter, FleetLimits, KeyLimiter
from toolmesh.llm.router_call import RoutedCall
from toolmesh.llm.routing import (
    INF,
    STRATEGIES,
    TYPICAL_OUTPUT_TOKENS,
    Attempt,
    Deployment,
    DeploymentState,
    Rule,
    attempts_of,
    balanced_scores,
    estimate_tokens,
    with_model,
)
from toolmesh.llm.types import ChatRequest, ChatResponse, StreamDone, StreamEvent

__all__ = ["STRATEGIES", "Attempt", "Deployment", "Router", "Rule", "attempts_of", "estimate_tokens"]

log = logging.getLogger("toolmesh.llm.router")

_FAIL_OVER = (RateLimitedError, ProviderUnavailableError, MalformedResponseError, ContextOverflowError,
              UnknownModelError, TimeoutError)

class Router:
    """Chooses deployments per request and falls back along the candidate chain.

    ``rules`` maps scenario names to :class:`Rule` values (or their dict/str forms);
    ``"default"`` applies when no scenario is given. ``fallbacks`` maps a model name to the
    models to try after its own deployments. ``estimate_tokens`` estimates a request's input
    tokens (for TPM buckets and cost ranking). ``tenant_limits``/``user_limits`` are checked
    before any deployment (users are keyed ``tenant/user``). ``fleet``: each deployment's
    ``rpm``/``tpm`` held once for every process (see :class:`~toolmesh.llm.ratelimit.FleetLimits`)."""

    def __init__(
        self,
        deployments: Iterable[Deployment],
        registry: ModelRegistry | None = None,
        *,
        strategy: str = "balanced",
        rules: Mapping[str, Any] | None = None,
        cooldown: float = 30.0,
        failure_threshold: int = 2,
        fallbacks: Mapping[str, Sequence[str]] | None = None,
        estimate_tokens: Callable[[ChatRequest], int] = estimate_tokens,
        tenant_limits: KeyLimiter | None = None,
        user_limits: KeyLimiter | None = None,
        fleet: FleetLimits | None = None,
        balanced_weights: tuple[float, float, float] = (0.4, 0.3, 0.3),
        ewma_alpha: float = 0.3,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {strategy!r} (known: {', '.join(sorted(STRATEGIES))})",
                              key="strategy")
        self.registry = registry if registry is not None else ModelRegistry.load()
        self.strategy = strategy
        self.cooldown = cooldown
        self.failure_threshold = max(1, failure_threshold)
        self.tenant_limits = tenant_limits
        self.user_limits = user_limits
        #: The deployments' limits shared by every process (``state.url``), or None: this process's alone.
        self.fleet = fleet
        self._estimate = estimate_tokens
        self._weights = balanced_weights
        self._alpha = ewma_alpha
        self.clock = clock
        self._rng = rng or random.Random()
        self._states: list[DeploymentState] = []
        self._by_name: dict[str, DeploymentState] = {}
        for dep in deployments:
            if dep.name in self._by_name:
                raise ConfigError(f"duplicate deployment name {dep.name!r}", key="deployments")
            if dep.weight <= 0 or dep.timeout <= 0:
                raise ConfigError("weight and timeout must be > 0", key=f"deployments.{dep.name}")
            lim = AdaptiveLimiter(dep.rpm, dep.tpm, name=dep.name, clock=clock, sleep=sleep)
            st = DeploymentState(dep, self.registry, lim)
            self._states.append(st)
            self._by_name[dep.name] = st
        self._by_model: dict[str, list[DeploymentState]] = {}
        for st in self._states:
            self._by_model.setdefault(st.model, []).append(st)
        self._fallbacks = {self._canonical(k): tuple(v) for k, v in (fallbacks or {}).items()}
        self._rules: dict[str, Rule] = {}
        self._warned_scenarios: set[str] = set()
        self._groups: dict[tuple[str, Rule, bool], tuple[tuple[DeploymentState, ...], ...]] = {}
        if rules:
            self.set_rules(rules)

    # -- rules -----------------------------------------------------------------------------

    @property
    def rules(self) -> dict[str, Rule]:
        """The current scenario rules (a copy)."""
        return dict(self._rules)

    def set_rules(self, rules: Mapping[str, Any]) -> None:
        """Replace all scenario rules at run time (validated first; swapped atomically)."""
        parsed = {str(name): Rule.parse(value, f"rules.{name}") for name, value in rules.items()}
        for name, rule in parsed.items():
            for m in rule.models:
                if m not in self._by_name and self._canonical(m) not in self._by_model:
                    raise ConfigError(f"no deployment serves {m!r}", key=f"rules.{name}.models")
        self._groups = {}
        self._rules = parsed

    def set_rule(self, name: str, rule: Any | None) -> None:
        """Add, replace or (with ``None``) remove one scenario rule at run time."""
        rules: dict[str, Any] = dict(self._rules)
        if rule is None:
            rules.pop(name, None)
        else:
            rules[name] = rule
        self.set_rules(rules)

    def _rule(self, scenario: str | None) -> Rule:
        rules = self._rules
        if scenario is not None:
            rule = rules.get(scenario)
            if rule is not None:
                return rule
            if scenario not in self._warned_scenarios and len(self._warned_scenarios) < 1024:
                self._warned_scenarios.add(scenario)
                log.warning("no routing rule for scenario %r: using the default", scenario)
        return rules.get("default") or Rule(self.strategy)

    # -- candidates ------------------------------------------------------------------------

    def _canonical(self, model: str) -> str:
        info = self.registry.get(model)
        return info.name if info is not None else model

    def _resolve(self, name: str) -> list[DeploymentState]:
        st = self._by_name.get(name)
        if st is not None:
            return [st] + [s for s in self._by_model[st.model] if s is not st]
        return list(self._by_model.get(self._canonical(name), ()))

    def _groups_for(self, model: str, rule: Rule, needs_tools: bool) -> tuple[tuple[DeploymentState, ...], ...]:
        key = (model, rule, needs_tools)
        groups = self._groups.get(key)
        if groups is not None:
            return groups
        out: list[list[DeploymentState]] = []
        if model == "auto":
            if rule.models:
                out = [self._resolve(m) for m in rule.models]
            else:
                out = [list(self._states)]
            out = [[s for s in g if s.tools_ok or not needs_tools] for g in out]
        else:
            primary = self._resolve(model)
            if not primary:
                raise UnknownModelError(f"no deployment serves model {model!r}", model=model)
            out = [primary[:1], primary[1:]] if model in self._by_name else [primary]  # a named one first
            out += [self._resolve(m) for m in self._fallbacks.get(primary[0].model, ())]
        seen: set[int] = set()
        final: list[tuple[DeploymentState, ...]] = []
        for g in out:
            g = [s for s in g if id(s) not in seen and not seen.add(id(s))]  # type: ignore[func-returns-value]
            if g:
                final.append(tuple(g))
        if not final:
            raise UnknownModelError(f"no deployment serves model {model!r}"
                                    + (" with tool support" if needs_tools else ""), model=model)
        if len(self._groups) > 1024:
            self._groups = {}
        groups = self._groups[key] = tuple(final)
        return groups

    def candidates(self, request: ChatRequest, *, scenario: str | None = None, streaming: bool = False) -> list[str]:
        """The deployment names this request would try, in order (for inspection and tests)."""
        est_in = self._estimate(request)
        return [s.dep.name for s in self._order(request, scenario, est_in, streaming)]

    def _order(self, request: ChatRequest, scenario: str | None, est_in: int, streaming: bool) -> list[DeploymentState]:
        rule = self._rule(scenario)
        groups = self._groups_for(request.model, rule, bool(request.tools))
        strategy = rule.strategy or self.strategy
        est_out = request.max_tokens or TYPICAL_OUTPUT_TOKENS
        order: list[DeploymentState] = []
        for g in groups:
            order.extend(g if len(g) == 1 else self._rank(g, strategy, est_in, est_out, streaming))
        return order

    def _rank(self, group: Sequence[DeploymentState], strategy: str, est_in: int, est_out: int,
              streaming: bool) -> list[DeploymentState]:
        scores: list[float]
        if strategy == "quality":
            scores = [-s.quality for s in group]
        elif strategy == "latency":
            scores = [s.ttft_ms if streaming else s.total_ms for s in group]
        else:
            costs = [INF if s.in_price is None or s.out_price is None else s.in_price * est_in + s.out_price * est_out
                     for s in group]
            if strategy == "cost":
                scores = costs
            else:
                lats = [s.ttft_ms if streaming else s.total_ms for s in group]
                scores = balanced_scores(group, costs, lats, self._weights)
        rnd = self._rng.random
        keyed = [(s.dep.priority, scores[i], -(rnd() ** (1.0 / s.dep.weight)), i) for i, s in enumerate(group)]
        keyed.sort()
        return [group[k[3]] for k in keyed]

    # -- calling ---------------------------------------------------------------------------

    def _call(self, request: ChatRequest, scenario: str | None, tenant: str | None, user: str | None,
              timeout: float | None, *, streaming: bool) -> RoutedCall:
        est_in = self._estimate(request)
        order = self._order(request, scenario, est_in, streaming)  # UnknownModelError
        return RoutedCall(self, request, order, est_in, tenant, user, timeout)

    async def complete(self, request: ChatRequest, *, scenario: str | None = None, tenant: str | None = None,
                       user: str | None = None, timeout: float | None = None) -> ChatResponse:
        """Complete ``request`` on the best available deployment, falling back on 429, 5xx,
        timeouts, malformed answers and context overflow (to a larger window only).

        Raises :class:`UnknownModelError` if nothing serves the model, else the last error
        (its attempts in :func:`attempts_of`)."""
        call = self._call(request, scenario, tenant, user, timeout, streaming=False)
        await call.admit()
        while True:
            st, t = await call.next()
            req = request if request.model == st.dep.model else with_model(request, st.dep.model)
            t0 = self.clock()
            try:
                async with asyncio.timeout(t):
                    response = await st.dep.provider.complete(req, timeout=t)
            except _FAIL_OVER as exc:
                call.failed(st, exc, t0, t)
                continue
            except LLMError as exc:
                raise call.failed(st, exc, t0, t, final=True) from None  # a bad request fails everywhere
            except BaseException:
                call.refund()
                raise
            call.succeeded(st, response, t0)
            return response

    async def stream(self, request: ChatRequest, *, scenario: str | None = None, tenant: str | None = None,
                     user: str | None = None, timeout: float | None = None,
                     ) -> AsyncGenerator[StreamEvent, None]:
        """Stream ``request``; fallback happens only before the first event was yielded."""
        call = self._call(request, scenario, tenant, user, timeout, streaming=True)
        await call.admit()
        loop = asyncio.get_running_loop()
        while True:
            st, t = await call.next()
            req = request if request.model == st.dep.model else with_model(request, st.dep.model)
            t0 = self.clock()
            deadline = loop.time() + t
            agen = st.dep.provider.stream(req, timeout=t)
            try:
                try:
                    async with asyncio.timeout_at(deadline):
                        first = await anext(agen)
                except StopAsyncIteration:
                    call.failed(st, MalformedResponseError("empty stream", model=st.dep.model), t0, t)
                    continue
                except _FAIL_OVER as exc:
                    call.failed(st, exc, t0, t)
                    continue
                except LLMError as exc:
                    raise call.failed(st, exc, t0, t, final=True) from None
                ttft = (self.clock() - t0) * 1000.0
                yield first
                event = first
                while not isinstance(event, StreamDone):
                    try:
                        async with asyncio.timeout_at(deadline):
                            event = await anext(agen)
                    except StopAsyncIteration:
                        break
                    except (LLMError, TimeoutError) as exc:
                        raise call.failed(st, exc, t0, t, final=True) from None
                    yield event
                if isinstance(event, StreamDone):
                    call.succeeded(st, event.response, t0, ttft)
                else:
                    call.succeeded(st, None, t0, ttft)
                return
            finally:
                aclose = getattr(agen, "aclose", None)
                if aclose is not None:
                    await aclose()

    # -- bookkeeping -----------------------------------------------------------------------

    def record_latency(self, st: DeploymentState, ttft_ms: float | None, total_ms: float) -> None:
        a = self._alpha
        if not st.measured:
            st.measured = True
            st.total_ms = total_ms
            st.ttft_ms = ttft_ms if ttft_ms is not None else total_ms
            return
        st.total_ms += a * (total_ms - st.total_ms)
        if ttft_ms is not None:
            st.ttft_ms += a * (ttft_ms - st.ttft_ms)

    def snapshot(self) -> dict[str, Any]:
        """JSON-friendly state: per deployment counts, cooldown, latency EWMAs, limiter."""
        now = self.clock()
        deps = {}
        for st in self._states:
            left = st.cooldown_until - now
            deps[st.dep.name] = {
                "model": st.model, "successes": st.successes, "failures": st.failures,
                "consecutive_failures": st.consecutive,
                "cooldown_s": round(left, 3) if left > 0 else 0.0,
                "cooldown_reason": st.cooldown_reason if left > 0 else None,
                "ttft_ms": round(st.ttft_ms, 2), "latency_ms": round(st.total_ms, 2), "measured": st.measured,
                "limits": st.limiter.state(),
            }
        rules = {n: {"strategy": r.strategy, "models": list(r.models)} for n, r in self._rules.items()}
        return {"strategy": self.strategy, "rules": rules, "deployments": deps}

    def limiter(self, deployment: str) -> AdaptiveLimiter:
        """The adaptive limiter of a deployment."""
        return self._by_name[deployment].limiter

    async def aclose(self) -> None:
        """Close every distinct provider."""
        seen: set[int] = set()
        for st in self._states:
            p = st.dep.provider
            if id(p) not in seen:
                seen.add(id(p))
                await p.aclose()
