"""Shared settings for the property-based fuzz tests (tests/test_fuzz_*.py).

``make test`` runs a small seed of every property; ``TOOLMESH_FUZZ_EXAMPLES=5000`` raises the
number of examples per property for a campaign run (see docs/fuzzing.md).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings


def examples(seed: int) -> int:
    """Examples per property: ``seed`` in ``make test``, ``$TOOLMESH_FUZZ_EXAMPLES`` in a campaign."""
    raw = os.environ.get("TOOLMESH_FUZZ_EXAMPLES", "").strip()
    return int(raw) if raw else seed


def fuzz(seed: int = 100) -> settings:
    """Hypothesis settings for one fuzz property (no deadline: a loaded 2-core box is slow)."""
    return settings(
        max_examples=examples(seed),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        database=None,
    )
