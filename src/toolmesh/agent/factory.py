"""Assemble a ready agent from one configuration file (IF-3): Hub, models, router, store, guard.

Config sections used (all optional)::

    servers: {...}                 # the Hub's servers (see README)
    llm:
      strategy: cost               # cost | latency | quality | balanced
      rules: {peak: {strategy: latency}, complex_reasoning: {strategy: quality}}
      deployments:
        - name: deepseek
          provider: openai         # openai (any compatible base_url) | anthropic | local
          base_url: https://api.deepseek.com/v1
          api_key: ${DEEPSEEK_API_KEY}
          model: deepseek-chat
          rpm: 600
          tpm: 1000000
    models: {...}                  # overrides of the model registry (prices, context windows)
    agent: {...}                   # AgentConfig fields (budgets, limits, mode, ...)
    guard: {action: flag, threshold: 0.5, tenants: {acme: {action: block}}}
    store: {url: sqlite:///~/.toolmesh/toolmesh.db}   # or postgresql://user:pass@host:5432/db

With no ``llm`` section the embedded local model is used (offline demo default).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolmesh.agent.config import AgentConfig
from toolmesh.agent.history import StoreHistory
from toolmesh.agent.runtime import Agent
from toolmesh.errors import ConfigError, unknown_key_message
from toolmesh.hub import Hub
from toolmesh.hub.configfile import ToolmeshConfig

if TYPE_CHECKING:
    from toolmesh.agent.guard import Guard
    from toolmesh.llm.models import ModelRegistry
    from toolmesh.llm.provider import Provider
    from toolmesh.llm.router import Router
    from toolmesh.store.ledger import UsageLedger
    from toolmesh.store.sessions import SessionStore
    from toolmesh.store.sqlite import Store

LOCAL_MODEL = "qwen2.5-coder-0.5b-instruct"


@dataclass
class AgentStack:
    """Everything :func:`build_agent` created; ``aclose()`` releases it all."""

    hub: Hub
    agent: Agent
    llm: Router
    store: Store
    registry: ModelRegistry
    ledger: UsageLedger
    sessions: SessionStore

    async def aclose(self) -> None:
        await self.hub.aclose()
        await self.llm.aclose()
        await self.store.aclose()


def _home() -> Path:
    return Path(os.environ.get("TOOLMESH_HOME") or Path.home() / ".toolmesh")


def store_location(config: ToolmeshConfig) -> str | Path:
    """The store of a configuration: ``store.url`` (SQLite or PostgreSQL), ``store.path`` or
    ``$TOOLMESH_HOME/toolmesh.db``."""
    from toolmesh.store.sql import StoreSettings

    location = StoreSettings.from_section(config.section("store"), config.source).location
    return location if location is not None else _home() / "toolmesh.db"


def make_provider(spec: dict[str, Any]) -> Provider:
    """One provider from a deployment entry."""
    kind = spec.get("provider", "openai")
    if kind == "openai":
        from toolmesh.llm.openai_provider import OpenAIProvider

        return OpenAIProvider(spec.get("base_url"), spec.get("api_key"), name=spec.get("name", "openai"),
                              timeout=float(spec.get("timeout", 60.0)))
    if kind == "anthropic":
        from toolmesh.llm.anthropic_provider import AnthropicProvider

        return AnthropicProvider(spec.get("base_url"), spec.get("api_key"), name=spec.get("name", "anthropic"),
                                 timeout=float(spec.get("timeout", 60.0)))
    if kind == "local":
        from toolmesh.llm.local.provider import LocalProvider

        return LocalProvider(spec.get("path"), n_ctx=int(spec.get("n_ctx", 4096)))
    raise ConfigError(f"unknown provider {kind!r} (openai, anthropic or local)", key="llm.deployments.provider")


#: The keys of the ``llm`` section and of one of its ``deployments`` (a typo is refused, not ignored).
LLM_KEYS = ("deployments", "strategy", "rules", "default_model", "limits")
#: ``llm.limits``: requests and tokens per minute of model calls per tenant and per user (LLM-4).
LIMIT_SCOPES, LIMIT_KEYS = ("tenant", "user"), ("rpm", "tpm")
DEPLOYMENT_KEYS = ("name", "provider", "model", "base_url", "api_key", "rpm", "tpm", "weight", "priority", "timeout",
                   "path", "n_ctx")


def check_llm_section(section: dict[str, Any], source: str | None = None) -> None:
    """Refuse unknown keys in the ``llm`` section and its deployments (no provider is built)."""
    _known_keys(section, LLM_KEYS, "llm", source)
    _key_limits(section.get("limits"), source)
    specs = section.get("deployments")
    for i, spec in enumerate(specs if isinstance(specs, list) else ()):
        if isinstance(spec, dict):
            _known_keys(spec, DEPLOYMENT_KEYS, f"llm.deployments[{i}]", source)


def _key_limits(limits: Any, source: str | None) -> dict[str, tuple[float | None, float | None]]:
    """``llm.limits`` checked: scope (tenant, user) → (rpm, tpm), each a positive number or None."""
    if limits is None:
        return {}
    if not isinstance(limits, dict):
        raise ConfigError("must be a mapping like {tenant: {rpm: 600, tpm: 100000}, user: {rpm: 60}}",
                          key="llm.limits", source=source)
    _known_keys(limits, LIMIT_SCOPES, "llm.limits", source)
    out: dict[str, tuple[float | None, float | None]] = {}
    for scope, block in limits.items():
        if not isinstance(block, dict):
            raise ConfigError("must be a mapping like {rpm: 60, tpm: 100000}", key=f"llm.limits.{scope}", source=source)
        _known_keys(block, LIMIT_KEYS, f"llm.limits.{scope}", source)
        values: list[float | None] = []
        for name in LIMIT_KEYS:
            v = block.get(name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not v > 0):
                raise ConfigError(f"must be a number > 0 (per minute), not {v!r}", key=f"llm.limits.{scope}.{name}",
                                  source=source)
            values.append(None if v is None else float(v))
        out[scope] = (values[0], values[1])
    return out


def _known_keys(block: dict[str, Any], allowed: tuple[str, ...], where: str, source: str | None) -> None:
    for key in block:
        if key not in allowed:
            raise ConfigError(unknown_key_message(str(key), allowed), key=f"{where}.{key}", source=source)


def build_llm(section: dict[str, Any], registry: ModelRegistry, model_override: str | None = None,
              *, source: str | None = None) -> tuple[Router, str]:
    """The router over the configured deployments and the default model name (``source``: the
    config file, named in errors)."""
    from toolmesh.llm.ratelimit import KeyedLimits
    from toolmesh.llm.router import Deployment, Router

    check_llm_section(section, source)
    # CPU inference is slow on a busy machine: the local default gets a generous per-call timeout.
    specs = section.get("deployments") or [{"name": "local", "provider": "local", "model": LOCAL_MODEL,
                                             "timeout": 600.0}]
    if not isinstance(specs, list):
        raise ConfigError("must be a list of deployments", key="llm.deployments")
    deployments = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict) or "model" not in spec:
            raise ConfigError("each deployment needs at least 'model'", key=f"llm.deployments[{i}]")
        deployments.append(Deployment(
            name=str(spec.get("name", f"d{i}")), model=str(spec["model"]), provider=make_provider(spec),
            rpm=spec.get("rpm"), tpm=spec.get("tpm"), weight=spec.get("weight", 1), priority=spec.get("priority", 0),
            timeout=float(spec.get("timeout", 60.0)),
        ))
    limits = {scope: KeyedLimits(rpm, tpm, name=scope)
              for scope, (rpm, tpm) in _key_limits(section.get("limits"), source).items()}
    router = Router(deployments, registry, strategy=section.get("strategy", "balanced"), rules=section.get("rules"),
                    tenant_limits=limits.get("tenant"), user_limits=limits.get("user"))
    default_model = model_override or section.get("default_model") or deployments[0].model
    return router, default_model


async def build_agent(
    config: ToolmeshConfig, *, model: str | None = None, store_path: str | None = None, hub: Hub | None = None
) -> AgentStack:
    """Hub + router + store + ledger + sessions + guard, wired into one :class:`Agent`."""
    from toolmesh.llm.models import ModelRegistry
    from toolmesh.llm.tokens import count_messages
    from toolmesh.llm.types import Usage
    from toolmesh.store.ledger import UsageLedger
    from toolmesh.store.sessions import SessionStore, UserLimits
    from toolmesh.store.sqlite import Store

    registry = ModelRegistry.load(overrides=config.section("models") or None)
    llm, default_model = build_llm(config.section("llm"), registry, model, source=config.source)
    agent_cfg = AgentConfig.from_section(config.section("agent"), config.source, model=default_model)
    from toolmesh.store.sql import StoreSettings

    buffer_rows = StoreSettings.from_section(config.section("store"), config.source).buffer_rows
    store = Store(store_path or store_location(config), buffer_rows=buffer_rows)
    hub = hub if hub is not None else Hub()
    for tenant, servers in config.tenants.items():
        await hub.register_many(servers, tenant=tenant)

    def price(model_name: str, usage: Usage) -> float | None:
        cost = registry.price(model_name, usage)
        return cost.usd if cost.priced else None

    def context_window(model_name: str) -> int | None:
        info = registry.get(model_name)
        return getattr(info, "context_window", None) if info is not None else None

    ledger = UsageLedger(store, registry.price)
    sessions = SessionStore(store)
    user_limits = UserLimits(
        max_concurrent_runs=agent_cfg.user_limits.max_concurrent_runs,
        requests_per_minute=agent_cfg.user_limits.requests_per_minute,
    )
    guard = _build_guard(config.section("guard"))
    agent = Agent(
        hub, llm, agent_cfg.model_copy(update={"model": default_model}),
        history=StoreHistory(sessions), price=price,
        count_tokens=lambda m, msgs, tools: count_messages(m, msgs, tools)[0],
        context_window=context_window, guard=guard, ledger=ledger, user_limits=user_limits,
    )
    return AgentStack(hub, agent, llm, store, registry, ledger, sessions)


def _build_guard(section: dict[str, Any]) -> Guard:
    from toolmesh.agent.guard import Guard

    return Guard.from_config(section)
