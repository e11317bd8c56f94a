"""The agent loop end to end: scripted model over HTTP, demo MCP servers, SQLite store."""

from __future__ import annotations

import asyncio
import hashlib
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent_support import MODEL, SCENARIO_RULES, agent_stack
from conftest import SERVERS
from toolmesh.agent.events import Final, ToolCallFinished, ToolCallStarted, UsageUpdate, Warning
from toolmesh.errors import BudgetExceededError, RequestRejectedError
from toolmesh.store.sessions import UserLimits

QUESTION = "我想买这款手机，库存够吗？广东用户有什么优惠？"


def chat_requests(srv: Any) -> list[dict[str, Any]]:
    return [r.body for r in srv.requests if r.path == "/v1/chat/completions"]


async def test_reference_scenario_parallel_tools_and_exact_ids(tmp_path: Path) -> None:
    async with agent_stack(SCENARIO_RULES, tmp_path) as (agent, srv, _store):
        events = [ev async for ev in agent.stream(QUESTION, user="U123456", conversation="c1")]
        result = events[-1].result  # type: ignore[union-attr]
        assert isinstance(events[-1], Final) and result.status == "completed" and result.turns == 2
        assert [c.name for c in result.tool_calls] == [
            "catalog__get_product_info", "inventory__check_stock", "pricing__calculate_discount"]
        assert all(c.ok for c in result.tool_calls)
        # the answer carries the tools' facts (the scripted model quotes the tool results)
        assert "5294.1" in result.answer and "广州白云仓" in result.answer
        # tool messages carry the exact tool_call_id of the model's calls
        first, second = chat_requests(srv)
        assert second["messages"][-4]["role"] == "assistant"
        ids = [c["id"] for c in second["messages"][-4]["tool_calls"]]
        assert [m["tool_call_id"] for m in second["messages"][-3:]] == ids
        assert first["tools"] and {t["function"]["name"] for t in first["tools"]} >= {"catalog__get_product_info"}
        # usage and cost (deepseek-chat 0.10 / 0.42 per million)
        assert result.usage == {"input_tokens": 3400, "output_tokens": 180, "total_tokens": 3580}
        assert result.cost_usd == pytest.approx((3400 * 0.10 + 180 * 0.42) / 1e6)
        # events: starts before finishes, usage per model call
        kinds = [type(e).__name__ for e in events]
        assert kinds.index("ToolCallStarted") < kinds.index("ToolCallFinished")
        assert sum(isinstance(e, UsageUpdate) for e in events) == 2
        finished = [e for e in events if isinstance(e, ToolCallFinished)]
        assert all(e.latency_ms > 0 for e in finished)
        # the ledger has both calls
        report = await agent.ledger.report(("model",))
        assert report[0]["requests"] == 2 and report[0]["model"] == MODEL


async def test_tool_errors_and_timeouts_go_back_to_the_model(tmp_path: Path) -> None:
    script = {"rules": [
        {"when": {"last_role": "user"}, "respond": {"tool_calls": [
            {"name": "catalog__get_product_info", "arguments": {"sku": "SKU-9999"}},
            {"name": "fx__sleep", "arguments": {"seconds": 5}},
            {"name": "nosuch__tool", "arguments": {}},
            {"name": "catalog__get_product_info", "arguments": "{not json"}]}},
        {"when": {"last_role": "tool"}, "respond": {"text": "saw: {{tool_results}}"}}]}
    fx = {"fx": {"command": sys.executable, "args": [str(SERVERS / "hub_fixture_server.py"), "stdio"]}}
    async with agent_stack(script, tmp_path, servers=("catalog",), extra_servers=fx, tool_timeout=0.5) as (agent, srv, _):
        result = await agent.run("break things")
        assert result.status == "completed"
        by_name = [(c.name, c.ok) for c in result.tool_calls]
        assert by_name == [("catalog__get_product_info", False), ("fx__sleep", False), ("nosuch__tool", False),
                           ("catalog__get_product_info", False)]
        tool_msgs = [m for m in chat_requests(srv)[1]["messages"] if m["role"] == "tool"]
        assert len(tool_msgs) == 4
        assert "SKU-9999" in tool_msgs[0]["content"]
        assert "did not answer in time" in tool_msgs[1]["content"]
        assert "ToolNotFoundError" in tool_msgs[2]["content"]
        assert "not valid JSON" in tool_msgs[3]["content"]


