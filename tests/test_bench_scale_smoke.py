"""Smoke test of the scale-out benchmark (``toolmesh bench scale``): the shape of its JSON, never its timings.

Runs the quick mode for real (wrk, redis-server, PostgreSQL, haproxy, gateways, the scripted
LLM) and checks the object the issue asks for, that every answer was right, that the Redis
figures tell shared from local state, that the capacity plan (bench/scale_plan.py) reads it,
and that no process is left behind.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from bench_support import assert_none_left

ROOT = Path(__file__).resolve().parent.parent
CPU_KINDS = {"gateway", "redis", "postgres", "haproxy", "total"}


def _missing() -> str | None:
    for name in ("wrk", "redis-server", "redis-cli", "haproxy"):
        if shutil.which(name) is None and not os.path.exists(f"/usr/sbin/{name}"):
            return name
    if shutil.which("initdb") is None and not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        return "postgresql"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=f"{_missing()} not installed (`make test` installs it)")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def _check_load(figures: dict[str, Any], where: str) -> None:
    cpu = figures["cpu_us_per_request"]
    assert CPU_KINDS <= cpu.keys(), (where, cpu)
    assert all(_number(v) for v in cpu.values()), (where, cpu)
    assert cpu["gateway"] > 0 and cpu["upstream"] > 0, (where, cpu)  # every request went through both
    assert cpu["total"] == pytest.approx(sum(cpu[k] for k in ("gateway", "redis", "postgres", "haproxy")), abs=0.5)
    assert _number(figures["redis_commands_per_request"]), where


@pytest.mark.timeout(400)
def test_quick_scale_bench_prints_one_complete_json_object() -> None:
    marker = uuid.uuid4().hex
    env = {**os.environ, "TOOLMESH_BENCH_RUN": marker}
    proc = subprocess.run([sys.executable, "-m", "toolmesh.cli.main", "bench", "scale", "--quick", "--json"],
                          capture_output=True, text=True, timeout=380, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # the whole of stdout is the one object

    assert {"runs", "gateway_cpu_vs_upstream", "errors", "targets"} <= result.keys()
    runs = result["runs"]
    assert {(r["replicas"], r["shared_state"]) for r in runs} == {(1, False), (1, True)}
    for r in runs:
        where = f"replicas={r['replicas']} shared={r['shared_state']}"
        assert {"replicas", "shared_state", "calls_per_s", "agent_rps", "errors", "cpu_us_per_request",
                "redis_commands_per_request", "agent"} <= r.keys(), where
        assert r["errors"] == 0, (where, r)
        assert r["calls_per_s"] > 0 and r["agent_rps"] > 0, where
        _check_load(r, where)
        _check_load(r["agent"], where + " agent")
        if r["shared_state"]:  # every request is admitted by a script in Redis
            assert r["redis_commands_per_request"] >= 1 and r["agent"]["redis_commands_per_request"] >= 1, r
            assert r["redis_sent_by_command"].get("evalsha", 0) >= 1, r
        else:  # nothing shared: Redis sees no request
            assert r["redis_commands_per_request"] == 0 and r["agent"]["redis_commands_per_request"] == 0, r
    assert result["errors"] == 0
    assert _number(result["gateway_cpu_vs_upstream"]) and result["gateway_cpu_vs_upstream"] > 0
    targets = result["targets"]
    assert {"redis_commands_per_request", "shared_state_cpu_overhead", "gateway_cpu_vs_upstream"} <= targets.keys()
    assert all(isinstance(t["met"], bool) and t["target"] > 0 for t in targets.values()), targets
    assert "cpu_flat_across_replicas" not in targets  # one replica count in the quick mode: nothing to compare
    assert "PASS" in proc.stderr or "FAIL" in proc.stderr  # the verdicts are printed next to the figures

    # The capacity plan reads this output as it is.
    spec = importlib.util.spec_from_file_location("scale_plan_smoke", ROOT / "bench" / "scale_plan.py")
    assert spec is not None and spec.loader is not None
    plan_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plan_module)
    plan = plan_module.plan(result)
    assert plan["scale_run"]["replicas"] == 1 and plan["scenarios"]["mcp"]["gateway_processes"] >= 1

    # Every process the benchmark started (servers, gateways, PostgreSQL backends) is gone.
    assert_none_left(marker)


def _fake_run(replicas: int, shared: bool, total: float, agent_total: float, cmds: float) -> dict[str, Any]:
    cpu = {"gateway": total - 20.0, "redis": 10.0, "postgres": 0.0, "haproxy": 10.0, "total": total,
           "upstream": 100.0}
    return {"replicas": replicas, "shared_state": shared, "calls_per_s": 1.0, "agent_rps": 1.0, "errors": 0,
            "cpu_us_per_request": cpu, "redis_commands_per_request": cmds,
            "agent": {"cpu_us_per_request": {**cpu, "total": agent_total}, "redis_commands_per_request": 2 * cmds}}


def test_targets_are_computed_from_every_load_and_replica_count() -> None:
    # Pure arithmetic on a result shaped like the benchmark's (no processes).
    spec = importlib.util.spec_from_file_location("scale_bench", ROOT / "bench" / "scale.py")
    assert spec is not None and spec.loader is not None
    scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scale)
    runs = [_fake_run(1, False, 200.0, 1000.0, 0.0), _fake_run(3, False, 210.0, 1050.0, 0.0),
            _fake_run(1, True, 210.0, 1300.0, 1.0), _fake_run(3, True, 220.0, 1300.0, 1.0)]
    result = {"runs": runs, "gateway_cpu_vs_upstream": 1.8}
    t = scale.targets(result)
    assert t["redis_commands_per_request"]["reached"] == 2.0 and t["redis_commands_per_request"]["met"]
    # The agent load with shared state on costs 30 % more at 1 replica: the worst case decides.
    assert t["shared_state_cpu_overhead"]["reached"] == pytest.approx(0.3) and not t["shared_state_cpu_overhead"]["met"]
    assert t["cpu_flat_across_replicas"]["reached"] == pytest.approx(0.05) and t["cpu_flat_across_replicas"]["met"]
    assert t["gateway_cpu_vs_upstream"] == {"reached": 1.8, "target": 1.0, "met": False,
                                            "detail": t["gateway_cpu_vs_upstream"]["detail"]}
    result["targets"] = t
    assert [line.split()[0] for line in scale.target_lines(result)] == ["PASS", "FAIL", "PASS", "FAIL"]


@pytest.mark.timeout(120)
def test_redis_admission_bench_measures_admitted_requests_of_both_shapes() -> None:
    # bench/redis_admit.py checks every reply itself (an admission Redis refused would measure
    # the wrong thing): a run that exits 0 admitted every call.
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "redis_admit.py"), "--calls", "300", "--json"],
                          capture_output=True, text=True, timeout=100, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    results = out["results"]
    assert set(results) == {"tool_call", "agent", "empty_script", "time_only", "time_get_set", "plain_get"}
    # The shapes are the limiter's own: 2 buckets (1 + 1 + 4 args each); + a window and slots.
    assert (results["tool_call"]["keys"], results["tool_call"]["args"]) == (2, 10)
    assert (results["agent"]["keys"], results["agent"]["args"]) == (4, 18)
    for name, figures in results.items():
        assert _number(figures["redis_cpu_us"]) and _number(figures["command_us"]), (name, figures)
