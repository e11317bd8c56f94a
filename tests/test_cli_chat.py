"""`toolmesh chat` as a subprocess against a scripted OpenAI-compatible server process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from scripted_support import scripted_llm_process
from toolmesh.servers.demo import demo_config

TOOLMESH = str(Path(sys.executable).with_name("toolmesh"))
RULES = {"rules": [
    {"when": {"last_role": "user", "has_tools": True}, "respond": {"tool_calls": [
        {"name": "inventory__check_stock", "arguments": {"sku": "SKU-1001", "city": "广州"}},
        {"name": "pricing__calculate_discount",
         "arguments": {"sku": "SKU-1001", "user_level": "gold", "coupon": "SAVE20", "city": "广州"}}],
        "usage": {"input_tokens": 800, "output_tokens": 40}}},
    {"when": {"last_role": "tool"}, "respond": {"text": "有货。{{tool_results}}",
                                                  "usage": {"input_tokens": 1600, "output_tokens": 90}}}]}


@pytest.fixture
def llm_url(tmp_path: Path) -> Iterator[str]:
    with scripted_llm_process(RULES, tmp_path) as url:
        yield url


def write_config(tmp_path: Path, url: str, **agent: object) -> Path:
    cfg = demo_config()
    cfg["llm"] = {"deployments": [{"name": "scripted", "provider": "openai", "base_url": url, "api_key": "k",
                                   "model": "deepseek-chat"}]}
    cfg["agent"] = {"system_prompt": "Customer U123456 (gold, 广州) is viewing SKU-1001.", **agent}
    path = tmp_path / "toolmesh.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    return path


def run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TOOLMESH_HOME": str(tmp_path / "home")}
    return subprocess.run([TOOLMESH, *args], capture_output=True, text=True, timeout=120, env=env, check=False)


def test_chat_json(tmp_path: Path, llm_url: str) -> None:
    cfg = write_config(tmp_path, llm_url)
    out = run(["chat", "-c", str(cfg), "--json", "我想买这款手机，库存够吗？广东用户有什么优惠？"], tmp_path)
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert set(body) >= {"answer", "tool_calls", "usage", "cost_usd", "turns"}
    assert body["turns"] == 2 and body["answer"].startswith("有货")
    assert [c["name"] for c in body["tool_calls"]] == ["inventory__check_stock", "pricing__calculate_discount"]
    assert all(c["ok"] and c["latency_ms"] > 0 and c["arguments"]["sku"] == "SKU-1001" for c in body["tool_calls"])
    assert body["usage"] == {"input_tokens": 2400, "output_tokens": 130, "total_tokens": 2530}
    assert body["cost_usd"] == pytest.approx((2400 * 0.10 + 130 * 0.42) / 1e6)
    # the ledger persisted under TOOLMESH_HOME
    assert (tmp_path / "home" / "toolmesh.db").exists()


def test_chat_plain_output_and_conversation(tmp_path: Path, llm_url: str) -> None:
    cfg = write_config(tmp_path, llm_url)
    out = run(["chat", "-c", str(cfg), "--conversation", "c1", "库存够吗？"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith("有货")
    assert "inventory__check_stock" in out.stderr  # tool calls shown live


def test_chat_bad_agent_config_names_the_key(tmp_path: Path, llm_url: str) -> None:
    cfg = write_config(tmp_path, llm_url, max_turns=0)
    out = run(["chat", "-c", str(cfg), "--json", "hi"], tmp_path)
    assert out.returncode == 2
    assert "agent.max_turns" in json.loads(out.stdout)["error"]


def test_chat_unreachable_llm_is_a_clear_failure(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "http://127.0.0.1:9/v1")
    out = run(["chat", "-c", str(cfg), "--json", "hi"], tmp_path)
    assert out.returncode == 1
    body = json.loads(out.stdout)
    assert body["ok"] is False and body["error_type"] == "ProviderUnavailableError"
