"""The `shop` task set (issue 8's question set as a task set of `toolmesh eval`): loading, fact
matching and tool scoring as pure logic, then `toolmesh eval --tasks shop` end to end as a subprocess:
a scripted OpenAI-compatible model server, the five demo MCP servers over stdio, the agent runtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripted_support import scripted_llm_process
from toolmesh.errors import TaskSetError
from toolmesh.reasoning.tasks import load_jsonl, load_tasks
from toolmesh.reasoning.tasks.shop import Fact, expected_facts, fact_found, score_answer, text_variants

TOOLMESH = str(Path(sys.executable).with_name("toolmesh"))


def test_the_set_loads_in_file_order_with_every_kind() -> None:
    tasks = load_tasks("shop")
    assert len(tasks) == 36 and len({t.id for t in tasks}) == 36
    assert {(t.source, t.scorer) for t in tasks} == {("shop", "facts")}
    assert Counter(t.meta["kind"] for t in tasks) == {"chit-chat": 8, "one tool": 15, "two tools": 9,
                                                       "three tools": 4}
    assert Counter(t.meta["lang"] for t in tasks).keys() == {"zh", "en"}
    first = load_tasks("shop", limit=5)
    assert [t.id for t in first] == [t.id for t in tasks[:5]] and first[0].id == "ref-zh"
    assert all(t.meta["kind"] == "two tools" for t in first)  # the reference variants come first
    spec = json.loads(first[0].answer)
    assert [c["tool"] for c in spec["calls"]] == ["inventory__check_stock", "pricing__calculate_discount"]


def test_a_users_task_file_cannot_use_the_tool_scorer(tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text('{"id": "a", "prompt": "p", "answer": "{}", "scorer": "facts"}\n')
    with pytest.raises(TaskSetError, match="unknown scorer 'facts'"):
        load_jsonl(f)


def test_facts_are_found_in_any_number_format_and_either_language() -> None:
    price = Fact(5314.1)
    assert fact_found("最终价格：¥5,314.10", price)
    assert fact_found("It costs 5314.1 yuan", price)
    assert not fact_found("list price 5999.00, discount 684.90", price)
    assert not fact_found("5314", price)  # to the cent: 5314 is not 5314.10
    assert fact_found("库存 243 件", Fact(243)) and not fact_found("库存 2430 件", Fact(243))
    product = Fact("Lumina X9 Pro 5G", text_variants("Lumina X9 Pro 5G", "流明 X9 Pro 5G"))
    assert fact_found("流明X9 Pro 5G 有货", product)  # spaces are not counted
    assert fact_found("the lumina x9 is in stock", product)  # its first two words, any case
    assert not fact_found("the phone is in stock", product)
    date = Fact("2026-12-08", text_variants("2026-12-08", None))
    assert all(fact_found(s, date) for s in ("预计12月8日送达", "arrives December 8", "ETA Dec 8", "12-08"))


def test_tools_are_right_when_every_expected_one_is_called_and_exact_when_nothing_else() -> None:
    ref, chat = load_tasks("shop")[0], next(t for t in load_tasks("shop") if t.meta["kind"] == "chit-chat")
    both = ["inventory__check_stock", "pricing__calculate_discount"]
    facts = [Fact(243), Fact(5314.1)]
    s = score_answer(ref, facts, both, "有货 243 台，¥5314.10")
    assert (s.right_tools, s.exact_tools, s.found, s.correct) == (True, True, (True, True), True)
    s = score_answer(ref, facts, [*both, "pricing__list_promotions"], "243 / 5314.10")
    assert (s.right_tools, s.exact_tools, s.correct) == (True, False, True)
    s = score_answer(ref, facts, [*both, both[0]], "243 / 5314.10")
    assert s.exact_tools is False  # a repeated call is not exact
    s = score_answer(ref, facts, both[:1], "243 / 5314.10")
    assert (s.right_tools, s.correct) == (False, False)
    assert s.detail(both[:1], facts) == "tools called: inventory__check_stock"
    s = score_answer(ref, facts, both, "243 in stock")
    assert s.detail(both, facts) == "not in the answer: 5314.1" and not s.correct
    assert score_answer(chat, [], [], "你好！").correct
    assert not score_answer(chat, [], ["users__get_profile"], "你好！").right_tools


async def test_expected_facts_come_from_the_calls_and_a_failed_call_is_a_task_error() -> None:
    ref = load_tasks("shop")[0]
    seen: list[tuple[str, dict[str, Any]]] = []

    async def call(tool: str, arguments: dict[str, Any]) -> Any:
        seen.append((tool, arguments))
        if tool == "inventory__check_stock":
            return {"total_quantity": 7}
        return {"final_price": 99.5, "product": "P", "product_zh": "品"}

    facts = await expected_facts(ref, call)
    assert [f.value for f in facts] == [7, 99.5, "P"] and "品" in facts[2].variants
    assert seen[0] == ("inventory__check_stock", {"sku": "SKU-1001", "city": "广州"})

    async def failing(tool: str, arguments: dict[str, Any]) -> Any:
        raise TaskSetError(f"the expected call {tool} failed")

    with pytest.raises(TaskSetError, match="expected call inventory__check_stock failed"):
        await expected_facts(ref, failing)


# -- end to end ------------------------------------------------------------------------------------

STOCK = {"name": "inventory__check_stock", "arguments": {"sku": "SKU-1001", "city": "广州"}}
PRICE = {"name": "pricing__calculate_discount", "arguments": {"sku": "SKU-1001", "user_level": "gold", "city": "广州"}}
USAGE = {"input_tokens": 50, "output_tokens": 10}
RULES = {"rules": [
    # the answer step (tools off): the results echoed, so every fact they hold is in the answer
    {"when": {"has_tools": False}, "respond": {"text": "{{tool_results}}", "usage": USAGE}},
    # ref-zh: both right calls; ref-en: the stock call only (the price is then missing too)
    {"when": {"user_regex": "库存够吗"}, "respond": {"tool_calls": [STOCK, PRICE], "usage": USAGE}},
    {"when": {"user_regex": "enough stock"}, "respond": {"tool_calls": [STOCK], "usage": USAGE}},
]}


@pytest.fixture
def llm_url(tmp_path: Path) -> Iterator[str]:
    with scripted_llm_process(RULES, tmp_path) as url:
        yield url


def run_eval(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "toolmesh.yaml"
    cfg.write_text(yaml.safe_dump({"llm": {"deployments": [
        {"name": "s", "provider": "openai", "base_url": url, "api_key": "k", "model": "scripted-model"}]}}))
    env = {**os.environ, "TOOLMESH_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    return subprocess.run([TOOLMESH, "eval", "-c", str(cfg), "--out", str(tmp_path / "runs"), *args],
                          capture_output=True, text=True, timeout=300, env=env, check=False)


def test_toolmesh_eval_shop_runs_the_agent_with_the_demo_tools_and_scores_tools_and_facts(
        tmp_path: Path, llm_url: str) -> None:
    out = run_eval(tmp_path, llm_url, "--tasks", "shop", "--limit", "2", "--format", "json", "--concurrency", "1")
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    s = rep["models"]["scripted-model"]["agent"]  # agent mode: the default for the shop set
    assert (s["n"], s["correct"], s["errors"]) == (2, 1, 0)
    assert s["tools"] == {"n": 2, "right_tools": 1, "exact_tools": 1, "right_facts": 1,
                          "by_kind": {"two tools": {"n": 2, "right_tools": 1, "exact_tools": 1, "right_facts": 1}}}
    rows = {r["task_id"]: r for r in map(json.loads, (tmp_path / "runs" / rep["run_id"] / "samples.jsonl")
                                         .read_text().splitlines())}
    zh, en = rows["ref-zh"], rows["ref-en"]
    assert [c["name"] for c in zh["tool_calls"]] == [STOCK["name"], PRICE["name"]]
    assert all(c["ok"] for c in zh["tool_calls"])  # real calls on the demo servers
    # the expected values were read off the demo servers, not typed in: the gold price in 广州
    assert zh["expected"].startswith("243, 5314.1") and zh["correct"] and zh["facts_found"] == [True, True, True]
    assert '"total_quantity":243' in zh["answer"].replace(" ", "")
    assert (en["right_tools"], en["facts_found"], en["correct"]) == (False, [True, False], False)
    assert en["detail"] == "tools called: inventory__check_stock; not in the answer: 5314.1"
    # the customer's system prompt, as `toolmesh demo` builds it from the profile on the users server
    with urllib.request.urlopen(llm_url.removesuffix("/v1") + "/_scripted/requests", timeout=10) as r:
        bodies = [req["body"] for req in json.loads(r.read())]
    system = bodies[0]["messages"][0]["content"]
    assert bodies[0]["messages"][0]["role"] == "system" and "U123456" in system and "gold" in system
    assert "SKU-1001" in system

    table = run_eval(tmp_path, llm_url, "--tasks", "shop", "--limit", "2", "--concurrency", "1")
    assert table.returncode == 0, table.stderr
    assert "scripted-model/agent: right tools 1/2, exact tools 1/2, right facts 1/2" in table.stdout


def test_the_shop_set_refuses_a_mode_without_tools(tmp_path: Path, llm_url: str) -> None:
    for mode in ("single", "reason", "both"):
        out = run_eval(tmp_path, llm_url, "--tasks", "shop", "--mode", mode)
        assert out.returncode == 2 and "run it with --mode agent" in out.stderr, out.stderr
    with urllib.request.urlopen(llm_url.removesuffix("/v1") + "/_scripted/stats", timeout=10) as r:
        assert json.loads(r.read())["requests"] == 0
