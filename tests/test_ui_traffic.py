"""The dashboard's traffic sampler (pure logic): rates per interval from cumulative counters."""

from __future__ import annotations

import asyncio

import pytest

from toolmesh.gateway.ui.traffic import Traffic
from toolmesh.observability.metrics import ToolMetrics


class Requests:
    """The shape of ``RequestStats.series``: (route, status, tenant) -> [count, seconds, ...]."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, int, str], list[float]] = {}

    def add(self, route: str, status: int, tenant: str, n: int) -> None:
        self.series.setdefault((route, status, tenant), [0.0, 0.0])[0] += n


def test_points_are_per_tenant_rates_without_admin_traffic() -> None:
    requests, tools = Requests(), ToolMetrics()
    traffic = Traffic(requests, tools, interval=2.0, keep=10)
    traffic.sample()
    requests.add("openai", 200, "acme", 8)
    requests.add("mcp", 502, "acme", 2)
    requests.add("admin", 200, "acme", 50)  # the dashboard's own polling: not counted
    requests.add("openai", 200, "other", 100)
    for ok in (True, True, False):
        tools.record_call("acme/*/crm", "find", ok=ok, latency_ms=3.0)
    tools.record_call("other/*/crm", "find", ok=True, latency_ms=3.0)
    traffic.sample()
    traffic.samples[1].at = traffic.samples[0].at + 2.0  # exactly one interval apart
    [point] = traffic.points("acme", ["acme/*/crm"])
    assert point["requests_per_s"] == pytest.approx(5.0) and point["errors"] == 2
    assert point["tool_calls_per_s"] == pytest.approx(1.5) and point["tool_errors"] == 1
    assert traffic.points("nobody", [])[0]["requests_per_s"] == 0.0


def test_the_ring_keeps_the_last_samples_only() -> None:
    traffic = Traffic(Requests(), ToolMetrics(), keep=3)
    for _ in range(5):
        traffic.sample()
    assert len(traffic.samples) == 3 and len(traffic.points("t", [])) == 2


async def test_start_samples_in_the_background_and_aclose_stops() -> None:
    traffic = Traffic(Requests(), ToolMetrics(), interval=0.01)
    traffic.start()
    assert len(traffic.samples) == 1  # one at once
    for _ in range(500):  # a few hundredths of a second normally; bounded if the sampler never runs
        if len(traffic.samples) >= 3:
            break
        await asyncio.sleep(0.01)
    assert len(traffic.samples) >= 3
    await traffic.aclose()
    taken = len(traffic.samples)
    await asyncio.sleep(0.05)
    assert len(traffic.samples) == taken  # stopped
