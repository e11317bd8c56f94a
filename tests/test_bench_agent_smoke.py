"""Smoke test of the agent benchmark (``bench/agent.py``): shape of its JSON and correctness of
every run, never its timings."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from bench_support import assert_none_left

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench" / "agent.py"
FRAMEWORKS = ("toolmesh", "openai_agents", "pydantic_ai")
HEADLINE = ("p50_ms", "p99_ms", "overhead_p50_ms", "throughput_rps")
CALLS = 5
SESSIONS = 20
#: The module each peer framework needs. A peer may be skipped only when it is not installed here.
PEER_MODULES = {"openai_agents": "agents", "pydantic_ai": "pydantic_ai"}


def _check_leaf(leaf: dict[str, object], where: str) -> None:
    for key in HEADLINE:
        assert isinstance(leaf[key], float | int), (where, key, leaf.get(key))
    assert leaf["errors"] == 0, (where, leaf)
    assert leaf["p50_ms"] > 0 and leaf["p99_ms"] >= leaf["p50_ms"], where  # type: ignore[operator]
    assert leaf["throughput_rps"] > 0, where  # type: ignore[operator]
    # overhead is defined against the 150 ms ideal, whatever its sign on a given machine
    assert abs(leaf["overhead_p50_ms"] - (leaf["p50_ms"] - 150.0)) < 0.02, where  # type: ignore[operator]
    seq, conc = leaf["sequential"], leaf["concurrent"]
    assert seq["runs"] == CALLS and seq["errors"] == 0, (where, seq)  # type: ignore[index]
    assert conc["runs"] == SESSIONS and conc["errors"] == 0, (where, conc)  # type: ignore[index]
    assert conc["sessions"] == SESSIONS  # type: ignore[index]


@pytest.mark.timeout(240)
def test_quick_agent_bench_prints_one_complete_json_object() -> None:
    marker = uuid.uuid4().hex
    env = {**os.environ, "TOOLMESH_BENCH_RUN": marker}
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--json", "--quick", "--calls", str(CALLS), "--sessions", str(SESSIONS)],
        capture_output=True, text=True, timeout=220, env=env, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # the whole of stdout is the one object

    assert set(result["frameworks"]) == set(FRAMEWORKS)
    assert result["frameworks"]["toolmesh"] is not None
    for fw in FRAMEWORKS:
        leaf = result["frameworks"][fw]
        if fw != "toolmesh" and importlib.util.find_spec(PEER_MODULES[fw]) is None:
            # not installed here: a reason instead of figures
            assert leaf is None and "not installed" in result["skipped"][fw], (fw, leaf)
            assert result["ratios"][f"throughput_toolmesh_over_{fw}"] is None
            continue
        # installed (toolmesh always is): it must have run, not reported itself skipped
        assert leaf is not None and fw not in result.get("skipped", {}), (fw, result.get("skipped"))
        _check_leaf(leaf, fw)
        assert result["meta"]["mcp_protocol"][fw]
    _check_leaf(result["floor"], "floor")
    assert result["errors"] == 0
    assert set(result["targets"]) == {"overhead_p50_ms", "lowest_overhead", "highest_throughput"}
    assert result["targets"]["overhead_p50_ms"]["reached"] == result["frameworks"]["toolmesh"]["overhead_p50_ms"]
    assert result["meta"]["client_event_loop"] in ("uvloop", "asyncio")
    assert result["meta"]["sessions"] == SESSIONS

    # Both servers are gone once the bench exits.
    assert_none_left(marker)
