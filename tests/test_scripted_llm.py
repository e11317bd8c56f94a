"""The scripted LLM server over real sockets: script semantics, rules, introspection, and the
out-of-process mode the benchmark uses."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import aiohttp
import pytest

from toolmesh.testing import ScriptedLLM

RULES = {
    "rules": [
        {"when": {"last_role": "user", "has_tools": True, "user_regex": r"weather in (?P<city>\w+)"},
         "respond": {"tool_calls": [{"name": "get_weather", "arguments": {"city": "{{city}}"}},
                                    {"name": "get_time", "arguments": {"tz": "{{city}}"}}]}},
        {"when": {"last_role": "tool"},
         "respond": {"text": "results: {{tool_results}}; users={{digest}} n={{n_user}}"}},
    ],
    "default": {"text": "default for {{user_text}}"},
}


async def post(session: aiohttp.ClientSession, url: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    async with session.post(url, json=body) as r:
        return r.status, await r.json(content_type=None)


async def test_queue_order_then_exhausted() -> None:
    async with ScriptedLLM([{"text": "one"}, {"text": "two"}]) as srv, aiohttp.ClientSession() as s:
        url = srv.base_url + "/chat/completions"
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        texts = [(await post(s, url, body))[1]["choices"][0]["message"]["content"] for _ in range(2)]  # type: ignore[index]
        assert texts == ["one", "two"]
        status, err = await post(s, url, body)
        assert status == 500 and "script exhausted" in err["error"]["message"]  # type: ignore[index]
        assert srv.counts["/v1/chat/completions"] == 3
        assert [r.body["messages"][0]["content"] for r in srv.requests] == ["hi"] * 3


async def test_rules_are_per_conversation_and_templated() -> None:
    async with ScriptedLLM(RULES) as srv, aiohttp.ClientSession() as s:
        url = srv.base_url + "/chat/completions"
        tools = [{"type": "function", "function": {"name": "get_weather"}}]

        async def conversation(city: str) -> str:
            msgs: list[dict[str, object]] = [{"role": "user", "content": f"weather in {city}?"}]
            _, r1 = await post(s, url, {"model": "m", "messages": msgs, "tools": tools})
            msg = r1["choices"][0]["message"]  # type: ignore[index]
            calls = msg["tool_calls"]
            assert [json.loads(c["function"]["arguments"]) for c in calls] == [{"city": city}, {"tz": city}]
            msgs.append(msg)
            msgs += [{"role": "tool", "tool_call_id": c["id"], "content": f"{city}-{i}"} for i, c in enumerate(calls)]
            _, r2 = await post(s, url, {"model": "m", "messages": msgs, "tools": tools})
            return str(r2["choices"][0]["message"]["content"])  # type: ignore[index]

        cities = ["Paris", "Rome", "Oslo", "Lima"] * 5
        answers = await asyncio.gather(*(conversation(c) for c in cities))
        for city, answer in zip(cities, answers, strict=True):
            assert answer.startswith(f"results: {city}-0 | {city}-1; users=")
            assert answer.endswith("n=1")
        digests = {a.split("users=")[1] for a in answers}
        assert len(digests) == 4  # one per distinct user text, identical across repeats
        # no tools offered → first rule does not match → default
        _, r = await post(s, url, {"model": "m", "messages": [{"role": "user", "content": "weather in X"}]})
        assert r["choices"][0]["message"]["content"] == "default for weather in X"  # type: ignore[index]


async def test_anthropic_tool_results_count_as_tool_turn() -> None:
    async with ScriptedLLM(RULES) as srv, aiohttp.ClientSession() as s:
        body = {"model": "c", "max_tokens": 10, "messages": [
            {"role": "user", "content": "weather in Paris"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}]}]}
        status, r = await post(s, srv.url + "/v1/messages", body)
        assert status == 200
        assert r["content"][0]["text"].startswith("results: sunny; users=")  # type: ignore[index]
        assert r["stop_reason"] == "end_turn"


async def test_models_errors_and_raw_bodies() -> None:
    script = {"models": ["a", "b"], "responses": [
        {"status": 429, "headers": {"retry-after": "7", "x-ratelimit-remaining-requests": "0"}},
        {"body": "<html>oops</html>", "content_type": "text/html", "status": 502},
    ]}
    async with ScriptedLLM(script) as srv, aiohttp.ClientSession() as s:
        async with s.get(srv.base_url + "/models") as r:
            assert [m["id"] for m in (await r.json())["data"]] == ["a", "b"]
        async with s.post(srv.base_url + "/chat/completions", json={"model": "a", "messages": []}) as r:
            assert r.status == 429 and r.headers["retry-after"] == "7"
            assert r.headers["x-ratelimit-remaining-requests"] == "0"
            assert (await r.json())["error"]["type"] == "requests"
        async with s.post(srv.base_url + "/chat/completions", json={"model": "a", "messages": []}) as r:
            assert r.status == 502 and await r.text() == "<html>oops</html>"


def test_script_typos_are_rejected() -> None:
    with pytest.raises(ValueError, match="tool_call"):
        ScriptedLLM([{"tool_call": []}])
    with pytest.raises(ValueError, match="last_rol"):
        ScriptedLLM({"rules": [{"when": {"last_rol": "user"}, "respond": {}}]})


async def test_out_of_process_server(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps(RULES))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "toolmesh.testing.scripted_llm", "--port", "0", "--rules", str(script),
        "--latency-ms", "5", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        base = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        assert base.startswith("http://127.0.0.1:") and base.endswith("/v1")
        async with aiohttp.ClientSession() as s:
            _, r = await post(s, base + "/chat/completions",
                              {"model": "m", "messages": [{"role": "user", "content": "hello"}]})
            assert r["choices"][0]["message"]["content"] == "default for hello"  # type: ignore[index]
            async with s.get(base.removesuffix("/v1") + "/_scripted/stats") as st:
                assert (await st.json())["by_path"] == {"/v1/chat/completions": 1}
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
