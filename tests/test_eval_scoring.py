"""`toolmesh eval` as a library: scorers, the sandboxed `tests` scorer, statistics, exact counts against a
scripted model over real sockets, and resume."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from toolmesh.agent.factory import build_llm
from toolmesh.llm.models import ModelRegistry
from toolmesh.reasoning.eval import (
    EvalConfig,
    Evaluation,
    build_report,
    extract_answer,
    extract_code,
    parse_number,
    percentile,
    read_log,
    score,
    score_text,
    wilson,
)
from toolmesh.reasoning.tasks import Task, TaskSetError, load_jsonl, load_tasks
from toolmesh.testing import ScriptedLLM

GOOD_CODE = "```python\ndef add(a, b):\n    return a + b\n```"
BAD_CODE = "```python\ndef add(a, b):\n    return a - b\n```"
ADD_TESTS = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"

# Samples with known outcomes: r* are answered right, w* wrong, e* fail with an HTTP error.
TASKS = [
    Task("r1", "Q-r1 capital of France?", "Paris"),
    Task("r2", "Q-r2 what is 6*7?", "42", scorer="numeric"),
    Task("r3", "Q-r3 name a prime", "seven", scorer="contains"),
    Task("r4", "Q-r4 give an order id", r"^ORD-\d{6}$", scorer="regex"),
    Task("r5", "Q-r5 write add", ADD_TESTS, scorer="tests", entry_point="add"),
    Task("w1", "Q-w1 capital of Spain?", "Madrid"),
    Task("w2", "Q-w2 what is 2/3 of 9?", "6", scorer="numeric"),
    Task("w3", "Q-w3 write add again", ADD_TESTS, scorer="tests", entry_point="add"),
    Task("e1", "Q-e1 this one fails", "x"),
    Task("e2", "Q-e2 this one fails too", "y", scorer="numeric"),
]
USAGE = {"input_tokens": 100, "output_tokens": 20}


def _rule(tag: str, respond: dict[str, Any]) -> dict[str, Any]:
    return {"when": {"user_regex": rf"Q-{tag}\b"}, "respond": respond}


SCRIPT = {"rules": [
    _rule("r1", {"text": "Thinking... ANSWER: **Paris**.", "usage": USAGE}),
    _rule("r2", {"text": "6*7 = 42\nANSWER: 42", "usage": USAGE}),
    _rule("r3", {"text": "ANSWER: seven is prime", "usage": USAGE}),
    _rule("r4", {"text": "ANSWER: ORD-100001", "usage": USAGE}),
    _rule("r5", {"text": "Here:\n" + GOOD_CODE, "usage": USAGE}),
    _rule("w1", {"text": "ANSWER: Barcelona", "usage": USAGE}),
    _rule("w2", {"text": "ANSWER: 7", "usage": USAGE}),
    _rule("w3", {"text": BAD_CODE, "usage": USAGE}),
    _rule("e1", {"status": 400, "error": "bad request for this sample"}),
    _rule("e2", {"status": 400, "error": "bad request again"}),
]}


def router(url: str, model: str = "deepseek-chat") -> Any:
    llm, _ = build_llm({"deployments": [{"name": "scripted", "provider": "openai", "base_url": url, "api_key": "k",
                                         "model": model}]}, ModelRegistry.load())
    return llm


# -- scorers ------------------------------------------------------------------------------------


def test_extract_answer_prefers_markers_then_last_line() -> None:
    assert extract_answer("steps\nANSWER: 12\nbye") == "12"
    assert extract_answer("a\n【ANSWER】 Paris") == "Paris"
    assert extract_answer("Final answer: 3/4") == "3/4"
    assert extract_answer("so \\boxed{17} it is") == "17"
    assert extract_answer("first\n\nlast line\n") == "last line"
    assert extract_answer("") == ""


def test_parse_number() -> None:
    assert parse_number("total $1,234.50") == Fraction("1234.5")
    assert parse_number("3/4 of it") == Fraction(3, 4)
    assert parse_number("-7 degrees") == -7
    assert parse_number("15%") == 15
    assert parse_number("no digits") is None


def test_text_scorers() -> None:
    assert score_text(Task("a", "p", "Paris"), "ANSWER: paris.").correct
    assert not score_text(Task("a", "p", "Paris"), "ANSWER: Paris, France").correct
    assert score_text(Task("b", "p", "52.9", scorer="numeric"), "ANSWER: $52.90").correct
    assert score_text(Task("b", "p", "589/3", scorer="numeric"), "ANSWER: 196.333333333").correct  # tolerance
    assert not score_text(Task("b", "p", "52.9", scorer="numeric"), "ANSWER: 52.8").correct
    assert not score_text(Task("b", "p", "1", scorer="numeric"), "ANSWER: none").correct
    assert score_text(Task("c", "p", "Guangdong", scorer="contains"), "ANSWER: It is guangdong province").correct
    assert not score_text(Task("c", "p", "Hubei", scorer="contains"), "ANSWER: Guangdong").correct
    assert score_text(Task("d", "p", r"^SKU-\d+$", scorer="regex"), "ANSWER: SKU-1001").correct
    assert not score_text(Task("d", "p", r"^SKU-\d+$", scorer="regex"), "ANSWER: sku 1001").correct
    with pytest.raises(ValueError, match="bad regex"):
        score_text(Task("d", "p", "(", scorer="regex"), "x")
    with pytest.raises(TaskSetError, match="unknown scorer"):
        Task("e", "p", "x", scorer="fuzzy")


def test_extract_code_picks_the_block_defining_the_entry_point() -> None:
    out = "```python\nprint(1)\n```\n```python\ndef add(a, b):\n    return a + b\n```\n```\nnotes\n```"
    assert extract_code(out, "add").startswith("def add")
    assert extract_code("def add(a, b): return 1", "add") == "def add(a, b): return 1"


async def test_tests_scorer_runs_in_the_sandbox() -> None:
    task = Task("t", "p", ADD_TESTS, scorer="tests", entry_point="add")
    assert (await score(task, GOOD_CODE)).correct
    bad = await score(task, BAD_CODE)
    assert not bad.correct and "AssertionError" in bad.detail
    loop = await score(task, "```python\ndef add(a, b):\n    while True: pass\n```", timeout=1.0)
    assert not loop.correct and "timed out" in loop.detail
    net = ("```python\ndef add(a, b):\n    import socket\n    socket.create_connection(('127.0.0.1', 9))\n"
           "    return a + b\n```")
    blocked = await score(task, net)
    assert not blocked.correct and "network access is disabled" in blocked.detail
    hog = await score(task, "```python\ndef add(a, b):\n    x = bytearray(4 * 1024**3)\n    return a + b\n```",
                      memory_mb=256)
    assert not hog.correct and "MemoryError" in hog.detail
    assert not (await score(task, "")).correct


# -- statistics ---------------------------------------------------------------------------------


def test_wilson_and_percentiles() -> None:
    lo, hi = wilson(5, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and round(hi, 4) == 0.2775
    lo, hi = wilson(10, 10)
    assert round(lo, 4) == 0.7225 and hi == 1.0
    assert wilson(0, 0) == (0.0, 1.0)
    assert percentile([], 50) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([10.0] * 3 + [100.0], 95) == pytest.approx(86.5)


# -- a whole evaluation against a scripted model --------------------------------------------------


async def test_exact_counts_against_a_scripted_model(tmp_path: Path) -> None:
    log = tmp_path / "samples.jsonl"
    async with ScriptedLLM(SCRIPT) as srv:
        llm = router(srv.base_url)
        try:
            seen: list[tuple[int, int]] = []
            ev = Evaluation(llm, TASKS, EvalConfig(models=["deepseek-chat"], concurrency=3), run_id="r1",
                            log_path=log, price=lambda m, u: ModelRegistry.load().price(m, u).usd,
                            progress=lambda d, t, r: seen.append((d, t)))
            records = await ev.run()
        finally:
            await llm.aclose()
    assert [r["task_id"] for r in records] == [t.id for t in TASKS]  # input order, none dropped
    by_id = {r["task_id"]: r for r in records}
    assert {i for i, r in by_id.items() if r["correct"]} == {"r1", "r2", "r3", "r4", "r5"}
    assert {i for i, r in by_id.items() if r["status"] == "error"} == {"e1", "e2"}
    assert "bad request for this sample" in by_id["e1"]["error"]
    assert by_id["w3"]["detail"].startswith("tests failed")
    assert seen[-1] == (10, 10)

    rep = build_report("r1", records, ["deepseek-chat"], ["single"])
    s = rep["models"]["deepseek-chat"]["single"]
    assert (s["n"], s["correct"], s["errors"]) == (10, 5, 2)
    assert s["accuracy"] == 0.5
    assert s["ci95"] == [0.2366, 0.7634]
    assert s["tokens"] == 8 * 120  # the two failed calls used nothing
    assert s["cost_usd"] == pytest.approx(8 * (100 * 0.10 + 20 * 0.42) / 1e6)
    assert s["avg_steps"] is None and s["right_to_wrong"] is None  # no reasoning in single mode
    assert s["p50_ms"] is not None and s["p95_ms"] >= s["p50_ms"]
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(lines) == 10 and {x["run_id"] for x in lines} == {"r1"}


async def test_unpriced_model_costs_none_never_zero(tmp_path: Path) -> None:
    async with ScriptedLLM(SCRIPT) as srv:
        llm = router(srv.base_url, model="scripted-model")
        try:
            ev = Evaluation(llm, TASKS[:2], EvalConfig(models=["scripted-model"]), run_id="u",
                            log_path=tmp_path / "s.jsonl", price=lambda m, u: ModelRegistry.load().price(m, u).usd)
            records = await ev.run()
        finally:
            await llm.aclose()
    s = build_report("u", records, ["scripted-model"], ["single"])["models"]["scripted-model"]["single"]
    assert s["correct"] == 2 and s["tokens"] == 240 and s["cost_usd"] is None


async def test_resume_skips_finished_samples_and_retries_failed_ones(tmp_path: Path) -> None:
    log = tmp_path / "samples.jsonl"
    async with ScriptedLLM(SCRIPT) as srv:
        llm = router(srv.base_url)
        try:
            cfg = EvalConfig(models=["deepseek-chat"], concurrency=2)
            await Evaluation(llm, TASKS[:4], cfg, run_id="r", log_path=log).run()
            assert srv.counts["/v1/chat/completions"] == 4
            srv.reset()
            records = await Evaluation(llm, TASKS, cfg, run_id="r", log_path=log).run()
            asked = sorted(r.body["messages"][0]["content"].split()[0] for r in srv.requests)
            assert asked == ["Q-e1", "Q-e2", "Q-r5", "Q-w1", "Q-w2", "Q-w3"]  # the first four were not asked again
            assert len(records) == 10
            srv.reset()
            again = await Evaluation(llm, TASKS, cfg, run_id="r", log_path=log).run()
            # only the failed samples run again; they fail again and still count
            assert sorted(r.body["messages"][0]["content"].split()[0] for r in srv.requests) == ["Q-e1", "Q-e2"]
            assert sum(1 for r in again if r["status"] == "error") == 2 and len(again) == 10
        finally:
            await llm.aclose()
    newest = read_log(log)
    assert len(newest) == 10
    with log.open("a") as f:  # a line torn by a crash is skipped: that sample just runs again
        f.write('{"model": "deepseek-chat", "mode": "sing')
    assert len(read_log(log)) == 10


# -- task sets ----------------------------------------------------------------------------------


def test_builtin_sets_are_deterministic_and_limited() -> None:
    a = load_tasks("math,qa,code", seed=3, limit=5)
    b = load_tasks("math,qa,code", seed=3, limit=5)
    assert [(t.id, t.prompt, t.answer) for t in a] == [(t.id, t.prompt, t.answer) for t in b]
    assert [t.source for t in a] == ["math"] * 5 + ["qa"] * 5 + ["code"] * 5
    assert load_tasks("math", seed=4, limit=3)[0].prompt != a[0].prompt
    assert load_tasks("math", seed=3, limit=8)[:5] == a[:5]  # a larger limit extends, never reshuffles
    assert all(parse_number(t.answer) is not None for t in a if t.scorer == "numeric")
    with pytest.raises(TaskSetError, match="unknown task set"):
        load_tasks("poetry")


def test_math_answers_are_exact() -> None:
    from toolmesh.reasoning.tasks.arithmetic import generate

    for t in generate(40, seed=0):
        if t.meta["template"] == "ages":  # check one template against an independent solution
            import re

            times, later, total = map(int, re.findall(r"(\d+) times as old.*?In (\d+) years.*?will be (\d+)",
                                                      t.prompt)[0])
            young = (total - 2 * later) / (times + 1)
            assert float(t.answer) == young * times


def test_qa_answers_come_from_the_data() -> None:
    import re
    import sqlite3

    from toolmesh.servers.demo.data import SQL_PATH

    conn = sqlite3.connect(":memory:")
    conn.executescript(SQL_PATH.read_text(encoding="utf-8"))
    for t in load_tasks("qa", limit=12):
        if t.meta["template"] == "user_province":
            uid = re.search(r"user (U\d+) live", t.prompt)
            assert uid is not None
            (prov,) = conn.execute("SELECT c.province FROM users u JOIN cities c ON c.id = u.city_id "
                                   "WHERE u.user_id = ?", (uid.group(1),)).fetchone()
            assert t.scorer == "regex" and re.search(t.answer, prov) and re.search(t.answer, f"{prov} province")
            assert not re.search(t.answer, f"{prov} or Hubei") and "lives in" in t.prompt
        assert t.meta["hops"] >= 2


async def test_shipped_code_tasks_fail_as_given_and_pass_when_fixed() -> None:
    from toolmesh.reasoning.tasks import code

    problems = {p["id"]: p for p in code.problems()}
    assert len(problems) >= 150
    for task in load_tasks("code", limit=4):
        ref = problems[task.id]
        assert not (await score(task, f"```python\n{ref['buggy']}\n```")).correct
        assert (await score(task, f"```python\n{ref['reference']}\n```")).correct


def test_user_jsonl_validation(tmp_path: Path) -> None:
    good = tmp_path / "t.jsonl"
    good.write_text('{"id": 1, "prompt": "p", "answer": 3, "scorer": "numeric"}\n\n{"id": "b", "prompt": "q", '
                    '"answer": "x"}\n')
    tasks = load_jsonl(good)
    assert [(t.id, t.answer, t.scorer) for t in tasks] == [("1", "3", "numeric"), ("b", "x", "exact")]
    for body, msg in [('{"id": 1, "prompt": "p"}', "t.jsonl:1: missing answer"),
                      ('{"id": 1, "prompt": "p", "answer": "a", "scorer": "fuzzy"}', "unknown scorer"),
                      ("not json", "not valid JSON"), ("[1]", "must be a JSON object"),
                      ('{"id": 1, "prompt": "", "answer": "a"}', "prompt must be"),
                      ('{"id": 1, "prompt": "p", "answer": "many", "scorer": "numeric"}', "must contain a number"),
                      ('{"id": 1, "prompt": "p", "answer": "(", "scorer": "regex"}', "not a valid regex"),
                      ('{"id": 1, "prompt": "p", "answer": "def (", "scorer": "tests"}', "not valid Python")]:
        good.write_text(body + "\n")
        with pytest.raises(TaskSetError, match=msg):
            load_jsonl(good)
    good.write_text('{"id": 1, "prompt": "p", "answer": "a"}\n{"id": 1, "prompt": "q", "answer": "b"}\n')
    with pytest.raises(TaskSetError, match="duplicate task id"):
        load_tasks(str(good))
    with pytest.raises(TaskSetError, match="does not exist"):
        load_jsonl(tmp_path / "none.jsonl")


# -- reason mode: the engine over the same scripted model -------------------------------------------

REASON_TASKS = [
    Task("a1", "Q-a1 what is 6*7?", "42", scorer="numeric"),
    Task("a2", "Q-a2 what is 3*5?", "15", scorer="numeric"),
    Task("a3", "Q-a3 this one fails", "1", scorer="numeric"),
]
REASON_SCRIPT = {"rules": [
    # a revision request (its last user turn names no task): the rewritten step is right, its answer is not
    {"when": {"user_regex": "was checked and rejected"},
     "respond": {"text": "【STEP 1】 2 + 2 = 4\n【ANSWER】 16", "usage": USAGE}},
    _rule("a1", {"text": "【STEP 1】 6*7 = 42\n【ANSWER】 42", "usage": USAGE}),
    # the step's arithmetic is wrong (the verifier sends it back) but the answer written with it is right
    _rule("a2", {"text": "【STEP 1】 3*5 = 16\n【ANSWER】 15", "usage": USAGE}),
    _rule("a3", {"status": 400, "error": "bad request for this sample"}),
]}


async def test_reason_mode_counts_steps_revisions_and_right_to_wrong(tmp_path: Path) -> None:
    async with ScriptedLLM(REASON_SCRIPT) as srv:
        llm = router(srv.base_url)
        try:
            cfg = EvalConfig(models=["deepseek-chat"], modes=["single", "reason"], concurrency=2,
                             reasoning={"verifiers": ["arithmetic"], "max_revisions": 1})
            records = await Evaluation(llm, REASON_TASKS, cfg, run_id="rr", log_path=tmp_path / "s.jsonl").run()
        finally:
            await llm.aclose()
    by = {(r["mode"], r["task_id"]): r for r in records}
    assert [by[("single", t)]["correct"] for t in ("a1", "a2", "a3")] == [True, True, False]
    assert [by[("reason", t)]["correct"] for t in ("a1", "a2", "a3")] == [True, False, False]
    assert by[("reason", "a1")]["steps"] == 1 and by[("reason", "a1")]["revisions"] == 0
    assert by[("reason", "a2")]["revisions"] == 1 and by[("reason", "a2")]["right_to_wrong"] == 1
    assert by[("reason", "a3")]["status"] == "error"
    rep = build_report("rr", records, ["deepseek-chat"], ["single", "reason"])["models"]["deepseek-chat"]
    r = rep["reason"]
    assert (r["n"], r["correct"], r["errors"], r["right_to_wrong"]) == (3, 1, 1, 1)
    assert r["vs_single"] == {"compared": 3, "right_to_wrong": 1, "wrong_to_right": 0}
    assert r["avg_revisions"] == pytest.approx(1 / 3)
    assert r["tokens"] == 3 * 120 and r["cost_usd"] == pytest.approx(3 * (100 * 0.10 + 20 * 0.42) / 1e6)
    assert rep["single"]["right_to_wrong"] is None and "vs_single" not in rep["single"]
