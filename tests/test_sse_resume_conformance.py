"""The conformance suite scores the same through the gateway as against its own reference server.

The suite's reference server (``tests/servers/conformance_reference.mts``, the TypeScript SDK
with an event store, so it closes SSE streams mid-call and replays them on ``Last-Event-ID``)
runs as a real Node process; a real gateway serves it as ``/servers/ref/mcp``. The suite runs
against both, and each scenario must score the same number of passed checks through the gateway
as directly, with the same failing checks: the SSE resumability scenarios (SEP-1699) on their
own (the reference passes all their checks), then every scenario of ``--requirements 2025-11-25``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance_support import NODE, NPM, ConformanceRun, require_suite, run_conformance
from conftest import ServerProcess, free_port
from gateway_support import Gateway

REFERENCE = Path(__file__).parent / "servers" / "conformance_reference.mts"
#: The scenarios of SEP-1699 (event ids, priming event, retry, disconnect + resume, several streams).
SCENARIOS = ["server-sse-polling", "server-sse-multiple-streams"]


@pytest.fixture(scope="module")
def reference() -> Iterator[str]:
    require_suite()
    # ESM resolves packages next to the file: run it from inside .cache/npm.
    target = NPM.parent / "conformance-reference" / "everything-server.mts"
    target.parent.mkdir(exist_ok=True)
    shutil.copyfile(REFERENCE, target)
    port = free_port()
    proc = ServerProcess([str(NODE), str(target)], port, env={"PORT": str(port)}).start()
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def gateway_url(reference: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = {"servers": {"ref": {"transport": "http", "url": reference, "protocol": "2025-11-25"}}}
    gw = Gateway(tmp_path_factory.mktemp("gw-ref"), config, no_auth=True)
    gw.start()
    try:
        yield f"{gw.url}/servers/ref/mcp"
    finally:
        gw.stop()


def _score(run: ConformanceRun, scenario: str) -> tuple[int, list[str]]:
    result = run.scenarios[scenario]
    return len(result.ids("SUCCESS")), sorted(result.ids("FAILURE", "WARNING"))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_same_score_through_gateway(scenario: str, reference: str, gateway_url: str, tmp_path: Path) -> None:
    direct = run_conformance("server", url=reference, scenario=scenario, spec_version="2025-11-25",
                             out_dir=tmp_path / "direct")
    through = run_conformance("server", url=gateway_url, scenario=scenario, spec_version="2025-11-25",
                              out_dir=tmp_path / "gateway")
    want, direct_bad = _score(direct, scenario)
    got, gateway_bad = _score(through, scenario)
    # The reference server passes every check of these scenarios (else the comparison means little).
    assert want >= 2 and not direct_bad, direct.summary()
    assert (got, gateway_bad) == (want, direct_bad), (
        f"{scenario}: {got} checks passed through the gateway, {want} directly\n"
        f"{through.scenarios[scenario].describe()}\n(results in {tmp_path})")


def test_every_2025_11_25_scenario_scores_the_same(reference: str, gateway_url: str, tmp_path: Path) -> None:
    direct = run_conformance("server", url=reference, requirements="2025-11-25", out_dir=tmp_path / "direct")
    through = run_conformance("server", url=gateway_url, requirements="2025-11-25", out_dir=tmp_path / "gateway")
    assert set(direct.scenarios) == set(through.scenarios)
    differ = {name: (_score(through, name), _score(direct, name)) for name in direct.scenarios
              if _score(through, name) != _score(direct, name)}
    assert not differ, f"through the gateway vs directly (passed, failing checks): {differ}\n(results in {tmp_path})"
