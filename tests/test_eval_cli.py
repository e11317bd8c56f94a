"""`toolmesh eval` as a subprocess against a scripted OpenAI-compatible server process:
formats, the per-sample log, resume, --fail-under and usage errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripted_support import scripted_llm_process

TOOLMESH = str(Path(sys.executable).with_name("toolmesh"))
USAGE = {"input_tokens": 100, "output_tokens": 20}
ADD_TESTS = "def check(candidate):\n    assert candidate(2, 3) == 5\n"
TASKS = [
    {"id": "r1", "prompt": "Q-r1 capital of France?", "answer": "Paris"},
    {"id": "r2", "prompt": "Q-r2 6*7?", "answer": 42, "scorer": "numeric"},
    {"id": "r3", "prompt": "Q-r3 add", "answer": ADD_TESTS, "scorer": "tests", "entry_point": "add"},
    {"id": "w1", "prompt": "Q-w1 capital of Spain?", "answer": "Madrid"},
    {"id": "e1", "prompt": "Q-e1 fails", "answer": "x"},
]
RULES = {"rules": [
    {"when": {"user_regex": r"Q-r1\b"}, "respond": {"text": "ANSWER: Paris", "usage": USAGE}},
    {"when": {"user_regex": r"Q-r2\b"}, "respond": {"text": "ANSWER: 42", "usage": USAGE}},
    {"when": {"user_regex": r"Q-r3\b"}, "respond": {"text": "```python\ndef add(a, b):\n    return a + b\n```",
                                                    "usage": USAGE}},
    {"when": {"user_regex": r"Q-w1\b"}, "respond": {"text": "ANSWER: Lisbon", "usage": USAGE}},
    {"when": {"user_regex": r"Q-e1\b"}, "respond": {"status": 400, "error": "rejected"}},
    {"when": {"user_regex": r"Q-m\d\b"}, "respond": {"text": "【STEP 1】 6*7 = 42\n【ANSWER】 42", "usage": USAGE}},
]}


@pytest.fixture
def llm_url(tmp_path: Path) -> Iterator[str]:
    with scripted_llm_process(RULES, tmp_path) as url:
        yield url


def stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/_scripted/stats", timeout=10) as r:
        return dict(json.loads(r.read()))


def setup_files(tmp_path: Path, url: str) -> tuple[Path, Path]:
    cfg = {"llm": {"deployments": [
        {"name": "priced", "provider": "openai", "base_url": url, "api_key": "k", "model": "deepseek-chat"},
        {"name": "unpriced", "provider": "openai", "base_url": url, "api_key": "k", "model": "scripted-model"}]}}
    path = tmp_path / "toolmesh.yaml"
    path.write_text(yaml.safe_dump(cfg))
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps(t) + "\n" for t in TASKS))
    return path, tasks


def run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TOOLMESH_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    return subprocess.run([TOOLMESH, "eval", *args], capture_output=True, text=True, timeout=300, env=env,
                          check=False)


def test_json_report_log_and_resume(tmp_path: Path, llm_url: str) -> None:
    cfg, tasks = setup_files(tmp_path, llm_url)
    out = run(["-c", str(cfg), "--tasks", str(tasks), "--models", "priced,unpriced", "--format", "json",
               "--out", str(tmp_path / "runs"), "--concurrency", "2"], tmp_path)
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    assert set(rep["models"]) == {"priced", "unpriced"}
    for name in ("priced", "unpriced"):
        s = rep["models"][name]["single"]
        assert {"n", "correct", "accuracy", "ci95", "errors", "p50_ms", "p95_ms", "tokens", "cost_usd",
                "avg_steps", "avg_revisions"} <= set(s)
        assert (s["n"], s["correct"], s["errors"], s["tokens"]) == (5, 3, 1, 4 * 120)
        assert s["accuracy"] == 0.6
    assert rep["models"]["priced"]["single"]["cost_usd"] == pytest.approx(4 * (100 * 0.10 + 20 * 0.42) / 1e6)
    assert rep["models"]["unpriced"]["single"]["cost_usd"] is None
    run_dir = tmp_path / "runs" / rep["run_id"]
    lines = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert len(lines) == 10 and sum(1 for x in lines if x["status"] == "error") == 2
    assert json.loads((run_dir / "summary.json").read_text()) == rep
    assert stats(llm_url)["requests"] == 10

    # resume: only the two failed samples are asked again (they fail again, and still count)
    again = run(["-c", str(cfg), "--resume", rep["run_id"], "--format", "json", "--out", str(tmp_path / "runs")],
                tmp_path)
    assert again.returncode == 0, again.stderr
    assert stats(llm_url)["requests"] == 12
    rep2 = json.loads(again.stdout)
    assert rep2["run_id"] == rep["run_id"]
    assert rep2["models"]["priced"]["single"]["n"] == 5 and rep2["models"]["priced"]["single"]["errors"] == 1


def test_table_md_html_and_fail_under(tmp_path: Path, llm_url: str) -> None:
    cfg, tasks = setup_files(tmp_path, llm_url)
    common = ["-c", str(cfg), "--tasks", str(tasks), "--models", "unpriced", "--out", str(tmp_path / "runs")]
    table = run([*common, "--fail-under", "0.5"], tmp_path)
    assert table.returncode == 0, table.stderr
    assert "unpriced" in table.stdout and "60.0%" in table.stdout and "n/a" in table.stdout
    assert "$0" not in table.stdout
    md = run([*common, "--format", "md"], tmp_path)
    assert md.returncode == 0
    header, rule, row = md.stdout.splitlines()[2:5]
    assert header.startswith("| model | mode | n | accuracy | 95% CI | errors")
    assert rule.startswith("|---|---|---:")
    assert row.startswith("| unpriced | single | 5 | 60.0% | 23.1–88.2% | 1 |") and "| n/a |" in row
    page = run([*common, "--format", "html", "--fail-under", "0.61"], tmp_path)
    assert page.returncode == 1  # 0.6 < 0.61
    assert "accuracy below 0.61" in page.stderr
    assert page.stdout.startswith("<!doctype html>") and '<table id="summary">' in page.stdout
    assert page.stdout.count("<tr class=") == 5 and "rejected" in page.stdout  # every sample, the failed one too


def test_usage_errors_exit_2(tmp_path: Path, llm_url: str) -> None:
    cfg, tasks = setup_files(tmp_path, llm_url)
    assert run(["-c", str(cfg), "--tasks", "poetry"], tmp_path).returncode == 2
    bad = run(["-c", str(cfg), "--tasks", str(tasks), "--models", "nope"], tmp_path)
    assert bad.returncode == 2 and "nope" in bad.stderr
    assert run(["-c", str(cfg), "--tasks", str(tasks), "--mode", "twice"], tmp_path).returncode == 2
    assert run(["-c", str(cfg), "--tasks", str(tasks), "--format", "xml"], tmp_path).returncode == 2
    assert run(["-c", str(cfg), "--tasks", str(tasks), "--fail-under", "60"], tmp_path).returncode == 2
    assert run(["-c", str(cfg), "--resume", "no-such-run", "--out", str(tmp_path)], tmp_path).returncode == 2
    assert stats(llm_url)["requests"] == 0


def test_mode_both_reports_reasoning_next_to_the_baseline(tmp_path: Path, llm_url: str) -> None:
    cfg, _ = setup_files(tmp_path, llm_url)
    tasks = tmp_path / "m.jsonl"
    tasks.write_text('{"id": "m1", "prompt": "Q-m1 6*7?", "answer": "42", "scorer": "numeric"}\n'
                     '{"id": "m2", "prompt": "Q-m2 6*8?", "answer": "48", "scorer": "numeric"}\n')
    out = run(["-c", str(cfg), "--tasks", str(tasks), "--models", "priced", "--mode", "both", "--format", "json",
               "--out", str(tmp_path / "runs")], tmp_path)
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)["models"]["priced"]
    assert (rep["single"]["n"], rep["single"]["correct"]) == (2, 1)
    assert (rep["reason"]["n"], rep["reason"]["correct"], rep["reason"]["errors"]) == (2, 1, 0)
    assert rep["reason"]["avg_steps"] == 1.0 and rep["reason"]["avg_revisions"] == 0.0
    assert rep["reason"]["vs_single"] == {"compared": 2, "right_to_wrong": 0, "wrong_to_right": 0}
