"""ToolMetrics snapshot shape and the Prometheus exposition."""

from __future__ import annotations

import json

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from toolmesh.observability import HealthTracker, ToolMetrics
from toolmesh.observability.prometheus import ToolmeshCollector, render_prometheus
from toolmesh.resilience import CircuitRegistry


def populated() -> ToolMetrics:
    m = ToolMetrics()
    stock = m.tool("inventory", "check_stock")
    for i in range(10):
        stock.record(True, float(i + 1))
    stock.record(False, 50.0)
    stock.record(False, 1000.0, timeout=True)
    m.record_call("inventory", "store_pickup", ok=True, latency_ms=2.0)
    m.record_call("pricing", "calculate_discount", ok=False, latency_ms=3.0)
    m.record_cache("inventory", True)
    m.record_cache("inventory", True)
    m.record_cache("inventory", False)
    m.record_connect("inventory")
    m.record_reconnect("inventory")
    m.record_session_lost("inventory")
    return m


def test_snapshot_shape_and_values() -> None:
    snap = populated().snapshot()
    json.dumps(snap)  # JSON-serialisable
    assert snap["totals"] == {"calls": 14, "successes": 11, "failures": 3, "timeouts": 1}
    inv = snap["servers"]["inventory"]
    assert {k: inv[k] for k in ("calls", "successes", "failures", "timeouts")} == {
        "calls": 13,
        "successes": 11,
        "failures": 2,
        "timeouts": 1,
    }
    assert inv["cache"] == {"hits": 2, "misses": 1, "hit_rate": pytest.approx(2 / 3)}
    assert inv["sessions"] == {"connects": 1, "reconnects": 1, "lost": 1}
    stock = inv["tools"]["check_stock"]
    assert stock["calls"] == 12 and stock["failures"] == 2 and stock["timeouts"] == 1
    assert stock["error_rate"] == pytest.approx(2 / 12)
    lat = stock["latency"]
    assert set(lat) >= {"count", "p50_ms", "p95_ms", "p99_ms", "mean_ms", "max_ms"}
    assert lat["count"] == 12 and lat["max_ms"] == 1000.0
    assert inv["latency"]["count"] == 13  # server aggregate includes every tool
    assert snap["servers"]["pricing"]["tools"]["calculate_discount"]["successes"] == 0


def test_handles_are_cached_and_remove_server() -> None:
    m = ToolMetrics()
    assert m.tool("a", "t") is m.tool("a", "t")
    m.remove_server("a")
    assert m.snapshot()["servers"] == {}


def parse(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    out: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        out[fam.name] = [(s.name, s.labels, s.value) for s in fam.samples]
    return out


def test_prometheus_text_parses_with_expected_series() -> None:
    text = render_prometheus(populated())
    fams = parse(text)
    calls = {(s[1]["server"], s[1]["tool"]): s[2] for s in fams["toolmesh_tool_calls"]}
    assert calls == {
        ("inventory", "check_stock"): 12,
        ("inventory", "store_pickup"): 1,
        ("pricing", "calculate_discount"): 1,
    }
    timeouts = {s[1]["tool"]: s[2] for s in fams["toolmesh_tool_timeouts"]}
    assert timeouts["check_stock"] == 1
    lat = fams["toolmesh_tool_latency_seconds"]
    q = {s[1]["quantile"]: s[2] for s in lat if s[1].get("tool") == "check_stock" and "quantile" in s[1]}
    assert set(q) == {"0.5", "0.95", "0.99"}
    assert q["0.99"] <= 1.0 and q["0.5"] == pytest.approx(0.0065)
    count = [s[2] for s in lat if s[0].endswith("_count") and s[1].get("tool") == "check_stock"]
    total = [s[2] for s in lat if s[0].endswith("_sum") and s[1].get("tool") == "check_stock"]
    assert count == [12] and total == [pytest.approx((55 + 50 + 1000) / 1000)]
    hits = {s[1]["server"]: s[2] for s in fams["toolmesh_cache_hits"]}
    assert hits == {"inventory": 2, "pricing": 0}
    assert {s[1]["server"]: s[2] for s in fams["toolmesh_sessions_lost"]}["inventory"] == 1
    server_calls = {s[1]["server"]: s[2] for s in fams["toolmesh_server_calls"]}
    assert server_calls == {"inventory": 13, "pricing": 1}


def test_prometheus_const_labels_health_and_circuits() -> None:
    acme = ToolMetrics(labels={"tenant": "acme"})
    acme.record_call("inv", "t", ok=True, latency_ms=1.0)
    beta = ToolMetrics(labels={"tenant": "beta"})
    beta.record_call("inv", "t", ok=False, latency_ms=1.0)
    health = HealthTracker("inv", min_requests=1, window=2)
    health.record(False, 1.0)
    circuits = CircuitRegistry(failure_threshold=1)
    circuits.server("inv").record_failure()
    circuits.tool("inv", "t")

    registry = CollectorRegistry()
    registry.register(ToolmeshCollector([acme, beta], health=lambda: [health], circuits=lambda: circuits))
    fams = parse(generate_latest(registry).decode())
    by_tenant = {s[1]["tenant"]: s[2] for s in fams["toolmesh_tool_failures"]}
    assert by_tenant == {"acme": 0, "beta": 1}
    status = {s[1]["status"]: s[2] for s in fams["toolmesh_server_health"]}
    assert status == {"active": 0, "degraded": 0, "error": 1}
    state = {(s[1]["circuit"], s[1]["state"]): s[2] for s in fams["toolmesh_circuit_state"]}
    assert state[("inv", "open")] == 1 and state[("inv", "closed")] == 0
    assert state[("inv/t", "closed")] == 1
    assert {s[1]["circuit"]: s[2] for s in fams["toolmesh_circuit_opens"]}["inv"] == 1


def test_prometheus_empty_and_callable_source() -> None:
    m = ToolMetrics()
    assert list(text_string_to_metric_families(render_prometheus(m))) != []  # families, no samples
    m.tool("s", "never_called")
    text = render_prometheus([m])
    fams = parse(text)
    # A tool without samples exports count/sum (both 0) but no quantiles.
    labels = {"server": "s", "tool": "never_called"}
    assert fams["toolmesh_tool_latency_seconds"] == [("toolmesh_tool_latency_seconds_count", labels, 0.0),
                                                     ("toolmesh_tool_latency_seconds_sum", labels, 0.0)]
    registry = CollectorRegistry()
    registry.register(ToolmeshCollector(lambda: [m]))
    assert b"toolmesh_tool_calls_total" in generate_latest(registry)
