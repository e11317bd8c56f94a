"""Agent benchmark: one thin adapter per agent framework, all on the same LLM and MCP server.

Every adapter is opened with ``await X.open(llm_base_url, mcp_url)`` and exposes
``await run(question) -> (answer, ok_tool_calls)`` and ``await aclose()`` (open and close in the
same task: the MCP clients hold anyio cancel scopes). ``ok_tool_calls`` counts tool calls that
returned the tool's real result (an error text handed to the model does not count), so the
benchmark can check that every run did the whole job.

Each framework asks the scripted LLM for its own model name (``MODELS``), and the script's
tool-call names follow each framework's naming: toolmesh namespaces MCP tools as
``server__tool``; the Agents SDK and PydanticAI pass the server's names through unchanged.
"""

from __future__ import annotations

import contextlib
from typing import Any

FRAMEWORKS = ("toolmesh", "openai_agents", "pydantic_ai")
#: Model names asked for; ``floor`` is the framework-less reference client (floor.py).
MODELS = {"toolmesh": "bench-toolmesh", "openai_agents": "bench-openai-agents", "pydantic_ai": "bench-pydantic-ai",
          "floor": "bench-floor"}
SERVER_NAME = "shop"
TOOL_PREFIX = {"toolmesh": SERVER_NAME + "__", "openai_agents": "", "pydantic_ai": "", "floor": ""}
#: (tool, arguments, a key only its real result contains)
TOOLS: tuple[tuple[str, dict[str, str], str], ...] = (
    ("inventory", {"sku": "A-100"}, "in_stock"),
    ("price", {"sku": "A-100"}, "currency"),
    ("shipping", {"sku": "A-100", "city": "Shanghai"}, "days"),
)
QUESTION = "Is A-100 in stock, what does it cost, and how fast can it reach Shanghai?"
#: The scripted final answer; ``{{n_tool}}`` proves the model was sent all three tool results.
ANSWER_TEMPLATE = "A-100: in stock, 199 CNY, 2 days to Shanghai ({{n_tool}} tool results)."
EXPECTED_ANSWER = ANSWER_TEMPLATE.replace("{{n_tool}}", str(len(TOOLS)))
INSTRUCTIONS = "You are a shop assistant. Use the tools to answer."
PROTOCOL = "2026-07-28"


def script() -> dict[str, Any]:
    """The scripted LLM's rules: a user turn → the three tool calls at once; tool results → the answer."""
    rules: list[dict[str, Any]] = []
    for fw in MODELS:
        calls = [{"name": TOOL_PREFIX[fw] + name, "arguments": args} for name, args, _ in TOOLS]
        rules.append({"when": {"model": MODELS[fw], "last_role": "user"},
                      "respond": {"tool_calls": calls, "finish_reason": "tool_calls"}})
        rules.append({"when": {"model": MODELS[fw], "last_role": "tool"},
                      "respond": {"text": ANSWER_TEMPLATE, "finish_reason": "stop"}})
    return {"rules": rules, "models": list(MODELS.values())}


def real_result(tool: str, output: Any) -> bool:
    """Whether ``output`` is the real result of ``tool`` (not an error text)."""
    marker = next((m for name, _, m in TOOLS if tool.endswith(name)), None)
    return marker is not None and marker in str(output)


class ToolmeshAgent:
    """toolmesh: ``Agent(hub, OpenAIProvider(...), AgentConfig(model=...))`` with default settings."""

    name = "toolmesh"

    def __init__(self, agent: Any, hub: Any, provider: Any) -> None:
        self._agent, self._hub, self._provider = agent, hub, provider

    @classmethod
    async def open(cls, llm_url: str, mcp_url: str, *, max_concurrency: int | None = None) -> ToolmeshAgent:
        from toolmesh.agent.config import AgentConfig
        from toolmesh.agent.runtime import Agent
        from toolmesh.hub import Hub, ServerConfig
        from toolmesh.llm.openai_provider import OpenAIProvider

        hub = Hub()
        extra = {"max_concurrency": max_concurrency} if max_concurrency else {}
        await hub.register(ServerConfig(name=SERVER_NAME, url=mcp_url, protocol=PROTOCOL, **extra), connect=True)
        provider = OpenAIProvider(llm_url, "x")
        agent = Agent(hub, provider, AgentConfig(model=MODELS["toolmesh"], system_prompt=INSTRUCTIONS))
        return cls(agent, hub, provider)

    async def run(self, question: str) -> tuple[str, int]:
        result = await self._agent.run(question)
        return result.answer, sum(1 for c in result.tool_calls if c.ok)

    def protocol(self) -> str | None:
        return PROTOCOL  # pinned in ServerConfig

    async def aclose(self) -> None:
        await self._hub.aclose()
        await self._provider.aclose()


