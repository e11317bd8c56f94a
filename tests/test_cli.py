"""The CLI contract that scripts rely on, run as a real subprocess."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from toolmesh import __version__
from toolmesh.hub.configfile import parse_config

TOOLMESH = str(Path(sys.executable).with_name("toolmesh"))


def tm(*args: str, home: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TOOLMESH_HOME": str(home)}
    env.pop("TOOLMESH_CONFIG", None)
    return subprocess.run([TOOLMESH, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def demo_yaml(tmp_path: Path, home: Path) -> Path:
    out = tm("demo", "--print-config", home=home)
    assert out.returncode == 0, out.stderr
    path = tmp_path / "toolmesh.yaml"
    path.write_text(out.stdout)
    return path


def test_version(home: Path) -> None:
    out = tm("--version", home=home)
    assert out.returncode == 0 and out.stdout.strip() == f"toolmesh {__version__}"


def test_print_config_is_a_valid_config(demo_yaml: Path) -> None:
    cfg = parse_config(yaml.safe_load(demo_yaml.read_text()), str(demo_yaml))
    assert set(cfg.servers) == {"catalog", "inventory", "pricing", "users", "logistics"}


def test_servers_list_json(demo_yaml: Path, home: Path) -> None:
    out = tm("servers", "list", "--config", str(demo_yaml), "--json", home=home)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["name"] for r in rows] == ["catalog", "inventory", "pricing", "users", "logistics"]
    assert all(r["transport"] == "stdio" and r["status"] == "active" for r in rows)


@pytest.mark.parametrize("fmt", ["openai", "anthropic", "mcp"])
def test_tools_list_formats(demo_yaml: Path, home: Path, fmt: str) -> None:
    out = tm("tools", "list", "--config", str(demo_yaml), "--server", "catalog", "--format", fmt, "--json", home=home)
    assert out.returncode == 0, out.stderr
    tools = json.loads(out.stdout)
    if fmt == "openai":
        names = {t["function"]["name"] for t in tools}
        assert all(t["type"] == "function" and t["function"]["parameters"]["type"] == "object" for t in tools)
    elif fmt == "anthropic":
        names = {t["name"] for t in tools}
        assert all("input_schema" in t for t in tools)
    else:
        names = {t["name"] for t in tools}
        assert all("inputSchema" in t for t in tools)
    assert names == {"catalog__get_product_info", "catalog__search_products"}


def test_call_ok(demo_yaml: Path, home: Path) -> None:
    out = tm("call", "--config", str(demo_yaml), "catalog", "get_product_info", '{"sku": "SKU-1001"}', "--json",
             home=home)
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["ok"] is True and body["error"] is None
    assert body["structured"]["sku"] == "SKU-1001" and body["latency_ms"] > 0
    assert body["content"][0]["type"] == "text"


def test_call_tool_error_exit_1(demo_yaml: Path, home: Path) -> None:
    out = tm("call", "--config", str(demo_yaml), "catalog", "get_product_info", '{"sku": "SKU-9999"}', "--json",
             home=home)
    assert out.returncode == 1
    body = json.loads(out.stdout)
    assert body["ok"] is False and "SKU-9999" in body["error"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["catalog", "get_product_info", "{not json"], "not valid JSON"),
        (["catalog", "get_product_info", "[1]"], "JSON object"),
        (["nosuch", "tool", "{}"], "no server 'nosuch'"),
        (["catalog", "nosuch", "{}"], "no tool 'nosuch'"),
        (["catalog", "get_product_info", '{"sku": 5}'], "input schema"),
    ],
)
def test_call_usage_errors_exit_2(demo_yaml: Path, home: Path, args: list[str], needle: str) -> None:
    out = tm("call", "--config", str(demo_yaml), *args, "--json", home=home)
    assert out.returncode == 2, out.stdout + out.stderr
    body = json.loads(out.stdout)
    assert body["ok"] is False and needle in body["error"]


def test_call_timeout(tmp_path: Path, home: Path) -> None:
    cfg = tmp_path / "c.yaml"
    fixture = Path(__file__).parent / "servers" / "hub_fixture_server.py"
    cfg.write_text(yaml.safe_dump({"servers": {"fx": {"command": sys.executable, "args": [str(fixture), "stdio"]}}}))
    out = tm("call", "-c", str(cfg), "fx", "sleep", '{"seconds": 10}', "--timeout", "0.5", "--json", home=home)
    assert out.returncode == 1
    body = json.loads(out.stdout)
    assert body["error_type"] == "ToolTimeoutError"


def test_bad_config_names_the_key(tmp_path: Path, home: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("servers:\n  catalog:\n    command: python\n    timeout: -1\n")
    out = tm("servers", "list", "--config", str(cfg), "--json", home=home)
    assert out.returncode == 2
    assert "servers.catalog.timeout" in json.loads(out.stdout)["error"]
    missing = tm("servers", "list", "--config", str(tmp_path / "nope.yaml"), home=home)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_mcpservers_json_config(tmp_path: Path, home: Path) -> None:
    cfg = tmp_path / "claude_desktop_config.json"
    cfg.write_text(json.dumps({"mcpServers": {"users": {"command": sys.executable,
                                                         "args": ["-m", "toolmesh.servers.demo", "users"]}}}))
    out = tm("call", "-c", str(cfg), "users", "get_profile", '{"user_id": "U123456"}', "--json", home=home)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["structured"]["level"] == "gold"


def test_state_never_in_working_directory(demo_yaml: Path, home: Path, tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {**os.environ, "TOOLMESH_HOME": str(home)}
    subprocess.run([TOOLMESH, "call", "-c", str(demo_yaml), "catalog", "get_product_info", '{"sku":"SKU-1001"}'],
                   cwd=cwd, env=env, capture_output=True, timeout=60, check=True)
    assert list(cwd.iterdir()) == []


def test_demo_runs_the_scenario(home: Path) -> None:
    out = tm("demo", "--hub-only", "--json", home=home, timeout=120)
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["ok"] and len(body["tools"]) >= 8
    calls = {c["call_id"]: c for c in body["rounds"][-1]["calls"]}
    assert calls["product"]["structured"]["sku"] == "SKU-1001"
    assert calls["stock"]["structured"]["city_zh"] == "广州"
    assert calls["price"]["structured"]["final_price"] < calls["price"]["structured"]["list_price"]


@pytest.mark.local_model
@pytest.mark.timeout(900)
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python not installed")
def test_demo_json_with_the_local_model(home: Path) -> None:
    """`toolmesh demo --json`: the documented keys, the model's own tool calls, run by the Hub."""
    real_home = Path(os.environ.get("TOOLMESH_HOME", str(Path.home() / ".toolmesh")))
    out = tm("demo", "--json", home=real_home, timeout=900)  # the assembled weights live there
    assert out.returncode == 0, out.stderr[-2000:]
    body = json.loads(out.stdout)
    assert {"question", "answer", "tool_calls", "usage", "cost_usd", "elapsed_ms", "model"} <= set(body)
    assert body["question"] == "我想买这款手机，库存够吗？广东用户有什么优惠？"
    assert body["answer"].strip() and body["model"].startswith("qwen2.5-coder")
    assert body["tool_calls"], "the model called no tool"
    names = {c["name"] for c in body["tool_calls"]}
    assert {"inventory__check_stock", "pricing__calculate_discount"} <= names, names
    # the reference answer's facts, from the bundled servers: 243 in stock in 广州, ¥5,314.10 for a gold member
    assert "243" in body["answer"] and re.search(r"5,?314\.10?\b", body["answer"]), body["answer"]
    for call in body["tool_calls"]:
        assert {"name", "arguments", "ok", "latency_ms"} <= set(call)
        assert call["ok"] and isinstance(call["arguments"], dict) and call["latency_ms"] >= 0
    assert body["usage"]["input_tokens"] > 0 and body["usage"]["output_tokens"] > 0
    assert body["cost_usd"] == 0.0 and body["elapsed_ms"] > 0


@pytest.mark.parametrize(("section", "needle"), [
    ("llm:\n  deployment: []\n", "llm.deployment: unknown key (did you mean 'deployments'?)"),
    ("agent:\n  max_turn: 3\n", "agent.max_turn: unknown key (did you mean 'max_turns'?)"),
    ("store:\n  pth: x.db\n", "store.pth: unknown key (did you mean 'path'?)"),
    ("reasoning:\n  max_step: 3\n", "reasoning.max_step: unknown key (did you mean 'max_steps'?)"),
])
def test_serve_refuses_a_typo_before_starting(tmp_path: Path, home: Path, section: str, needle: str) -> None:
    # Before: a typo under llm: was ignored (the gateway started on the default model), one under
    # reasoning: only failed the first reasoning request (a 500), one under agent: or store:
    # surfaced as a traceback from inside uvicorn's start-up.
    cfg = tmp_path / "typo.yaml"
    cfg.write_text("servers:\n  s:\n    url: http://127.0.0.1:9/mcp\n" + section)
    out = tm("serve", "--config", str(cfg), "--port", "9", home=home, timeout=30)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert needle in out.stderr and "Traceback" not in out.stderr
