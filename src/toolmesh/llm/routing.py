"""Routing data: deployments, rules, attempts, token estimates and per-deployment state.

Split from :mod:`toolmesh.llm.router` (which re-exports the public names) so the router
module holds only the selection and fallback logic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any

from toolmesh.errors import ConfigError
from toolmesh.llm.models import ModelRegistry
from toolmesh.llm.provider import Provider
from toolmesh.llm.ratelimit import AdaptiveLimiter
from toolmesh.llm.types import ChatRequest

STRATEGIES = frozenset({"cost", "latency", "quality", "balanced"})
TYPICAL_OUTPUT_TOKENS = 256  # output tokens assumed for latency seeds and TPM/cost estimates
UNKNOWN_TTFT_MS = 1000.0
UNKNOWN_PER_TOKEN_MS = 30.0
INF = float("inf")


@dataclass(eq=False, slots=True)
class Deployment:
    """One way to reach a model: a provider (endpoint + key) and the model id it is sent.

    ``rpm``/``tpm``: the deployment's limits (``None``: learn from headers). ``priority``:
    tier, lower first. ``weight``: share among otherwise equal deployments. ``timeout``:
    seconds per attempt."""

    name: str
    model: str
    provider: Provider
    rpm: float | None = None
    tpm: float | None = None
    weight: float = 1.0
    priority: int = 0
    timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class Rule:
    """A scenario's routing: a ``strategy`` and/or an explicit ``models`` list.

    For ``model="auto"`` requests, ``models`` (model or deployment names) restricts and
    orders the candidates; the strategy orders deployments within each listed model (or all
    capable deployments when no list is given). For a named model only the strategy applies."""

    strategy: str | None = None
    models: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: Any, key: str = "rule") -> Rule:
        """From ``"latency"``, ``{"strategy": "latency"}``, ``{"models": [...]}`` or a Rule."""
        if isinstance(value, Rule):
            return value
        if isinstance(value, str):
            value = {"strategy": value}
        if not isinstance(value, Mapping):
            raise ConfigError("expected a strategy name or a mapping with 'strategy' and/or 'models'", key=key)
        unknown = set(value) - {"strategy", "models"}
        if unknown:
            raise ConfigError("unknown field (known: strategy, models)", key=f"{key}.{sorted(unknown)[0]}")
        strategy = value.get("strategy")
        if strategy is not None and (type(strategy) is not str or strategy not in STRATEGIES):
            raise ConfigError(f"unknown strategy {strategy!r} (known: {', '.join(sorted(STRATEGIES))})",
                              key=f"{key}.strategy")
        models = value.get("models") or ()
        if not isinstance(models, list | tuple) or not all(isinstance(m, str) and m for m in models):
            raise ConfigError("expected a list of model or deployment names", key=f"{key}.models")
        if strategy is None and not models:
            raise ConfigError("a rule needs a strategy or a models list", key=key)
        return cls(strategy, tuple(models))


@dataclass(frozen=True, slots=True)
class Attempt:
    """One deployment tried for a request; ``error`` is ``None`` for the one that answered."""

    deployment: str
    model: str
    error: str | None
    latency_ms: float


def attempts_of(exc: BaseException) -> tuple[Attempt, ...]:
    """The attempts the router made before raising ``exc`` (empty if none were recorded)."""
    return tuple(vars(exc).get("attempts", ()))


_REQUEST_REST = attrgetter(*(f.name for f in fields(ChatRequest)[1:]))
assert fields(ChatRequest)[0].name == "model"


def with_model(request: ChatRequest, model: str) -> ChatRequest:
    """A shallow copy with another model id (several times faster than dataclasses.replace)."""
    return ChatRequest(model, *_REQUEST_REST(request))


_tools_chars: dict[int, tuple[object, int]] = {}


def estimate_tokens(request: ChatRequest) -> int:
    """Input tokens, roughly: characters / 4 over messages, tool calls and tool schemas."""
    chars = 0
    for m in request.messages:
        chars += 16 + (len(m.content) if m.content else 0)
        for c in m.tool_calls:
            chars += len(c.name) + (len(c.raw_arguments) or 32)
    tools = request.tools
    if tools:
        hit = _tools_chars.get(id(tools))
        if hit is None or hit[0] is not tools:
            import orjson

            if len(_tools_chars) >= 64:
                _tools_chars.clear()
            hit = (tools, len(orjson.dumps(tools)))  # keeps ``tools`` alive so its id stays unique
            _tools_chars[id(tools)] = hit
        chars += hit[1]
    return chars // 4 + 1


#: A deployment cooling down after failures gets one trial request after this wait, then after
#: doubling waits up to ``PROBE_MAX_S``, while every deployment of the request is cooling: a
#: recovered provider is noticed within about a second, a dead one gets one request a second.
PROBE_MIN_S = 0.25
PROBE_MAX_S = 1.0


class DeploymentState:
    """Per-deployment runtime state."""

    __slots__ = ("consecutive", "context_window", "cooldown_reason", "cooldown_until", "dep", "failures",
                 "in_price", "limiter", "measured", "model", "out_price", "probe_at", "probe_gap", "quality",
                 "successes", "tools_ok", "total_ms", "ttft_ms")

    def __init__(self, dep: Deployment, registry: ModelRegistry, limiter: AdaptiveLimiter) -> None:
        info = registry.get(dep.model)
        self.dep = dep
        self.model = info.name if info is not None else dep.model
        self.limiter = limiter
        self.in_price = info.input_price if info is not None else None
        self.out_price = info.output_price if info is not None else None
        self.quality = info.quality if info is not None else 0.0
        self.context_window = info.context_window if info is not None else None
        self.tools_ok = info is None or info.supports("tools")  # unknown models: assume capable
        ttft = info.ttft_ms if info is not None and info.ttft_ms is not None else UNKNOWN_TTFT_MS
        per = info.per_token_ms if info is not None and info.per_token_ms is not None else UNKNOWN_PER_TOKEN_MS
        self.ttft_ms = ttft
        self.total_ms = ttft + per * TYPICAL_OUTPUT_TOKENS
        self.measured = False
        self.successes = 0
        self.failures = 0
        self.consecutive = 0
        self.cooldown_until = 0.0
        self.cooldown_reason = ""
        # While cooling after failures: when the next trial request may go, and the wait after it.
        self.probe_at = 0.0
        self.probe_gap = PROBE_MIN_S





def balanced_scores(group: Sequence[DeploymentState], costs: list[float], lats: list[float],
              weights: tuple[float, float, float]) -> list[float]:
    """Blend scores, lower is better: each criterion min-max normalised across the group."""
    wq, wc, wl = weights
    priced = [c for c in costs if c != INF]
    cmin = min(priced) if priced else 0.0
    cspan = (max(priced) - cmin) or 1.0 if priced else 1.0
    lmin = min(lats)
    lspan = (max(lats) - lmin) or 1.0
    quals = [s.quality for s in group]
    qmax = max(quals)
    qspan = (qmax - min(quals)) or 1.0
    return [wq * (qmax - q) / qspan + wc * (1.0 if c == INF else (c - cmin) / cspan) + wl * (lat - lmin) / lspan
            for q, c, lat in zip(quals, costs, lats, strict=True)]


