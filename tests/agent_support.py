"""Shared wiring for agent tests: real demo servers, a scripted LLM over HTTP, real SQLite."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from toolmesh.agent.config import AgentConfig
from toolmesh.agent.history import StoreHistory
from toolmesh.agent.runtime import Agent
from toolmesh.hub import Hub
from toolmesh.hub.configfile import parse_config
from toolmesh.llm.models import ModelRegistry
from toolmesh.llm.openai_provider import OpenAIProvider
from toolmesh.llm.router import Deployment, Router
from toolmesh.llm.tokens import count_messages
from toolmesh.servers.demo import demo_config
from toolmesh.store.ledger import UsageLedger
from toolmesh.store.sessions import SessionStore
from toolmesh.store.sqlite import Store
from toolmesh.testing.scripted_llm import ScriptedLLM

MODEL = "deepseek-chat"  # priced in the registry: 0.10 / 0.42 USD per million tokens


@contextlib.asynccontextmanager
async def agent_stack(script: dict[str, Any], tmp_path: Path, *, servers: tuple[str, ...] = ("catalog", "inventory",
                      "pricing", "users"), extra_servers: dict[str, Any] | None = None,
                      **config: Any) -> AsyncIterator[tuple[Agent, ScriptedLLM, Store]]:
    registry = ModelRegistry.load()
    demo = demo_config()
    cfg_servers = {k: v for k, v in demo["servers"].items() if k in servers}
    cfg_servers.update(extra_servers or {})
    async with ScriptedLLM(script) as srv, Hub() as hub:
        await hub.register_many(parse_config({"servers": cfg_servers}, "test").servers)
        provider = OpenAIProvider(srv.base_url, "test-key")
        router = Router([Deployment("scripted", MODEL, provider)], registry)
        store = Store(tmp_path / "toolmesh.db")
        sessions = SessionStore(store)

        def price(model: str, usage: Any) -> float | None:
            c = registry.price(model, usage)
            return c.usd if c.priced else None

        agent = Agent(
            hub, router, AgentConfig(model=MODEL, **config), history=StoreHistory(sessions), price=price,
            count_tokens=lambda m, msgs, tools: count_messages(m, msgs, tools)[0],
            context_window=lambda m: (registry.get(m).context_window if registry.get(m) else None),
            ledger=UsageLedger(store, registry.price),
        )
        try:
            yield agent, srv, store
        finally:
            await router.aclose()
            await store.aclose()


SCENARIO_RULES: dict[str, Any] = {
    "rules": [
        {"when": {"last_role": "user", "has_tools": True},
         "respond": {"tool_calls": [
             {"name": "catalog__get_product_info", "arguments": {"sku": "SKU-1001"}},
             {"name": "inventory__check_stock", "arguments": {"sku": "SKU-1001", "city": "广州"}},
             {"name": "pricing__calculate_discount",
              "arguments": {"sku": "SKU-1001", "user_level": "gold", "coupon": "SAVE20", "city": "广州"}}],
             "usage": {"input_tokens": 900, "output_tokens": 60}}},
        {"when": {"last_role": "tool"},
         "respond": {"text": "结论 {{tool_results}}", "usage": {"input_tokens": 2500, "output_tokens": 120}}},
    ],
    "default": {"text": "fallback text"},
}
