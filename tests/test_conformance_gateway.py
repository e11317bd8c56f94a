"""The MCP conformance suite against the gateway fronting the fixtures server (GW-2).

The fixtures server (``toolmesh.testing.conformance_server``) runs as a real process; the
gateway (``toolmesh serve --no-auth`` on loopback, a real process) serves it as the
single-upstream virtual server ``/servers/everything/mcp``, so names pass unprefixed. The
suite then runs every scenario of both revisions through the gateway. Baselines:
``tests/conformance/gateway-<revision>.yml``; a stale entry fails the test too.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance_support import load_baseline, require_suite, run_conformance
from conftest import ServerProcess, free_port
from gateway_support import Gateway

BASELINES = Path(__file__).parent / "conformance"


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_suite()
    port = free_port()
    upstream = ServerProcess(
        [sys.executable, "-m", "toolmesh.testing.conformance_server", "--port", str(port)], port
    ).start()
    config = {"servers": {"everything": {"transport": "http", "url": f"http://127.0.0.1:{port}/mcp"}}}
    gw = Gateway(tmp_path_factory.mktemp("gw-conformance"), config, no_auth=True)
    try:
        gw.start()
        yield f"{gw.url}/servers/everything/mcp"
    finally:
        gw.stop()
        upstream.stop()


@pytest.mark.parametrize("revision", ["2025-11-25", "2026-07-28"])
def test_conformance_through_gateway(revision: str, gateway_url: str, tmp_path: Path) -> None:
    baseline_file = BASELINES / f"gateway-{revision}.yml"
    run = run_conformance("server", url=gateway_url, requirements=revision, baseline=baseline_file, out_dir=tmp_path)
    verdict = run.judge(load_baseline(baseline_file, "server"))
    report = f"{run.summary()}\n(results in {tmp_path})"
    assert not verdict.unexpected, "unexpected failures:\n" + "\n".join(verdict.unexpected) + "\n" + report
    assert not verdict.stale, f"stale baseline entries in {baseline_file.name} (they pass now): {verdict.stale}"
    assert run.returncode == 0, f"the suite exited {run.returncode}:\n{run.stdout[-3000:]}"
    assert len(run.passed()) + len(run.failed()) >= 30
