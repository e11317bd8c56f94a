"""The gateway's OpenAI-compatible API (GW-1) with the official ``openai`` SDK, unchanged.

Real processes on 127.0.0.1: ``toolmesh serve`` (with stdio demo MCP servers), the scripted
LLM server (``python -m toolmesh.testing.scripted_llm``) as the only model deployment.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from conftest import free_port, wait_port
from gateway_support import Gateway, demo_server

MODEL = "deepseek-chat"  # priced in the model registry
MAX_BODY = 256 * 1024
USER_RPM = 12  # the agent runtime's per-user request limit in this config

RULES: dict[str, Any] = {
    "rules": [
        # the agent path: the model asks for the tenant's MCP tools
        {"when": {"last_role": "user", "has_tools": True, "user_regex": r"product (?P<sku>SKU-\d+)"},
         "respond": {"tool_calls": [
             {"name": "catalog__get_product_info", "arguments": {"sku": "{{sku}}"}},
             {"name": "inventory__check_stock", "arguments": {"sku": "{{sku}}", "city": "北京"}}],
             "usage": {"input_tokens": 800, "output_tokens": 40}}},
        {"when": {"last_role": "tool", "user_regex": "disconnect-me"},
         "respond": {"text": "too late", "latency_ms": 4000}},
        {"when": {"last_role": "tool", "user_regex": "fail-after-tools"},
         "respond": {"status": 500, "error": "scripted crash after the tools"}},
        {"when": {"last_role": "tool", "user_regex": "weather in"},
         "respond": {"text": "Forecast: {{tool_results}}"}},
        {"when": {"last_role": "tool"},
         "respond": {"text": "Answer from tools: {{tool_results}}", "usage": {"input_tokens": 2000,
                                                                             "output_tokens": 90}}},
        # the pass-through path: the caller's own tools
        {"when": {"last_role": "user", "user_regex": r"weather in (?P<city>\w+)"},
         "respond": {"tool_calls": [{"name": "get_weather", "arguments": {"city": "{{city}}"}}]}},
        {"when": {"user_regex": "upstream-500"}, "respond": {"status": 500, "error": "scripted upstream crash"}},
        {"when": {"user_regex": "expensive"},
         "respond": {"text": "that was costly", "usage": {"input_tokens": 10, "output_tokens": 25000}}},
    ],
    "default": {"text": "plain reply to <{{user_text}}> n={{n_user}}", "chunk_chars": 5},
}


def _config(llm_url: str) -> dict[str, Any]:
    return {
        "servers": {"catalog": demo_server("catalog"), "inventory": demo_server("inventory")},
        "tenants": {"acme": {"servers": {"pricing": demo_server("pricing")}}},
        "llm": {"deployments": [{"name": "scripted", "provider": "openai", "base_url": llm_url,
                                 "api_key": "upstream-key", "model": MODEL}]},
        "agent": {"user_limits": {"requests_per_minute": USER_RPM, "max_concurrent_runs": 8},
                  "spend": {"per_user_daily_usd": 0.01}},
        "gateway": {"max_body": MAX_BODY,
                    # 2 a minute: one request back every 30 s, far longer than the test that uses it
                    "rate_limits": {"tenants": {"limited": {"requests_per_minute": 2, "burst": 2}}}},
    }


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("llm")
    rules = tmp / "rules.json"
    rules.write_text(json.dumps(RULES))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "toolmesh.testing.scripted_llm", "--port", str(port),
                             "--rules", str(rules)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.kill()
        proc.wait(10)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, llm: str) -> Iterator[Gateway]:
    g = Gateway(tmp_path_factory.mktemp("gw"), _config(llm)).start()
    try:
        yield g
    finally:
        g.stop()


def client(gw: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=30.0)


def aclient(gw: Gateway, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=30.0)


def db_rows(gw: Gateway, sql: str, params: tuple[Any, ...] = (), *, want: int = 1,
            timeout: float = 10.0) -> list[tuple[Any, ...]]:
    """Rows from the gateway's store (writes are batched: poll until ``want`` rows are there)."""
    deadline = time.monotonic() + timeout
    rows: list[tuple[Any, ...]] = []
    while time.monotonic() < deadline:
        with sqlite3.connect(gw.tmp / "toolmesh.db") as con:
            rows = con.execute(sql, params).fetchall()
        if len(rows) >= want:
            return rows
        time.sleep(0.1)
    return rows


