"""Latency statistics: exact percentiles over the most recent samples.

Design: a ring buffer (``array('d')``) of the last ``window`` samples (default 1024), plus a
lifetime count and sum. Why this and not a log-bucket histogram:

* ``record`` is the hot path (every tool call) and costs two additions and one store into a
  preallocated C array: no ``math.log``, no bucket search, no Python object kept alive;
* percentiles are *exact* over the window (a histogram is only accurate to its bucket
  width), which matters for p99 on small, sub-millisecond latencies;
* snapshots are rare (dashboard, /metrics scrape): sorting a copy of 1024 doubles takes tens
  of microseconds;
* memory is bounded: 8 KiB per full window, and the buffer grows only as samples arrive, so
  rarely used tools stay small.

The window is by count, not time: a rarely called tool's percentiles may describe older calls.
Percentiles use linear interpolation between closest ranks (the same definition as
``numpy.percentile``'s default and ``statistics.quantiles(method="inclusive")``).
"""

from __future__ import annotations

from array import array
from typing import Any

__all__ = ["LatencyStats", "percentile"]


def percentile(sorted_values: Any, q: float) -> float:
    """The ``q`` quantile (0..1) of a non-empty ascending sequence, linearly interpolated."""
    n = len(sorted_values)
    pos = q * (n - 1)
    lo = int(pos)
    if lo >= n - 1:
        return float(sorted_values[n - 1])
    frac = pos - lo
    a = sorted_values[lo]
    return float(a + (sorted_values[lo + 1] - a) * frac)


class LatencyStats:
    """Latency samples in milliseconds: lifetime count/sum, window percentiles, mean and max."""

    __slots__ = ("_buf", "_next", "count", "sum_ms", "window")

    def __init__(self, window: int = 1024) -> None:
        """``window``: number of most recent samples kept for percentiles (>= 1)."""
        if window < 1:
            raise ValueError("window must be >= 1")
        self.window = window
        self._buf = array("d")
        self._next = 0  # ring position once the buffer is full
        #: Samples recorded since creation (or :meth:`reset`).
        self.count = 0
        #: Sum of all samples recorded since creation, ms (for Prometheus ``_sum``).
        self.sum_ms = 0.0

    def record(self, ms: float) -> None:
        """Add one sample (milliseconds)."""
        self.count += 1
        self.sum_ms += ms
        buf = self._buf
        if len(buf) < self.window:
            buf.append(ms)
        else:
            i = self._next
            buf[i] = ms
            i += 1
            self._next = 0 if i == self.window else i

    def reset(self) -> None:
        """Forget every sample."""
        self._buf = array("d")
        self._next = 0
        self.count = 0
        self.sum_ms = 0.0

    def sorted_window(self) -> list[float]:
        """The samples currently in the window, ascending (a copy)."""
        return sorted(self._buf)

    def quantiles(self, *qs: float) -> list[float | None]:
        """Quantiles (0..1) of the window; ``None`` each when there are no samples."""
        if not self._buf:
            return [None] * len(qs)
        s = sorted(self._buf)
        return [percentile(s, q) for q in qs]

    def snapshot(self) -> dict[str, Any]:
        """``{count, window, p50_ms, p95_ms, p99_ms, mean_ms, max_ms, sum_ms}``.

        ``count`` and ``sum_ms`` are lifetime totals; ``window`` is how many recent samples the
        percentiles, mean and max describe. Statistics are ``None`` when there are no samples.
        """
        buf = self._buf
        if not buf:
            return {
                "count": self.count,
                "window": 0,
                "p50_ms": None,
                "p95_ms": None,
                "p99_ms": None,
                "mean_ms": None,
                "max_ms": None,
                "sum_ms": self.sum_ms,
            }
        s = sorted(buf)
        n = len(s)
        return {
            "count": self.count,
            "window": n,
            "p50_ms": percentile(s, 0.50),
            "p95_ms": percentile(s, 0.95),
            "p99_ms": percentile(s, 0.99),
            "mean_ms": sum(s) / n,
            "max_ms": s[-1],
            "sum_ms": self.sum_ms,
        }

    def __repr__(self) -> str:
        return f"LatencyStats(count={self.count}, window={len(self._buf)}/{self.window})"
