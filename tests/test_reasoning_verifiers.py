"""Markers, exact arithmetic, the python sandbox, the judge's JSON and the tool verifier (real MCP server)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from reasoning_support import MODEL, chain_rules, scripted_router
from toolmesh.hub import Hub
from toolmesh.hub.config import ServerConfig
from toolmesh.reasoning import Reasoner, ReasoningConfig, Step, Verdict
from toolmesh.reasoning.arith import ArithmeticError_, claims, evaluate
from toolmesh.reasoning.markers import Markers, ResponseParser
from toolmesh.reasoning.sandbox import run_python
from toolmesh.reasoning.verifiers import arithmetic, combine_verdicts, parse_judge, python

CHECKER = str(Path(__file__).parent / "servers" / "reasoning_check_server.py")
M = Markers("【STEP {n}】", "【ANSWER】")


def parse(text: str, chunk: int) -> tuple[str, str, str | None, bool, int | None]:
    p = ResponseParser(M)
    for i in range(0, len(text), chunk):
        p.feed(text[i:i + chunk])
        if p.cut:
            break
    p.finish()
    return p.text("pre"), p.text("step"), p.text("answer") if p.saw_answer else None, p.cut, p.step_number


@pytest.mark.parametrize("text,want", [
    ("Sure.\n【STEP 1】 a = 1\n【STEP 2】 b", ("Sure.", "a = 1", None, True, 1)),
    ("【STEP 4】 last\n【ANSWER】 42", ("", "last", "42", False, 4)),
    ("Step 1: x\ny\nStep 2: z", ("", "x\ny", None, True, 1)),
    ("**Step 1:** x\n**Step 2** y", ("", "x", None, True, 1)),
    ("### Step 1\nx\n### Answer\n7", ("", "x", "7", False, 1)),
    ("### Step 12 Subtract\nx", ("", "Subtract\nx", None, False, 12)),
    ("Step 1. a\n**Final answer:** 9", ("", "a", "9", False, 1)),
    ("no markers, even Step 1: inline", ("no markers, even Step 1: inline", "", None, False, None)),
    ("Answer: 5", ("", "", "5", False, None)),
    ("【STEP 1】 a\n【ANSWER】 b 【ANSWER】 c", ("", "a", "b 【ANSWER】 c", False, 1)),
])
def test_markers_parse_the_same_at_every_chunk_size(text: str, want: tuple[object, ...]) -> None:
    for chunk in (1, 2, 3, 5, 16, 1000):
        assert parse(text, chunk) == want, chunk


def test_markers_stream_deltas_add_up_and_hold_back_little() -> None:
    p = ResponseParser(M)
    text = "【STEP 1】 " + "word " * 40 + "\n【STEP 2】 more"
    deltas = []
    for ch in text:
        deltas += p.feed(ch)
        if p.cut:
            break
    assert "".join(d.text for d in deltas if d.section == "step").strip() == ("word " * 40).strip()


def test_exact_arithmetic_and_safety() -> None:
    assert evaluate("0.1 + 0.2") == evaluate("3/10")
    assert evaluate("2^10") == 1024 and evaluate("(1/3)*3") == 1
    for bad in ("__import__('os').system('x')", "a + 1", "2 ** 100000", "1 / 0", "[1, 2]", "len('x')"):
        with pytest.raises(ArithmeticError_):
            evaluate(bad)
    got = [(c.lhs, c.rhs, c.ok) for c in claims("so 3 × 4 = 12 = 6 + 6, and 1/3 = 0.34; x = 5; 7 = 7\n$1,200 / 4 = $300")]
    assert got == [("3 × 4", "12", True), ("12", "6 + 6", True), ("1/3", "0.34", False), ("$1,200 / 4", "$300", True)]
    latex = [(c.lhs, c.rhs, c.ok) for c in claims(r"cost \(4 \times 3 = 12\), then \[20 \div 4 = 6\]")]
    assert latex == [("4 × 3", "12", True), ("20 ÷ 4", "6", False)]


async def test_arithmetic_verdicts() -> None:
    ok = await arithmetic(Step(1, "12 * 7 = 84"), [])
    bad = await arithmetic(Step(1, "12 * 7 = 84 and 84 - 20 = 60"), [])
    none = await arithmetic(Step(1, "We read the question."), [])
    assert (ok.score, ok.ok) == (1.0, True)
    assert (bad.score, bad.ok) == (0.0, False) and bad.reason == "84 - 20 = 60 is wrong: 84 - 20 = 64"
    assert none.ok is None and none.score is None


async def test_python_sandbox_runs_code_with_limits() -> None:
    good = await run_python("print(sum(range(10)))")
    assert good.ok and good.stdout.strip() == "45"
    net = await run_python("import socket\nsocket.create_connection(('127.0.0.1', 9))")
    assert not net.ok and "network access is disabled" in net.stderr
    mem = await run_python("x = bytearray(1024 * 1024 * 1024)", memory_mb=128)
    assert not mem.ok and "MemoryError" in mem.stderr
    slow = await run_python("while True: pass", timeout=1.0)
    assert slow.timed_out and not slow.ok
    with pytest.raises(ValueError):
        await run_python("1", timeout=0)


async def test_python_verifier_checks_exit_and_claimed_output() -> None:
    check = python(timeout=5.0)
    ok = await check(Step(1, "```python\nprint(6 * 7)\n```\nOutput: 42"), [])
    wrong = await check(Step(1, "```python\nprint(6 * 7)\n```\nOutput: 41"), [])
    fails = await check(Step(1, "```python\nassert 1 + 1 == 3\n```"), [])
    none = await check(Step(1, "no code here"), [])
    assert ok.ok is True and wrong.ok is False and "'41'" in wrong.reason and "'42'" in wrong.reason
    assert fails.ok is False and "AssertionError" in fails.reason and none.ok is None


def test_judge_json_parsing() -> None:
    assert parse_judge('{"score": 0.8, "reason": "good"}') == (0.8, "good")
    assert parse_judge('```json\n{"score": 1}\n```') == (1.0, "")
    assert parse_judge('Sure! {"score": 0, "reason": "wrong"} hope that helps') == (0.0, "wrong")
    for bad in ("no json", '{"score": "high"}', '{"score": 3}', "{score: 1}", "[1]", '{"score": true}'):
        assert isinstance(parse_judge(bad), str), bad


def test_combining_verdicts() -> None:
    a, b = Verdict(1.0, True, "fine", "arithmetic"), Verdict(0.4, None, "meh", "judge")
    unknown = Verdict(None, None, "no claims", "arithmetic")
    assert combine_verdicts([a, b], 0.5, "min").ok is False  # min 0.4 < threshold
    assert combine_verdicts([a, b], 0.5, "mean").ok is True  # mean 0.7
    assert combine_verdicts([unknown], 0.5, "min").ok is None
    v = combine_verdicts([unknown, Verdict(0.0, False, "bad", "tool:x")], 0.5, "min")
    assert v.ok is False and v.reason == "tool:x: bad"


async def test_tool_verifier_through_the_hub_revises_a_guess() -> None:
    prompt = "What is 17 * 23?"
    script = {"rules": [
        {"when": {"user_regex": re.escape("【STEP 1】 was checked and rejected")},
         "respond": {"text": "【STEP 1】 17 * 23 = 391\n【ANSWER】 391"}},
        {"when": {"user_regex": re.escape(prompt)}, "respond": {"text": "【STEP 1】 I guess 400.\n【ANSWER】 400"}},
    ]}
    async with Hub() as hub, scripted_router(script) as (router, _):
        await hub.register(ServerConfig(name="checker", command=sys.executable, args=[CHECKER]))
        for tool in ("checker__check_step", "checker__strict"):
            cfg = ReasoningConfig(model=MODEL, verifiers=["arithmetic", f"tool:{tool}"])
            res = await Reasoner(router, cfg, hub=hub).run(prompt)
            assert res.status == "ok" and res.answer == "391", tool
            assert res.steps[0].revisions == 1 and res.steps[0].rejected == ["I guess 400."]
        vague = await Reasoner(router, ReasoningConfig(model=MODEL, verifiers=["tool:checker__vague"]), hub=hub).run(
            prompt)
        missing = await Reasoner(router, ReasoningConfig(model=MODEL, verifiers=["tool:checker__nope"]), hub=hub).run(
            prompt)
    assert vague.status == "ok" and vague.answer == "400" and vague.steps[0].verdict is not None
    assert vague.steps[0].verdict.ok is None and any("unreadable" in w for w in vague.warnings)
    assert missing.status == "ok" and any("checker__nope" in w for w in missing.warnings)


async def test_verifier_that_raises_is_a_warning_not_a_crash() -> None:
    async def broken(step: Step, chain: list[Step]) -> Verdict:
        raise RuntimeError("verifier bug")

    async with scripted_router({"rules": chain_rules(["2 + 2 = 4"], "4")}) as (router, _):
        res = await Reasoner(router, ReasoningConfig(model=MODEL, verifiers=["none"]), verifiers=[broken]).run("2+2?")
    assert res.status == "ok" and res.answer == "4"
    assert any("verifier bug" in w for w in res.warnings)
