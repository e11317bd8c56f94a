"""The MCP project's conformance suite against toolmesh's own server frontends.

The fixtures server (``toolmesh.testing.conformance_server``) runs as a real process on a
loopback port; the suite (Node 22, pinned version, installed by ``make npm``) runs every
scenario a spec revision requires at that revision's wire, plus the ones it runs unscored.
A failure not in ``tests/conformance/server-<revision>.yml`` fails the test, and so does a
baseline entry that passes now (stale baseline).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance_support import SUITE_VERSION, installed_version, load_baseline, require_suite, run_conformance
from conftest import ServerProcess, free_port

BASELINES = Path(__file__).parent / "conformance"


@pytest.fixture(scope="module")
def fixtures_url() -> Iterator[str]:
    require_suite()
    assert installed_version() == SUITE_VERSION, "the installed suite is not the pinned one: run `make npm`"
    port = free_port()
    proc = ServerProcess(
        [sys.executable, "-m", "toolmesh.testing.conformance_server", "--port", str(port)], port
    ).start()
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.stop()


@pytest.mark.parametrize("revision", ["2025-11-25", "2026-07-28"])
def test_conformance_server(revision: str, fixtures_url: str, tmp_path: Path) -> None:
    baseline_file = BASELINES / f"server-{revision}.yml"
    run = run_conformance("server", url=fixtures_url, requirements=revision, baseline=baseline_file, out_dir=tmp_path)
    verdict = run.judge(load_baseline(baseline_file, "server"))
    report = f"{run.summary()}\n(results in {tmp_path})"
    assert not verdict.unexpected, "unexpected failures:\n" + "\n".join(verdict.unexpected) + "\n" + report
    assert not verdict.stale, f"stale baseline entries in {baseline_file.name} (they pass now): {verdict.stale}"
    # The suite's own verdict with the same baseline must agree.
    assert run.returncode == 0, f"the suite exited {run.returncode}:\n{run.stdout[-3000:]}"
    # Every scenario the revision requires ran.
    assert len(run.passed()) + len(run.failed()) >= 30