class OpenAIAgentsAgent:
    """OpenAI Agents SDK: ``Runner.run(Agent(..., mcp_servers=[MCPServerStreamableHttp]))``.

    Tracing off (it would try the network); ``cache_tools_list=True`` (the SDK's advice for a
    server whose tools do not change, and what the other two do by default); function tools run
    concurrently by default (``max_function_tool_concurrency=None``)."""

    name = "openai_agents"

    def __init__(self, agent: Any, server: Any, client: Any, mcp_url: str) -> None:
        from agents import Runner

        self._agent, self._runner, self._server, self._client = agent, Runner, server, client
        self._mcp_url = mcp_url
        self._pool: list[OpenAIAgentsAgent] = []

    @staticmethod
    async def _agent_with_server(model: Any, mcp_url: str) -> tuple[Any, Any]:
        from agents import Agent
        from agents.mcp import MCPServerStreamableHttp

        server: Any = MCPServerStreamableHttp({"url": mcp_url}, cache_tools_list=True, name=SERVER_NAME)
        await server.connect()
        return Agent(name="bench", instructions=INSTRUCTIONS, model=model, mcp_servers=[server]), server

    @classmethod
    async def open(cls, llm_url: str, mcp_url: str, **_: Any) -> OpenAIAgentsAgent:
        from agents import OpenAIChatCompletionsModel, set_tracing_disabled
        from openai import AsyncOpenAI

        set_tracing_disabled(True)
        client = AsyncOpenAI(base_url=llm_url, api_key="x", max_retries=0)
        model = OpenAIChatCompletionsModel(model=MODELS["openai_agents"], openai_client=client)
        agent, server = await cls._agent_with_server(model, mcp_url)
        return cls(agent, server, client, mcp_url)

    async def session_pool(self, n: int) -> list[OpenAIAgentsAgent]:
        """``n`` sessions, each with its own MCP connection (same model client): the SDK serialises
        every request on one ``MCPServerStreamableHttp``, so sessions sharing one would run one
        tool call at a time across the whole process."""
        while len(self._pool) < n - 1:
            agent, server = await self._agent_with_server(self._agent.model, self._mcp_url)
            self._pool.append(OpenAIAgentsAgent(agent, server, None, self._mcp_url))
        return [self, *self._pool[: n - 1]]

    def protocol(self) -> str | None:
        return getattr(self._server.session, "protocol_version", None)

    async def run(self, question: str) -> tuple[str, int]:
        from agents import ToolCallOutputItem

        result = await self._runner.run(self._agent, question)
        ok = 0
        for item in result.new_items:
            if isinstance(item, ToolCallOutputItem):
                raw: Any = item.raw_item
                call_id = raw.get("call_id") if isinstance(raw, dict) else getattr(raw, "call_id", None)
                name = _agents_tool_name(result.new_items, call_id)
                ok += real_result(name, item.output)
        return str(result.final_output), ok

    async def aclose(self) -> None:
        for extra in reversed(self._pool):
            await extra._server.cleanup()
        await self._server.cleanup()
        if self._client is not None:
            await self._client.close()


def _agents_tool_name(items: list[Any], call_id: Any) -> str:
    from agents import ToolCallItem

    for item in items:
        if isinstance(item, ToolCallItem) and getattr(item.raw_item, "call_id", None) == call_id:
            return str(getattr(item.raw_item, "name", ""))
    return ""


