"""Checkpoints and resume: append-only rows, retention, limits, and a run killed with SIGKILL then resumed."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from reasoning_support import MODEL, chain_rules, chat_bodies, scripted_router
from toolmesh.reasoning import Reasoner, ReasoningConfig, StepState
from toolmesh.store.checkpoints import CHECKPOINT_VERSION, RunCheckpoints, RunExistsError
from toolmesh.store.sqlite import Store

TOOLMESH = str(Path(sys.executable).with_name("toolmesh"))
PROMPT = "Sum the squares of 1..5, then double it."
STEPS = ["1*1 + 2*2 = 5", "5 + 3*3 = 14", "14 + 4*4 = 30", "30 + 5*5 = 55", "55 * 2 = 110"]


def revising_rules(**response: Any) -> list[dict[str, Any]]:
    """A deterministic model that writes step 3 wrong first and fixes it when told why."""
    wrong = {"when": {"user_regex": re.escape("Continue with 【STEP 3】")},
             "respond": {"text": "【STEP 3】 14 + 4*4 = 31", **response}}
    fix = {"when": {"user_regex": re.escape("【STEP 3】 was checked and rejected")},
           "respond": {"text": "【STEP 3】 14 + 4*4 = 30", **response}}
    return [fix, wrong, *chain_rules(STEPS, "110", **response)]


def view(steps: list[Any]) -> list[tuple[Any, ...]]:
    return [(s.n, s.text, s.revisions, s.forced, s.verdict.ok if s.verdict else None, tuple(s.rejected))
            for s in steps]


async def test_checkpoint_rows_are_appended_per_commit_and_resume_of_a_finished_run(tmp_path: Path) -> None:
    async with scripted_router({"rules": revising_rules()}) as (router, srv), Store(tmp_path / "c.db") as store:
        res = await Reasoner(router, ReasoningConfig(model=MODEL), store=store).run(PROMPT, run_id="a")
        rows = await RunCheckpoints(store).load("a")
        # every 2 steps: the last row holds only what is new
        res2 = await Reasoner(router, ReasoningConfig(model=MODEL, checkpoint_every=2), store=store).run(
            PROMPT, run_id="b")
        rows2 = await RunCheckpoints(store).load("b")
        calls = len(chat_bodies(srv))
        again = await Reasoner(router, store=store).resume("a")  # finished: the stored result, no model call
        assert len(chat_bodies(srv)) == calls
        with pytest.raises(RunExistsError):
            await Reasoner(router, ReasoningConfig(model=MODEL), store=store).run(PROMPT, run_id="a")
        with pytest.raises(LookupError):
            await Reasoner(router, store=store).resume("nope")
    assert res.status == "ok" and res.answer == "110" and res.steps[2].revisions == 1
    assert [r.kind for r in rows] == ["start"] + ["steps"] * 5 + ["end"]
    assert [len(r.data["steps"]) for r in rows[1:-1]] == [1, 1, 1, 1, 1]
    assert [r.seq for r in rows] == list(range(7)) and {r.version for r in rows} == {CHECKPOINT_VERSION}
    assert rows[0].data["prompt"] == PROMPT and rows[-1].data["status"] == "ok"
    assert [len(r.data["steps"]) for r in rows2 if r.kind == "steps"] == [2, 2, 1]
    assert view(res2.steps) == view(res.steps)
    assert again.status == "ok" and again.answer == "110" and view(again.steps) == view(res.steps)
    assert all(s.state is StepState.TERMINAL for s in again.steps)


async def test_retention_deletes_whole_runs_only(tmp_path: Path) -> None:
    async with Store(tmp_path / "r.db") as store:
        cp = RunCheckpoints(store)
        await cp.start("old", {"prompt": "p"})
        await cp.append("old", 1, "steps", {"steps": []})
        await cp.start("new", {"prompt": "q"})
        await store.execute("UPDATE run_checkpoints SET at = at - 10000 WHERE run_id = 'old'")
        await store.execute("UPDATE run_checkpoints SET at = at - 10000 WHERE run_id = 'new' AND seq = 0")
        await cp.append("new", 1, "steps", {"steps": []})  # fresh row keeps the whole run
        assert await cp.prune(3600) == 2
        assert await cp.load("old") == [] and len(await cp.load("new")) == 2
        with pytest.raises(sqlite3.IntegrityError):
            await cp.append("new", 1, "steps", {"steps": []})  # append-only: a seq is never rewritten
        await store.execute("UPDATE run_checkpoints SET version = 99 WHERE run_id = 'new'")
        with pytest.raises(ValueError, match="newer toolmesh"):
            await cp.load("new")


async def test_max_seconds_returns_the_committed_chain_as_timeout(tmp_path: Path) -> None:
    slow = {"when": {"user_regex": re.escape("Continue with 【STEP 3】")},
            "respond": {"text": "【STEP 3】 14 + 4*4 = 30", "latency_ms": 4000}}
    async with scripted_router({"rules": [slow, *chain_rules(STEPS, "110")]}) as (router, _), \
            Store(tmp_path / "t.db") as store:
        reasoner = Reasoner(router, ReasoningConfig(model=MODEL, max_seconds=2.0), store=store)
        res = await reasoner.run(PROMPT, run_id="t1")
        rows = await RunCheckpoints(store).load("t1")
    assert res.status == "timeout" and res.answer is None
    assert [s.text for s in res.steps] == STEPS[:2]
    assert all(s.state is StepState.COMMITTED for s in res.steps)  # partial, never terminal
    assert "limit of 2s" in (res.error or "")
    assert rows[-1].kind == "end" and rows[-1].data["status"] == "timeout"


async def test_per_step_limit_is_a_timeout_too() -> None:
    slow = {"when": {"user_regex": re.escape("Continue with 【STEP 2】")},
            "respond": {"text": "【STEP 2】 5 + 3*3 = 14", "latency_ms": 4000}}
    async with scripted_router({"rules": [slow, *chain_rules(STEPS, "110")]}) as (router, _):
        res = await Reasoner(router, ReasoningConfig(model=MODEL, step_seconds=1.5)).run(PROMPT)
    assert res.status == "timeout" and [s.text for s in res.steps] == STEPS[:1]
    assert res.error == "step 2 exceeded the per-step limit of 1.5s"


async def test_a_timed_out_run_can_be_resumed_to_the_end(tmp_path: Path) -> None:
    slow = {"when": {"user_regex": re.escape("Continue with 【STEP 3】")},
            "respond": {"text": "【STEP 3】 14 + 4*4 = 30", "latency_ms": 4000}}
    async with Store(tmp_path / "t.db") as store:
        async with scripted_router({"rules": [slow, *chain_rules(STEPS, "110")]}) as (router, _):
            first = await Reasoner(router, ReasoningConfig(model=MODEL, max_seconds=2.0), store=store).run(
                PROMPT, run_id="t2")
        async with scripted_router({"rules": [slow, *chain_rules(STEPS, "110")]}) as (router, srv):
            # the run's own settings shape the requests; the resumer's explicit limit replaces its 2 s
            res = await Reasoner(router, ReasoningConfig(max_seconds=30.0), store=store).resume("t2")
            first_request = chat_bodies(srv)[0]["messages"]
    assert first.status == "timeout" and len(first.steps) == 2
    assert res.status == "ok" and res.answer == "110" and [s.text for s in res.steps] == STEPS and res.resumed
    assert "Continue with 【STEP 3】" in first_request[-1]["content"]  # continued, not replayed


def _config(tmp_path: Path, url: str, db: Path) -> Path:
    cfg = {"llm": {"deployments": [{"name": "scripted", "provider": "openai", "base_url": url, "api_key": "k",
                                    "model": MODEL}]},
           "store": {"path": str(db)}}
    path = tmp_path / f"{db.stem}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


async def _committed_rows(db: Path) -> int:
    def count() -> int:
        if not db.exists():
            return 0
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT COUNT(*) FROM run_checkpoints WHERE kind = 'steps'").fetchone()
            return int(row[0])
        except sqlite3.OperationalError:
            return 0
        finally:
            conn.close()

    return await asyncio.to_thread(count)


async def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    script = {"rules": revising_rules(latency_ms=250)}
    async with scripted_router(script) as (router, srv):
        async with Store(tmp_path / "ref.db") as store:
            reference = await Reasoner(router, ReasoningConfig(model=MODEL), store=store).run(PROMPT, run_id="ref")
        assert reference.status == "ok" and reference.steps[2].revisions == 1

        db = tmp_path / "crash.db"
        env = {**os.environ, "TOOLMESH_HOME": str(tmp_path)}
        proc = await asyncio.create_subprocess_exec(
            TOOLMESH, "reason", PROMPT, "-c", str(_config(tmp_path, srv.base_url, db)), "--run-id", "crash",
            "--json", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while await _committed_rows(db) < 2:  # killed after step 2 is committed, step 3 in flight
            assert proc.returncode is None and time.monotonic() < deadline, "the run ended before the kill"
            await asyncio.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        assert await proc.wait() == -signal.SIGKILL
        rows_at_kill = await _committed_rows(db)
        async with Store(db) as store:
            kinds = [r.kind for r in await RunCheckpoints(store).load("crash")]
        assert "end" not in kinds and 2 <= rows_at_kill < 5

        # resume with the CLI (a new process), same store
        resumed = await asyncio.create_subprocess_exec(
            TOOLMESH, "reason", "--resume", "crash", "-c", str(_config(tmp_path, srv.base_url, db)), "--json",
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await resumed.communicate()
    assert resumed.returncode == 0, err.decode()
    got = json.loads(out)
    assert got["run_id"] == "crash" and got["status"] == "ok" and got["answer"] == reference.answer
    want = [s.to_json() for s in reference.steps]
    strip = ("latency_ms", "usage", "cost_usd")
    assert [{k: v for k, v in s.items() if k not in strip} for s in got["steps"]] == \
           [{k: v for k, v in s.items() if k not in strip} for s in want]
    async with Store(db) as store:
        rows = await RunCheckpoints(store).load("crash")
    assert [r.kind for r in rows].count("start") == 1 and rows[-1].kind == "end"
    assert sum(len(r.data.get("steps", [])) for r in rows) == len(STEPS)  # each step stored once


def test_cli_reason_json_and_live(tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": revising_rules()}))
    server = subprocess.Popen([sys.executable, "-m", "toolmesh.testing.scripted_llm", "--port", "0", "--rules",
                               str(rules)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        cfg = _config(tmp_path, url, tmp_path / "cli.db")
        env = {**os.environ, "TOOLMESH_HOME": str(tmp_path)}
        js = subprocess.run([TOOLMESH, "reason", PROMPT, "-c", str(cfg), "--json", "--max-revisions", "1"],
                            capture_output=True, text=True, env=env, timeout=120)
        live = subprocess.run([TOOLMESH, "reason", PROMPT, "-c", str(cfg), "--verifier", "arithmetic,python"],
                              capture_output=True, text=True, env=env, timeout=120)
        bad = subprocess.run([TOOLMESH, "reason", PROMPT, "-c", str(cfg), "--verifier", "magic", "--json"],
                             capture_output=True, text=True, env=env, timeout=120)
        none = subprocess.run([TOOLMESH, "reason", "-c", str(cfg)], capture_output=True, text=True, env=env,
                              timeout=120)
    finally:
        server.terminate()
        server.wait(10)
    assert js.returncode == 0, js.stderr
    obj = json.loads(js.stdout)
    assert set(obj) >= {"run_id", "status", "answer", "steps", "usage", "cost_usd", "elapsed_ms"}
    assert obj["status"] == "ok" and obj["answer"] == "110" and len(obj["steps"]) == 5
    assert set(obj["steps"][0]) >= {"n", "text", "state", "verdict", "revisions", "forced", "latency_ms"}
    assert obj["steps"][2]["revisions"] == 1
    assert live.returncode == 0, live.stderr
    assert "Step 3" in live.stdout and "revising (attempt 1)" in live.stdout and "Answer: 110" in live.stdout
    assert "committed in" in live.stdout and "ok · 5 steps" in live.stderr
    assert bad.returncode == 2 and "unknown verifier" in bad.stderr
    assert none.returncode == 2 and "exactly one of" in none.stderr