async def test_max_turns_forces_a_final_answer_without_tools(tmp_path: Path) -> None:
    script = {"rules": [
        {"when": {"has_tools": True}, "respond": {"tool_calls": [
            {"name": "users__get_profile", "arguments": {"user_id": "U123456"}}]}},
        {"when": {"has_tools": False}, "respond": {"text": "final from {{n_tool}} results"}}]}
    async with agent_stack(script, tmp_path, max_turns=3, max_repeats=10) as (agent, srv, _):
        events = [ev async for ev in agent.stream("who am I?")]
        result = events[-1].result  # type: ignore[union-attr]
        assert result.status == "max_turns" and result.turns == 3
        assert result.answer.startswith("final from")
        assert any(isinstance(e, Warning) and e.kind == "max_turns" for e in events)
        last = chat_requests(srv)[-1]
        assert "tools" not in last or not last["tools"]


async def test_final_answer_prompt_restates_the_question(tmp_path: Path) -> None:
    script = {"rules": [
        {"when": {"has_tools": True}, "respond": {"tool_calls": [
            {"name": "users__get_profile", "arguments": {"user_id": "U123456"}}]}},
        {"when": {"has_tools": False}, "respond": {"text": "you are gold"}}]}
    prompt = "They asked: {question} — reply from the results {not a field}."
    async with agent_stack(script, tmp_path, max_turns=1, final_answer_prompt=prompt) as (agent, srv, _):
        result = await agent.run("who am I?")
        assert result.status == "max_turns" and result.answer == "you are gold"
        last = chat_requests(srv)[-1]["messages"][-1]
        assert last == {"role": "user", "content": "They asked: who am I? — reply from the results {not a field}."}


async def test_repeated_identical_calls_are_stopped(tmp_path: Path) -> None:
    script = {"rules": [
        {"when": {"has_tools": True}, "respond": {"tool_calls": [
            {"name": "users__get_profile", "arguments": {"user_id": "U123456"}}]}},
        {"when": {"has_tools": False}, "respond": {"text": "done"}}]}
    async with agent_stack(script, tmp_path, max_turns=10, max_repeats=2) as (agent, _srv, _):
        result = await agent.run("loop please")
        assert result.status == "repeated_calls"
        assert len(result.tool_calls) == 2 and result.answer == "done"


async def test_empty_final_answer_is_never_returned(tmp_path: Path) -> None:
    script = {"rules": [
        {"when": {"last_role": "user", "has_tools": True}, "respond": {"tool_calls": [
            {"name": "users__get_profile", "arguments": {"user_id": "U123456"}}]}},
        {"when": {}, "respond": {"text": ""}}]}
    async with agent_stack(script, tmp_path) as (agent, _srv, _):
        result = await agent.run("profile?")
        assert result.answer.strip() and "U123456" in result.answer


async def test_token_budget_stops_with_a_report(tmp_path: Path) -> None:
    # first call: ~700 tokens estimated, 960 used (74 % of 1300: warning); the second cannot fit
    async with agent_stack(SCENARIO_RULES, tmp_path, budget={"max_tokens": 1300},
                           max_output_tokens=200) as (agent, srv, _):
        events = [ev async for ev in agent.stream(QUESTION)]
        result = events[-1].result  # type: ignore[union-attr]
        assert result.status == "budget_exceeded"
        assert "budget" in result.answer
        run_report = result.budget_report["budgets"][0]
        assert run_report["tokens"]["limit"] == 1300 and run_report["tokens"]["used"] == 960
        assert any(isinstance(e, Warning) and e.kind == "budget" for e in events)  # 70 % warning came first
        assert len(chat_requests(srv)) == 1  # the second call was refused before it was sent


async def test_sessions_persist_and_isolate(tmp_path: Path) -> None:
    script = {"rules": [{"when": {}, "respond": {"text": "n={{n_user}} digest={{digest}}"}}]}
    async with agent_stack(script, tmp_path) as (agent, _srv, _):
        a1 = await agent.run("hello", user="alice", conversation="c")
        a2 = await agent.run("again", user="alice", conversation="c")
        b1 = await agent.run("hello", user="bob", conversation="c")
        assert a1.answer.startswith("n=1") and a2.answer.startswith("n=2") and b1.answer.startswith("n=1")
    # reopened store: history survives
    async with agent_stack(script, tmp_path) as (agent, _srv, _):
        a3 = await agent.run("third", user="alice", conversation="c")
        assert a3.answer.startswith("n=3")


