"""What a :class:`~toolmesh.hub.handle.ServerHandle` needs from the registry that owns it.

The :class:`~toolmesh.hub.hub.Hub` is the one implementation. Typing the handle's owner by this
protocol keeps the handle off the Hub's private members (and the two modules off each other):
a handle reports what happened to its server, and the owner decides what that means for the
metrics, the health listeners, the idle janitor and the change listeners.
"""

from __future__ import annotations

from typing import Any, Protocol

from toolmesh.hub.config import ServerConfig
from toolmesh.hub.resultcache import ResultCache
from toolmesh.observability.health import HealthTracker
from toolmesh.observability.metrics import ToolMetrics
from toolmesh.resilience.abc import CapacityLimiter, CircuitStore
from toolmesh.resilience.circuit import CircuitBreaker, CircuitState

__all__ = ["HandleOwner"]


class HandleOwner(Protocol):
    """The callbacks and shared state a server handle uses."""

    @property
    def client_capabilities(self) -> dict[str, Any] | None:
        """What connections advertise when their server's config does not say."""

    @property
    def tool_metrics(self) -> ToolMetrics:
        """The registry every handle records its calls, cache lookups and reconnects in."""

    @property
    def result_cache(self) -> ResultCache:
        """The tool-result cache every handle keeps its scope in."""

    def new_health(self, config: ServerConfig) -> HealthTracker:
        """A health tracker for a new handle, already wired to the owner's status listeners."""

    def new_limiter(self, limit: int, name: str) -> CapacityLimiter:
        """The concurrency limit of a new handle (``limit`` holders; ``name`` for errors)."""

    def new_circuit_store(self, key: str) -> CircuitStore:
        """Where a new breaker keeps its state (``key``: the handle's label, ``label/tool`` per tool)."""

    def on_circuit_change(self, breaker: CircuitBreaker, old: CircuitState, new: CircuitState) -> None:
        """A server or tool breaker of a handle changed state."""

    def on_connected(self) -> None:
        """A handle opened a connection (the owner starts its idle janitor if needed)."""

    def on_catalog_changed(self, server: str) -> None:
        """A handle's server said its tools, prompts or resources changed (the cache is dropped)."""

    def emit_change(self, tenant: str, user: str | None, server: str, method: str, params: dict[str, Any]) -> None:
        """Tell the change listeners about one upstream notification."""
