"""A circuit breaker's states and the local store of its facts (HUB-5).

:class:`LocalCircuitStore` keeps them in this process; a shared store (see
:class:`~toolmesh.resilience.abc.CircuitStore`) lets several workers see one circuit.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["CircuitState", "LocalCircuitStore"]


class CircuitState(StrEnum):
    """State of a circuit breaker (the value is what snapshots and dashboards show)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class LocalCircuitStore:
    """One breaker's state and counts in plain attributes (no allocation per call)."""

    __slots__ = ("failures", "opened_at", "opens", "state", "total_failures")

    def __init__(self) -> None:
        self.state = CircuitState.CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.opens = 0
        self.total_failures = 0

    def add_failure(self) -> int:
        """Count one failure; returns the consecutive count after it."""
        self.total_failures += 1
        self.failures += 1
        return self.failures

    def clear_failures(self) -> None:
        """A success: the consecutive count goes back to 0."""
        self.failures = 0

    def set_state(self, state: CircuitState, now: float) -> None:
        """Store a transition; entering ``OPEN`` records ``now`` and counts an opening."""
        self.state = state
        if state is CircuitState.OPEN:
            self.opened_at = now
            self.opens += 1

    def __repr__(self) -> str:
        return f"LocalCircuitStore(state={self.state.value}, failures={self.failures})"
