"""Batch reasoning: bounded concurrency, progress, input order, failures reported, 429s absorbed by the router."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from reasoning_support import MODEL, chat_bodies, scripted_router
from toolmesh.reasoning import Reasoner, ReasoningConfig, ReasoningResult, Step, Verdict


def square_rules() -> list[dict[str, Any]]:
    """Q<k> → a one-step chain answering k*k (checked by the arithmetic verifier); "FAIL" → HTTP 400."""
    rules: list[dict[str, Any]] = [
        {"when": {"user_regex": "FAIL"}, "respond": {"status": 400, "error": "this prompt is refused"}}]
    for k in range(60):
        rules.append({"when": {"user_regex": f"^Q{k}$"},
                      "respond": {"text": f"【STEP 1】 {k} * {k} = {k * k}\n【ANSWER】 {k * k}"}})
    return rules


async def test_batch_keeps_input_order_reports_failures_and_bounds_concurrency() -> None:
    prompts = [f"Q{k}" for k in range(12)]
    prompts[3] = "please FAIL"
    prompts[7] = "   "  # invalid prompt: an error result, not an exception
    progress: list[tuple[int, int, str]] = []
    async with scripted_router({"rules": square_rules(), "latency_ms": 30}) as (router, _):
        reasoner = Reasoner(router, ReasoningConfig(model=MODEL))
        results = await reasoner.batch(prompts, concurrency=3,
                                       progress=lambda d, t, r: progress.append((d, t, r.status)))
    assert len(results) == len(prompts) and all(isinstance(r, ReasoningResult) for r in results)
    for k, r in enumerate(results):
        if k == 3:
            assert r.status == "error" and "refused" in (r.error or "")
        elif k == 7:
            assert r.status == "error" and "prompt" in (r.error or "")
        else:
            assert r.status == "ok" and r.answer == str(k * k), (k, r)
    assert [d for d, _, _ in progress] == list(range(1, 13)) and {t for _, t, _ in progress} == {12}
    assert sorted(s for _, _, s in progress) == sorted(r.status for r in results)
    assert len({r.run_id for r in results}) == 12


async def test_batch_concurrency_is_bounded() -> None:
    in_flight = 0
    peak = 0

    async def counting(step: Step, chain: list[Step]) -> Verdict:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return Verdict(1.0, True, "")

    async with scripted_router({"rules": square_rules()}) as (router, _):
        reasoner = Reasoner(router, ReasoningConfig(model=MODEL, verifiers=["none"]), verifiers=[counting])
        results = await reasoner.batch([f"Q{k}" for k in range(20)], concurrency=4)
    assert all(r.status == "ok" for r in results)
    assert 1 < peak <= 4


async def test_batch_against_a_rate_limited_model_finishes() -> None:
    limited = {"status": 429, "error": "rate limited", "headers": {"retry-after": "0.2"}}
    script = {"responses": [limited] * 8, "rules": square_rules()}
    async with scripted_router(script, rpm=600) as (router, srv):
        reasoner = Reasoner(router, ReasoningConfig(model=MODEL))
        results = await reasoner.batch([f"Q{k}" for k in range(40)], concurrency=10)
        statuses = [r.status for r in results]
        requests = len(chat_bodies(srv))
    assert statuses == ["ok"] * 40, [r.error for r in results if r.status != "ok"][:3]
    assert [r.answer for r in results] == [str(k * k) for k in range(40)]
    assert requests >= 40 + 8  # the 429s really happened and were retried by the router


def test_cli_batch_jsonl_in_order_with_bad_lines_reported(tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": square_rules()}))
    server = subprocess.Popen([sys.executable, "-m", "toolmesh.testing.scripted_llm", "--port", "0", "--rules",
                               str(rules)], stdout=subprocess.PIPE, text=True)
    lines = [json.dumps({"id": f"q{k}", "prompt": f"Q{k}"}) for k in range(6)]
    lines[2] = json.dumps({"id": "bad", "prompt": "please FAIL"})
    lines.insert(4, "{not json")
    lines.insert(5, json.dumps({"id": "noprompt"}))
    batch = tmp_path / "in.jsonl"
    batch.write_text("\n".join(lines) + "\n")
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        cfg = tmp_path / "c.yaml"
        cfg.write_text(yaml.safe_dump({
            "llm": {"deployments": [{"name": "s", "provider": "openai", "base_url": url, "api_key": "k",
                                     "model": MODEL}]},
            "store": {"path": str(tmp_path / "b.db")}}))
        out = subprocess.run([str(Path(sys.executable).with_name("toolmesh")), "reason", "--batch", str(batch),
                              "-c", str(cfg), "--concurrency", "3", "--json"], capture_output=True, text=True,
                             timeout=120, env={**os.environ, "TOOLMESH_HOME": str(tmp_path)})
    finally:
        server.terminate()
        server.wait(10)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["id"] for r in rows] == ["q0", "q1", "bad", "q3", "line5", "noprompt", "q4", "q5"]
    status = {r["id"]: r["status"] for r in rows}
    assert status == {"q0": "ok", "q1": "ok", "bad": "error", "q3": "ok", "line5": "error", "noprompt": "error",
                      "q4": "ok", "q5": "ok"}, (rows, out.stderr[-2000:])
    assert [r["answer"] for r in rows if r["status"] == "ok"] == ["0", "1", "9", "16", "25"]
    assert "refused" in rows[2]["error"] and "not JSON" in rows[4]["error"]
    assert out.returncode == 1  # not every prompt succeeded
