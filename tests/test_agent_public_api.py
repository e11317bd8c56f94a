"""toolmesh.agent and toolmesh.llm export their public names, load them lazily, and type the seams."""

from __future__ import annotations

import subprocess
import sys

import pytest

import toolmesh.agent
import toolmesh.llm
from toolmesh.agent import Agent, AgentConfig
from toolmesh.agent.budget import Budget, BudgetScope, DailySpend
from toolmesh.agent.protocols import UserLimiter
from toolmesh.hub import Hub
from toolmesh.llm.base import ChatModel, DirectModel, as_chat_model
from toolmesh.llm.openai_provider import OpenAIProvider
from toolmesh.llm.router import Deployment, Router
from toolmesh.store.limits import UserLimits
from toolmesh.testing.scripted_llm import ScriptedLLM


@pytest.mark.parametrize("package", [toolmesh.agent, toolmesh.llm], ids=lambda p: p.__name__)
def test_every_exported_name_resolves_to_its_defining_module(package: object) -> None:
    names = package.__all__  # type: ignore[attr-defined]
    assert len(set(names)) == len(names) and names
    for name in names:
        obj = getattr(package, name)
        module = package._EXPORTS[name]  # type: ignore[attr-defined]
        assert getattr(sys.modules[module], name) is obj
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        package.nope  # type: ignore[attr-defined]  # noqa: B018


def test_short_paths_are_the_deep_ones() -> None:
    from toolmesh.agent import Agent, BudgetSet, build_agent
    from toolmesh.agent.budget import BudgetSet as DeepBudgetSet
    from toolmesh.agent.factory import build_agent as deep_build_agent
    from toolmesh.agent.runtime import Agent as DeepAgent
    from toolmesh.llm import ChatModel as ShortChatModel
    from toolmesh.llm import ModelRegistry
    from toolmesh.llm import Router as ShortRouter
    from toolmesh.llm.models import ModelRegistry as DeepRegistry

    assert (Agent, BudgetSet, build_agent) == (DeepAgent, DeepBudgetSet, deep_build_agent)
    assert (ShortRouter, ModelRegistry, ShortChatModel) == (Router, DeepRegistry, ChatModel)


def test_importing_the_packages_loads_no_sdk_no_local_model_no_hub() -> None:
    code = ("import sys, toolmesh.agent, toolmesh.llm\n"
            "heavy = ('openai', 'anthropic', 'llama_cpp', 'toolmesh.llm.local', 'toolmesh.hub', 'toolmesh.agent.runtime')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


async def test_router_and_a_bare_provider_are_both_chat_models() -> None:
    provider = OpenAIProvider("http://127.0.0.1:9/v1", "k")
    router = Router([Deployment("d", "deepseek-chat", provider)])
    try:
        assert as_chat_model(router) is router
        direct = as_chat_model(provider)
        assert isinstance(direct, DirectModel) and direct.provider is provider
        assert isinstance(router, ChatModel) and isinstance(direct, ChatModel)
        with pytest.raises(TypeError, match="expected a ChatModel"):
            as_chat_model(object())  # type: ignore[arg-type]
    finally:
        await router.aclose()


async def test_the_agent_charges_a_spend_store_given_to_it() -> None:
    """A shared store plugs in through DailySpend's scope factory; the agent charges its scopes."""
    made: dict[str, Budget] = {}

    def factory(key: str, name: str, max_cost_usd: float) -> BudgetScope:
        made[key] = Budget(name, max_cost_usd=max_cost_usd)
        return made[key]

    script = {"responses": [{"text": "hi", "usage": {"input_tokens": 1000, "output_tokens": 10}}]}
    async with ScriptedLLM(script) as srv, Hub() as hub:
        router = Router([Deployment("d", "deepseek-chat", OpenAIProvider(srv.base_url, "k"))])
        limiter: UserLimiter = UserLimits(max_concurrent_runs=1)
        agent = Agent(hub, router, AgentConfig(model="deepseek-chat"), price=lambda m, u: 1e-6 * u.total_tokens,
                      spend=DailySpend(1.0, None, scope_factory=factory), user_limits=limiter)
        try:
            result = await agent.run("hello", tenant="acme", user="u1")
        finally:
            await router.aclose()
    assert result.status == "completed"
    [(key, scope)] = made.items()
    assert key == f"spend:acme:u1:{DailySpend.today()}"
    assert scope.used_cost == pytest.approx(0.00101) and scope.in_flight == 0
