"""A short seed of the fault campaign (``toolmesh bench faults``, issue 11 §1) in ``make test``.

Runs the real command (real gateway, Hub, upstream processes, fault proxies) on a few faults
for 2 s each with 16 callers and asserts the campaign's criteria on what it measured: no call
hung (each ended within its timeout + 1 s), no error unclear or of the wrong type, a call
succeeded again after every fault (the campaign waits at most 20 s for it; the figure itself is
not asserted), and nothing leaked (fds, upstream processes, asyncio tasks). Timings are printed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT, children_of_self

SCENARIOS = ["gw_kill9", "gw_reset", "gw_sigstop", "gw_crashloop", "hub_sigstop", "hub_garbage", "hub_crashloop",
             "llm_5xx", "llm_stream_cut"]
#: Connection pools may hold a few more idle connections after a run than before it; a leak
#: grows with the number of failed calls (thousands here), so a small bound tells them apart.
FD_SLACK = 8
TASK_SLACK = 4


def test_faults_under_load_end_clearly_recover_and_leak_nothing() -> None:
    before = children_of_self()  # a session fixture's server (PostgreSQL, …) may already be running
    out = subprocess.run(
        [sys.executable, "-m", "toolmesh.cli.main", "bench", "faults", "--json", "--seconds", "2", "--callers", "16",
         "--only", ",".join(SCENARIOS)],
        capture_output=True, cwd=ROOT, timeout=600, check=False,
        env={**os.environ, "TOOLMESH_BENCH_DIR": str(ROOT / "bench")},
    )
    assert out.stdout, out.stderr.decode()[-3000:]
    result = json.loads(out.stdout)
    scenarios = result["scenarios"]
    assert sorted(scenarios) == sorted(SCENARIOS)
    for sid, r in scenarios.items():
        print(f"{sid}: {r['calls']} calls, longest {r['longest_s']}s, recovery {r['recovery_s']}s, "
              f"clear {r['clear_kinds']}, leaks fds {r['leaked_fds']} procs {r['leaked_procs']} "
              f"tasks {r['leaked_tasks']}")
        assert r["ok"] > 0, (sid, r)
        assert r["hung"] == 0, (sid, r)
        assert r["unclear"] == 0, (sid, r["unclear_kinds"])
        assert r["clear_errors"] > 0, (sid, r)  # the fault was felt, and said so
        assert r["recovery_s"] is not None, (sid, "no call succeeded after the fault ended")
        assert r["leaked_procs"] == 0, (sid, r["before"], r["after"])
        assert r["leaked_fds"] <= FD_SLACK, (sid, r["before"], r["after"])
        if r["leaked_tasks"] is not None:
            assert r["leaked_tasks"] <= TASK_SLACK, (sid, r["before"], r["after"])
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    assert children_of_self() <= before  # every process the campaign started is gone
