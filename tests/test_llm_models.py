"""Model registry (LLM-2): packaged data, user overrides, aliases, prices, unpriced models."""

from __future__ import annotations

import logging

import pytest

from toolmesh.errors import ConfigError
from toolmesh.llm.models import ModelInfo, ModelRegistry
from toolmesh.llm.types import Usage

M = 1_000_000


@pytest.fixture(autouse=True)
def _no_user_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOLMESH_HOME", str(tmp_path / "home"))


@pytest.fixture
def reg() -> ModelRegistry:
    return ModelRegistry.load()


def test_scenario_prices_from_anchors(reg):
    expected = {"gpt-4.1": (2.50, 8.00), "claude-sonnet-4-5": (3.00, 15.00),
                "gemini-2.5-flash": (0.30, 2.50), "deepseek-v3.2": (0.10, 0.42)}
    for name, (pin, pout) in expected.items():
        info = reg.get(name)
        assert info is not None, name
        assert (info.input_price, info.output_price) == (pin, pout)
    for name in ("gpt-4.1-mini", "gpt-4o-mini", "claude-haiku-4-5", "deepseek-reasoner",
                 "qwen2.5-coder-0.5b-instruct"):
        assert reg.get(name) is not None, name
    local = reg.get("qwen2.5-coder-0.5b-instruct")
    assert local.provider == "local" and local.priced and local.input_price == 0


def test_every_packaged_model_is_complete(reg):
    for info in reg:
        assert info.priced, info.name
        assert info.context_window and info.max_output and info.max_output <= info.context_window
        assert info.supports("tools") and info.supports("streaming")
        assert info.ttft_ms and info.per_token_ms and info.quality > 0


def test_aliases_prefixes_and_case(reg):
    assert reg.get("deepseek-chat").name == "deepseek-v3.2"
    assert reg.get("openai/gpt-4.1").name == "gpt-4.1"
    assert reg.get("openrouter/openai/gpt-4.1").name == "gpt-4.1"
    assert reg.get("GPT-4.1-2025-04-14").name == "gpt-4.1"
    assert reg.get("anthropic/claude-sonnet-4-5-20250929").name == "claude-sonnet-4-5"
    assert reg.get("gpt-9") is None
    assert reg.get("openai/gpt-9") is None
    assert "gpt-4.1" in reg and "nope" not in reg


def test_costs_are_exact(reg):
    assert reg.price("gpt-4.1", Usage(M, M)).usd == pytest.approx(10.50, abs=1e-12)
    assert reg.price("claude-sonnet-4-5", Usage(1000, 500)).usd == pytest.approx(0.003 + 0.0075, abs=1e-15)
    assert reg.price("deepseek-chat", Usage(2 * M, M)).usd == pytest.approx(0.62, abs=1e-12)
    assert reg.price("gemini-2.5-flash", Usage(0, 4 * M)).usd == pytest.approx(10.0, abs=1e-12)
    # cached input is a subset of input tokens, billed at the cached price
    cost = reg.price("gpt-4.1", Usage(input_tokens=M, output_tokens=0, cached_input_tokens=400_000))
    assert cost.usd == pytest.approx(0.6 * 2.50 + 0.4 * 0.50, abs=1e-12)
    # no cached price known: cached tokens cost the input price
    assert reg.price("gemini-2.5-flash", Usage(M, 0, cached_input_tokens=M)).usd == pytest.approx(0.30)
    c = reg.price("openai/gpt-4.1", Usage(1, 1))
    assert c.priced and c.model == "gpt-4.1"
    assert reg.price("qwen2.5-coder-0.5b-instruct", Usage(5000, 5000)).usd == 0.0


def test_unknown_model_warns_once_and_is_unpriced(reg, caplog):
    caplog.set_level(logging.WARNING, logger="toolmesh.llm.models")
    for _ in range(3):
        cost = reg.price("mystery-model", Usage(1000, 1000))
        assert cost.priced is False and cost.usd is None and cost.model == "mystery-model"
    reg.price("other-mystery", Usage(1, 1))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "mystery-model" in warnings[0].getMessage() and "unpriced" in warnings[0].getMessage()


