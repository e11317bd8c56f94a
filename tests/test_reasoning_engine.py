"""The reasoning engine end to end against the scripted LLM over HTTP (real sockets, real SQLite)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reasoning_support import MODEL, UNPRICED, chain_rules, chat_bodies, scripted_router
from toolmesh.llm.models import ModelRegistry
from toolmesh.llm.openai_provider import OpenAIProvider
from toolmesh.reasoning import Reasoner, ReasoningConfig, ReasoningResult, Step, StepState, Verdict
from toolmesh.store.ledger import UsageLedger
from toolmesh.store.sqlite import Store
from toolmesh.testing.scripted_llm import ScriptedLLM

PROMPT = "A box holds 12 rows of 7 apples; 20 are eaten. How many are left?"
STEPS = ["12 rows of 7 apples: 12 * 7 = 84 apples.", "20 are eaten: 84 - 20 = 64 apples left."]


async def test_steps_verified_committed_and_answer(tmp_path: Path) -> None:
    async with scripted_router({"rules": chain_rules(STEPS, "64")}) as (router, srv):
        store = Store(tmp_path / "t.db")
        ledger = UsageLedger(store, ModelRegistry.load().price)
        try:
            res = await Reasoner(router, ReasoningConfig(model=MODEL), ledger=ledger).run(PROMPT, run_id="r1")
            await store.flush()
            rows = await store.fetchall("SELECT session, model, input_tokens, output_tokens FROM usage")
        finally:
            await store.aclose()
    assert res.status == "ok" and res.answer == "64" and res.error is None
    assert [s.text for s in res.steps] == STEPS
    assert all(s.state is StepState.TERMINAL and not s.forced and s.revisions == 0 for s in res.steps)
    assert all(s.verdict is not None and s.verdict.ok is True and s.verdict.score == 1.0 for s in res.steps)
    # every transition is timed, in order
    for s in res.steps:
        states = [tr.state for tr in s.transitions]
        assert states == [StepState.THINKING, StepState.VERIFIED, StepState.COMMITTED, StepState.TERMINAL]
        times = [tr.at_ms for tr in s.transitions]
        assert times == sorted(times)
    # one request per step (the answer came with the last step); each built from the committed chain only
    bodies = chat_bodies(srv)
    assert len(bodies) == 2
    assert bodies[0]["messages"][-1]["content"] == PROMPT
    assert bodies[1]["messages"][-2] == {"role": "assistant", "content": f"【STEP 1】 {STEPS[0]}"}
    assert "Continue with 【STEP 2】" in bodies[1]["messages"][-1]["content"]
    # usage and cost: priced model, per step and per run, one ledger row per call
    assert res.usage["total_tokens"] == res.usage["input_tokens"] + res.usage["output_tokens"] > 0
    assert res.cost_usd is not None and res.cost_usd > 0
    assert sum(s.usage["total_tokens"] for s in res.steps) <= res.usage["total_tokens"]
    assert len(rows) == 2 and {r[0] for r in rows} == {"r1"} and {r[1] for r in rows} == {MODEL}
    js = res.to_json()
    assert set(js) >= {"run_id", "status", "answer", "steps", "usage", "cost_usd", "elapsed_ms"}
    assert js["steps"][0]["verdict"] == {"score": 1.0, "ok": True, "reason": "1 arithmetic claim(s) hold"}
    assert js["steps"][0]["state"] == "terminal"


@pytest.mark.parametrize("fmt", ["Step {n}:", "**Step {n}**", "### Step {n}", "**Step {n}:**"])
async def test_marker_variants_are_accepted(fmt: str) -> None:
    text = "\n".join(f"{fmt.format(n=i)} {s}" for i, s in enumerate(STEPS, 1)) + "\n**Final answer:** 64"
    step2 = f"{fmt.format(n=2)} {STEPS[1]}\nAnswer: 64"
    script = {"rules": [{"when": {"user_regex": "Continue with"}, "respond": {"text": step2}},
                        {"when": {}, "respond": {"text": text, "chunk_chars": 3}}]}
    async with scripted_router(script) as (router, _srv):
        res = await Reasoner(router, ReasoningConfig(model=MODEL)).run(PROMPT)
    assert res.status == "ok" and res.answer == "64"
    assert [s.text for s in res.steps] == STEPS


async def test_custom_markers() -> None:
    cfg = ReasoningConfig(model=MODEL, step_marker="<<{n}>>", answer_marker="==>")
    script = {"rules": [{"when": {"user_regex": re.escape("Continue with <<2>>")},
                         "respond": {"text": "<<2>> 84 - 20 = 64\n==> 64"}},
                        {"when": {}, "respond": {"text": "<<1>> 12 * 7 = 84\n<<2>> 84 - 20 = 64\n==> 64"}}]}
    async with scripted_router(script) as (router, srv):
        res = await Reasoner(router, cfg).run(PROMPT)
    assert res.status == "ok" and res.answer == "64" and len(res.steps) == 2
    assert "<<1>>" in chat_bodies(srv)[0]["messages"][0]["content"]


async def test_wrong_arithmetic_is_revised_with_the_reason() -> None:
    script = {"responses": [
        {"text": "【STEP 1】 12 * 7 = 74 apples.\n【STEP 2】 74 - 20 = 54"},  # wrong: sent back
        {"text": "【STEP 1】 12 * 7 = 84 apples."},                             # the rewrite
    ], "rules": chain_rules(STEPS, "64")}
    async with scripted_router(script) as (router, srv):
        res = await Reasoner(router, ReasoningConfig(model=MODEL)).run(PROMPT)
    assert res.status == "ok" and res.answer == "64"
    first = res.steps[0]
    assert first.revisions == 1 and not first.forced and first.text == "12 * 7 = 84 apples."
    assert first.rejected == ["12 * 7 = 74 apples."]
    assert [tr.state for tr in first.transitions][:4] == [StepState.THINKING, StepState.REVISING,
                                                          StepState.VERIFIED, StepState.COMMITTED]
    revision = chat_bodies(srv)[1]["messages"]
    assert revision[-2] == {"role": "assistant", "content": "【STEP 1】 12 * 7 = 74 apples."}
    assert "12 * 7 = 74 is wrong: 12 * 7 = 84" in revision[-1]["content"]
    assert "Rewrite 【STEP 1】 only" in revision[-1]["content"]


async def test_forced_commit_after_max_revisions() -> None:
    bad = {"text": "【STEP 1】 12 * 7 = 74 apples."}
    script = {"responses": [bad, bad, bad], "rules": chain_rules(["12 * 7 = 74 apples.", "74 - 20 = 54"], "54")}
    async with scripted_router(script) as (router, srv):
        res = await Reasoner(router, ReasoningConfig(model=MODEL, max_revisions=2)).run(PROMPT)
    first = res.steps[0]
    assert first.forced and first.revisions == 2 and first.verdict is not None and first.verdict.ok is False
    assert res.status == "ok" and res.answer == "54"  # forced, not hidden: the JSON says so
    assert res.to_json()["steps"][0]["forced"] is True
    assert StepState.VERIFIED not in [tr.state for tr in first.transitions]
    assert len(chat_bodies(srv)) == 1 + 2 + 1  # step 1, two rewrites, step 2 with the answer


async def test_callable_verifier_and_coherence_failure() -> None:
    seen: list[tuple[int, int]] = []

    async def must_mention_apples(step: Step, chain: list[Step]) -> Verdict:
        seen.append((step.n, len(chain)))
        return Verdict(1.0 if "apples" in step.text else 0.0, "apples" in step.text, "mentions apples")

    async def coherent(prompt: str, chain: list[Step], answer: str) -> Verdict:
        return Verdict(0.0, False, f"{answer} does not follow")

    cfg = ReasoningConfig(model=MODEL, verifiers=["none"])
    async with scripted_router({"rules": chain_rules(STEPS, "64")}) as (router, _):
        res = await Reasoner(router, cfg, verifiers=[must_mention_apples], coherence=coherent).run(PROMPT)
    assert seen == [(1, 0), (2, 1)]
    assert res.status == "error" and res.answer == "64"
    assert res.error == "coherence check failed: 64 does not follow"
    assert res.coherence is not None and res.coherence.ok is False


async def test_judge_scores_and_malformed_json_is_unknown_with_warning() -> None:
    judge_rules = [
        {"when": {"user_regex": "Step to check \\(step 1\\)"}, "respond": {"text": '{"score": 0.9, "reason": "fine"}'}},
        {"when": {"user_regex": "Step to check \\(step 2\\)"}, "respond": {"text": "Looks good to me! {score: high"}},
        {"when": {"user_regex": "Final answer: 64"}, "respond": {"text": '```json\n{"score": 1, "reason": "ok"}\n```'}},
    ]
    cfg = ReasoningConfig(model=MODEL, verifiers=["judge"])
    async with scripted_router({"rules": judge_rules + chain_rules(STEPS, "64")}) as (router, _):
        res = await Reasoner(router, cfg).run(PROMPT)
    assert res.status == "ok" and res.answer == "64"
    v1, v2 = res.steps[0].verdict, res.steps[1].verdict
    assert v1 is not None and (v1.score, v1.ok, v1.reason) == (0.9, True, "fine")
    assert v2 is not None and v2.ok is None and v2.score is None  # unknown, not a rejection
    assert res.steps[1].revisions == 0
    assert any("JSON" in w for w in res.warnings)
    assert res.coherence is not None and res.coherence.ok is True  # judge configured → coherence by judge


async def test_provider_reasoning_is_kept_apart_and_events_in_order() -> None:
    rules = chain_rules(STEPS, "64", reasoning="thinking hard")
    async with scripted_router({"rules": rules}) as (router, _):
        events = [ev async for ev in Reasoner(router, ReasoningConfig(model=MODEL)).stream(PROMPT, run_id="ev1")]
    kinds = [e.kind for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "final" and events[0].run_id == "ev1"
    assert "reasoning_delta" in kinds
    assert "thinking" not in "".join(e.text for e in events if e.kind == "step_delta")
    for n in (1, 2):
        mine = [e.kind for e in events if e.step == n and e.kind != "reasoning_delta"]
        assert mine[0] == "step_started" and mine[-1] == "step_committed"
        assert mine.index("step_verified") < mine.index("step_committed")
        streamed = "".join(e.text for e in events if e.step == n and e.kind == "step_delta")
        assert streamed.strip() == STEPS[n - 1]
    committed = [e for e in events if e.kind == "step_committed"]
    assert all(e.latency_ms is not None and e.latency_ms >= 0 and e.forced is False for e in committed)
    assert "".join(e.text for e in events if e.kind == "answer_delta").strip() == "64"
    final = events[-1].result
    assert isinstance(final, ReasoningResult) and final.status == "ok"
    assert any(e.kind == "usage" for e in events)


async def test_unpriced_model_has_no_cost_and_bare_provider_works() -> None:
    async with ScriptedLLM({"rules": chain_rules(STEPS, "64")}) as srv:
        provider = OpenAIProvider(srv.base_url, "k")
        try:
            res = await Reasoner(provider, ReasoningConfig(model=UNPRICED)).run(PROMPT)
        finally:
            await provider.aclose()
    assert res.status == "ok" and res.answer == "64" and res.cost_usd is None
    assert res.to_json()["cost_usd"] is None


async def test_model_ignoring_the_format_gets_asked_for_the_answer() -> None:
    script = {"rules": [{"when": {"user_regex": "final answer only"}, "respond": {"text": "64"}},
                        {"when": {}, "respond": {"text": "12 * 7 = 84 and 84 - 20 = 64, so 64 apples."}}]}
    async with scripted_router(script) as (router, _):
        res = await Reasoner(router, ReasoningConfig(model=MODEL)).run(PROMPT)
    assert res.status == "ok" and res.answer == "64" and len(res.steps) == 1
    assert res.steps[0].marked is False and res.steps[0].verdict is not None and res.steps[0].verdict.ok is True
    assert any("no answer marker" in w for w in res.warnings)


async def test_llm_failure_is_an_error_result_with_the_committed_chain() -> None:
    script = {"rules": [{"when": {"user_regex": "Continue with"},
                         "respond": {"status": 400, "error": "bad request from the test"}}],
              "default": {"text": "【STEP 1】 12 * 7 = 84\n【STEP 2】 ..."}}
    async with scripted_router(script) as (router, _):
        res = await Reasoner(router, ReasoningConfig(model=MODEL)).run(PROMPT)
    assert res.status == "error" and res.answer is None
    assert [s.text for s in res.steps] == ["12 * 7 = 84"]
    assert res.steps[0].state is StepState.COMMITTED  # partial: never terminal
    assert res.error is not None and "bad request" in res.error


async def test_budget_stops_the_run_with_status_budget() -> None:
    cfg = ReasoningConfig(model=MODEL, budget={"max_steps": 2})  # model calls
    async with scripted_router({"rules": chain_rules([*STEPS, "64 = 64"], "64")}) as (router, _):
        res = await Reasoner(router, cfg).run(PROMPT)
    assert res.status == "budget" and len(res.steps) == 2 and res.answer is None
    assert "step limit" in (res.error or "")


def test_bad_input_raises_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"\{n\}"):
        ReasoningConfig(step_marker="STEP")
    with pytest.raises(ValueError, match="unknown verifier"):
        ReasoningConfig(verifiers=["magic"])
    with pytest.raises(ValueError, match="tool name"):
        ReasoningConfig(verifiers=["tool"])
    with pytest.raises(TypeError):
        Reasoner(object())  # type: ignore[arg-type]


async def test_empty_prompt_is_rejected() -> None:
    async with scripted_router({"default": {"text": "x"}}) as (router, _):
        with pytest.raises(ValueError, match="prompt"):
            await Reasoner(router).run("  ")


async def test_long_chains_summarise_older_steps_near_the_context_window() -> None:
    steps = [f"{k} + {k} = {2 * k}. " + "Padding words to make the chain long. " * 12 for k in range(1, 7)]
    summary_rule = {"when": {"user_regex": "^user: "}, "respond": {"text": "SUMMARY: doubled 1 to 4 so far"}}
    cfg = ReasoningConfig(model=MODEL, context_window=700, memory={"threshold": 0.7, "keep_last_messages": 2})
    async with scripted_router({"rules": [summary_rule, *chain_rules(steps, "12", whole_rest=False)]}) as (router, srv):
        res = await Reasoner(router, cfg).run(PROMPT)
        bodies = chat_bodies(srv)
    assert res.status == "ok" and res.answer == "12" and [s.text for s in res.steps] == [s.strip() for s in steps]
    summaries = [b for b in bodies if b["messages"][-1]["content"].startswith("user: ")]
    assert summaries, "no summary request was made"
    later = [b for b in bodies if "Summary of steps 1-" in str(b["messages"])]
    assert later and all("SUMMARY: doubled" in b["messages"][2]["content"] for b in later)
    last = bodies[-1]["messages"][2]["content"]
    assert steps[0].strip() not in last  # folded, not sent verbatim
    assert any("summarised steps" in w for w in res.warnings)


async def test_an_empty_answer_fails_the_coherence_check() -> None:
    script = {"rules": [{"when": {}, "respond": {"text": "【STEP 1】 2 + 2 = 4\n【ANSWER】   "}}]}
    async with scripted_router(script) as (router, _):
        res = await Reasoner(router, ReasoningConfig(model=MODEL)).run("2+2?")
    assert res.status == "error" and res.error == "coherence check failed: the answer is empty"