class PydanticAIAgent:
    """PydanticAI: ``Agent(OpenAIChatModel(...), toolsets=[MCPToolset(url)])``, entered once so
    the MCP session stays open across runs; tools run in its default ``parallel`` mode."""

    name = "pydantic_ai"

    def __init__(self, agent: Any, stack: contextlib.AsyncExitStack, client: Any) -> None:
        self._agent, self._stack, self._client = agent, stack, client

    @classmethod
    async def open(cls, llm_url: str, mcp_url: str, **_: Any) -> PydanticAIAgent:
        from openai import AsyncOpenAI
        from pydantic_ai import Agent
        from pydantic_ai.mcp import MCPToolset
        from pydantic_ai.models.openai import OpenAIChatModel
        from pydantic_ai.providers.openai import OpenAIProvider

        client = AsyncOpenAI(base_url=llm_url, api_key="x", max_retries=0)
        model = OpenAIChatModel(MODELS["pydantic_ai"], provider=OpenAIProvider(openai_client=client))
        agent = Agent(model, instructions=INSTRUCTIONS, toolsets=[MCPToolset(mcp_url, id=SERVER_NAME)])
        stack = contextlib.AsyncExitStack()
        await stack.enter_async_context(agent)
        return cls(agent, stack, client)

    def protocol(self) -> str | None:
        for toolset in self._agent.toolsets:
            session = getattr(getattr(toolset, "client", None), "session", None)
            if session is not None:
                return getattr(session, "protocol_version", None)
        return None

    async def run(self, question: str) -> tuple[str, int]:
        from pydantic_ai.messages import ModelRequest, ToolReturnPart

        result = await self._agent.run(question)
        ok = 0
        for msg in result.new_messages():
            if isinstance(msg, ModelRequest):
                for part in msg.parts:
                    if isinstance(part, ToolReturnPart):
                        ok += real_result(part.tool_name, part.content)
        return str(result.output), ok

    async def aclose(self) -> None:
        await self._stack.aclose()
        await self._client.close()


#: How each client is set up, for the report.
SETTINGS = {
    "toolmesh": "Agent(hub, OpenAIProvider(url), AgentConfig(model, system_prompt)), defaults otherwise "
                "(loop guards, budgets, parallel tools up to 8); Hub + ServerConfig(url, protocol='2026-07-28')",
    "openai_agents": "Runner.run(Agent(model=OpenAIChatCompletionsModel(AsyncOpenAI(max_retries=0)), "
                     "mcp_servers=[MCPServerStreamableHttp(cache_tools_list=True)])), tracing disabled; the SDK "
                     "serialises requests per Streamable HTTP server object, so its 3 tool calls run one after "
                     "another; concurrent sessions get one MCP connection each",
    "pydantic_ai": "Agent(OpenAIChatModel(provider=OpenAIProvider(openai_client=AsyncOpenAI(max_retries=0))), "
                   "toolsets=[MCPToolset(url)]) entered once (session kept open, tools cached: defaults), "
                   "tools in its default 'parallel' mode",
    "floor": "aiohttp + orjson, no framework (bench/agent_servers/floor.py)",
}

ADAPTERS: dict[str, Any] = {"toolmesh": ToolmeshAgent, "openai_agents": OpenAIAgentsAgent,
                            "pydantic_ai": PydanticAIAgent}


_NEEDS = {"openai_agents": ("agents", "agents.mcp"),
          "pydantic_ai": ("pydantic_ai", "pydantic_ai.mcp", "pydantic_ai.models.openai")}


def status(fw: str) -> str | None:
    """Why ``fw`` cannot run here (None when it can)."""
    import importlib

    try:
        for module in _NEEDS.get(fw, ()):
            importlib.import_module(module)
    except ImportError as exc:
        return f"{fw} not installed ({exc}); install the 'bench' extra"
    return None


def versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for dist in ("toolmesh", "openai-agents", "pydantic-ai-slim", "openai", "mcp", "fastmcp-slim", "httpx2",
                 "aiohttp", "uvicorn", "uvloop"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out
