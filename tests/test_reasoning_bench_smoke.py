"""Smoke test of the reasoning benchmark (``toolmesh bench reason``): the shape of its JSON and the
correctness of every run, never its timings."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

TOOLMESH = str(Path(sys.executable).with_name("toolmesh"))


def test_bench_reason_quick_json(tmp_path: Path) -> None:
    out = subprocess.run([TOOLMESH, "bench", "reason", "--quick", "--json", "--runs", "3", "--batch", "20"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "TOOLMESH_HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["benchmark"] == "reason" and result["errors"] == 0
    tm = result["toolmesh"]
    for key in ("overhead_per_step_p50_ms", "in_step_overhead_p50_ms", "checkpoint_write_p50_ms", "run_p50_ms"):
        assert isinstance(tm[key], float | int), key
    assert tm["checkpoint_rows_per_run"] == 2 + result["steps_per_run"]  # start, one per step, end
    batch = result["batch"]
    assert batch["ok"] == batch["prompts"] == 20 and batch["ratio"] > 0
    lg = result["langgraph"]
    # The peer may be skipped only when it is not installed here (its two modules the benchmark imports).
    if all(importlib.util.find_spec(m) is not None for m in ("langgraph.graph", "langgraph.checkpoint.sqlite")):
        assert "skipped" not in lg, lg
        assert lg["errors"] == 0 and lg["checkpoint_bytes_per_run"] > 0
    else:
        assert "not installed" in lg["skipped"], lg
    assert set(result["targets"]) == {"overhead_per_step_p50_le_1ms", "checkpoint_write_p50_le_2ms",
                                      "batch_ratio_ge_0_95"}
