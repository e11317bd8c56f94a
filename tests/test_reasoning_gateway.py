"""The reasoning engine behind ``/v1/chat/completions`` (``"toolmesh": {"reasoning": {...}}``), with the
official ``openai`` SDK against real processes: ``toolmesh serve`` and the scripted LLM server."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from conftest import free_port, wait_port
from gateway_support import Gateway
from reasoning_support import MODEL, chain_rules

PROMPT = "Sum the squares of 1..5, then double it."
STEPS = ["1*1 + 2*2 = 5", "5 + 3*3 = 14", "14 + 4*4 = 30", "30 + 5*5 = 55", "55 * 2 = 110"]
RULES = [
    {"when": {"user_regex": re.escape("【STEP 3】 was checked and rejected")},
     "respond": {"text": "【STEP 3】 14 + 4*4 = 30"}},
    {"when": {"user_regex": re.escape("Continue with 【STEP 3】")}, "respond": {"text": "【STEP 3】 14 + 4*4 = 31"}},
    {"when": {"user_regex": "^upstream-500"}, "respond": {"status": 500, "error": "scripted crash"}},
    *chain_rules(STEPS, "110", prompt_regex=re.escape(PROMPT)),
]


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("llm")
    rules = tmp / "rules.json"
    rules.write_text(json.dumps({"rules": RULES, "default": {"text": "no step format here"}}))
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
    config = {
        "llm": {"deployments": [{"name": "scripted", "provider": "openai", "base_url": llm, "api_key": "k",
                                 "model": MODEL}]},
        "reasoning": {"verifiers": ["arithmetic"], "max_revisions": 2},
    }
    g = Gateway(tmp_path_factory.mktemp("gw"), config).start()
    try:
        yield g
    finally:
        g.stop()


def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key("default", "chat"), max_retries=0, timeout=60.0)


def db_rows(gw: Gateway, sql: str, params: tuple[Any, ...] = (), *, want: int = 1) -> list[tuple[Any, ...]]:
    deadline = time.monotonic() + 10
    rows: list[tuple[Any, ...]] = []
    while time.monotonic() < deadline:
        with sqlite3.connect(gw.tmp / "toolmesh.db") as con:
            rows = con.execute(sql, params).fetchall()
        if len(rows) >= want:
            break
        time.sleep(0.1)
    return rows


def test_reasoning_completion_with_steps_verdicts_and_answer(gw: Gateway) -> None:
    r = client(gw).chat.completions.create(
        model=MODEL, user="ann", messages=[{"role": "user", "content": PROMPT}],
        extra_body={"toolmesh": {"reasoning": {"threshold": 0.5}}})
    msg = r.choices[0].message
    assert msg.content == "110" and r.choices[0].finish_reason == "stop"
    extra = msg.model_extra or {}
    assert extra["reasoning_content"] == extra["reasoning"]
    assert extra["reasoning_content"].splitlines()[2] == "Step 3: 14 + 4*4 = 30"
    tm = (r.model_extra or {})["toolmesh"]
    assert tm["mode"] == "reasoning" and tm["status"] == "ok" and tm["answer"] == "110"
    assert [s["text"] for s in tm["steps"]] == STEPS
    assert tm["steps"][2]["revisions"] == 1 and tm["steps"][2]["verdict"]["ok"] is True
    assert r.id == "chatcmpl-" + tm["run_id"] and r.usage is not None and r.usage.total_tokens > 0
    # checkpoints and the ledger, as for any run
    rows = db_rows(gw, "SELECT kind FROM run_checkpoints WHERE run_id = ? ORDER BY seq", (tm["run_id"],), want=7)
    assert [k for (k,) in rows] == ["start"] + ["steps"] * 5 + ["end"]
    usage = db_rows(gw, "SELECT user FROM usage WHERE session = ?", (tm["run_id"],), want=6)
    assert len(usage) == 6 and {u for (u,) in usage} == {"ann"}  # 5 steps + 1 rewrite


def test_reasoning_stream_sends_steps_as_both_reasoning_fields_and_boundaries_in_toolmesh(gw: Gateway) -> None:
    async def go() -> list[Any]:
        c = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=gw.key("default", "chat"), max_retries=0,
                               timeout=60.0)
        stream = await c.chat.completions.create(
            model=MODEL, stream=True, stream_options={"include_usage": True},
            messages=[{"role": "system", "content": "Be exact."}, {"role": "user", "content": PROMPT}],
            extra_body={"toolmesh": {"reasoning": True}})
        chunks = [ch async for ch in stream]
        await c.close()
        return chunks

    chunks = asyncio.run(go())
    assert len({ch.id for ch in chunks}) == 1 and chunks[0].choices[0].delta.role == "assistant"
    deltas = [ch.choices[0].delta for ch in chunks if ch.choices]
    rc = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
    rs = "".join((d.model_extra or {}).get("reasoning") or "" for d in deltas)
    assert rc == rs and all(s in rc for s in STEPS) and "14 + 4*4 = 31" in rc  # the rejected draft streamed too
    assert "".join(d.content or "" for d in deltas) == "110"
    events = [(ch.model_extra or {}).get("toolmesh") for ch in chunks]
    events = [e for e in events if e]
    kinds = [e["type"] for e in events]
    assert kinds.count("step_started") == 5 and kinds.count("step_committed") == 5
    assert kinds.count("step_revised") == 1 and kinds.count("step_verified") == 6
    revised = next(e for e in events if e["type"] == "step_revised")
    assert revised["step"] == 3 and revised["verdict"]["ok"] is False and "14 + 4*4 = 31" in revised["verdict"]["reason"]
    committed = [e for e in events if e["type"] == "step_committed"]
    assert [e["step"] for e in committed] == [1, 2, 3, 4, 5] and all("latency_ms" in e for e in committed)
    final = events[-1]
    assert final["type"] == "final" and final["status"] == "ok" and len(final["steps"]) == 5
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finish == ["stop"]


def test_reasoning_request_errors(gw: Gateway) -> None:
    c = client(gw)
    msgs = [{"role": "user", "content": PROMPT}]
    with pytest.raises(openai.BadRequestError, match="cannot be set per request"):
        c.chat.completions.create(model=MODEL, messages=msgs, extra_body={"toolmesh": {"reasoning": {"tenant": "x"}}})
    with pytest.raises(openai.BadRequestError, match="not enabled on this gateway"):
        c.chat.completions.create(model=MODEL, messages=msgs,
                                  extra_body={"toolmesh": {"reasoning": {"verifiers": ["python"]}}})
    with pytest.raises(openai.BadRequestError, match="threshold"):
        c.chat.completions.create(model=MODEL, messages=msgs, extra_body={"toolmesh": {"reasoning": {"threshold": 7}}})
    with pytest.raises(openai.BadRequestError, match="tools"):
        c.chat.completions.create(model=MODEL, messages=msgs, extra_body={"toolmesh": {"reasoning": {}}},
                                  tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    with pytest.raises(openai.APIStatusError) as err:
        c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "upstream-500 now"}],
                                  extra_body={"toolmesh": {"reasoning": {}}})
    assert err.value.status_code == 502 and "reasoning failed" in str(err.value)