def test_model_without_price_is_unpriced_not_zero(tmp_path, caplog):
    reg = ModelRegistry.load(overrides={"models": {"my-model": {"provider": "openai", "context_window": 1000}}})
    caplog.set_level(logging.WARNING, logger="toolmesh.llm.models")
    cost = reg.price("my-model", Usage(10, 10))
    assert (cost.usd, cost.priced, cost.model) == (None, False, "my-model")
    assert "has no price" in caplog.text


def test_savings(reg):
    s = reg.savings(Usage(M, M), "deepseek-v3.2", "gpt-4.1")
    assert s.cost.usd == pytest.approx(0.52) and s.reference.usd == pytest.approx(10.50)
    assert s.usd == pytest.approx(9.98) and s.fraction == pytest.approx(9.98 / 10.50)
    s = reg.savings(Usage(M, M), "unknown-x", "gpt-4.1")
    assert s.usd is None and s.fraction is None and not s.cost.priced
    assert reg.savings(Usage(1, 1), "gpt-4.1", "qwen2.5-coder-0.5b").fraction is None  # free reference


def test_user_file_in_toolmesh_home_merges_field_by_field(tmp_path, monkeypatch):
    home = tmp_path / "h"
    home.mkdir()
    (home / "models.yaml").write_text(
        "models:\n"
        "  gpt-4.1:\n    price: {input: 8.00}\n"
        "  my-vllm-model:\n    provider: openai\n    aliases: [local/qwen]\n    price: {input: 0.01, output: 0.02}\n"
    )
    monkeypatch.setenv("TOOLMESH_HOME", str(home))
    reg = ModelRegistry.load()
    g = reg.get("gpt-4.1")
    assert (g.input_price, g.output_price, g.cached_input_price, g.context_window) == (8.0, 8.0, 0.5, 1047576)
    assert reg.get("local/qwen").name == "my-vllm-model"  # alias with a slash
    assert reg.get("vllm/local/qwen").name == "my-vllm-model"  # prefix stripped, then the alias
    assert reg.get("qwen") is None
    assert reg.price("my-vllm-model", Usage(M, M)).usd == pytest.approx(0.03)


def test_explicit_path_then_overrides(tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text("gpt-4o-mini:\n  price: {output: 1.0}\n")  # bare models mapping is accepted too
    reg = ModelRegistry.load(f, overrides={"gpt-4o-mini": {"price": {"input": 0.2}, "quality": 55}})
    info = reg.get("gpt-4o-mini")
    assert (info.input_price, info.output_price, info.quality) == (0.2, 1.0, 55)
    with pytest.raises(ConfigError, match="not found"):
        ModelRegistry.load(tmp_path / "missing.yaml")


@pytest.mark.parametrize(("override", "key"), [
    ({"gpt-4.1": {"price": {"input": -1}}}, "models.gpt-4.1.price.input"),
    ({"gpt-4.1": {"price": {"inptu": 1}}}, "models.gpt-4.1.price.inptu"),
    ({"gpt-4.1": {"context_window": 1.5}}, "models.gpt-4.1.context_window"),
    ({"gpt-4.1": {"capabilities": ["telepathy"]}}, "models.gpt-4.1.capabilities"),
    ({"gpt-4.1": {"pricing": {}}}, "models.gpt-4.1.pricing"),
    ({"new-model": {"price": {"input": 1, "output": 1}}}, "models.new-model.provider"),
    ({"gpt-4.1": {"aliases": [1]}}, "models.gpt-4.1.aliases"),
    ({"gpt-4.1": {"price": {"output": "cheap"}}}, "models.gpt-4.1.price.output"),
    ({"gpt-4.1": {"latency": {"ttft_ms": True}}}, "models.gpt-4.1.latency.ttft_ms"),
    ({"gpt-4.1": [1, 2]}, "models.gpt-4.1"),
])
def test_validation_names_the_key(override, key):
    with pytest.raises(ConfigError) as ei:
        ModelRegistry.load(overrides=override)
    assert ei.value.key == key
    assert key in str(ei.value)


def test_invalid_yaml_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("models:\n  gpt-4.1: [\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        ModelRegistry.load(f)


def test_registry_built_in_code():
    reg = ModelRegistry({"x": ModelInfo("x", "openai", aliases=("y",), input_price=1.0, output_price=2.0)})
    assert reg.get("y").name == "x" and len(reg) == 1
    reg.add(ModelInfo("z", "local"))
    assert reg.names() == ["x", "z"] and not reg.get("z").priced
