"""LatencyStats percentiles against independent reference computations."""

from __future__ import annotations

import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolmesh.observability import LatencyStats
from toolmesh.observability.stats import percentile


def reference(values: list[float], q: float) -> float:
    """numpy's default ("linear") percentile, written out independently."""
    s = sorted(values)
    h = (len(s) - 1) * q
    lo, hi = int(h // 1), min(int(h // 1) + 1, len(s) - 1)
    return s[lo] + (h - lo) * (s[hi] - s[lo])


def test_empty_snapshot() -> None:
    snap = LatencyStats().snapshot()
    assert snap["count"] == 0 and snap["window"] == 0
    assert snap["p50_ms"] is None and snap["p99_ms"] is None and snap["max_ms"] is None


def test_known_small_values() -> None:
    st = LatencyStats()
    for v in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0):
        st.record(v)
    snap = st.snapshot()
    assert snap["p50_ms"] == pytest.approx(5.5)
    assert snap["p95_ms"] == pytest.approx(9.55)
    assert snap["p99_ms"] == pytest.approx(9.91)
    assert snap["mean_ms"] == pytest.approx(5.5)
    assert snap["max_ms"] == 10.0
    assert snap["count"] == 10 and snap["sum_ms"] == pytest.approx(55.0)


def test_single_sample() -> None:
    st = LatencyStats()
    st.record(3.25)
    snap = st.snapshot()
    assert snap["p50_ms"] == snap["p99_ms"] == snap["max_ms"] == 3.25


@pytest.mark.parametrize("n", [2, 7, 100, 1000])
def test_matches_statistics_quantiles(n: int) -> None:
    rng = random.Random(n)
    values = [rng.lognormvariate(0.0, 1.0) for _ in range(n)]
    st = LatencyStats(window=2048)
    for v in values:
        st.record(v)
    cuts = statistics.quantiles(values, n=100, method="inclusive")  # cuts[k-1] = k-th percentile
    snap = st.snapshot()
    assert snap["p50_ms"] == pytest.approx(cuts[49])
    assert snap["p95_ms"] == pytest.approx(cuts[94])
    assert snap["p99_ms"] == pytest.approx(cuts[98])
    assert snap["p99_ms"] == pytest.approx(reference(values, 0.99))
    assert snap["mean_ms"] == pytest.approx(statistics.fmean(values))


def test_window_keeps_only_recent_samples() -> None:
    st = LatencyStats(window=100)
    for _ in range(1000):
        st.record(1000.0)  # old, slow
    recent = [float(i) for i in range(1, 101)]
    for v in recent:
        st.record(v)
    snap = st.snapshot()
    assert snap["count"] == 1100 and snap["window"] == 100
    assert snap["max_ms"] == 100.0
    assert snap["p99_ms"] == pytest.approx(reference(recent, 0.99))
    assert st.sorted_window() == recent
    assert snap["sum_ms"] == pytest.approx(1000 * 1000.0 + sum(recent))


def test_ring_wraps_correctly_at_arbitrary_offsets() -> None:
    rng = random.Random(5)
    st = LatencyStats(window=64)
    all_values = [rng.uniform(0, 50) for _ in range(64 * 3 + 17)]
    for v in all_values:
        st.record(v)
    assert st.sorted_window() == sorted(all_values[-64:])
    assert st.quantiles(0.5, 0.9) == pytest.approx([reference(all_values[-64:], 0.5), reference(all_values[-64:], 0.9)])


def test_reset_and_validation() -> None:
    st = LatencyStats(window=4)
    st.record(1.0)
    st.reset()
    assert st.snapshot()["count"] == 0 and st.quantiles(0.5) == [None]
    with pytest.raises(ValueError):
        LatencyStats(window=0)


def test_percentile_edges() -> None:
    assert percentile([1.0, 2.0], 0.0) == 1.0
    assert percentile([1.0, 2.0], 1.0) == 2.0
    assert percentile([1.0, 3.0], 0.5) == 2.0


@settings(max_examples=200, deadline=None)
@given(
    window=st.integers(min_value=1, max_value=50),
    values=st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=200),
    q=st.floats(min_value=0, max_value=1),
)
def test_property_window_and_quantiles(window: int, values: list[float], q: float) -> None:
    stats = LatencyStats(window=window)
    for v in values:
        stats.record(v)
    recent = values[-window:]
    assert stats.sorted_window() == sorted(recent)
    (got,) = stats.quantiles(q)
    assert got == pytest.approx(reference(recent, q), rel=1e-9, abs=1e-9)
    assert min(recent) <= got <= max(recent)
    assert stats.count == len(values)