def scripted_requests(llm: str) -> list[dict[str, Any]]:
    return list(httpx.get(llm.removesuffix("/v1") + "/_scripted/requests").json())


# -- the agent path ---------------------------------------------------------------------------------


def test_agent_answer_uses_the_tenants_tools_and_is_audited(gw: Gateway) -> None:
    c = client(gw, gw.key("default", "chat"))
    r = c.chat.completions.create(model=MODEL, user="alice",
                                  messages=[{"role": "user", "content": "Tell me about product SKU-1001"}])
    assert r.object == "chat.completion"
    assert r.choices[0].finish_reason == "stop"
    answer = r.choices[0].message.content or ""
    assert answer.startswith("Answer from tools:")
    assert "Lumina X9 Pro" in answer  # from catalog__get_product_info's result
    assert r.usage is not None and r.usage.prompt_tokens == 2800 and r.usage.completion_tokens == 130
    tm = (r.model_extra or {})["toolmesh"]
    calls = {c["name"]: c for c in tm["tool_calls"]}
    assert set(calls) == {"catalog__get_product_info", "inventory__check_stock"}
    assert calls["catalog__get_product_info"]["server"] == "catalog"
    assert calls["catalog__get_product_info"]["arguments"] == {"sku": "SKU-1001"}
    assert calls["inventory__check_stock"]["arguments"] == {"sku": "SKU-1001", "city": "北京"}
    assert all(c["status"] == "ok" and c["latency_ms"] >= 0 for c in calls.values())
    assert tm["turns"] == 2 and tm["user"] == "alice" and tm["status"] == "completed"
    assert tm["cost_usd"] == pytest.approx((2800 * 0.10 + 130 * 0.42) / 1e6)
    rows = db_rows(gw, "SELECT tenant, user, server, tool, status, arguments_hash, request_id FROM audit "
                       "WHERE user = 'alice' ORDER BY tool", want=2)
    assert [r[:5] for r in rows] == [("default", "alice", "inventory", "check_stock", "ok"),
                                     ("default", "alice", "catalog", "get_product_info", "ok")]
    assert all(len(r[5]) == 64 for r in rows) and {r[6] for r in rows} == {tm["run_id"]}
    usage = db_rows(gw, "SELECT tenant, model, input_tokens, output_tokens FROM usage WHERE user = 'alice'", want=2)
    assert sorted(u[2] for u in usage) == [800, 2000]


def test_agent_runs_with_the_callers_tenant(gw: Gateway, llm: str) -> None:
    c = client(gw, gw.key("acme", "chat"))
    r = c.chat.completions.create(model=MODEL, user="acme-user",
                                  messages=[{"role": "user", "content": "hello from acme"}])
    assert r.choices[0].message.content == "plain reply to <hello from acme> n=1"
    sent = [q for q in scripted_requests(llm)
            if q["body"] and q["body"]["messages"][-1].get("content") == "hello from acme"]
    assert len(sent) == 1
    names = sorted(t["function"]["name"] for t in sent[0]["body"]["tools"])
    assert names and all(n.startswith("pricing__") for n in names)  # acme's servers only


