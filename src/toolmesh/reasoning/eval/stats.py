"""Figures of an evaluation: Wilson intervals, percentiles, and the per model × mode summary."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

Z95 = 1.959963984540054


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``correct``/``n`` (good at small ``n`` and at 0 % or 100 %)."""
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= correct <= n:
        raise ValueError("correct must be between 0 and n")
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if correct == 0 else max(0.0, centre - half)  # exact ends, not 0.9999999999999999
    hi = 1.0 if correct == n else min(1.0, centre + half)
    return (lo, hi)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) with linear interpolation; ``None`` for no values."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass
class Summary:
    """One model × mode. A failed sample counts in ``n`` and ``errors`` (and as not correct)."""

    n: int
    correct: int
    accuracy: float | None
    ci95: tuple[float, float]
    errors: int
    timeouts: int
    p50_ms: float | None
    p95_ms: float | None
    tokens: int
    #: ``None`` when any sample's usage could not be priced: never a partial sum shown as the cost.
    cost_usd: float | None
    avg_steps: float | None
    avg_revisions: float | None
    #: Samples where a revision turned a right answer wrong: an answer written together with a step
    #: that the verifier sent back was right, and the final answer is wrong (``None`` outside ``reason``).
    right_to_wrong: int | None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci95"] = [round(self.ci95[0], 4), round(self.ci95[1], 4)]
        return d


def summarize(records: Iterable[dict[str, Any]], *, right_to_wrong: int | None = None) -> Summary:
    """The summary of one model × mode's sample records (the JSONL log's lines)."""
    rows = list(records)
    n = len(rows)
    correct = sum(1 for r in rows if r.get("correct"))
    errors = sum(1 for r in rows if r.get("status") == "error")
    timeouts = sum(1 for r in rows if r.get("status") == "timeout")
    latencies = [float(r["latency_ms"]) for r in rows if r.get("status") != "error" and r.get("latency_ms") is not None]
    tokens = sum(int(r.get("tokens") or 0) for r in rows)
    used = [r for r in rows if r.get("tokens")]
    cost: float | None = None
    if used and all(r.get("cost_usd") is not None for r in used):
        cost = round(sum(float(r["cost_usd"]) for r in used), 8)
    stepped = [r for r in rows if r.get("steps") is not None]
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    return Summary(
        n=n, correct=correct, accuracy=(correct / n) if n else None, ci95=wilson(correct, n), errors=errors,
        timeouts=timeouts, p50_ms=None if p50 is None else round(p50, 1), p95_ms=None if p95 is None else round(p95, 1),
        tokens=tokens, cost_usd=cost,
        avg_steps=(sum(int(r["steps"]) for r in stepped) / len(stepped)) if stepped else None,
        avg_revisions=(sum(int(r.get("revisions") or 0) for r in stepped) / len(stepped)) if stepped else None,
        right_to_wrong=right_to_wrong,
    )