async def test_100_concurrent_users_no_bleeding_and_exact_limits(tmp_path: Path) -> None:
    script = {"latency_ms": 20, "rules": [
        {"when": {"last_role": "user", "user_regex": r"I am (?P<uid>U\d+)"}, "respond": {"tool_calls": [
            {"name": "users__get_profile", "arguments": {"user_id": "{{uid}}"}}]}},
        {"when": {"last_role": "tool"}, "respond": {"text": "digest={{digest}} {{tool_results}}"}}]}
    async with agent_stack(script, tmp_path, servers=("users",)) as (agent, _srv, _):
        agent.user_limits = UserLimits(max_concurrent_runs=3, requests_per_minute=1000)
        users = [f"U{123456 + i}" for i in range(20)]
        jobs = [(users[i % 20], f"I am {users[i % 20]}, request {i}") for i in range(100)]

        async def one(uid: str, text: str) -> tuple[str, str, Any]:
            try:
                return uid, text, await agent.run(text, user=uid, conversation=None)
            except RequestRejectedError as exc:
                return uid, text, exc

        results = await asyncio.gather(*(one(u, q) for u, q in jobs))
        done = [(u, q, r) for u, q, r in results if not isinstance(r, Exception)]
        rejected = [r for _, _, r in results if isinstance(r, RequestRejectedError)]
        # each user fired 5 runs at once with a limit of 3 in flight: exactly 2 rejected per user
        assert len(rejected) == 40 and all(r.reason == "concurrency" for r in rejected)
        assert len(done) == 60
        for uid, text, r in done:
            expected = hashlib.sha256(text.encode()).hexdigest()[:12]
            assert f"digest={expected}" in r.answer  # only this user's own message was seen
            assert f'"user_id": "{uid}"' in r.answer or f'"user_id":"{uid}"' in r.answer
            assert [c.arguments for c in r.tool_calls] == [{"user_id": uid}]


async def test_concurrent_runs_of_one_user_do_not_overshoot_daily_spend(tmp_path: Path) -> None:
    script = {"latency_ms": 30, "rules": [{"when": {}, "respond": {
        "text": "ok", "usage": {"input_tokens": 10_000, "output_tokens": 0}}}]}
    # each call costs 10,000 * 0.10 / 1e6 = $0.001; the user may spend $0.005 a day
    async with agent_stack(script, tmp_path, spend={"per_user_daily_usd": 0.005}, max_output_tokens=1) as (agent, srv, _):
        results = await asyncio.gather(*(agent.run(f"q{i}", user="spender") for i in range(20)))
        completed = [r for r in results if r.status == "completed"]
        stopped = [r for r in results if r.status == "budget_exceeded"]
        assert len(completed) + len(stopped) == 20
        spent = sum(r.cost_usd or 0 for r in completed)
        worst = 0.001 + 0.42e-6  # a call may also write its one allowed output token
        assert 0.005 - worst < spent <= 0.005 + 1e-9  # within one call of the limit, never above
        assert len(completed) == 4  # a fifth could pass the limit by its output token
        assert len(chat_requests(srv)) == len(completed)


async def test_streaming_text_deltas_arrive(tmp_path: Path) -> None:
    script = {"responses": [{"text": "一二三四五六七八九十" * 5, "chunk_chars": 4}]}
    async with agent_stack(script, tmp_path) as (agent, _srv, _):
        deltas = [ev.text async for ev in agent.stream("count") if type(ev).__name__ == "TextDelta"]
        assert len(deltas) > 5 and "".join(deltas) == "一二三四五六七八九十" * 5


def test_budget_error_type_is_exported() -> None:
    import toolmesh
    from toolmesh.errors import ToolmeshError

    # One error root, and the whole tree importable from the package itself.
    assert toolmesh.BudgetExceededError is BudgetExceededError and "BudgetExceededError" in toolmesh.__all__
    assert issubclass(BudgetExceededError, ToolmeshError)
    err = BudgetExceededError("budget exceeded: cost", report={"cost_usd": 0.01})
    assert str(err) == "budget exceeded: cost" and err.report == {"cost_usd": 0.01}
    _ = (ToolCallStarted, orjson)


async def test_a_near_miss_tool_name_tells_the_model_the_right_one(tmp_path: Path) -> None:
    # The scripted model writes one underscore for two; the error it reads back names the tool, so
    # a real model can correct itself on the next turn (here it does, by the script).
    script = {"rules": [
        {"when": {"last_role": "user"}, "respond": {"tool_calls": [
            {"name": "catalog_get_product_info", "arguments": {"sku": "SKU-1001"}}]}},
        {"when": {"last_role": "tool"}, "respond": {"text": "saw: {{tool_results}}"}}]}
    async with agent_stack(script, tmp_path, servers=("catalog",)) as (agent, srv, _):
        result = await agent.run("what is SKU-1001?")
        assert [(c.name, c.ok) for c in result.tool_calls] == [("catalog_get_product_info", False)]
        tool_msgs = [m for m in chat_requests(srv)[1]["messages"] if m["role"] == "tool"]
        assert "did you mean 'catalog__get_product_info'?" in tool_msgs[0]["content"]