def test_stateless_history_and_sessions(gw: Gateway) -> None:
    c = client(gw, gw.key("default", "chat"))
    # stateless: the request's own earlier messages are the context
    r = c.chat.completions.create(model=MODEL, user="bob", messages=[
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"}, {"role": "user", "content": [{"type": "text", "text": "second"}]}])
    assert r.choices[0].message.content == "plain reply to <second> n=2"
    # a session: the gateway keeps the history, the request carries only the new message
    for i, header in enumerate(({"X-Toolmesh-Session": "s-1"}, {"X-Toolmesh-Session": "s-1"})):
        r = c.chat.completions.create(model=MODEL, user="bob", extra_headers=header,
                                      messages=[{"role": "user", "content": f"turn {i}"}])
        assert r.choices[0].message.content == f"plain reply to <turn {i}> n={i + 1}"
        assert (r.model_extra or {})["toolmesh"]["session"] == "s-1"
    r = c.chat.completions.create(model=MODEL, user="bob", metadata={"session_id": "s-1"},
                                  messages=[{"role": "user", "content": "turn 2"}])
    assert r.choices[0].message.content == "plain reply to <turn 2> n=3"
    # sessions are per user: carol's s-1 is another conversation
    r = c.chat.completions.create(model=MODEL, user="carol", extra_headers={"X-Toolmesh-Session": "s-1"},
                                  messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "plain reply to <hi> n=1"


def test_agent_streaming_with_usage(gw: Gateway) -> None:
    async def go() -> None:
        c = aclient(gw, gw.key("default", "chat"))
        stream = await c.chat.completions.create(
            model=MODEL, user="dave", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "Tell me about product SKU-1002 please"}])
        chunks = [ch async for ch in stream]
        await c.close()
        assert all(ch.object == "chat.completion.chunk" for ch in chunks)
        assert len({ch.id for ch in chunks}) == 1
        assert chunks[0].choices[0].delta.role == "assistant"
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert text.startswith("Answer from tools:") and "SKU-1002" in text
        finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
        assert finish == ["stop"]
        last = chunks[-1]
        assert last.choices == [] and last.usage is not None
        assert last.usage.total_tokens == 2800 + 130
        tm = (last.model_extra or {})["toolmesh"]
        assert sorted(c["name"] for c in tm["tool_calls"]) == ["catalog__get_product_info", "inventory__check_stock"]

    asyncio.run(go())
    rows = db_rows(gw, "SELECT tool FROM audit WHERE user = 'dave'", want=2)
    assert sorted(r[0] for r in rows) == ["check_stock", "get_product_info"]


def test_agent_streaming_without_usage_chunk(gw: Gateway) -> None:
    c = client(gw, gw.key("default", "chat"))
    chunks = list(c.chat.completions.create(model=MODEL, user="erin", stream=True,
                                            messages=[{"role": "user", "content": "stream me"}]))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == "plain reply to <stream me> n=1"
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].usage is None
    assert (chunks[-1].model_extra or {})["toolmesh"]["turns"] == 1
    raw = httpx.post(gw.url + "/v1/chat/completions", headers={"Authorization": "Bearer " + gw.key("default", "chat")},
                     json={"model": MODEL, "stream": True, "user": "erin",
                           "messages": [{"role": "user", "content": "raw"}]})
    assert raw.headers["content-type"].startswith("text/event-stream")
    frames = [f for f in raw.text.split("\n\n") if f]
    assert frames[-1] == "data: [DONE]" and all(f.startswith("data: ") for f in frames)


# -- pass-through (the request carries tools) -------------------------------------------------------

WEATHER = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                              "parameters": {"type": "object",
                                                             "properties": {"city": {"type": "string"}}}}}]


