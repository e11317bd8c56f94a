"""bench/scale_plan.py: the capacity plan for the reference peak, from benchmark JSON (pure arithmetic)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


@pytest.fixture(scope="module")
def sp() -> ModuleType:
    spec = importlib.util.spec_from_file_location("scale_plan", BENCH / "scale_plan.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["scale_plan"] = module
    spec.loader.exec_module(module)
    return module


def _run(replicas: int, shared: bool, gateway: float, redis: float, cmds: float) -> dict[str, Any]:
    cpu = {"gateway": gateway, "upstream": 80.0, "redis": redis, "haproxy": 20.0}
    cpu["total"] = sum(cpu.values())
    return {"replicas": replicas, "shared_state": shared, "calls_per_s": 5000.0, "errors": 0,
            "cpu_us_per_request": cpu, "redis_commands_per_request": cmds, "redis_script_ops_per_request": 4.0 * cmds}


# Shaped like `toolmesh bench scale --json` (bench/scale.py), `bench agent` and `bench gateway`.
SCALE = {"runs": [_run(1, False, 100.0, 0.0, 0.0), _run(2, False, 100.0, 0.0, 0.0),
                  _run(1, True, 105.0, 5.0, 1.0), _run(2, True, 110.0, 6.0, 1.0)],
         "errors": 0, "connections": 64, "seconds": 10}
AGENT = {"frameworks": {"toolmesh": {"p50_ms": 152.0, "throughput_rps": 900.0,
                                     "concurrent": {"sessions": 200, "runs": 5000, "client_cpu_ms_per_run": 1.5}},
                        "openai_agents": None},
         "errors": 0}
GATEWAY = {"openai": {"toolmesh": {"calls_per_s": 4000.0, "load_run": {"cpu_us_per_call": 200.0}}},
           "mcp": {}, "errors": 0}


def test_mcp_scenario_from_the_scale_run(sp: ModuleType) -> None:
    plan = sp.plan(SCALE)
    assert plan["scale_run"]["replicas"] == 2  # the shared-state run with the most replicas
    mcp = plan["scenarios"]["mcp"]
    cores = mcp["cores_at_utilisation"]
    assert cores["gateway"] == pytest.approx(15_000 * 110e-6 / 0.6, abs=0.01)  # 2.75
    assert mcp["gateway_processes"] == 3
    assert cores["redis"] == pytest.approx(0.15) and cores["haproxy"] == pytest.approx(0.5)
    assert cores["postgres"] is None  # not measured by this scale run
    assert mcp["redis_commands_per_s"] == 15_000
    # One audit row per call; 3 processes each write one batch per 50 ms (5,000 rows/s < 512 per 50 ms).
    assert mcp["postgres"] == {"rows_per_s": 15_000, "transactions_per_s": 60.0, "rows_per_transaction": 250.0}
    b = mcp["next_bottleneck"]
    assert b["component"] == "redis" and b["busy_fraction_at_peak"] == pytest.approx(0.09)
    assert b["max_rps_at_utilisation"] == 100_000
    assert "agent" not in plan["scenarios"]


def test_agent_scenario_adds_runtime_and_edge_cost(sp: ModuleType) -> None:
    plan = sp.plan(SCALE, AGENT, GATEWAY)
    agent = plan["scenarios"]["agent"]
    assert agent["cpu_us_per_request"]["gateway"] == 1700.0  # 1.5 ms runtime + 200 µs edge
    assert agent["gateway_processes"] == 43  # 15,000 × 1.7 ms / 0.6 = 42.5 cores
    assert agent["cpu_us_per_request"]["redis"] == 12.0  # 6 µs per command × 2 commands per run
    assert agent["redis_commands_per_s"] == 30_000
    assert agent["tool_calls_per_s"] == 45_000 and agent["model_calls_per_s"] == 30_000
    assert agent["cores_at_utilisation"]["tool_servers"] == pytest.approx(15_000 * 240e-6 / 0.6)
    # 2 ledger rows + 3 audit rows per run, spread over 43 processes batching every 50 ms.
    assert agent["postgres"]["rows_per_s"] == 75_000
    assert agent["postgres"]["transactions_per_s"] == 43 * 20.0
    assert agent["next_bottleneck"]["component"] == "redis"
    assert agent["next_bottleneck"]["max_rps_at_utilisation"] == 50_000
    assert "bench gateway" in agent["sources"]["gateway"]


def test_edge_cost_falls_back_to_the_scale_run(sp: ModuleType) -> None:
    agent = sp.plan(SCALE, AGENT)["scenarios"]["agent"]
    assert agent["cpu_us_per_request"]["gateway"] == 1610.0  # 1.5 ms + the /mcp call's 110 µs
    assert "stand-in" in agent["sources"]["gateway"]


def test_large_batches_when_processes_are_busy(sp: ModuleType) -> None:
    # Few processes at a high rate fill a 512-row batch before the 50 ms timer.
    pg = sp.postgres_writes(100_000.0, 2, 512, 0.05)
    assert pg["transactions_per_s"] == pytest.approx(100_000 / 512, abs=0.1)
    assert pg["rows_per_transaction"] == 512.0


def test_checks_against_the_issue_targets(sp: ModuleType) -> None:
    checks = sp.plan(SCALE)["checks"]
    assert checks["shared_state_cpu_overhead"]["reached"] == pytest.approx(0.08, abs=0.001)
    assert checks["shared_state_cpu_overhead"]["met"]
    assert checks["cpu_flat_across_replicas"]["reached"] == pytest.approx(216 / 210 - 1, abs=0.001)
    assert checks["redis_commands_per_request"] == {"reached": 1.0, "target": 2.0, "met": True}
    heavy = {"runs": [_run(1, False, 100.0, 0.0, 0.0), _run(1, True, 150.0, 10.0, 3.0)]}
    checks = sp.plan(heavy)["checks"]
    assert not checks["shared_state_cpu_overhead"]["met"] and not checks["redis_commands_per_request"]["met"]


def test_postgres_cpu_when_the_scale_run_measures_it(sp: ModuleType) -> None:
    run = _run(3, True, 110.0, 6.0, 1.0)
    run["cpu_us_per_request"]["postgres"] = 30.0
    plan = sp.plan({"runs": [run]}, AGENT, postgres_cores=1.0)
    agent = plan["scenarios"]["agent"]
    assert agent["cpu_us_per_request"]["postgres"] == 150.0  # 30 µs per row × 5 rows
    assert agent["next_bottleneck"]["component"] == "postgres"  # 3.75 cores busy on a 1-core primary


@pytest.mark.parametrize(("scale", "message"), [
    ({}, "no 'runs'"),
    ({"runs": [_run(1, False, 100.0, 0.0, 0.0)]}, "shared_state true"),
    ({"runs": [{**_run(1, True, 1.0, 1.0, 1.0), "cpu_us_per_request": {"gateway": -1, "redis": 1, "haproxy": 1}}]},
     "non-negative"),
])
def test_bad_input_is_refused(sp: ModuleType, scale: dict[str, Any], message: str) -> None:
    with pytest.raises(sp.PlanError, match=message):
        sp.plan(scale)
    with pytest.raises(sp.PlanError, match="utilisation"):
        sp.plan(SCALE, utilisation=1.5)
    with pytest.raises(sp.PlanError, match="frameworks.toolmesh"):
        sp.plan(SCALE, {"frameworks": {"toolmesh": None}})


def test_command_line(sp: ModuleType, tmp_path: Path) -> None:
    files = {}
    for name, data in (("scale", SCALE), ("agent", AGENT), ("gateway", GATEWAY)):
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(data))
    argv = [sys.executable, str(BENCH / "scale_plan.py"), "--scale", str(files["scale"]), "--agent",
            str(files["agent"]), "--gateway", str(files["gateway"])]
    out = subprocess.run([*argv, "--json"], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(out.stdout)["scenarios"]["agent"]["gateway_processes"] == 43
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60)
    assert "| gateway processes (pods) | 3 | 43 |" in out.stdout
    assert "check redis_commands_per_request: 1.0 (target 2.0): met" in out.stdout
    table = subprocess.run([*argv, "--markdown"], capture_output=True, text=True, check=True, timeout=60).stdout
    assert table.startswith("Peak: 15,000 requests/s") and "check " not in table
    bad = tmp_path / "bad.json"
    bad.write_text("[1]")
    out = subprocess.run([sys.executable, str(BENCH / "scale_plan.py"), "--scale", str(bad)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "not a JSON object" in out.stderr


def test_reads_the_keys_the_benchmarks_print() -> None:
    # A renamed field in a benchmark must break this test, not the plan in silence.
    sources = {name: (BENCH / f"{name}.py").read_text() for name in ("scale", "agent", "gateway")}
    for key in ("runs", "replicas", "shared_state", "calls_per_s", "cpu_us_per_request",
                "redis_commands_per_request", "gateway", "upstream", "redis", "haproxy", "total", "agent"):
        assert f'"{key}"' in sources["scale"], key
    for key in ("frameworks", "concurrent", "client_cpu_ms_per_run"):
        assert f'"{key}"' in sources["agent"], key
    for key in ("openai", "toolmesh", "load_run", "cpu_us_per_call"):
        assert f'"{key}"' in sources["gateway"], key


def test_redis_commands_per_agent_run_measured_by_the_scale_run(sp: ModuleType) -> None:
    run = _run(3, True, 110.0, 6.0, 1.0)
    run["agent"] = {"cpu_us_per_request": dict(run["cpu_us_per_request"]), "redis_commands_per_request": 3.0}
    plan = sp.plan({"runs": [run]}, AGENT)
    assert plan["assumptions"]["redis_commands_per_agent_run"] == 3.0
    assert plan["scenarios"]["agent"]["redis_commands_per_s"] == 45_000
    assert plan["scenarios"]["agent"]["cpu_us_per_request"]["redis"] == 18.0  # 6 µs per command × 3
    # An explicit figure still wins.
    assert sp.plan({"runs": [run]}, AGENT, redis_commands_per_run=2.0)["scenarios"]["agent"]["redis_commands_per_s"] \
        == 30_000
