"""The local model's speed-ups, for real: the saved prefix state and prompt-lookup decoding change
how much work a request takes, never what it produces.

Asserts token counts and outputs — never timings.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from toolmesh.llm.types import ChatRequest, Message

pytestmark = [
    pytest.mark.local_model,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                       reason="llama-cpp-python not installed (pip install 'toolmesh[local]')"),
    pytest.mark.timeout(900),
]

if importlib.util.find_spec("llama_cpp") is not None:
    from toolmesh.llm.local import LocalProvider, weights

SYSTEM = ("You are the customer-service assistant of an electronics shop. The customer is user U123456, "
          "a gold member in 广州.")
TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {
        "name": "inventory__check_stock", "description": "Check how many units of a product are in stock in a city.",
        "parameters": {"type": "object", "properties": {"sku": {"type": "string"}, "city": {"type": "string"}},
                       "required": ["sku", "city"]}}},
    {"type": "function", "function": {
        "name": "logistics__track_shipment", "description": "Track a parcel by its tracking number.",
        "parameters": {"type": "object", "properties": {"tracking_number": {"type": "string"}},
                       "required": ["tracking_number"]}}},
]


def _request(text: str) -> ChatRequest:
    return ChatRequest("local", [Message("system", SYSTEM), Message("user", text)], tools=TOOLS,
                       tool_choice="required", max_tokens=96)


def _calls(response: Any) -> list[tuple[str, str]]:
    return [(c.name, json.dumps(c.arguments, sort_keys=True)) for c in response.message.tool_calls]


@pytest.fixture(scope="module")
def model_file() -> Path:
    return weights.model_path()


async def test_prefix_state_is_saved_and_reused_by_the_next_process(
        model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLMESH_HOME", str(tmp_path))
    first = LocalProvider(model_file, sha256=weights.EXPECTED_SHA256)
    try:
        a = await first.complete(_request("Is SKU-1001 in stock in 深圳?"))
    finally:
        await first.aclose()
    saved = list((tmp_path / "cache" / "llm-prefix").glob("*.kv"))
    assert len(saved) == 1 and saved[0].stat().st_size > 100_000
    assert a.usage.cached_input_tokens == 0

    second = LocalProvider(model_file, sha256=weights.EXPECTED_SHA256)  # a fresh model: empty KV cache
    try:
        b = await second.complete(_request("Is SKU-1001 in stock in 深圳?"))
        engine = second._engine
        assert engine is not None and engine.prefix_hits == 1
        # the system turn with the tools was loaded, not evaluated: only the rest was read
        assert b.usage.cached_input_tokens > 150
        assert _calls(b) == _calls(a)
        # other tools: another prefix, another file
        c = await second.complete(ChatRequest("local", [Message("system", SYSTEM), Message("user", "Track SF1234567890")],
                                              tools=TOOLS[1:], tool_choice="required", max_tokens=64))
        # (only the start of the system text, common with the previous request, is reused)
        assert c.usage.cached_input_tokens < b.usage.cached_input_tokens
        assert len(list((tmp_path / "cache" / "llm-prefix").glob("*.kv"))) == 2
    finally:
        await second.aclose()


async def test_prompt_lookup_decoding_gives_the_same_output(
        model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLMESH_HOME", str(tmp_path))
    provider = LocalProvider(model_file, sha256=weights.EXPECTED_SHA256, prefix_cache=False)
    try:
        await provider.load()
        engine = provider._engine
        assert engine is not None
        outputs = []
        for speculate in (False, True):
            engine.speculate = speculate
            call = await provider.complete(_request("Is SKU-1001 in stock in 深圳? And track SF1234567890."))
            answer = await provider.complete(ChatRequest(
                "local", [Message("user", "Repeat exactly: SKU-1001 is in stock in 广州, 243 units.")],
                max_tokens=40))
            outputs.append((_calls(call), answer.message.content, call.usage.output_tokens,
                            answer.usage.output_tokens))
        assert outputs[0] == outputs[1]
        assert engine.draft_kept > 0  # guesses were made and some held
    finally:
        await provider.aclose()