def test_passthrough_returns_tool_calls_then_answers(gw: Gateway, llm: str) -> None:
    c = client(gw, gw.key("default", "chat"))
    msgs: list[Any] = [{"role": "user", "content": "what is the weather in Paris"}]
    r = c.chat.completions.create(model=MODEL, user="frank", messages=msgs, tools=WEATHER)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [(tc.function.name, json.loads(tc.function.arguments)) for tc in calls] == [("get_weather",
                                                                                        {"city": "Paris"})]
    # the upstream saw the caller's tools, not the tenant's MCP tools
    sent = [q["body"] for q in scripted_requests(llm)
            if q["body"] and q["body"]["messages"][-1].get("content") == "what is the weather in Paris"]
    assert [t["function"]["name"] for t in sent[-1]["tools"]] == ["get_weather"]
    msgs += [choice.message.model_dump(exclude_none=True),
             {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny, 24C"}]
    r2 = c.chat.completions.create(model=MODEL, user="frank", messages=msgs, tools=WEATHER)
    assert r2.choices[0].finish_reason == "stop"
    assert r2.choices[0].message.content == "Forecast: sunny, 24C"
    assert (r2.model_extra or {})["toolmesh"]["mode"] == "passthrough"
    rows = db_rows(gw, "SELECT model, input_tokens + output_tokens FROM usage WHERE user = 'frank' ORDER BY rowid",
                   want=2)
    # the ledger holds what the upstream reported for each call, as the caller saw it
    assert r.usage is not None and r2.usage is not None and r.usage.total_tokens > 0
    assert [n for _, n in rows] == [r.usage.total_tokens, r2.usage.total_tokens]
    assert db_rows(gw, "SELECT 1 FROM audit WHERE user = 'frank'", want=0, timeout=0.5) == []


def test_passthrough_streaming_tool_call_deltas(gw: Gateway) -> None:
    c = client(gw, gw.key("default", "chat"))
    chunks = list(c.chat.completions.create(
        model=MODEL, user="gina", stream=True, stream_options={"include_usage": True}, tools=WEATHER,
        messages=[{"role": "user", "content": "weather in Oslo?"}]))
    deltas = [tc for ch in chunks if ch.choices for tc in ch.choices[0].delta.tool_calls or []]
    assert deltas and deltas[0].id and deltas[0].type == "function" and deltas[0].function
    assert deltas[0].function.name == "get_weather"
    args = "".join(d.function.arguments or "" for d in deltas if d.function)
    assert json.loads(args) == {"city": "Oslo"}
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason] == [
        "tool_calls"]
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    # the SDK's own accumulator agrees
    with c.chat.completions.stream(model=MODEL, user="gina", tools=WEATHER,
                                   messages=[{"role": "user", "content": "weather in Rome?"}]) as s:
        final = s.get_final_completion()
    tc = (final.choices[0].message.tool_calls or [])[0]
    assert tc.function.name == "get_weather" and json.loads(tc.function.arguments) == {"city": "Rome"}


def test_empty_tools_list_is_plain_chat(gw: Gateway, llm: str) -> None:
    key = gw.key("default", "chat")
    r = httpx.post(gw.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                   json={"model": MODEL, "tools": [], "user": "hank",
                         "messages": [{"role": "user", "content": "no tools at all"}]})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == \
        "plain reply to <no tools at all> n=1"
    sent = [q["body"] for q in scripted_requests(llm)
            if q["body"] and q["body"]["messages"][-1].get("content") == "no tools at all"]
    assert len(sent) == 1 and "tools" not in sent[0]


# -- models -----------------------------------------------------------------------------------------


def test_models_list_and_unknown_model(gw: Gateway) -> None:
    c = client(gw, gw.key("default", "chat"))
    ids = [m.id for m in c.models.list()]
    assert MODEL in ids and "auto" in ids and "scripted" in ids
    assert c.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("gpt-nonexistent")
    with pytest.raises(openai.NotFoundError) as e:
        c.chat.completions.create(model="gpt-nonexistent", messages=[{"role": "user", "content": "hi"}])
    assert e.value.code == "model_not_found"
    r = c.chat.completions.create(model="auto", user="ivan", messages=[{"role": "user", "content": "routed"}])
    assert r.choices[0].message.content == "plain reply to <routed> n=1"


# -- errors -----------------------------------------------------------------------------------------


def test_auth_and_scope_errors(gw: Gateway) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(gw, "tm_not-a-real-key").chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.PermissionDeniedError):
        client(gw, gw.key("default", "mcp")).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.PermissionDeniedError):
        client(gw, gw.key("default", "mcp,admin")).models.list()


