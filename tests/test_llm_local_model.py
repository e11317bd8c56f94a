"""The embedded local model, for real: bundled weights, llama.cpp, the five demo servers via the Hub.

Asserts tool names, schema-valid arguments and facts — never wording or timings.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import pytest

from toolmesh.errors import ContextOverflowError
from toolmesh.llm.local.chat_format import render
from toolmesh.llm.types import ChatRequest, Message, StreamDone, TextDelta, ToolCall, ToolCallDelta

pytestmark = [
    pytest.mark.local_model,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                       reason="llama-cpp-python not installed (pip install 'toolmesh[local]')"),
    pytest.mark.timeout(600),
]

if importlib.util.find_spec("llama_cpp") is not None:
    from toolmesh.llm.local import LocalProvider


@pytest.fixture(scope="module")
def provider() -> LocalProvider:
    """One model for the module (loaded lazily by the first request)."""
    return LocalProvider()


@pytest.fixture(scope="module")
def demo_tools() -> list[dict[str, Any]]:
    from toolmesh.hub import Hub
    from toolmesh.hub.configfile import parse_config
    from toolmesh.servers.demo import demo_config

    async def fetch() -> list[dict[str, Any]]:
        hub = Hub()
        try:
            # A loaded machine can take more than the default 10 s to start five servers; a server that did
            # not answer would silently leave its tools out, and the template checks would test less.
            servers = parse_config(demo_config(), "demo").servers
            await hub.register_many([cfg.model_copy(update={"connect_timeout": 60.0}) for cfg in servers.values()])
            return await hub.to_openai_tools()
        finally:
            await hub.aclose()

    tools = asyncio.run(fetch())
    assert {t["function"]["name"].split("__")[0] for t in tools} == {"catalog", "inventory", "pricing", "users",
                                                                     "logistics"}
    return tools


@pytest.fixture
async def hub() -> AsyncIterator[Any]:
    from toolmesh.hub import Hub
    from toolmesh.hub.configfile import parse_config
    from toolmesh.servers.demo import demo_config

    h = Hub()
    # Generous connect budget: five Python processes start at once on a loaded CI box.
    await h.register_many([cfg.model_copy(update={"connect_timeout": 60.0})
                           for cfg in parse_config(demo_config(), "demo").servers.values()])
    yield h
    await h.aclose()


def _schema(tools: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(t["function"]["parameters"] for t in tools if t["function"]["name"] == name)


async def _ask(provider: LocalProvider, tools: list[dict[str, Any]], text: str, **kw: Any) -> Any:
    return await provider.complete(ChatRequest("local", [Message("user", text)], tools=tools, max_tokens=128, **kw))


CASES = [
    ("What is SKU-1001?", "catalog__get_product_info", {"sku": "SKU-1001"}),
    ("Is SKU-1001 in stock in 广州?", "inventory__check_stock", {"sku": "SKU-1001", "city": "广州"}),
    ("Track shipment SF1234567890", "logistics__track_shipment", {"tracking_number": "SF1234567890"}),
    ("Show me the profile of user U123456", "users__get_profile", {"user_id": "U123456"}),
    ("Where is my order ORD-100002?", "logistics__get_order", {"order_id": "ORD-100002"}),
    ("What promotions are running in Shenzhen?", "pricing__list_promotions", {"city": "Shenzhen"}),
]


@pytest.mark.parametrize(("question", "tool", "expected"), CASES, ids=[c[1] for c in CASES])
async def test_picks_the_right_tool_with_schema_valid_arguments(
        provider: LocalProvider, demo_tools: list[dict[str, Any]], question: str, tool: str,
        expected: dict[str, Any]) -> None:
    r = await _ask(provider, demo_tools, question)
    assert r.finish_reason == "tool_calls" and r.message.content is None
    calls = r.message.tool_calls
    # several calls may come in one turn: the asked-for one must be among them
    picked = [c for c in calls if c.name == tool]
    assert picked, [c.name for c in calls]
    for call in calls:
        jsonschema.validate(call.arguments, _schema(demo_tools, call.name))
        assert re.fullmatch(r"call_\d+", call.id)
    for key, value in expected.items():
        assert str(picked[0].arguments[key]).strip() == value
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0 and not r.usage.estimated


async def test_reference_question_gets_stock_and_price_in_one_turn(provider: LocalProvider,
                                                                 demo_tools: list[dict[str, Any]]) -> None:
    """The demo's question with the demo's system prompt: the model itself asks for the stock in the
    customer's city and the gold member's price, together, and no call is left with invented values."""
    from toolmesh.cli.demo import QUESTION, SYSTEM_PROMPT

    r = await provider.complete(ChatRequest("local", [Message("system", SYSTEM_PROMPT), Message("user", QUESTION)],
                                            tools=demo_tools, max_tokens=256))
    calls = {c.name: c.arguments for c in r.message.tool_calls}
    assert calls.get("inventory__check_stock") == {"sku": "SKU-1001", "city": "广州"}, calls
    price = calls.get("pricing__calculate_discount")
    assert price is not None and price["sku"] == "SKU-1001" and price["user_level"] == "gold", calls
    assert "coupon" not in price  # the schema's example coupon is nobody's
    for c in r.message.tool_calls:
        jsonschema.validate(c.arguments, _schema(demo_tools, c.name))


async def test_max_calls_caps_the_calls_of_one_turn(provider: LocalProvider,
                                                   demo_tools: list[dict[str, Any]]) -> None:
    """The reference question asks for two or more calls; with ``max_calls=1`` the turn ends after
    the first (the decoder stops; nothing is generated and then dropped)."""
    from toolmesh.cli.demo import QUESTION, SYSTEM_PROMPT
    from toolmesh.llm.local.provider import MAX_CALLS

    request = ChatRequest("local", [Message("system", SYSTEM_PROMPT), Message("user", QUESTION)],
                          tools=demo_tools, max_tokens=256)
    provider.max_calls = 1
    try:
        r = await provider.complete(request)
    finally:
        provider.max_calls = MAX_CALLS
    assert [c.name for c in r.message.tool_calls] == ["inventory__check_stock"], r.message.tool_calls
    assert r.usage.output_tokens < 60  # one call's worth of tokens, not the turn's 150+
    with pytest.raises(ValueError, match="max_calls must be at least 1"):
        LocalProvider(max_calls=0)


@pytest.mark.parametrize("text", ["thanks!", "你好", "Good morning", "bye"])
async def test_chit_chat_gets_a_plain_answer(provider: LocalProvider, demo_tools: list[dict[str, Any]],
                                            text: str) -> None:
    r = await _ask(provider, demo_tools, text)
    assert r.message.tool_calls == []
    assert r.finish_reason in ("stop", "length")
    assert r.message.content and r.message.content.strip()
    assert "<tool_call>" not in r.message.content


async def test_required_and_named_tool_choice_force_a_call(provider: LocalProvider,
                                                          demo_tools: list[dict[str, Any]]) -> None:
    r = await _ask(provider, demo_tools, "thanks!", tool_choice="required")
    assert r.message.tool_calls and r.finish_reason == "tool_calls"
    r = await _ask(provider, demo_tools, "Track shipment SF1234567890",
                   tool_choice={"type": "function", "function": {"name": "users__get_profile"}})
    assert [c.name for c in r.message.tool_calls] == ["users__get_profile"]
    jsonschema.validate(r.message.tool_calls[0].arguments, _schema(demo_tools, "users__get_profile"))


async def test_final_answer_after_real_tool_results_states_the_facts(
        provider: LocalProvider, demo_tools: list[dict[str, Any]], hub: Any) -> None:
    question = "How much does SKU-1001 cost for a gold member in Guangzhou?"
    r = await _ask(provider, demo_tools, question, tool_choice={
        "type": "function", "function": {"name": "pricing__calculate_discount"}})
    call = r.message.tool_calls[0]
    jsonschema.validate(call.arguments, _schema(demo_tools, call.name))
    results = await hub.batch_call([call.to_openai()], timeout=30)
    result = results[call.id]
    assert result.ok, result.error
    data = result.structured
    assert isinstance(data, dict) and data["final_price"] > 0
    text = result.text
    messages = [Message("user", question), Message("assistant", tool_calls=[call]),
                Message("tool", text, tool_call_id=call.id, name=call.name)]
    r2 = await provider.complete(ChatRequest("local", messages, tools=demo_tools, tool_choice="none", max_tokens=128))
    assert r2.message.tool_calls == [] and r2.message.content
    numbers = {float(n.replace(",", "")) for n in re.findall(r"\d[\d,]*(?:\.\d+)?", r2.message.content)}
    assert float(data["final_price"]) in numbers, (data["final_price"], r2.message.content)


async def test_an_answer_from_tool_results_is_prose_not_json(provider: LocalProvider) -> None:
    # The 0.5B model, shown JSON tool results, used to answer by echoing one: after tool results
    # the results are shown as text lines and the first token may not open JSON, a list or a fence.
    from toolmesh.llm.local import weights
    from toolmesh.llm.local.engine import Engine

    engine = Engine(str(weights.model_path()), n_ctx=256, n_threads=1, seed=0)
    banned = set(engine.not_prose().tolist())
    for text in ("{", "[", "```", " {", "\n", "<tool_response>", "- ", "**"):
        assert engine.tokenize(text)[0] in banned, text  # an answer cannot start this way
    assert not set(engine.tokenize("The")) & banned and not set(engine.tokenize("库存")) & banned
    engine.close()
    call = ToolCall("c1", "inventory__check_stock", {"sku": "SKU-1001", "city": "广州"})
    result = '{"sku": "SKU-1001", "city_zh": "广州", "total_quantity": 243, "status": "in_stock"}'
    messages = [Message("user", "Is SKU-1001 in stock in 广州?"), Message("assistant", tool_calls=[call]),
                Message("tool", result, tool_call_id="c1", name=call.name),
                Message("user", 'Reply with the JSON result only, like {"total": …}.')]
    r = await provider.complete(ChatRequest("local", messages, tool_choice="none", max_tokens=48))
    text = r.message.content or ""
    assert text.strip() and text.lstrip()[0] not in "{[`", text


async def test_streaming_text_deltas_and_whole_tool_calls(provider: LocalProvider,
                                                         demo_tools: list[dict[str, Any]]) -> None:
    events = [e async for e in provider.stream(ChatRequest("local", [Message("user", "Say hello in one sentence.")],
                                                         max_tokens=32))]
    done = events[-1]
    assert isinstance(done, StreamDone)
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 1 and "".join(deltas) == done.response.message.content
    assert done.response.usage.output_tokens <= 32

    events = [e async for e in provider.stream(ChatRequest(
        "local", [Message("user", "Track shipment SF1234567890")], tools=demo_tools, max_tokens=128))]
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [c.name for c in calls] == [c.name for c in events[-1].response.message.tool_calls]
    assert calls[0].name == "logistics__track_shipment" and "SF1234567890" in calls[0].arguments


async def test_max_tokens_and_exact_usage(provider: LocalProvider) -> None:
    messages = [Message("user", "Count from 1 to 100, separated by spaces.")]
    r = await provider.complete(ChatRequest("local", messages, max_tokens=8))
    assert r.usage.output_tokens == 8 and r.finish_reason == "length"
    assert r.usage.input_tokens == await provider.count_tokens(messages)


async def test_context_overflow(provider: LocalProvider) -> None:
    huge = "word " * (provider.n_ctx + 10)
    with pytest.raises(ContextOverflowError):
        await provider.complete(ChatRequest("local", [Message("user", huge)], max_tokens=8))


async def test_template_matches_the_one_embedded_in_the_gguf(provider: LocalProvider,
                                                            demo_tools: list[dict[str, Any]]) -> None:
    import jinja2
    import orjson

    await provider.load()
    assert provider._engine is not None
    template = provider._engine.llm.metadata["tokenizer.chat_template"]
    env = jinja2.Environment()
    env.filters["tojson"] = lambda v: __import__("json").dumps(v, ensure_ascii=False)
    call = __import__("toolmesh.llm.types", fromlist=["ToolCall"]).ToolCall("call_1", "users__get_profile",
                                                                            {"user_id": "U1"})
    convo = [Message("system", "Be brief."), Message("user", "hi"), Message("assistant", tool_calls=[call]),
             Message("tool", '{"ok": true}', tool_call_id="call_1"), Message("tool", "2", tool_call_id="call_2"),
             Message("assistant", "done"), Message("user", "你好")]
    as_dicts = [{"role": m.role, "content": m.content or "",
                 "tool_calls": [{"function": {"name": c.name, "arguments": c.arguments}} for c in m.tool_calls]}
                for m in convo]
    for tools in (demo_tools, None):
        expected = env.from_string(template).render(messages=as_dicts, tools=tools, add_generation_prompt=True)
        assert render(convo, tools) == expected
    # The tools are plain JSON (a tuple or a non-str key would not survive the round trip unchanged) and
    # every one of them reaches the prompt.
    assert orjson.loads(orjson.dumps(demo_tools)) == demo_tools
    prompt = render(convo, demo_tools)
    assert demo_tools and all(t["function"]["name"] in prompt for t in demo_tools)
