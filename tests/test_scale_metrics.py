"""One scrape, every worker (STO-2): ``toolmesh serve --workers 2`` answers ``/metrics`` with the
totals of both workers, whichever of them takes the scrape."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from gateway_support import Gateway
from toolmesh.gateway.ops.workers import merge

pytestmark = pytest.mark.timeout(120)

N = 37


def fresh_get(url: str) -> httpx.Response:
    """A GET on a new connection (so the kernel may hand it to either worker)."""
    with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)) as client:
        return client.get(url, timeout=30)


def models_total(text: str) -> float:
    """Sum of ``toolmesh_gateway_requests_total`` over the series of the OpenAI routes (``/v1/models``)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("toolmesh_gateway_requests_total{") and 'route="openai"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_scrape_shows_the_totals_of_every_worker(tmp_path: Path) -> None:
    cfg = {"llm": {"deployments": [{"name": "m", "provider": "openai", "base_url": "http://127.0.0.1:9/v1",
                                    "api_key": "x", "model": "gpt-4o-mini"}]},
           "gateway": {"metrics_public": True}}
    gw = Gateway(tmp_path, cfg, no_auth=True, workers=2).start()
    try:
        workers: set[int] = set()
        deadline = time.monotonic() + 30
        while len(workers) < 2 and time.monotonic() < deadline:
            workers.add(fresh_get(gw.url + "/healthz").json()["worker"])
        assert len(workers) == 2
        for _ in range(N):
            assert fresh_get(gw.url + "/v1/models").status_code == 200
        for _ in range(12):
            text = fresh_get(gw.url + "/metrics").text
            assert models_total(text) == N, text[:3000]
            # Gauges stay per worker: one series each, labelled with its pid.
            pids = frozenset(re.findall(r'^toolmesh_gateway_start_time_seconds\{worker="(\d+)"\}', text, re.M))
            assert pids == {str(w) for w in workers}
    finally:
        gw.stop()
    # The directory the workers met in goes with the server.
    assert not list((gw.home / "run").glob("workers-*"))


def test_merge_sums_counters_and_keeps_gauges_apart() -> None:
    counter = {"n": "c", "d": "a counter", "t": "counter", "s": [["c_total", {"r": "x"}, 2.0]]}
    gauge = {"n": "g", "d": "a gauge", "t": "gauge", "s": [["g", {}, 1.0]]}
    summary = {"n": "s", "d": "latency", "t": "summary",
               "s": [["s", {"quantile": "0.5"}, 0.1], ["s_count", {}, 3.0], ["s_sum", {}, 0.3]]}
    ledger = {"n": "l", "d": "from the ledger", "t": "counter", "s": [["l_total", {}, 5.0]]}
    one = [counter, gauge, summary, ledger]
    two = [{**counter, "s": [["c_total", {"r": "x"}, 3.0], ["c_total", {"r": "y"}, 1.0]]}, gauge, summary, ledger]
    final = [{**counter, "s": [["c_total", {"r": "x"}, 10.0]]}]
    merged = {m.name: {(s.name, tuple(sorted(s.labels.items()))): s.value for s in m.samples}
              for m in merge([("1", one), ("2", two)], own="1", local_only=frozenset({"l"}), finals=[final])}
    assert merged["c"] == {("c_total", (("r", "x"),)): 15.0, ("c_total", (("r", "y"),)): 1.0}
    assert merged["g"] == {("g", (("worker", "1"),)): 1.0, ("g", (("worker", "2"),)): 1.0}
    assert merged["s"][("s_count", ())] == 6.0 and merged["s"][("s", (("quantile", "0.5"), ("worker", "2")))] == 0.1
    assert merged["l"] == {("l_total", ()): 5.0}  # already the host's total: not doubled