def test_bad_requests(gw: Gateway) -> None:
    key = gw.key("default", "chat")
    c = client(gw, key)
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model=MODEL, messages=[])
    assert e.value.param == "messages"
    url, auth = gw.url + "/v1/chat/completions", {"Authorization": f"Bearer {key}"}
    cases: list[tuple[bytes | dict[str, Any], str | None]] = [
        (b"{not json", None),
        (b"[1, 2]", None),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": MODEL, "messages": "hello"}, "messages"),
        ({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": MODEL, "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "temperature": 7}, "temperature"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
         "tools[0]"),
        ({"model": MODEL, "messages": [{"role": "assistant", "content": "x"}]}, "messages"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "n": 3}, "n"),
    ]
    for body, param in cases:
        r = httpx.post(url, headers=auth, content=body) if isinstance(body, bytes) else httpx.post(
            url, headers=auth, json=body)
        assert r.status_code == 400, (body, r.text)
        err = r.json()["error"]
        assert err["type"] == "invalid_request_error" and err["message"] and err["param"] == param, (body, err)
    assert httpx.get(url, headers=auth).status_code == 405


def test_oversized_body_is_413(gw: Gateway) -> None:
    c = client(gw, gw.key("default", "chat"))
    with pytest.raises(openai.APIStatusError) as e:
        c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x" * (MAX_BODY + 10)}])
    assert e.value.status_code == 413
    # chunked upload without a content-length is cut off while reading
    key = gw.key("default", "chat")
    r = httpx.post(gw.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                   content=iter([b'{"model": "x", "messages": [{"role": "user", "content": "'] +
                                [b"y" * 65536] * 5 + [b'"}]}']))
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_tenant_rate_limit_is_429_with_retry_after(gw: Gateway) -> None:
    c = client(gw, gw.key("limited", "chat"))
    for i in range(2):  # the burst of 2 is admitted...
        r = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"quick {i}"}])
        assert r.choices[0].message.content == f"plain reply to <quick {i}> n=1"
    for _ in range(2):  # ...and nothing more until the bucket refills
        with pytest.raises(openai.RateLimitError) as e:
            c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "quick"}])
        assert e.value.status_code == 429 and e.value.type == "rate_limit_error"
        assert 1 <= int(e.value.response.headers["retry-after"]) <= 30  # the next token, 30 s at most


def test_user_rate_limit_from_the_agent_runtime(gw: Gateway) -> None:
    c = client(gw, gw.key("default", "chat"))
    for i in range(USER_RPM):
        c.chat.completions.create(model=MODEL, user="rpm-user", messages=[{"role": "user", "content": f"n{i}"}])
    with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(model=MODEL, user="rpm-user", messages=[{"role": "user", "content": "over"}])
    assert 1 <= int(e.value.response.headers["retry-after"]) <= 60  # within the one-minute window
    assert e.value.code == "user_rate_limit"
    # the pass-through path counts against the same limit
    with pytest.raises(openai.RateLimitError):
        c.chat.completions.create(model=MODEL, user="rpm-user", tools=WEATHER,
                                  messages=[{"role": "user", "content": "weather in Oslo"}])
    # another user of the same key is unaffected
    c.chat.completions.create(model=MODEL, user="rpm-user-2", messages=[{"role": "user", "content": "fine"}])


def test_daily_spend_budget_is_429(gw: Gateway) -> None:
    c = client(gw, gw.key("default", "chat"))
    r = c.chat.completions.create(model=MODEL, user="spender", messages=[{"role": "user", "content": "expensive"}])
    assert r.choices[0].message.content == "that was costly"  # 25k output tokens: $0.0105 > $0.01 a day
    for stream in (False, True):
        with pytest.raises(openai.RateLimitError) as e:
            c.chat.completions.create(model=MODEL, user="spender", stream=stream,
                                      messages=[{"role": "user", "content": "more"}])
        assert e.value.code == "budget_exceeded" and "daily spend" in e.value.message
        assert 1 <= int(e.value.response.headers["retry-after"]) <= 86400
    with pytest.raises(openai.RateLimitError):
        c.chat.completions.create(model=MODEL, user="spender", tools=WEATHER,
                                  messages=[{"role": "user", "content": "weather in Oslo"}])


