"""The MCP project's conformance suite against toolmesh's client (the Hub).

For every client scenario a spec revision requires, the suite (Node 22, pinned version,
installed by ``make npm``) starts its own scenario server on loopback and runs
``python -m toolmesh.testing.conformance_client URL``, which drives the Hub through the
scenario's flow; the suite judges what it saw on the wire. A failure not in
``tests/conformance/client-<revision>.yml`` fails the test, and so does a baseline entry
that passes now (stale baseline).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from conformance_support import SUITE_VERSION, installed_version, load_baseline, require_suite, run_conformance

BASELINES = Path(__file__).parent / "conformance"
COMMAND = f"{shlex.quote(sys.executable)} -m toolmesh.testing.conformance_client"
#: The non-OAuth scenarios of each revision: all of them must pass (none may be baselined).
MUST_PASS = {
    "2025-11-25": {"initialize", "tools_call", "elicitation-sep1034-client-defaults", "sse-retry",
                   "json-schema-2020-12-preservation"},
    "2026-07-28": {"tools_call", "request-metadata", "sep-2322-client-request-state", "http-standard-headers",
                   "http-custom-headers", "http-invalid-tool-headers", "json-schema-ref-no-deref",
                   "json-schema-2020-12-preservation"},
}


@pytest.mark.parametrize("revision", ["2025-11-25", "2026-07-28"])
def test_conformance_client(revision: str, tmp_path: Path) -> None:
    require_suite()
    assert installed_version() == SUITE_VERSION, "the installed suite is not the pinned one: run `make npm`"
    baseline_file = BASELINES / f"client-{revision}.yml"
    baseline = load_baseline(baseline_file, "client")
    run = run_conformance("client", command=COMMAND, requirements=revision, baseline=baseline_file, out_dir=tmp_path)
    verdict = run.judge(baseline)
    report = f"{run.summary()}\n(results in {tmp_path})"
    assert not verdict.unexpected, "unexpected failures:\n" + "\n".join(verdict.unexpected) + "\n" + report
    assert not verdict.stale, f"stale baseline entries in {baseline_file.name} (they pass now): {verdict.stale}"
    assert run.returncode == 0, f"the suite exited {run.returncode}:\n{run.stdout[-3000:]}"
    passed = set(run.passed(scored_only=False))
    assert MUST_PASS[revision] <= passed, f"not passing: {MUST_PASS[revision] - passed}\n{report}"
    # Only OAuth is baselined, with a reason on every entry.
    assert all(e.startswith("auth/") for e in baseline)
    lines = [ln for ln in baseline_file.read_text().splitlines() if ln.strip().startswith("- ")]
    assert lines and all(" # " in ln for ln in lines)