def test_upstream_failure_is_502_and_the_worker_survives(gw: Gateway) -> None:
    c = client(gw, gw.key("default", "chat"))
    with pytest.raises(openai.APIStatusError) as e:
        c.chat.completions.create(model=MODEL, user="upset", messages=[{"role": "user", "content": "upstream-500"}])
    assert e.value.status_code == 502 and e.value.code == "upstream_error"
    r = c.chat.completions.create(model=MODEL, user="upset", messages=[{"role": "user", "content": "again"}])
    assert r.choices[0].message.content == "plain reply to <again> n=1"


def test_failure_mid_stream_is_an_error_frame(gw: Gateway) -> None:
    c = client(gw, gw.key("default", "chat"))
    stream = c.chat.completions.create(model=MODEL, user="midfail", stream=True,
                                       messages=[{"role": "user", "content": "product SKU-1001 fail-after-tools"}])
    first = next(iter(stream))  # the response started when the tools did: the status is already 200
    assert first.choices[0].delta.role == "assistant"
    with pytest.raises(openai.APIError) as e:
        list(stream)
    assert "scripted crash after the tools" in e.value.message
    assert len(db_rows(gw, "SELECT tool FROM audit WHERE user = 'midfail'", want=2)) == 2
    r = c.chat.completions.create(model=MODEL, user="midfail", messages=[{"role": "user", "content": "fine"}])
    assert r.choices[0].message.content == "plain reply to <fine> n=1"


def test_client_disconnect_cancels_the_run(gw: Gateway, llm: str) -> None:
    key = gw.key("default", "chat")

    async def go() -> None:
        async with httpx.AsyncClient(timeout=30) as h:
            async with h.stream("POST", gw.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                json={"model": MODEL, "user": "leaver", "stream": True,
                                      "messages": [{"role": "user", "content": "product SKU-1003 disconnect-me"}]}
                                ) as r:
                assert r.status_code == 200
                finished = 0
                async for line in r.aiter_lines():  # progress comes as SSE comments
                    finished += line.startswith(": toolmesh tool_call_finished ")
                    if finished == 2:
                        break  # both tools ran; the answer call takes 4 s
        # connection closed here, mid-stream

    asyncio.run(go())
    # the tools that ran are audited
    assert len(db_rows(gw, "SELECT tool FROM audit WHERE user = 'leaver'", want=2)) == 2
    # The gateway logs this line once the run's task has been cancelled and has ended. A run that was not
    # cancelled never logs it (it would finish after 4 s instead), so waiting for it is waiting for the end.
    deadline = time.monotonic() + 30
    while "client disconnected: chat completion cancelled" not in gw.log.read_text():
        assert time.monotonic() < deadline, "the run was not cancelled when the client went away"
        time.sleep(0.05)
    # Ended during the slow second model call: that call was sent, and its usage is never recorded.
    sent = [q for q in scripted_requests(llm) if "disconnect-me" in json.dumps(q["body"])]
    assert [q["body"]["messages"][-1]["role"] for q in sent] == ["user", "tool"]
    rows = db_rows(gw, "SELECT input_tokens FROM usage WHERE user = 'leaver'")
    assert [r[0] for r in rows] == [800]


# -- upstream unreachable ---------------------------------------------------------------------------


def test_unreachable_model_is_503(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    g = Gateway(tmp_path, {"llm": {"deployments": [{"name": "dead", "provider": "openai", "base_url": dead,
                                                    "model": MODEL, "timeout": 5}]}}).start()
    try:
        c = client(g, g.key("default", "chat"))
        for stream, tools in ((False, None), (True, None), (False, WEATHER), (True, WEATHER)):
            kw: dict[str, Any] = {"tools": tools} if tools else {}
            with pytest.raises(openai.InternalServerError) as e:
                c.chat.completions.create(model=MODEL, stream=stream, messages=[{"role": "user", "content": "hi"}],
                                          **kw)
            assert e.value.status_code == 503, (stream, tools)
            assert e.value.response.headers.get("retry-after")
        assert httpx.get(g.url + "/healthz").status_code == 200
    finally:
        g.stop()
